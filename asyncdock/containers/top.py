"""`GET /containers/{id}/top`: the host's `ps`, kept to the processes of the container's cgroup
(moby's way: the PIDs shown are host PIDs)."""
from __future__ import annotations

import asyncio
import subprocess

from ..base import errors
from ..runtime.cgroups import cgroup_pids
from .models import ContainerRecord


def parse_ps(output: str, pids: set[int]) -> dict[str, list]:
    lines = output.splitlines()
    if not lines:
        raise errors.SystemError_("Couldn't find PID field in ps output")
    titles = lines[0].split()
    try:
        pid_index = titles.index("PID")
    except ValueError:
        raise errors.SystemError_("Couldn't find PID field in ps output") from None
    processes: list[list[str]] = []
    for line in lines[1:]:
        if not line.strip():
            continue
        fields = line.split()
        try:
            pid = int(fields[pid_index])
        except (ValueError, IndexError):
            raise errors.SystemError_(f"Unexpected pid '{fields[pid_index] if len(fields) > pid_index else ''}'") from None
        if pid not in pids:
            continue
        n = len(titles)
        row = fields[: n - 1] + [" ".join(fields[n - 1:])] if len(fields) >= n else fields
        processes.append(row)
    return {"Processes": processes, "Titles": titles}


async def top(rec: ContainerRecord, ps_args: str) -> dict[str, list]:
    from .launcher import cgroups_path

    if not rec.state.running:
        raise errors.Conflict(f"Container {rec.id} is not running")
    if rec.state.restarting:
        raise errors.Conflict(f"Container {rec.id} is restarting, wait until the container is running")
    args = ps_args.split() if ps_args else ["-ef"]
    pids = await asyncio.to_thread(cgroup_pids, cgroups_path(rec))
    proc = await asyncio.create_subprocess_exec("ps", *args, stdin=subprocess.DEVNULL,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise errors.SystemError_(f"Error running ps: exit status {proc.returncode}: {err.decode(errors='replace').strip()}")
    return parse_ps(out.decode(errors="replace"), pids)
