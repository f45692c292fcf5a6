#!/usr/bin/env python3
"""`docker save` and `docker load` of the 8-layer bench image through the Docker API: asyncdock
(--host) against another engine (--vs).

    python bench/save_load.py --host /run/asyncdock.sock [--vs /tmp/dockerd/docker.sock]
                              [--image REF] [--runs N]

Each engine first pulls the image (without --image a registry is started on a free loopback port
and the project's bench image, 8 layers, ~105 MiB, is pushed to it). A save run times
`GET /images/REF/get` until the last byte is written to a file (what `docker save -o` does); a
load run removes the image (`DELETE /images/REF?force=1`, which takes its layers too) and times
`POST /images/load?quiet=1` of that engine's own saved archive, streamed from the file, until
the answer ends with "Loaded image". Every save runs first (of the image as pulled), then every
load; each interleaves A B A B. Prints median and p90 per engine
and the per-pair ratio for each; writes bench/results/save-<time>.json and load-<time>.json.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import report, sockets  # noqa: E402
from bench.pull import BenchError, bench_registry, split_ref  # noqa: E402


class Engine:
    def __init__(self, label: str, socket: str) -> None:
        self.label = label
        self.session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=socket),
                                             timeout=aiohttp.ClientTimeout(total=None))

    async def close(self) -> None:
        await self.session.close()

    async def pull(self, ref: str) -> None:
        name, tag = split_ref(ref)
        url = f"http://engine/v1.41/images/create?fromImage={quote(name, safe='')}&tag={quote(tag, safe='')}"
        async with self.session.post(url, headers={"X-Registry-Auth": "e30="}) as r:
            body = await r.read()
            if r.status != 200 or b'"error"' in body:
                raise BenchError(f"{self.label}: pull {ref}: {r.status} {body[-300:]!r}")

    async def save(self, ref: str, dest: Path) -> float:
        start = time.perf_counter()
        async with self.session.get(f"http://engine/v1.41/images/{quote(ref, safe='')}/get") as r:
            if r.status != 200:
                raise BenchError(f"{self.label}: save {ref}: {r.status} {(await r.read())[:300]!r}")
            with open(dest, "wb") as f:
                async for chunk in r.content.iter_chunked(1 << 20):
                    f.write(chunk)
        return time.perf_counter() - start

    async def remove(self, ref: str) -> None:
        async with self.session.delete(f"http://engine/v1.41/images/{quote(ref, safe='')}?force=1") as r:
            body = await r.read()
            if r.status not in (200, 404):
                raise BenchError(f"{self.label}: rmi {ref}: {r.status} {body[:300]!r}")

    async def load(self, ref: str, src: Path) -> float:
        await self.remove(ref)

        async def body() -> AsyncIterator[bytes]:
            with open(src, "rb") as f:
                while chunk := f.read(1 << 20):
                    yield chunk

        start = time.perf_counter()
        async with self.session.post("http://engine/v1.41/images/load?quiet=1", data=body(),
                                     headers={"Content-Type": "application/x-tar"}) as r:
            out = await r.read()
        elapsed = time.perf_counter() - start
        last = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        if r.status != 200 or not str(last.get("stream", "")).startswith("Loaded image"):
            raise BenchError(f"{self.label}: load: {r.status} {out[-300:]!r}")
        return elapsed


async def run(args: argparse.Namespace, ref: str) -> None:
    engines = {label: Engine(label, sock) for label, sock in sockets(args).items()}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-save-load-", dir=args.tmp) as tmp:
            files = {label: Path(tmp, f"{label}.tar") for label in engines}
            for e in engines.values():
                await e.pull(ref)
                await e.save(ref, files[e.label])  # warm-up, and the archive each one loads
                print(f"{e.label}: archive of {files[e.label].stat().st_size / 1e6:.1f} MB")
            saves: dict[str, list[float]] = {k: [] for k in engines}
            loads: dict[str, list[float]] = {k: [] for k in engines}
            scratch = Path(tmp, "run.tar")
            # Saves first, of the image as pulled (asyncdock then inflates its gzip blobs on
            # the way; a loaded image's blobs are stored uncompressed and go out as they are).
            for _ in range(args.runs):
                for label, e in engines.items():
                    saves[label].append(await e.save(ref, scratch))
                    scratch.unlink()
            for _ in range(args.runs):
                for label, e in engines.items():
                    loads[label].append(await e.load(ref, files[label]))
            report("save", "s", saves, extra={"image": ref})
            report("load", "s", loads, extra={"image": ref})
    finally:
        for e in engines.values():
            await e.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", required=True, help="asyncdock's socket path (or unix://PATH)")
    p.add_argument("--vs", help="a second engine's socket (Docker, Podman) measured in the same run")
    p.add_argument("--runs", type=int, default=5, help="interleaved repetitions per engine")
    p.add_argument("--image", help="image to use (default: start a registry with the bench image)")
    p.add_argument("--tmp", help="directory for the saved archives (default: the system's)")
    args = p.parse_args()
    with contextlib.ExitStack() as stack:
        ref = args.image or stack.enter_context(bench_registry())
        try:
            asyncio.run(run(args, ref))
        except BenchError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
