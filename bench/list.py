#!/usr/bin/env python3
"""`GET /containers/json?all=1` latency with N containers present (issue 7 row 5).

    python bench/list.py --host /run/asyncdock.sock [--vs /var/run/docker.sock] [--containers 100]

Creates N stopped containers labelled asyncdock.bench=list on each engine (removed at the end),
then times the list call on one keep-alive connection, interleaved.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Conn, api, ensure_image, interleave, parser, report, sockets  # noqa: E402

LABEL = {"asyncdock.bench": "list"}


async def populate(sock: str, image: str, n: int) -> list[str]:
    sem = asyncio.Semaphore(8)

    async def create() -> str:
        async with sem:
            status, body = await api(sock, "POST", "/v1.41/containers/create",
                                     {"Image": image, "Cmd": ["true"], "Labels": LABEL})
            if status != 201:
                raise SystemExit(f"create failed on {sock}: {status} {body}")
            return body["Id"]

    return list(await asyncio.gather(*(create() for _ in range(n))))


async def cleanup(sock: str, ids: list[str]) -> None:
    sem = asyncio.Semaphore(8)

    async def rm(cid: str) -> None:
        async with sem:
            await api(sock, "DELETE", f"/v1.41/containers/{cid}?force=1")

    await asyncio.gather(*(rm(c) for c in ids))


async def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--containers", type=int, default=100)
    p.add_argument("--calls", type=int, default=50, help="timed list calls per run")
    args = p.parse_args()
    engines = sockets(args)
    created: dict[str, list[str]] = {}
    try:
        for label, sock in engines.items():
            await ensure_image(sock, args.image)
            created[label] = await populate(sock, args.image, args.containers)

        async def one(label: str, sock: str) -> float:
            c = await Conn.open(sock)
            times = []
            for _ in range(args.calls):
                t0 = time.perf_counter()
                status, body = await c.request("GET", "/v1.41/containers/json?all=1")
                times.append(time.perf_counter() - t0)
                if status != 200 or len(json.loads(body)) < args.containers:
                    raise SystemExit(f"{label}: bad list answer")
            c.close()
            times.sort()
            return times[len(times) // 2] * 1000

        results = await interleave(engines, args.runs, one)
        report(f"list{args.containers}", "ms", results, extra={"containers": args.containers})
    finally:
        for label, ids in created.items():
            await cleanup(engines[label], ids)


if __name__ == "__main__":
    asyncio.run(main())
