#!/usr/bin/env python3
"""Push time through the Docker API: asyncdock (--host) against another engine (--vs).

    python bench/push.py --host /run/asyncdock.sock [--vs /tmp/dockerd/docker.sock] [--runs N]

Starts a loopback registry holding the project's bench image (8 layers, ~105 MiB,
tests/support/imagebuild.py), which each engine pulls once. Each run starts an empty registry
(engines remember where they pushed a layer and would mount it from there), tags the image into
it and times `POST /images/{name}/push` until the progress stream ends, so every layer is really
uploaded: a run whose stream says "Layer already exists" or "Mounted from" fails the benchmark. With two
sockets the runs interleave A B A B. Prints median and p90 per engine and the per-pair ratio;
writes everything to bench/results/push-<UTC time>.json.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import statistics
import sys
import time
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

    async def _stream(self, what: str, url: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        async with self.session.post(url, headers={"X-Registry-Auth": "e30="}) as r:
            if r.status != 200:
                raise BenchError(f"{self.label}: {what}: {r.status} {(await r.read())[:300]!r}")
            buf = b""
            async for chunk in r.content.iter_any():
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.strip():
                        msg = json.loads(line)
                        if "error" in msg or "errorDetail" in msg:
                            raise BenchError(f"{self.label}: {what}: {msg.get('error') or msg['errorDetail']}")
                        out.append(msg)
        return out

    async def pull(self, ref: str) -> None:
        name, _, tag = ref.rpartition(":")
        await self._stream(f"pull {ref}", f"http://engine/v1.41/images/create?fromImage={quote(name, safe='')}"
                                          f"&tag={quote(tag, safe='')}")

    async def tag(self, src: str, repo: str, tag: str) -> None:
        async with self.session.post(f"http://engine/v1.41/images/{src}/tag?repo={quote(repo, safe='')}&tag={tag}") as r:
            if r.status != 201:
                raise BenchError(f"{self.label}: tag: {r.status} {(await r.read())[:300]!r}")

    async def untag(self, ref: str) -> None:
        async with self.session.delete(f"http://engine/v1.41/images/{ref}") as r:
            await r.read()

    async def push(self, repo: str, tag: str) -> tuple[float, int]:
        """Seconds for one push of fresh layers, and how many progress messages it streamed."""
        start = time.perf_counter()
        msgs = await self._stream(f"push {repo}:{tag}", f"http://engine/v1.41/images/{repo}/push?tag={tag}")
        elapsed = time.perf_counter() - start
        for m in msgs:
            st = str(m.get("status", ""))
            if st == "Layer already exists" or st.startswith("Mounted from"):
                raise BenchError(f"{self.label}: layer {m.get('id')}: {st}: not a cold push")
        if not any("aux" in m for m in msgs):
            raise BenchError(f"{self.label}: push {repo}:{tag} ended without a digest (last: {msgs[-1:]})")
        return elapsed, len(msgs)


def quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@contextlib.contextmanager
def source_registry() -> Iterator[str]:
    """The bench image's reference in a registry started for the run."""
    sys.path.insert(0, str(ROOT))
    from tests.support import imagebuild
    from tests.support.registry import Registry

    image = imagebuild.build("bench")
    with Registry(name="bench-source") as src:
        imagebuild.push_image(image, src.host)
        yield src.ref("bench")


@contextlib.contextmanager
def empty_registry() -> Iterator[str]:
    from tests.support.registry import Registry

    with Registry(name="bench-target") as dst:
        yield dst.host


async def run(args: argparse.Namespace, ref: str) -> dict[str, Any]:
    engines = [Engine("A", args.host)]
    if args.vs:
        engines.append(Engine("B", args.vs))
    try:
        for e in engines:
            await e.info()
            print(f"{e.label}: {e.socket}: {e.version}")
            await e.pull(ref)
        batch = uuid.uuid4().hex[:8]

        async def once(e: Engine, n: str) -> tuple[float, int]:
            with empty_registry() as target:
                repo = f"{target}/bench-{batch}/{e.label.lower()}{n}"
                await e.tag(ref, repo, "1")
                try:
                    return await e.push(repo, "1")
                finally:
                    await e.untag(f"{repo}:1")

        for e in engines:  # warm-up: the registries' and the engines' first-use costs
            await once(e, "warm")
        samples: dict[str, list[float]] = {e.label: [] for e in engines}
        for i in range(args.runs):
            for e in engines:
                seconds, messages = await once(e, str(i))
                samples[e.label].append(seconds)
                print(f"run {i + 1}/{args.runs} {e.label}: {seconds:.3f}s ({messages} progress messages)")
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", required=True, help="Unix socket of the engine under test (A)")
    p.add_argument("--vs", help="Unix socket of the engine to compare with (B)")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    if args.runs < 1:
        p.error("--runs must be at least 1")
    with source_registry() as ref:
        print(f"image: {ref}")
        try:
            summary = asyncio.run(run(args, ref))
        except BenchError as e:
            print(f"bench/push.py: {e}", file=sys.stderr)
            return 1
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = RESULTS / f"push-{stamp}.json"
    out.write_text(json.dumps({"bench": "push", "image": ref, "runs": args.runs, "time": stamp,
                               "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                                           "kernel": platform.release()},
                               "results": summary}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
