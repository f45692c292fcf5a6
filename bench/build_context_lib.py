"""The build-context library alone (no daemon): a 2,000-file context, as the issue's 6-step
bench COPYs, through from_tar, source_checksum (cold and again) and copy_into a fresh
directory. Prints milliseconds per step (best of --rounds)."""
from __future__ import annotations

import argparse
import asyncio
import io
import os
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from asyncdock.build.context import BuildContext
from asyncdock.build.copy import copy_into, source_checksum
from asyncdock.containers.rootfs_fs import open_root


def make_tar(n: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("Dockerfile")
        body = b"FROM busybox\nCOPY . /app\n"
        ti.size = len(body)
        tf.addfile(ti, io.BytesIO(body))
        for d in range(n // 100):
            ti = tarfile.TarInfo(f"src/d{d:02}")
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(ti)
            for f in range(100):
                data = (f"file {d}/{f}\n" * 10).encode()
                ti = tarfile.TarInfo(f"src/d{d:02}/f{f:03}.txt")
                ti.size, ti.mode = len(data), 0o644
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 64 << 10):
        yield data[i:i + 64 << 10]


async def one_round(data: bytes, tmp: Path) -> dict[str, float]:
    t: dict[str, float] = {}

    async def timed(name: str, coro: object) -> None:
        t0 = time.perf_counter()
        await coro  # type: ignore[misc]
        t[name] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ctx = await BuildContext.from_tar(chunks(data), tmp / "work")
    t["from_tar (index)"] = time.perf_counter() - t0
    await timed("checksum (index)", source_checksum(ctx, ["src"]))
    await timed("checksum again", source_checksum(ctx, ["src"]))
    for name in ("indexed", "unpacked"):
        if name == "unpacked":
            await timed("materialize", ctx.amaterialize())
            await timed("checksum (disk)", source_checksum(ctx, ["src"]))
        rootfs = tmp / f"rootfs-{name}"
        rootfs.mkdir()
        fd = open_root(rootfs)
        await timed(f"copy_into ({name})", copy_into(ctx, ["src"], "/app/", fd))
        os.close(fd)
    await timed("close", ctx.close())
    return t


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where the work directories go (the data root, say)")
    args = ap.parse_args()
    data = make_tar(args.files)
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(dir=args.dir) as d:
            for k, v in (await one_round(data, Path(d))).items():
                best[k] = min(best.get(k, v), v)
    print(f"{args.files} files, {len(data) >> 10} KiB tar, best of {args.rounds}:")
    for k, v in best.items():
        print(f"  {k:20s} {v * 1000:7.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
