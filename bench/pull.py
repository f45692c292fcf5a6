#!/usr/bin/env python3
"""Cold-pull time through the Docker API: asyncdock (--host) against another engine (--vs).

    python bench/pull.py --host /run/asyncdock.sock [--vs /var/run/docker.sock]
                         [--image REF] [--runs N]

Each run removes the image first (`DELETE /images/REF?force=1`; both engines then drop its
layers) and times `POST /images/create` until the progress stream ends. A run whose stream says
"Already exists" or "Image is up to date" was not cold and fails the benchmark. With two sockets
the runs interleave A B A B, so drift on the machine hits both alike. Without --image a
registry is started on a free loopback port and the project's bench image (8 layers, ~105 MiB,
tests/support/imagebuild.py) is pushed to it; loopback registries are insecure by default for
Docker and asyncdock alike.

Prints median and p90 per engine and the per-pair ratio; writes everything to
bench/results/pull-<UTC time>.json.

`--floor DIR` also measures the floor the pull target is stated against (issue 7): each layer
downloaded alone (into memory) and then unpacked alone by asyncdock's own unpacker into a fresh
directory under DIR (put it on the data root's file system), three times. It reports the slowest
layer's download+unpack and the total unpack CPU time over the cores, and the floor
max(slowest layer, CPU / cores) with each engine's median over it.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


class BenchError(RuntimeError):
    pass


def split_ref(ref: str) -> tuple[str, str]:
    """fromImage and tag, as the docker CLI sends them."""
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:
        return ref, "latest"
    return name, tag


class Engine:
    def __init__(self, label: str, socket: str) -> None:
        self.label = label
        self.socket = socket
        self.session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=socket),
                                             timeout=aiohttp.ClientTimeout(total=None))
        self.version = ""

    async def close(self) -> None:
        await self.session.close()

    async def info(self) -> None:
        async with self.session.get("http://engine/version") as r:
            v = await r.json()
        self.version = f"{v.get('Platform', {}).get('Name') or 'engine'} {v.get('Version', '')} (API {v.get('ApiVersion')})"

    async def remove(self, ref: str) -> None:
        async with self.session.delete(f"http://engine/v1.41/images/{ref}?force=1") as r:
            body = await r.read()
            if r.status not in (200, 404):
                raise BenchError(f"{self.label}: rmi {ref}: {r.status} {body[:300]!r}")
        async with self.session.get("http://engine/v1.41/images/json") as r:
            for img in await r.json():
                if ref in (img.get("RepoTags") or []):
                    raise BenchError(f"{self.label}: {ref} is still present after rmi")

    async def pull(self, ref: str) -> tuple[float, int]:
        """Seconds for one cold pull, and how many progress messages it streamed."""
        name, tag = split_ref(ref)
        url = f"http://engine/v1.41/images/create?fromImage={quote(name, safe='')}&tag={quote(tag, safe='')}"
        count = 0
        last: dict[str, Any] = {}
        start = time.perf_counter()
        async with self.session.post(url, headers={"X-Registry-Auth": "e30="}) as r:
            if r.status != 200:
                raise BenchError(f"{self.label}: pull {ref}: {r.status} {(await r.read())[:300]!r}")
            buf = b""
            async for chunk in r.content.iter_any():
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    msg = json.loads(line)
                    count += 1
                    if "error" in msg:
                        raise BenchError(f"{self.label}: pull {ref}: {msg['error']}")
                    if msg.get("status") == "Already exists":
                        raise BenchError(f"{self.label}: layer {msg.get('id')} already existed: not a cold pull")
                    last = msg
        elapsed = time.perf_counter() - start
        if not str(last.get("status", "")).startswith("Status: Downloaded newer image"):
            raise BenchError(f"{self.label}: pull {ref} did not download anything (last: {last})")
        return elapsed, count


def quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@contextlib.contextmanager
def bench_registry() -> Iterator[str]:
    """A registry with the bench image; yields its reference."""
    sys.path.insert(0, str(ROOT))
    from tests.support import imagebuild
    from tests.support.registry import Registry

    image = imagebuild.build("bench")
    with Registry(name="bench-registry") as reg:
        imagebuild.push_image(image, reg.host)
        yield reg.ref("bench")


async def run(args: argparse.Namespace, ref: str) -> dict[str, Any]:
    engines = [Engine("A", args.host)]
    if args.vs:
        engines.append(Engine("B", args.vs))
    try:
        for e in engines:
            await e.info()
            print(f"{e.label}: {e.socket}: {e.version}")
        for e in engines:  # warm-up: the registry's caches, the engines' first-use costs
            await e.remove(ref)
            await e.pull(ref)
        samples: dict[str, list[float]] = {e.label: [] for e in engines}
        for i in range(args.runs):
            for e in engines:
                await e.remove(ref)
                seconds, messages = await e.pull(ref)
                samples[e.label].append(seconds)
                print(f"run {i + 1}/{args.runs} {e.label}: {seconds:.3f}s ({messages} progress messages)")
        for e in engines:
            if not args.keep:
                await e.remove(ref)
        summary: dict[str, Any] = {}
        for e in engines:
            xs = samples[e.label]
            summary[e.label] = {"socket": e.socket, "engine": e.version, "samples_s": xs,
                                "median_s": statistics.median(xs), "p90_s": quantile(xs, 0.9)}
            print(f"{e.label}: median {summary[e.label]['median_s']:.3f}s  p90 {summary[e.label]['p90_s']:.3f}s")
        if len(engines) == 2:
            ratios = [a / b for a, b in zip(samples["A"], samples["B"])]
            summary["ratio_A_over_B"] = {"per_pair": ratios, "median": statistics.median(ratios),
                                         "min": min(ratios), "max": max(ratios)}
            print("A/B per pair: " + " ".join(f"{r:.2f}" for r in ratios) +
                  f"  (median {statistics.median(ratios):.2f}: below 1 means A is faster)")
        return summary
    finally:
        for e in engines:
            await e.close()


MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"])


def _get(url: str, accept: str | None = None) -> bytes:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310 - a loopback registry
        return r.read()


def _layers(ref: str) -> tuple[str, list[dict[str, Any]]]:
    """The registry's base URL and the amd64/linux manifest's layer descriptors of `ref`
    (host[:port]/repo:tag, plain http: the bench's loopback registry)."""
    name, tag = split_ref(ref)
    host, _, repo = name.partition("/")
    if "/" not in repo and "." not in host and ":" not in host:
        raise BenchError(f"--floor needs a registry host in the image reference, got {ref}")
    base = f"http://{host}/v2/{repo}"
    doc = json.loads(_get(f"{base}/manifests/{tag}", MANIFEST_ACCEPT))
    if "manifests" in doc:
        pick = next(m for m in doc["manifests"] if m.get("platform", {}).get("architecture") == "amd64"
                    and m.get("platform", {}).get("os") == "linux")
        doc = json.loads(_get(f"{base}/manifests/{pick['digest']}", MANIFEST_ACCEPT))
    return base, doc["layers"]


def measure_floor(ref: str, parent: Path, repeats: int = 3) -> dict[str, Any]:
    """Per layer, alone: download time, unpack wall and CPU time (asyncdock's unpacker, one
    thread, as the daemon runs it); medians over `repeats`."""
    sys.path.insert(0, str(ROOT))
    from asyncdock.snapshots.unpack import apply_layer
    from asyncdock.util.fsflags import mark_topdir

    base, layers = _layers(ref)
    top = Path(tempfile.mkdtemp(prefix="pull-floor-", dir=parent))
    mark_topdir(top)  # as the snapshotter does: fresh block groups, not the ones just emptied
    per: list[dict[str, Any]] = []
    try:
        for desc in layers:
            dl: list[float] = []
            wall: list[float] = []
            cpu: list[float] = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                blob = _get(f"{base}/blobs/{desc['digest']}")
                dl.append(time.perf_counter() - t0)
                dest = top / uuid.uuid4().hex
                dest.mkdir()
                c0, t1 = time.thread_time(), time.perf_counter()
                apply_layer(io.BytesIO(blob), dest, whiteouts="overlay", media_type=desc.get("mediaType", ""))
                wall.append(time.perf_counter() - t1)
                cpu.append(time.thread_time() - c0)
            per.append({"digest": desc["digest"], "size": desc["size"], "download_s": statistics.median(dl),
                        "unpack_s": statistics.median(wall), "unpack_cpu_s": statistics.median(cpu)})
    finally:
        shutil.rmtree(top, ignore_errors=True)
    cores = os.cpu_count() or 1
    slowest = max(per, key=lambda x: x["download_s"] + x["unpack_s"])
    cpu_total = sum(x["unpack_cpu_s"] for x in per)
    floor = max(slowest["download_s"] + slowest["unpack_s"], cpu_total / cores)
    return {"layers": per, "cores": cores, "slowest_layer_s": slowest["download_s"] + slowest["unpack_s"],
            "slowest_layer": slowest["digest"], "unpack_cpu_total_s": cpu_total, "floor_s": floor}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", required=True, help="Unix socket of the engine under test (A)")
    p.add_argument("--vs", help="Unix socket of the engine to compare with (B)")
    p.add_argument("--image", help="image to pull (default: start a registry with the bench image)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--keep", action="store_true", help="leave the image pulled at the end")
    p.add_argument("--floor", metavar="DIR", type=Path,
                   help="also measure the floor (each layer downloaded and unpacked alone) under DIR")
    args = p.parse_args()
    if args.runs < 1:
        p.error("--runs must be at least 1")
    with contextlib.ExitStack() as stack:
        ref = args.image or stack.enter_context(bench_registry())
        print(f"image: {ref}")
        try:
            summary = asyncio.run(run(args, ref))
            if args.floor is not None:
                fl = measure_floor(ref, args.floor)
                summary["floor"] = fl
                for x in fl["layers"]:
                    print(f"layer {x['digest'][7:19]} {x['size'] / 1e6:6.2f} MB: download {x['download_s']:.3f}s, "
                          f"unpack {x['unpack_s']:.3f}s (cpu {x['unpack_cpu_s']:.3f}s)")
                print(f"floor: max(slowest layer {fl['slowest_layer_s']:.3f}s, unpack cpu {fl['unpack_cpu_total_s']:.3f}s"
                      f" / {fl['cores']} cores) = {fl['floor_s']:.3f}s")
                for label, res in summary.items():
                    if isinstance(res, dict) and "median_s" in res:
                        print(f"{label}: median / floor = {res['median_s'] / fl['floor_s']:.2f}")
        except BenchError as e:
            print(f"bench/pull.py: {e}", file=sys.stderr)
            return 1
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = RESULTS / f"pull-{stamp}.json"
    out.write_text(json.dumps({"bench": "pull", "image": ref, "runs": args.runs, "time": stamp,
                               "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                                           "kernel": platform.release()},
                               "results": summary}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
