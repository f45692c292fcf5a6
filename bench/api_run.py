#!/usr/bin/env python3
"""The raw API run cycle (issue 7 row 2): create, wait (next-exit, registered first as the CLI
does), start, exit, delete — of `true`, through the Docker API, against a bare runtime run.

    python bench/api_run.py --host /run/asyncdock.sock [--vs ...] [--runs 20] [--floor crun]
"""
from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Conn, api, ensure_image, interleave, parser, report, sockets  # noqa: E402
from floor import single_runs  # noqa: E402


async def cycle(sock: str, image: str, network: str = "") -> float:
    t0 = time.perf_counter()
    body_in: dict[str, object] = {"Image": image, "Cmd": ["true"]}
    if network:
        body_in["HostConfig"] = {"NetworkMode": network}
    status, body = await api(sock, "POST", "/v1.41/containers/create", body_in)
    if status != 201:
        raise SystemExit(f"create: {status} {body}")
    cid = body["Id"]
    waiter = await Conn.open(sock)
    wait_task = asyncio.ensure_future(waiter.request("POST", f"/v1.41/containers/{cid}/wait?condition=next-exit"))
    await asyncio.sleep(0)
    status, body = await api(sock, "POST", f"/v1.41/containers/{cid}/start")
    if status != 204:
        raise SystemExit(f"start: {status} {body}")
    status, _ = await wait_task
    waiter.close()
    status, body = await api(sock, "DELETE", f"/v1.41/containers/{cid}")
    if status != 204:
        raise SystemExit(f"delete: {status} {body}")
    return (time.perf_counter() - t0) * 1000


async def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--floor", choices=["crun", "runc"])
    p.add_argument("--network", default="", help="NetworkMode for both engines (e.g. none: Docker here runs "
                                                  "with its bridge off, so `none` compares like with like)")
    p.set_defaults(runs=20)
    args = p.parse_args()
    engines = sockets(args)
    for sock in engines.values():
        await ensure_image(sock, args.image)
        await cycle(sock, args.image, args.network)  # warm-up
    results = await interleave(engines, args.runs, lambda label, sock: cycle(sock, args.image, args.network))
    extra = {}
    if args.floor:
        floor = [t * 1000 for t in await single_runs(args.floor, args.runs)]
        extra = {"floor_runtime": args.floor, "floor_ms": floor}
        f = statistics.median(floor)
        print(f"floor: bare {args.floor} run median {f:.1f} ms; asyncdock/floor = "
              f"{statistics.median(results['asyncdock']) / f:.2f}")
    report("api-run" + (f"-{args.network}" if args.network else ""), "ms", results,
           extra={**extra, "network": args.network or "default"})


if __name__ == "__main__":
    asyncio.run(main())
