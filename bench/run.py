#!/usr/bin/env python3
"""`docker run --rm busybox true` through the real docker CLI: asyncdock (--host) against
another engine (--vs), and the floor under both.

    python bench/run.py --host /run/asyncdock.sock [--vs /var/run/docker.sock] [--runs N]
                        [--image busybox] [--runtime crun]

Each sample is one `docker run --rm IMAGE true` with DOCKER_HOST pointing at the engine; with two
sockets the samples interleave A B A B so that drift on the machine hits both alike. The image is
pulled (or found) on every engine before timing, and one untimed warm-up run goes first.

The floor: what no engine can beat -- the CLI's own round trip (`docker version`, median over
the same number of runs) plus a bare `<runtime> run` of the same image's rootfs (exported from
the first engine with `docker export`) with a minimal OCI spec, no engine involved. On hybrid
cgroup hosts crun needs the cgroup2 mount hidden, done with unshare(1) as the engine's plugin
does; that unshare is part of the floor.

Prints median and p90 per engine, the ratio A/B and A/floor; writes everything to
bench/results/run-<UTC time>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOCKER = os.environ.get("DOCKER_CLI", shutil.which("docker") or "/usr/local/bin/docker")


class BenchError(RuntimeError):
    pass


def _host(sock: str) -> str:
    return sock if "://" in sock else f"unix://{sock}"


def docker(sock: str, *args: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "DOCKER_HOST": _host(sock)}
    r = subprocess.run([DOCKER, *args], env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE if capture else subprocess.DEVNULL, stderr=subprocess.PIPE)
    if check and r.returncode != 0:
        raise BenchError(f"docker {' '.join(args)} against {sock} exited {r.returncode}: "
                         f"{r.stderr.decode(errors='replace').strip()}")
    return r


def ensure_image(sock: str, image: str) -> None:
    if docker(sock, "image", "inspect", image, check=False).returncode == 0:
        return
    docker(sock, "pull", "-q", image)


def timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def stats(xs: list[float]) -> dict[str, float]:
    s = sorted(xs)
    p90 = s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]
    return {"median": statistics.median(s), "p90": p90, "min": s[0], "max": s[-1], "n": len(s)}


def _hybrid() -> bool:
    try:
        with open("/proc/self/mountinfo") as f:
            return any(" /sys/fs/cgroup/unified " in line and " - cgroup2 " in line for line in f)
    except OSError:
        return False


def bare_runtime_floor(sock: str, image: str, runtime: str, runs: int) -> list[float]:
    """`<runtime> run` of the image's rootfs with a minimal spec, `runs` times."""
    rt = shutil.which(runtime) or shutil.which(runtime, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if rt is None:
        raise BenchError(f"{runtime} not found")
    work = Path(tempfile.mkdtemp(prefix="bench-run-"))
    try:
        rootfs = work / "bundle" / "rootfs"
        rootfs.mkdir(parents=True)
        cid = docker(sock, "create", image, "true").stdout.decode().strip()
        try:
            env = {**os.environ, "DOCKER_HOST": _host(sock)}
            exp = subprocess.Popen([DOCKER, "export", cid], env=env, stdout=subprocess.PIPE)
            subprocess.run(["tar", "-x", "-C", str(rootfs)], stdin=exp.stdout, check=True)
            if exp.wait() != 0:
                raise BenchError("docker export failed")
        finally:
            docker(sock, "rm", "-f", cid, check=False)
        subprocess.run([rt, "spec"], cwd=work / "bundle", check=True)
        spec_path = work / "bundle" / "config.json"
        spec = json.loads(spec_path.read_text())
        spec["process"]["args"] = ["true"]
        spec["process"]["terminal"] = False
        spec["root"]["readonly"] = True
        spec_path.write_text(json.dumps(spec))
        state = work / "state"
        argv = [rt, "--root", str(state), "run", "--bundle", str(work / "bundle")]
        wrap: list[str] = []
        if runtime == "crun" and _hybrid():
            wrap = ["unshare", "--mount", "--propagation", "slave", "--", "sh", "-c",
                    'umount -l /sys/fs/cgroup/unified && exec "$@"', "sh"]
        out = []
        for i in range(runs + 1):
            name = f"bench-{os.getpid()}-{i}"
            dt = timed(lambda: subprocess.run([*wrap, *argv, name], check=True, stdin=subprocess.DEVNULL,
                                              stdout=subprocess.DEVNULL))
            if i:  # the first is a warm-up
                out.append(dt)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", required=True, help="asyncdock's socket (path or unix:// URL)")
    ap.add_argument("--vs", help="a second engine's socket (e.g. Docker's)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--image", default="busybox")
    ap.add_argument("--runtime", default="crun", help="the runtime of the bare floor run")
    ap.add_argument("--no-floor", action="store_true")
    args = ap.parse_args(argv)

    engines = {"A": args.host}
    if args.vs:
        engines["B"] = args.vs
    for sock in engines.values():
        ensure_image(sock, args.image)
        docker(sock, "run", "--rm", args.image, "true")  # warm-up, untimed
    samples: dict[str, list[float]] = {k: [] for k in engines}
    for _ in range(args.runs):
        for key, sock in engines.items():
            samples[key].append(timed(lambda s=sock: docker(s, "run", "--rm", args.image, "true", capture=False)))
    version = [timed(lambda: docker(args.host, "version", capture=False)) for _ in range(args.runs)]
    floor: dict[str, Any] = {"docker_version": stats(version)}
    if not args.no_floor:
        try:
            bare = bare_runtime_floor(args.host, args.image, args.runtime, args.runs)
            floor[f"bare_{args.runtime}_run"] = stats(bare)
            floor["sum_of_medians"] = statistics.median(version) + statistics.median(bare)
        except (BenchError, subprocess.CalledProcessError, OSError) as e:
            floor["error"] = str(e)
    res: dict[str, Any] = {
        "benchmark": "docker run --rm IMAGE true (docker CLI)",
        "image": args.image, "runs": args.runs,
        "engines": {k: {"socket": v, **stats(samples[k]), "samples": samples[k]} for k, v in engines.items()},
        "floor": floor,
        "host": {"python": platform.python_version(), "kernel": platform.release(), "cpus": os.cpu_count()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    a = res["engines"]["A"]
    print(f"docker run --rm {args.image} true, {args.runs} runs{' interleaved A B' if args.vs else ''}")
    for k, e in res["engines"].items():
        print(f"  {k} {e['socket']:<40} median {e['median'] * 1000:7.1f} ms   p90 {e['p90'] * 1000:7.1f} ms")
    if args.vs:
        b = res["engines"]["B"]
        res["ratio_A_over_B"] = {"median": a["median"] / b["median"], "p90": a["p90"] / b["p90"]}
        print(f"  ratio A/B: median {res['ratio_A_over_B']['median']:.2f}  p90 {res['ratio_A_over_B']['p90']:.2f}")
    print(f"  floor: docker version round trip median {floor['docker_version']['median'] * 1000:.1f} ms", end="")
    bare_key = f"bare_{args.runtime}_run"
    if bare_key in floor:
        print(f"; bare {args.runtime} run median {floor[bare_key]['median'] * 1000:.1f} ms"
              f"; sum {floor['sum_of_medians'] * 1000:.1f} ms")
        res["ratio_A_over_floor"] = a["median"] / floor["sum_of_medians"]
        print(f"  ratio A/floor: {res['ratio_A_over_floor']:.2f}")
    else:
        print(f"; bare run unavailable: {floor.get('error', 'skipped')}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"run-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"  written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"bench/run.py: {e}", file=sys.stderr)
        sys.exit(1)
