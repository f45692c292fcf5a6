#!/usr/bin/env python3
"""The output path (issue 17 target 1), through the real docker CLI, side by side:

    python bench/output.py --host /run/asyncdock.sock [--vs /tmp/dockerd/docker.sock] [--runs 5]
                           [--mb 20] [--pid PID]

- attached output of N MB of zeros, random bytes and base64 text (`docker run --rm busybox sh -c
  'head -c N SRC' | wc -c`), with json-file, with `-t`, and with `--log-driver none`;
- the floor for `none`: the same producer on the host, `busybox head -c N SRC | cat | wc -c`
  (the `cat` standing where the engine and the CLI relay the bytes); "net" figures take off each
  side's fixed cost (a run of `true`, and `busybox sh -c true | cat | wc -c`), leaving the rate
  at which the bytes move once the container runs;
- `docker logs` of a container that wrote 300,000 short lines (`> /dev/null`);
- with --pid (asyncdock's daemon), its RSS idle, after the attached runs and 200 MB more of
  attached json-file output, after a settle of a few seconds, and after the logs reads.

Each sample is one command's wall time; engines interleave A B A B. Prints medians, the ratio
per pair and throughput ratios; writes bench/results/output-*.json.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parser, report, sockets  # noqa: E402

DOCKER = os.environ.get("DOCKER_CLI", shutil.which("docker") or "/usr/local/bin/docker")
SOURCES = {
    "zeros": "head -c {n} /dev/zero",
    "random": "head -c {n} /dev/urandom",
    "text": "head -c {raw} /dev/urandom | base64",  # {raw}: 3/4 of n, base64 makes it n
}
LINES = 300_000


def sh(cmd: str, sock: str = "") -> float:
    env = dict(os.environ)
    if sock:
        env["DOCKER_HOST"] = f"unix://{sock}"
    t0 = time.perf_counter()
    r = subprocess.run(["sh", "-c", cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{cmd!r} on {sock or 'host'} failed: {r.stderr.decode(errors='replace').strip()}")
    return dt


def producer(kind: str, n: int) -> str:
    return SOURCES[kind].format(n=n, raw=n * 3 // 4)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=int, default=20, help="MB of output per attached run")
    p.add_argument("--pid", type=int, default=0, help="asyncdock daemon's pid, for the RSS figures")
    args = p.parse_args()
    engines = sockets(args)
    n = args.mb * 1_000_000
    for sock in engines.values():
        sh(f"{DOCKER} image inspect {args.image} >/dev/null 2>&1 || {DOCKER} pull -q {args.image}", sock)
    rss: dict[str, float] = {}
    if args.pid:
        rss["idle_mib"] = rss_mib(args.pid)

    # The fixed cost of a run with no output (start, attach, wait, remove), per engine, and of
    # the floor's pipeline: "net" throughput is the bytes over the time beyond it.
    base: dict[str, list[float]] = {k: [] for k in engines}
    base["floor"] = []
    for _ in range(args.runs):
        for label, sock in engines.items():
            base[label].append(sh(f"{DOCKER} run --rm --log-driver none {args.image} true | wc -c", sock))
        base["floor"].append(sh("busybox sh -c true | cat | wc -c"))
    fixed = {k: v["median"] for k, v in report("output-fixed-cost", "s", base)["summary"].items()}

    cases = [(kind, mode) for kind in SOURCES for mode in ("json-file", "tty", "none")]
    summary: dict[str, dict[str, object]] = {}
    for kind, mode in cases:
        flags = {"json-file": "", "tty": "-t", "none": "--log-driver none"}[mode]
        cmd = f"{DOCKER} run --rm {flags} {args.image} sh -c '{producer(kind, n)}' | wc -c"
        results: dict[str, list[float]] = {k: [] for k in engines}
        if mode == "none":
            results["floor"] = []
        for _ in range(args.runs):
            for label, sock in engines.items():
                results[label].append(sh(cmd, sock))
            if mode == "none":
                results["floor"].append(sh(f"busybox sh -c '{producer(kind, n)}' | cat | wc -c"))
        doc = report(f"output-{kind}-{mode}", "s", results, extra={"mb": args.mb})
        med = {k: v["median"] for k, v in doc["summary"].items()}
        line = {"asyncdock_MBps": args.mb / med["asyncdock"]}
        if "other" in med:
            line["throughput_vs_other"] = med["other"] / med["asyncdock"]
        if "floor" in med:
            line["throughput_vs_floor"] = med["floor"] / med["asyncdock"]
            net = {k: max(med[k] - fixed[k], 1e-6) for k in med}
            line["net_MBps"] = args.mb / net["asyncdock"]
            line["net_vs_floor"] = net["floor"] / net["asyncdock"]
            if "other" in net:
                line["net_vs_other"] = net["other"] / net["asyncdock"]
        summary[f"{kind}/{mode}"] = line
        print(f"  {kind}/{mode}: " + ", ".join(f"{k} {v:.2f}" for k, v in line.items()))

    if args.pid:
        sock = engines["asyncdock"]
        for _ in range(10):
            sh(f"{DOCKER} run --rm {args.image} sh -c 'head -c 20000000 /dev/urandom' | wc -c", sock)
        rss["after_200mb_mib"] = rss_mib(args.pid)
        time.sleep(5)
        rss["settled_mib"] = rss_mib(args.pid)
        print("asyncdock RSS (output): " + ", ".join(f"{k} {v:.1f}" for k, v in rss.items()))
    # docker logs of 300k short lines: written once per engine, read back runs times
    name = f"bench-logs-{os.getpid()}"
    for sock in engines.values():
        sh(f"{DOCKER} run --name {name} {args.image} sh -c 'seq 1 {LINES} | sed \"s/^/line number /\"' >/dev/null", sock)
    try:
        results = {k: [] for k in engines}
        for _ in range(args.runs):
            for label, sock in engines.items():
                results[label].append(sh(f"{DOCKER} logs {name} >/dev/null", sock))
        doc = report("output-logs-300k", "s", results)
        if args.pid:
            rss["after_logs_mib"] = rss_mib(args.pid)
            print(f"asyncdock RSS after the logs reads: {rss['after_logs_mib']:.1f} MiB")
    finally:
        for sock in engines.values():
            subprocess.run([DOCKER, "rm", "-f", name], env={**os.environ, "DOCKER_HOST": f"unix://{sock}"},
                           capture_output=True)

    print("summary:")
    for k, v in summary.items():
        print(f"  {k:18s} " + ", ".join(f"{a} {b:.2f}" for a, b in v.items()))


if __name__ == "__main__":
    main()
