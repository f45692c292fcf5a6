"""GET /events: replay from the durable journal (since/until, or asyncdock's cursor), then the
live stream, with Docker's filters (moby daemon/events/filter.go).

Docker semantics: `since`/`until` are Unix seconds with an optional fraction; with either one the
stored events in [since, until] are sent first; `until` in the past ends the body after them, in
the future ends it at `until`. A plain Docker reader that falls behind is disconnected (Docker
drops it).

asyncdock's extensions (Docker clients never see them unless they ask):
* every event carries `x-asyncdock-seq` ("EPOCH-COUNTER");
* `x-asyncdock-after=<seq>` replays the journal strictly after that event, then goes live;
  such a reader that falls behind gets one `{"Type":"x-asyncdock-gap",...}` record whose
  `x-asyncdock-seq` is the last event it was sent, and the stream ends, so it reconnects with
  that cursor and catches up from the journal. The same record (Action "trimmed") opens the
  stream when the cursor is older than what the journal still holds;
* filter `type=x-asyncdock-progress` adds live pull progress (`LayerProgress` from the bus) as
  `{"Type":"x-asyncdock-progress","Action":"progress","Actor":{"ID":<ref>},"progress":{...}}`.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

from ...base.errors import InvalidParameter
from ...events import Event, LayerProgress, SubscriberLagged
from ...events.journal import format_seq, parse_seq
from ...events.models import Actor, without_legacy
from ...base.filters import match_label, parse_filters
from .. import shapes
from ..http import Request, Router

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)
_FILTERS = ("type", "event", "container", "image", "label", "network", "volume", "daemon", "scope",
            "plugin", "node", "service", "secret", "config")
PROGRESS_TYPE = "x-asyncdock-progress"
GAP_TYPE = "x-asyncdock-gap"
_FUZZY_ACTIONS = ("health_status", "exec_create", "exec_start")


def _parse_time(value: str | None) -> int | None:
    """Unix seconds with an optional fraction, as the daemon takes them (clients convert dates
    and durations), to nanoseconds."""
    if value is None or value == "":
        return None
    secs, _, frac = value.partition(".")
    try:
        ns = int(frac) * 10 ** (9 - len(frac)) if frac else 0
        return int(secs) * 1_000_000_000 + ns
    except ValueError:
        raise InvalidParameter(f"invalid timestamp {value!r}") from None


def _strip_tag(image: str) -> str:
    from ...registry.reference import parse_normalized

    try:
        return parse_normalized(image).familiar_name
    except Exception:
        return image


def make_matcher(filters: dict[str, list[str]]) -> Any:
    """moby's Filter.Include: ExactMatch for type/event/scope/image, FuzzyMatch (value or prefix
    of the ID or the name attribute) for container/network/volume/daemon, MatchKVList for labels."""
    types = set(filters.get("type", []))
    actions = set(filters.get("event", []))
    fuzzy_actions = any(a in _FUZZY_ACTIONS for a in actions)
    scopes = set(filters.get("scope", []))
    images = set(filters.get("image", []))
    labels = filters.get("label", [])
    fuzzy = {k: filters[k] for k in ("container", "network", "volume", "daemon", "plugin") if filters.get(k)}

    def fuzzy_match(values: list[str], source: str) -> bool:
        return any(source == v or source.startswith(v) for v in values)

    def matches(ev: Event) -> bool:
        if actions:
            if fuzzy_actions:
                if not any(ev.action.startswith(a) for a in actions):
                    return False
            elif ev.action not in actions:
                return False
        if types and ev.type not in types:
            return False
        if scopes and ev.scope not in scopes:
            return False
        attrs = ev.actor.attributes
        for kind, values in fuzzy.items():
            # A filter on one kind excludes events of other kinds whose ID/name do not match it.
            if not (fuzzy_match(values, ev.actor.id) or fuzzy_match(values, attrs.get("name", ""))):
                return False
        if images:
            name = attrs.get("name" if ev.type == "image" else "image", "")
            cands = {ev.actor.id, name}
            if not (cands & images) and not ({_strip_tag(c) for c in cands if c} & images):
                return False
        if labels and not match_label(attrs, labels):
            return False
        return True

    return matches


# What a reader may ask for in Accept (moby's jsonTypes, in its order of preference on a tie).
_STREAM_TYPES = ("application/jsonl", "application/x-ndjson", "application/json-seq")


def negotiate(accept: str, default: str) -> str:
    """moby's MatchAcceptStrict: the best type the Accept header names exactly (no wildcards,
    q=0 refused), else `default`."""
    best, best_q = "", -1.0
    specs: list[tuple[str, float]] = []
    for part in accept.split(","):
        value, *params = [p.strip() for p in part.split(";")]
        q = 1.0
        for param in params:
            k, _, v = param.partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        specs.append((value.lower(), q))
    for offer in _STREAM_TYPES:
        for value, q in specs:
            if q > 0 and value == offer and q > best_q:
                best, best_q = offer, q
    return best or default


def _gap(action: str, cursor: str, reason: str) -> bytes:
    now = time.time_ns()
    ev = Event(type=GAP_TYPE, action=action, actor=Actor("", {"reason": reason}), scope="local",
               time=now // 1_000_000_000, time_nano=now, x_seq=cursor)
    return _encoder.encode(ev) + b"\n"


def _progress(p: LayerProgress) -> bytes:
    now = time.time_ns()
    return _encoder.encode({"Type": PROGRESS_TYPE, "Action": "progress",
                            "Actor": {"ID": p.ref, "Attributes": {}}, "scope": "local",
                            "time": now // 1_000_000_000, "timeNano": now, "progress": p.message}) + b"\n"


async def events(req: Request) -> Any:
    bus = req.engine.bus
    q = req.query
    since = _parse_time(q.get("since"))
    until = _parse_time(q.get("until"))
    if since is not None and until is not None and until < since:
        raise InvalidParameter(f"`since` time ({q.get('since')}) cannot be after `until` time ({q.get('until')})")
    after = None
    if q.get("x-asyncdock-after"):
        try:
            after = parse_seq(q["x-asyncdock-after"])
        except ValueError as e:
            raise InvalidParameter(str(e)) from None
    filters = parse_filters(q.get("filters"), _FILTERS)
    progress = PROGRESS_TYPE in filters.get("type", [])
    if progress:
        filters["type"] = [t for t in filters["type"] if t != PROGRESS_TYPE]
        docker_events = bool(filters["type"])
        if not filters["type"]:
            del filters["type"]
    else:
        docker_events = True
    matches = make_matcher(filters)
    cursor_mode = after is not None
    now = time.time_ns()
    only_past = until is not None and until <= now
    task = asyncio.current_task()
    lagged = False

    def on_lag() -> None:
        nonlocal lagged
        if not lagged and task is not None:
            lagged = True
            task.cancel()

    def wanted(m: Any) -> bool:
        if isinstance(m, Event):
            return docker_events and matches(m)
        return progress and isinstance(m, LayerProgress)

    # The stream's version rules are rows of shapes.CHANGES: the default type, the legacy keys.
    shape = shapes.for_version(shapes.EVENT_STREAM, {"ContentType": "application/jsonl"}, req.api_version)
    content_type = negotiate(req.headers.get("accept", ""), shape["ContentType"])
    head = b"\x1e" if content_type == "application/json-seq" else b""  # RFC 7464's record separator
    legacy = shapes.present(shapes.EVENT, "status", req.api_version)

    def record(data: bytes) -> bytes:
        return head + data + b"\n" if head else data + b"\n"

    sub = None if only_past else bus.subscribe(wanted, on_lag=on_lag)
    stream = await req.stream(content_type=content_type)
    high = bus.seq  # live events numbered after this were not in the replay
    sent = after if after is not None else (bus.epoch, 0)
    try:
        try:
            if docker_events and (cursor_mode or since is not None or until is not None):
                j = bus.journal
                if j is None:
                    for env in bus.history():
                        ev = env.message
                        if ((since is not None and ev.time_nano < since) or (until is not None and ev.time_nano > until)
                                or (after is not None and (bus.epoch, env.seq) <= after) or not matches(ev)):
                            continue
                        sent = (bus.epoch, env.seq)
                        await stream.write(record(env.raw if legacy else env.modern))
                else:
                    j.flush_now()
                    oldest = j.oldest()
                    if after is not None and oldest is not None and oldest[1] > 1 and after < (oldest[0], oldest[1] - 1):
                        await stream.write(head + _gap("trimmed", format_seq(after),
                                                f"the journal no longer holds events after {format_seq(after)}; "
                                                f"oldest is {format_seq(oldest)}"))
                    batches = j.read(after=after, since=since, upto=(bus.epoch, high))
                    while True:
                        batch = await asyncio.to_thread(next, batches, None)
                        if batch is None:
                            break
                        out = bytearray()
                        for seq, t, payload in batch:
                            if until is not None and t > until:
                                continue
                            if not matches(_decoder.decode(payload)):
                                continue
                            out += record(payload if legacy else without_legacy(payload))
                            sent = seq
                        if out:
                            await stream.write(bytes(out))
            if sub is None:
                return stream
            timeout = None if until is None else (until - now) / 1e9
            try:
                async with asyncio.timeout(timeout):
                    while True:
                        env = await sub.get()
                        m = env.message
                        if isinstance(m, Event):
                            if env.seq <= high:
                                continue
                            # Set first: a cancel during the drain leaves this chunk sent.
                            sent = (bus.epoch, env.seq)
                            await stream.write(record(env.raw if legacy else env.modern))
                        else:
                            await stream.write(head + _progress(m))
            except TimeoutError:
                pass
            return stream
        except SubscriberLagged:
            pass
        except asyncio.CancelledError:
            if not lagged:
                raise
            if task is not None:
                task.uncancel()
        # Fell behind. Never block on a reader that is not reading.
        if cursor_mode:
            stream.write_nowait(head + _gap("lagged", format_seq(sent),
                                     f"reader fell behind; resume with x-asyncdock-after={format_seq(sent)}"))
            stream.close()
        else:
            stream.abort()  # Docker drops readers that fall behind
        return stream
    finally:
        if sub is not None:
            sub.close()


def register(router: Router) -> None:
    router.add("GET", "/events", events)
