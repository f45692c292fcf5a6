"""GET /events through asyncdock's own HTTP server, in-process (a socketpair into the server
protocol, no daemon): replay and cursor semantics, filters, and what happens to readers that stop
reading while 10,000 events are published."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

import msgspec
import pytest

import asyncdock
from asyncdock.api.routes.events import make_matcher
from asyncdock.config import DaemonConfig
from asyncdock.api.server import App
from asyncdock.client import Client, InProcessTransport
from asyncdock.events import Actor, Event, EventBus


class _Engine(SimpleNamespace):
    """Just what /events needs: the bus (with its journal)."""


async def _setup(tmp: Path) -> tuple[EventBus, Client, App]:
    bus = EventBus()
    bus.open_journal(tmp / "events", fsync=False)
    app = App(_Engine(bus=bus, config=DaemonConfig()))
    return bus, Client(transport=InProcessTransport(app), version="1.41"), app


def test_cursor_replay_then_live_and_until(tmp_path: Path) -> None:
    async def go() -> None:
        bus, client, _ = await _setup(tmp_path)
        for i in range(5):
            bus.event("container", "create", f"id{i}", {"name": f"c{i}", "image": "busybox"})
        got = []
        agen = client.events(after="1-2")
        async for ev in agen:
            got.append(ev)
            if len(got) == 3:
                bus.event("container", "start", "idlive", {"name": "live"})
            if len(got) == 4:
                break
        await agen.aclose()
        assert [e.x_seq for e in got] == ["1-3", "1-4", "1-5", "1-6"]
        assert got[-1].actor.attributes["name"] == "live"
        # until in the past: the stored window at once, then the end of the body
        evs = [e async for e in client.events(since=0, until=time.time())]
        assert [e.actor.id for e in evs] == [f"id{i}" for i in range(5)] + ["idlive"]
        await bus.close_journal()
    asyncio.run(go())


def test_bad_parameters_are_400(tmp_path: Path) -> None:
    async def go() -> None:
        bus, client, _ = await _setup(tmp_path)
        for q in ({"since": "10", "until": "5"}, {"x-asyncdock-after": "x"}, {"filters": '{"bogus":["1"]}'}):
            with pytest.raises(asyncdock.APIError) as e:
                await client.call("GET", "/events", query=q)
            assert e.value.status == 400
        await bus.close_journal()
    asyncio.run(go())


def _ev(type_: str, action: str, id_: str, **attrs: str) -> Event:
    return Event(type=type_, action=action, actor=Actor(id_, attrs), scope="local")


@pytest.mark.parametrize(("filters", "expected"), [
    ({"type": ["container"]}, {"c1", "c2"}),
    ({"type": ["image", "daemon"]}, {"img", "dmn"}),
    ({"event": ["die"]}, {"c2"}),
    ({"event": ["exec_start"]}, {"c1"}),           # fuzzy for exec_*/health_status (moby #25798)
    ({"event": ["exec_start: ls"]}, {"c1"}),
    ({"container": ["web"]}, {"c1", "c2"}),         # name, by prefix, like moby's FuzzyMatch
    ({"container": ["c1"]}, {"c1"}),               # id prefix
    ({"image": ["busybox"]}, {"c1", "img"}),        # tag stripped, familiar name
    ({"image": ["docker.io/library/busybox:latest"]}, {"img"}),  # exact, as moby
    ({"label": ["tier"]}, {"c1", "c2"}),
    ({"label": ["tier=db"]}, {"c2"}),
    ({"network": ["bridge"]}, {"net"}),
    ({"volume": ["data"]}, {"data"}),
    ({"daemon": ["dmn"]}, {"dmn"}),
    ({"scope": ["swarm"]}, set()),
    ({"type": ["container"], "event": ["die"], "label": ["tier=db"]}, {"c2"}),
])
def test_filters(filters: dict[str, list[str]], expected: set[str]) -> None:
    evs = [
        _ev("container", "exec_start: ls", "c1", name="web-1", image="busybox:latest", tier="web"),
        _ev("container", "die", "c2", name="web-db", image="other", tier="db", exitCode="1"),
        _ev("image", "pull", "img", name="docker.io/library/busybox:latest"),
        _ev("network", "create", "net", name="bridge", type="bridge"),
        _ev("volume", "create", "data", driver="local"),
        _ev("daemon", "reload", "dmn", name="host"),
    ]
    match = make_matcher(filters)
    assert {e.actor.id for e in evs if match(e)} == expected


async def _raw_events(app: App, query: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await InProcessTransport(app).open()
    w.write(f"GET /v1.41/events?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")  # the head comes at once, before any event
    assert head.startswith(b"HTTP/1.1 200")
    w.transport.pause_reading()  # stuck: not a byte more leaves the kernel's socket buffer
    return r, w


async def _read_all(r: asyncio.StreamReader) -> bytes:
    out = b""
    try:
        while chunk := await r.read(1 << 20):
            out += chunk
    except ConnectionError:
        pass
    return out


def test_stuck_readers_10000_events(tmp_path: Path) -> None:
    async def go() -> None:
        bus, client, app = await _setup(tmp_path)
        plain_r, plain_w = await _raw_events(app, "")
        cursor_r, cursor_w = await _raw_events(app, "x-asyncdock-after=1-0")
        # A healthy reader, through the Python client, must get everything.
        seen: list[str] = []
        healthy_done = asyncio.Event()

        async def healthy() -> None:
            async for ev in client.events(after="1-0"):
                seen.append(ev.x_seq)
                if len(seen) == 10_000:
                    healthy_done.set()
                    return
        task = asyncio.create_task(healthy())
        await asyncio.sleep(0.05)
        # Publish 10,000 events in bursts of 100 while both raw readers read nothing.
        t0 = time.perf_counter()
        slowest = 0.0
        for b in range(100):
            s = time.perf_counter()
            for i in range(100):
                bus.event("container", "start", f"c{b * 100 + i}", {"name": "x"})
            slowest = max(slowest, time.perf_counter() - s)
            await asyncio.sleep(0)
        publish_time = time.perf_counter() - t0
        # The engine kept its pace: a burst of 100 never waited on anyone.
        assert slowest < 0.5, slowest  # generous: the suite runs beside other load on 2 cores
        await asyncio.wait_for(healthy_done.wait(), 30)
        await task
        assert seen == [f"1-{i}" for i in range(1, 10_001)]  # all, in order, once
        # The plain Docker reader was disconnected; what it had buffered is whole events.
        plain_w.transport.resume_reading()
        cursor_w.transport.resume_reading()
        plain = await asyncio.wait_for(_read_all(plain_r), 10)
        assert b"x-asyncdock-gap" not in plain
        # The cursor reader gets a gap record naming the last event it was sent, then the end.
        raw = await asyncio.wait_for(_read_all(cursor_r), 10)
        lines = [ln for ln in raw.split(b"\r\n") if ln.startswith(b"{")]
        gap = msgspec.json.decode(lines[-1], type=Event)
        assert gap.type == "x-asyncdock-gap" and gap.action == "lagged"
        last = msgspec.json.decode(lines[-2], type=Event)
        assert gap.x_seq == last.x_seq
        # ... and can resume from the journal strictly after it.
        rest = [e.x_seq async for e in client.events(after=gap.x_seq, until=time.time())]
        n = int(gap.x_seq.split("-")[1])
        assert rest == [f"1-{i}" for i in range(n + 1, 10_001)]
        print(f"published 10,000 events in {publish_time * 1000:.0f} ms with two stuck readers")
        await bus.close_journal()
    asyncio.run(go())
