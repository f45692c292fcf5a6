#!/usr/bin/env python3
"""`GET /_ping` throughput over 32 keep-alive connections (issue 7 row 6).

    python bench/ping.py --host /run/asyncdock.sock [--vs /var/run/docker.sock] [--runs 5]

Each run sends --requests pings per connection; the figure is requests per second. The client
is a raw asyncio HTTP/1.1 loop (bench/common.py): on 2 cores it competes with the server for CPU,
as any client on this machine would, for both engines alike.
"""
from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Conn, interleave, parser, report, sockets  # noqa: E402


async def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--requests", type=int, default=500, help="per connection per run")
    args = p.parse_args()

    async def one(label: str, sock: str) -> float:
        conns = [await Conn.open(sock) for _ in range(args.connections)]

        async def worker(c: Conn) -> None:
            for _ in range(args.requests):
                status, body = await c.request("GET", "/_ping")
                if status != 200:
                    raise SystemExit(f"{label}: ping answered {status}")

        t0 = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker(c) for c in conns)), 120)
        dt = time.perf_counter() - t0
        for c in conns:
            c.close()
        return args.connections * args.requests / dt

    results = await interleave(sockets(args), args.runs, one)
    report("ping", "req/s", results, higher_is_better=True)


if __name__ == "__main__":
    asyncio.run(main())
