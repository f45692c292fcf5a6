"""Shared pieces of the benchmarks: a raw keep-alive HTTP/1.1 client on a Unix socket (aiohttp
adds more client overhead than the servers we measure), interleaved A/B runs, statistics and the
JSON results file. Figures live here, never in timed tests."""
from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


class Conn:
    """One keep-alive connection speaking just enough HTTP/1.1 for the Docker API."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, socket: str) -> Conn:
        r, w = await asyncio.open_unix_connection(socket, limit=1 << 22)
        return cls(r, w)

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: docker\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split()[1])
        length: int | None = None
        chunked = False
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            k, _, v = line.decode("latin-1").partition(":")
            k = k.strip().lower()
            if k == "content-length":
                length = int(v)
            elif k == "transfer-encoding" and "chunked" in v.lower():
                chunked = True
        if method == "HEAD" or status in (204, 304):
            return status, b""
        if chunked:
            out = bytearray()
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    return status, bytes(out)
                out += await self.reader.readexactly(size + 2)
                del out[-2:]
        return status, await self.reader.readexactly(length or 0)

    def close(self) -> None:
        self.writer.close()


async def api(socket: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """A one-shot request on its own connection; JSON body in and out."""
    c = await Conn.open(socket)
    try:
        raw = None if body is None else json.dumps(body).encode()
        status, data = await c.request(method, path, raw)
    finally:
        c.close()
    try:
        return status, json.loads(data) if data else None
    except ValueError:
        return status, data


def stats(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    p90 = s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]
    return {"median": statistics.median(s), "p90": p90, "min": s[0], "max": s[-1], "n": len(s)}


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", required=True, help="asyncdock's socket path (or unix://PATH)")
    p.add_argument("--vs", help="a second engine's socket (Docker, Podman) measured in the same run")
    p.add_argument("--runs", type=int, default=5, help="interleaved repetitions per engine")
    p.add_argument("--image", default="busybox", help="image to use (pulled first if missing)")
    return p


def sockets(args: argparse.Namespace) -> dict[str, str]:
    out = {"asyncdock": args.host.removeprefix("unix://")}
    if args.vs:
        out["other"] = args.vs.removeprefix("unix://")
    return out


async def ensure_image(socket: str, image: str) -> None:
    from urllib.parse import quote

    status, _ = await api(socket, "GET", f"/v1.41/images/{image}/json")
    if status == 200:
        return
    name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "latest")
    status, _ = await api(socket, "POST", f"/v1.41/images/create?fromImage={quote(name)}&tag={tag or 'latest'}")
    if status != 200:
        raise SystemExit(f"cannot pull {image} on {socket}")


async def interleave(engines: dict[str, str], runs: int,
                     one: Callable[[str, str], Awaitable[float]]) -> dict[str, list[float]]:
    """A B A B ...: drift on the shared machine hits both engines alike."""
    out: dict[str, list[float]] = {k: [] for k in engines}
    for _ in range(runs):
        for label, sock in engines.items():
            out[label].append(await one(label, sock))
    return out


def report(name: str, unit: str, results: dict[str, list[float]], *, higher_is_better: bool = False,
           extra: dict[str, Any] | None = None) -> dict[str, Any]:
    summary = {k: stats(v) for k, v in results.items()}
    for label, s in summary.items():
        print(f"{name} {label:10s} median {s['median']:.4g} {unit}  p90 {s['p90']:.4g}  "
              f"(min {s['min']:.4g}, max {s['max']:.4g}, n={s['n']})")
    ratios: list[float] = []
    if "other" in results:
        for a, b in zip(results["asyncdock"], results["other"]):
            ratios.append(a / b if b else float("inf"))
        r = statistics.median(ratios)
        better = r > 1 if higher_is_better else r < 1
        print(f"{name} ratio asyncdock/other per pair: median {r:.3f} "
              f"({'asyncdock better' if better else 'other better'})")
    doc = {"bench": name, "unit": unit, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": {"node": platform.node(), "cpus": __import__("os").cpu_count(), "kernel": platform.release()},
           "results": results, "summary": summary, "pair_ratios": ratios, **(extra or {})}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(doc, indent=2))
    print(f"written {path.relative_to(ROOT)}")
    return doc
