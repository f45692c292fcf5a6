#!/usr/bin/env python3
"""Classic-builder build times through the real docker CLI (`DOCKER_BUILDKIT=0 docker build`):
asyncdock (--host) against another engine (--vs), interleaved A B A B.

    python bench/build.py --host /run/asyncdock.sock [--vs /var/run/docker.sock] [--runs N]

The Dockerfile has 6 steps: FROM, COPY of 2,000 small files, two RUN, ENV, CMD.
- cold: `--no-cache` build of a fresh context (the base image is present);
- cached: the same context built again right after, every step `Using cache`.
Each sample is the wall time of one CLI invocation (context upload included). Prints median and
p90 per engine and the per-pair ratio; writes bench/results/build-{cold,cached}-<time>.json.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncio  # noqa: E402

from common import ensure_image, parser, report, sockets  # noqa: E402

DOCKER = os.environ.get("DOCKER_CLI", shutil.which("docker") or "/usr/local/bin/docker")
FILES = 2000
DOCKERFILE = """\
FROM {image}
COPY files /files
RUN ls /files | wc -l > /count
RUN echo done > /done
ENV BENCH=1
CMD ["cat", "/count"]
"""


def make_context(root: Path, image: str) -> Path:
    (root / "files").mkdir(parents=True)
    for i in range(FILES):
        (root / "files" / f"f{i:04d}.txt").write_text(f"file {i}\n" * 4)
    (root / "Dockerfile").write_text(DOCKERFILE.format(image=image))
    return root


def docker_build(sock: str, ctx: Path, *args: str) -> float:
    env = {**os.environ, "DOCKER_HOST": f"unix://{sock}", "DOCKER_BUILDKIT": "0"}
    t0 = time.perf_counter()
    p = subprocess.run([DOCKER, "build", "-q", *args, str(ctx)], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"build failed on {sock}: {p.stderr.strip()}")
    return elapsed


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    a = p.parse_args()
    engines = sockets(a)
    for sock in engines.values():
        asyncio.run(ensure_image(sock, a.image))
    work = Path(tempfile.mkdtemp(prefix="bench-build-"))
    try:
        ctx = make_context(work / "ctx", a.image)
        for sock in engines.values():  # warm-up: each engine has built it once
            docker_build(sock, ctx)
        cold: dict[str, list[float]] = {k: [] for k in engines}
        cached: dict[str, list[float]] = {k: [] for k in engines}
        for _ in range(a.runs):
            for label, sock in engines.items():
                cold[label].append(docker_build(sock, ctx, "--no-cache") * 1000)
                cached[label].append(docker_build(sock, ctx) * 1000)
        report("build-cold", "ms", cold, extra={"files": FILES})
        report("build-cached", "ms", cached, extra={"files": FILES})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
