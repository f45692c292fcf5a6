#!/usr/bin/env python3
"""`docker commit` of a container that wrote 100 MiB, against `tar | <parallel gzip>` of the same
upper directory measured in the same run (issue 15: commit <= 1.3 x that floor).

    sudo python bench/commit.py --host /run/asyncdock.sock [--vs /tmp/dockerd/docker.sock] [--mib 100]

Per engine: one stopped container that wrote MIB MiB (half random bytes in one file, half text
in 1,000 files: gzip has work to do on one half and none on the other). Each run commits it
(`POST /commit`, no tag), removes the new image, then times the floors on the container's upper
dir (GraphDriver.Data.UpperDir, so run as root on the engines' host):
  - tar | ISA-L's threaded gzip at the level and thread count asyncdock's commit uses
    (images/layercommit.py: level 1, 2 threads): the same compressor, so the ratio is the
    engine's overhead;
  - tar | pigz -p <cores> (level 6, pigz's default), when pigz is installed.
Interleaved A B A B, medians; the ratio printed is each engine's commit over its own floor.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import api, ensure_image, parser, report, sockets  # noqa: E402

ISAL_FLOOR = (
    "import sys\n"
    "from isal import igzip_threaded\n"
    "out = open('/dev/null', 'wb')\n"
    "with igzip_threaded.open(out, 'wb', compresslevel=1, threads=2) as gz:\n"
    "    while True:\n"
    "        b = sys.stdin.buffer.read(1 << 20)\n"
    "        if not b:\n"
    "            break\n"
    "        gz.write(b)\n"
)


def writer_script(mib: int) -> str:
    half = mib * (1 << 20) // 2
    per_file = half // 1000
    return (f"head -c {half} /dev/urandom > /big.bin && mkdir /many && i=0 && "
            f"while [ $i -lt 1000 ]; do yes \"line $i of the commit bench, some text to compress\" "
            f"| head -c {per_file} > /many/f$i; i=$((i+1)); done")


async def make_container(sock: str, image: str, mib: int) -> tuple[str, str]:
    status, body = await api(sock, "POST", "/v1.41/containers/create",
                             {"Image": image, "Cmd": ["sh", "-c", writer_script(mib)],
                              "Labels": {"asyncdock.bench": "commit"}})
    if status != 201:
        raise SystemExit(f"create failed on {sock}: {status} {body}")
    cid = body["Id"]
    await api(sock, "POST", f"/v1.41/containers/{cid}/start")
    status, res = await api(sock, "POST", f"/v1.41/containers/{cid}/wait")
    if status != 200 or res.get("StatusCode") != 0:
        raise SystemExit(f"the writer failed on {sock}: {res}")
    _, info = await api(sock, "GET", f"/v1.41/containers/{cid}/json")
    upper = ((info.get("GraphDriver") or {}).get("Data") or {}).get("UpperDir", "")
    if not upper or not os.path.isdir(upper):
        raise SystemExit(f"{sock}: no readable UpperDir for the container (run as root on the engine's host)")
    return cid, upper


def floor(upper: str, compressor: list[str]) -> float:
    t0 = time.perf_counter()
    tar = subprocess.Popen(["tar", "-C", upper, "--numeric-owner", "-cf", "-", "."], stdout=subprocess.PIPE)
    comp = subprocess.Popen(compressor, stdin=tar.stdout, stdout=subprocess.DEVNULL)
    assert tar.stdout is not None
    tar.stdout.close()
    if comp.wait() != 0 or tar.wait() != 0:
        raise SystemExit(f"floor command failed: {compressor}")
    return time.perf_counter() - t0


async def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--mib", type=int, default=100, help="MiB the container writes")
    args = p.parse_args()
    engines = sockets(args)
    pigz = shutil.which("pigz")
    floors = {"isal": [sys.executable, "-c", ISAL_FLOOR]}
    if pigz:
        floors["pigz"] = [pigz, "-p", str(os.cpu_count() or 2), "-c"]
    containers: dict[str, tuple[str, str]] = {}
    results: dict[str, list[float]] = {k: [] for k in engines}
    floor_results: dict[str, dict[str, list[float]]] = {k: {f: [] for f in floors} for k in engines}
    try:
        for label, sock in engines.items():
            await ensure_image(sock, args.image)
            containers[label] = await make_container(sock, args.image, args.mib)
        for _ in range(args.runs):
            for label, sock in engines.items():
                cid, upper = containers[label]
                t0 = time.perf_counter()
                status, body = await api(sock, "POST", f"/v1.41/commit?container={cid}")
                took = time.perf_counter() - t0
                if status != 201:
                    raise SystemExit(f"{label}: commit failed: {status} {body}")
                results[label].append(took)
                await api(sock, "DELETE", f"/v1.41/images/{body['Id']}")
                for name, cmd in floors.items():
                    floor_results[label][name].append(await asyncio.to_thread(floor, upper, cmd))
        extra: dict[str, object] = {"mib": args.mib, "floors": floor_results}
        report(f"commit{args.mib}", "s", results, extra=extra)
        for label in engines:
            med = statistics.median(results[label])
            for name, values in floor_results[label].items():
                f = statistics.median(values)
                print(f"commit{args.mib} {label:10s} / tar|{name}: {med:.3f} s / {f:.3f} s = {med / f:.2f} x")
    finally:
        for label, (cid, _) in containers.items():
            await api(engines[label], "DELETE", f"/v1.41/containers/{cid}?force=1")


if __name__ == "__main__":
    asyncio.run(main())
