#!/usr/bin/env python3
"""The kernel's floor for running a container: bare runs of a busybox rootfs by the OCI runtime
itself (`crun run` / `runc run`), no engine in between. On a hybrid-cgroup host crun needs the
cgroup2 mount hidden, which costs an unshare here as it does for the engine's crun plugin.

    python bench/floor.py --runtime crun --runs 20       # median single run
    python bench/floor.py --runtime crun --concurrent 50 # rate of 50 launched at once
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

_HYBRID = os.path.ismount("/sys/fs/cgroup/unified") and not os.path.exists("/sys/fs/cgroup/cgroup.controllers")


def make_bundle(base: Path, runtime: str, args: list[str]) -> Path:
    bundle = base / uuid.uuid4().hex[:12]
    rootfs = bundle / "rootfs"
    for d in ("bin", "proc", "sys", "dev", "tmp", "etc"):
        (rootfs / d).mkdir(parents=True)
    busybox = shutil.which("busybox") or "/bin/busybox"
    shutil.copy2(busybox, rootfs / "bin" / "busybox")
    for applet in ("sh", "true", "sleep"):
        os.symlink("busybox", rootfs / "bin" / applet)
    subprocess.run([runtime, "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    spec["root"] = {"path": str(rootfs), "readonly": True}
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


def argv(runtime: str, root: Path, bundle: Path, cid: str, detach: bool) -> list[str]:
    cmd = [runtime, "--root", str(root), "run", "-b", str(bundle)] + (["--detach"] if detach else []) + [cid]
    if runtime == "crun" and _HYBRID:
        inner = " ".join(cmd)
        return ["unshare", "-m", "--propagation", "slave", "sh", "-c",
                f"umount -l /sys/fs/cgroup/unified; exec {inner}"]
    return cmd


async def one_run(runtime: str, root: Path, bundle: Path, detach: bool = False) -> float:
    cid = "floor-" + uuid.uuid4().hex[:12]
    t0 = time.perf_counter()
    # The runtime's errors go to a file: a detached container inherits the runtime's stdio, and a
    # pipe it holds would never reach EOF.
    errlog = bundle / f"{cid}.err"
    with open(errlog, "wb") as err:
        proc = await asyncio.create_subprocess_exec(*argv(runtime, root, bundle, cid, detach),
                                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        await proc.wait()
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{runtime} run failed: {errlog.read_text().strip()}")
    if not detach:
        await (await asyncio.create_subprocess_exec(runtime, "--root", str(root), "delete", "-f", cid,
                                                     stderr=subprocess.DEVNULL)).wait()
    return dt


async def single_runs(runtime: str, runs: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="floor-") as tmp:
        base = Path(tmp)
        bundle = make_bundle(base, runtime, ["true"])
        return [await one_run(runtime, base / "state", bundle) for _ in range(runs)]


async def bare_runs(runtime: str, n: int, detach_sleep: bool = False) -> float:
    """Rate (per second) of n runs launched at once, each with its own bundle."""
    with tempfile.TemporaryDirectory(prefix="floor-") as tmp:
        base = Path(tmp)
        args = ["sleep", "600"] if detach_sleep else ["true"]
        bundles = [make_bundle(base, runtime, args) for _ in range(n)]
        root = base / "state"
        t0 = time.perf_counter()
        await asyncio.gather(*(one_run(runtime, root, b, detach=detach_sleep) for b in bundles))
        rate = n / (time.perf_counter() - t0)
        if detach_sleep:
            out = subprocess.run([runtime, "--root", str(root), "list", "-q"], capture_output=True, text=True).stdout
            for cid in out.split():
                subprocess.run([runtime, "--root", str(root), "delete", "-f", cid], capture_output=True)
        return rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runtime", default="crun", choices=["crun", "runc"])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--concurrent", type=int, default=0)
    a = p.parse_args()
    if a.concurrent:
        print(f"{a.concurrent} concurrent bare {a.runtime} runs: {asyncio.run(bare_runs(a.runtime, a.concurrent, True)):.1f}/s")
    else:
        t = asyncio.run(single_runs(a.runtime, a.runs))
        print(f"bare {a.runtime} run of `true`: median {statistics.median(t) * 1000:.1f} ms "
              f"(min {min(t) * 1000:.1f}, n={len(t)})")


if __name__ == "__main__":
    main()
