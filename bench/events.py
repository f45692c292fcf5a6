"""Median publish-to-client latency of `start` events.

For each round: create a container, POST start, and note when the start response arrived and when
the `start` event for that container arrived on an /events stream opened beforehand. Prints the
median and p90 of (event arrival - start response) in ms (negative: the event came first) and
writes bench/results/events-<label>.json.

    bench/events.py --host /run/asyncdock.sock [--vs /var/run/docker.sock] [--rounds 30] [--image busybox]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from asyncdock.client import Client


async def measure(sock: str, rounds: int, image: str) -> dict[str, object]:
    client = Client(f"unix://{sock}")
    arrivals: dict[str, float] = {}
    got = asyncio.Event()

    async def watch() -> None:
        async for ev in client.events(filters={"type": ["container"], "event": ["start"]}):
            arrivals[ev.actor.id] = time.perf_counter()
            got.set()

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.2)  # the stream is open (its head came back at once)
    deltas = []
    for _ in range(rounds):
        c = await client.containers.create(image, ["true"])
        await c.start()
        t_resp = time.perf_counter()
        while c.id not in arrivals:
            got.clear()
            await asyncio.wait_for(got.wait(), 10)
        deltas.append((arrivals[c.id] - t_resp) * 1000)
        await c.wait()
        await c.remove(force=True)
    watcher.cancel()
    v = await client.version()
    return {"socket": sock, "server": f"{v.platform.get('Name', '')} {v.version}", "rounds": rounds,
            "median_ms": round(statistics.median(deltas), 3),
            "p90_ms": round(sorted(deltas)[int(len(deltas) * 0.9) - 1], 3), "samples_ms": [round(d, 3) for d in deltas]}


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--vs")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--image", default="busybox")
    a = p.parse_args()
    results = [await measure(a.host, a.rounds, a.image)]
    if a.vs:
        results.append(await measure(a.vs, a.rounds, a.image))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    for r in results:
        print(f"{r['server']} ({r['socket']}): start event after start response: median {r['median_ms']} ms, "
              f"p90 {r['p90_ms']} ms over {r['rounds']} rounds")
    (out / "events.json").write_text(json.dumps({"time": time.time(), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
