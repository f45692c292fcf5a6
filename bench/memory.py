#!/usr/bin/env python3
"""Memory (issue 7 row 7): RSS of the idle engine, then what each running container adds in all
(the engine's own RSS growth plus any helper process it keeps per container: shims, monitors).

    python bench/memory.py --host /run/asyncdock.sock --pid PID [--vs SOCK --vs-pids PID,PID] [--containers 20]

Processes inside the containers are not counted (they are the workload). Helper processes are
the children of the engine's pids that are not container processes; pass --vs-pids as the
daemon's pids (e.g. dockerd,containerd) for another engine.
"""
from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import api, ensure_image, parser, report, sockets  # noqa: E402


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def matching_pids(pattern: str) -> list[int]:
    """Helper processes that are not the engine's descendants (containerd shims re-parent to
    PID 1), found by their command line."""
    import re

    if not pattern:
        return []
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if re.search(pattern, f.read().replace(b"\0", b" ").decode(errors="replace")):
                        out.append(int(d))
            except OSError:
                continue
    return out


def engine_rss(pids: list[int], container_pids: set[int], helpers: str = "") -> int:
    """Engine pids plus every descendant that is not inside a container (helpers), plus the
    processes matching `helpers`."""
    pids = list(pids) + matching_pids(helpers)
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                continue
    total, stack, seen = 0, list(pids), set()
    while stack:
        pid = stack.pop()
        if pid in seen or pid in container_pids:
            continue
        seen.add(pid)
        try:
            total += rss_kib(pid)
        except OSError:
            continue
        stack.extend(children.get(pid, []))
    return total


async def measure(sock: str, pids: list[int], image: str, n: int, helpers: str = "") -> tuple[float, float]:
    idle = engine_rss(pids, set(), helpers) / 1024
    ids = []
    for _ in range(n):
        status, body = await api(sock, "POST", "/v1.41/containers/create",
                                 {"Image": image, "Cmd": ["sleep", "600"], "Labels": {"asyncdock.bench": "memory"}})
        cid = body["Id"]
        await api(sock, "POST", f"/v1.41/containers/{cid}/start")
        ids.append(cid)
    cpids: set[int] = set()
    for cid in ids:
        _, info = await api(sock, "GET", f"/v1.41/containers/{cid}/json")
        cpids.add(info["State"]["Pid"])
    loaded = engine_rss(pids, cpids, helpers) / 1024
    for cid in ids:
        await api(sock, "DELETE", f"/v1.41/containers/{cid}?force=1")
    return idle, (loaded - idle) / n


async def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--pid", type=int, required=True, help="asyncdock daemon pid")
    p.add_argument("--vs-pids", default="", help="comma-separated pids of the other engine")
    p.add_argument("--containers", type=int, default=20)
    p.add_argument("--vs-helpers", default="",
                   help="regex of the other engine's helper processes outside its tree, e.g. containerd-shim")
    p.set_defaults(runs=1)
    args = p.parse_args()
    engines = sockets(args)
    pids = {"asyncdock": [args.pid]}
    if args.vs:
        pids["other"] = [int(x) for x in args.vs_pids.split(",") if x]
    idle: dict[str, list[float]] = {k: [] for k in engines}
    per: dict[str, list[float]] = {k: [] for k in engines}
    for _ in range(args.runs):
        for label, sock in engines.items():
            await ensure_image(sock, args.image)
            i, c = await measure(sock, pids[label], args.image, args.containers,
                                 args.vs_helpers if label == "other" else "")
            idle[label].append(i)
            per[label].append(c)
    report("memory-idle", "MiB", idle)
    report("memory-per-container", "MiB", per)


if __name__ == "__main__":
    asyncio.run(main())
