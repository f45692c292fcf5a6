"""GET /events: history (since/until) then the live stream, with Docker's filters."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

from ...errors import InvalidParameter
from ...events import Event, SubscriberLagged
from ..filters import match_label, parse_filters
from ..http import Request, Router

_encoder = msgspec.json.Encoder()
_FILTERS = ("type", "event", "container", "image", "label", "network", "volume", "daemon", "scope",
            "plugin", "node", "service", "secret", "config")


def _parse_time(value: str | None) -> int | None:
    """Unix seconds with an optional fraction, as the daemon takes them (clients convert dates
    and durations), to nanoseconds."""
    if value is None or value == "":
        return None
    secs, _, frac = value.partition(".")
    try:
        return int(secs) * 1_000_000_000 + int((frac + "000000000")[:9] or 0)
    except ValueError:
        raise InvalidParameter(f"invalid timestamp {value!r}") from None


def make_matcher(filters: dict[str, list[str]]) -> Any:
    types = set(filters.get("type", []))
    actions = set(filters.get("event", []))
    containers = filters.get("container", [])
    images = filters.get("image", [])
    labels = filters.get("label", [])
    networks = set(filters.get("network", []))
    volumes = set(filters.get("volume", []))
    daemons = set(filters.get("daemon", []))
    scopes = set(filters.get("scope", []))

    def matches(ev: Event) -> bool:
        if types and ev.type not in types:
            return False
        if actions:
            base = ev.action.split(":", 1)[0]
            if ev.action not in actions and base not in actions:
                return False
        if scopes and ev.scope not in scopes:
            return False
        attrs = ev.actor.attributes
        if containers:
            if ev.type != "container":
                return False
            name = attrs.get("name", "")
            if not any(ev.actor.id.startswith(c) or c == name for c in containers):
                return False
        if images:
            image = attrs.get("image", "") if ev.type == "container" else ev.actor.id
            name = attrs.get("name", "")
            if not any(i in (image, name) or image.startswith(i + ":") or image.split(":")[0] == i
                       or ev.actor.id.startswith(i) for i in images):
                return False
        if labels and not match_label(attrs, labels):
            return False
        if networks and (ev.type != "network" or not ({ev.actor.id, attrs.get("name", "")} & networks)):
            return False
        if volumes and (ev.type != "volume" or ev.actor.id not in volumes):
            return False
        if daemons and (ev.type != "daemon" or not ({ev.actor.id, attrs.get("name", "")} & daemons)):
            return False
        return True

    return matches


async def events(req: Request) -> Any:
    bus = req.engine.bus
    since = _parse_time(req.query.get("since"))
    until = _parse_time(req.query.get("until"))
    matches = make_matcher(parse_filters(req.query.get("filters"), _FILTERS))
    now = time.time_ns()
    # Subscribe before reading history so nothing falls between the two.
    sub = bus.subscribe(lambda m: isinstance(m, Event) and matches(m))
    try:
        stream = await req.stream(content_type="application/json")
        last_seq = 0
        if since is not None:
            for env in bus.history():
                ev = env.message
                if ev.time_nano < since or (until is not None and ev.time_nano > until) or not matches(ev):
                    continue
                await stream.write(_encoder.encode(ev) + b"\n")
                last_seq = env.seq
        if until is not None and until <= now:
            return stream
        timeout = None if until is None else (until - now) / 1e9
        try:
            async with asyncio.timeout(timeout):
                while True:
                    env = await sub.get()
                    if env.seq <= last_seq:
                        continue
                    await stream.write(_encoder.encode(env.message) + b"\n")
        except TimeoutError:
            pass
        except SubscriberLagged:
            pass  # Docker drops readers that fall behind: end the stream
        return stream
    finally:
        sub.close()


def register(router: Router) -> None:
    router.add("GET", "/events", events)
