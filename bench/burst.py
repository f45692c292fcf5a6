#!/usr/bin/env python3
"""Bursts: N containers created and started concurrently, then killed and removed concurrently
(issue 7 row 4), through the raw API; plus, with --floor, N bare `crun/runc run` of the same
rootfs launched concurrently (the runtime's own ceiling on this machine).

    python bench/burst.py --host /run/asyncdock.sock [--vs ...] [--count 50] [--floor crun]
"""
from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import api, ensure_image, interleave, parser, report, sockets  # noqa: E402
from floor import bare_runs  # noqa: E402


async def burst(sock: str, image: str, n: int, network: str = "") -> tuple[float, float]:
    body_in: dict[str, object] = {"Image": image, "Cmd": ["sleep", "600"],
                                  "Labels": {"asyncdock.bench": "burst"}}
    if network:
        body_in["HostConfig"] = {"NetworkMode": network}

    async def create_start() -> str:
        status, body = await api(sock, "POST", "/v1.41/containers/create", body_in)
        if status != 201:
            raise SystemExit(f"create: {status} {body}")
        cid = body["Id"]
        status, body = await api(sock, "POST", f"/v1.41/containers/{cid}/start")
        if status != 204:
            raise SystemExit(f"start: {status} {body}")
        return cid

    t0 = time.perf_counter()
    ids = await asyncio.gather(*(create_start() for _ in range(n)))
    up = n / (time.perf_counter() - t0)

    async def kill_rm(cid: str) -> None:
        await api(sock, "POST", f"/v1.41/containers/{cid}/kill")
        status, body = await api(sock, "DELETE", f"/v1.41/containers/{cid}?force=1")
        if status != 204:
            raise SystemExit(f"remove: {status} {body}")

    t0 = time.perf_counter()
    await asyncio.gather(*(kill_rm(c) for c in ids))
    down = n / (time.perf_counter() - t0)
    return up, down


async def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=50)
    p.add_argument("--floor", choices=["crun", "runc"], help="also time N concurrent bare runtime runs")
    p.add_argument("--network", default="", help="NetworkMode for both engines (none compares like "
                   "with like with a Docker whose bridge is off; the bare runs have no network either)")
    args = p.parse_args()
    p.set_defaults(runs=3)
    engines = sockets(args)
    for sock in engines.values():
        await ensure_image(sock, args.image)
    downs: dict[str, list[float]] = {k: [] for k in engines}

    async def one(label: str, sock: str) -> float:
        up, down = await burst(sock, args.image, args.count, args.network)
        downs[label].append(down)
        return up

    ups = await interleave(engines, args.runs, one)
    extra = {}
    if args.floor:
        floor = [await bare_runs(args.floor, args.count, detach_sleep=True) for _ in range(args.runs)]
        extra["floor_runtime"] = args.floor
        extra["floor_rate"] = floor
        print(f"floor: {args.count} concurrent bare {args.floor} runs: median "
              f"{sorted(floor)[len(floor) // 2]:.1f}/s")
    suffix = f"-{args.network}" if args.network else ""
    extra["network"] = args.network or "default"
    report(f"burst{args.count}-create-start{suffix}", "containers/s", ups, higher_is_better=True,
           extra=extra)
    report(f"burst{args.count}-kill-remove{suffix}", "containers/s", downs, higher_is_better=True,
           extra={"network": extra["network"]})


if __name__ == "__main__":
    asyncio.run(main())
