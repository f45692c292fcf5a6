"""In-process publish/subscribe with bounded per-subscriber queues.

Publishing never blocks and never awaits: a subscriber whose queue is full is marked lagged and
its iterator raises `SubscriberLagged` once it has drained what it had (Docker drops slow event
readers; the journal lets a cursor-aware reader resume instead). `on_lag` lets the reader's owner
act at once (a reader stuck on a full socket would otherwise never look at its queue again).

With a journal attached (`open_journal`), each Docker event is numbered (epoch, counter), encoded
once, and appended to the journal's buffer before it is offered to anyone; the journal writes and
syncs in groups from its own task, so publish still never awaits and never touches the disk.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

from .models import Actor, Event, without_legacy

if TYPE_CHECKING:
    from .journal import Journal

T = TypeVar("T")

DEFAULT_QUEUE = 4096
_encoder = msgspec.json.Encoder()


class SubscriberLagged(Exception):
    """The subscriber fell more than its queue size behind; `last_seq` is the last one it got."""

    def __init__(self, last_seq: int) -> None:
        super().__init__(f"subscriber fell behind after sequence {last_seq}")
        self.last_seq = last_seq


class Envelope(msgspec.Struct, Generic[T]):
    seq: int
    message: T
    raw: bytes = b""  # a Docker event's JSON as sent and journaled (encoded once)
    modern: bytes = b""  # the same without the legacy status/id/from keys (API 1.52 and later)


class Subscription:
    def __init__(self, bus: EventBus, predicate: Callable[[Any], bool] | None, maxsize: int,
                 on_lag: Callable[[], None] | None = None) -> None:
        self._bus = bus
        self._on_lag = on_lag
        self._predicate = predicate
        self._queue: deque[Envelope[Any]] = deque()
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None
        self._lagged = False
        self._closed = False
        self.last_seq = 0

    def _offer(self, env: Envelope[Any]) -> None:
        if self._closed or self._lagged:
            return
        if self._predicate is not None and not self._predicate(env.message):
            return
        if len(self._queue) >= self._maxsize:
            self._lagged = True
            if self._on_lag is not None:
                self._on_lag()
        else:
            self._queue.append(env)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def get_nowait(self) -> Envelope[Any] | None:
        if self._queue:
            env = self._queue.popleft()
            self.last_seq = env.seq
            return env
        if self._lagged:
            raise SubscriberLagged(self.last_seq)
        return None

    async def get(self) -> Envelope[Any]:
        while True:
            env = self.get_nowait()
            if env is not None:
                return env
            if self._closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Envelope[Any]:
        return await self.get()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._bus._subs.discard(self)
            w = self._waiter
            if w is not None and not w.done():
                w.set_result(None)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Owned by the engine; no module-level state."""

    def __init__(self, history: int = 1024, clock: Callable[[], int] = time.time_ns) -> None:
        self._subs: set[Subscription] = set()
        self._seq = 0
        self._clock = clock
        # Recent Docker events for `since` until the durable journal replaces it.
        self._history: deque[Envelope[Event]] = deque(maxlen=history)
        self.epoch = 0
        self.journal: Journal | None = None

    # ---- the durable journal (engine start/close)
    def open_journal(self, root: Any, **options: Any) -> Journal:
        """Recover the journal under `root`, continue its numbering and start its flush task."""
        from .journal import Journal

        j = Journal(root, **options)
        self.epoch, self._seq = j.open()
        j.start()
        self.journal = j
        return j

    async def close_journal(self) -> None:
        j, self.journal = self.journal, None
        if j is not None:
            await j.close(self._seq)

    def cursor(self, seq: int | None = None) -> str:
        """The x-asyncdock-seq string of `seq` in this epoch (default: the latest)."""
        return f"{self.epoch}-{self._seq if seq is None else seq}"

    def publish(self, message: Any) -> Envelope[Any]:
        self._seq += 1
        if isinstance(message, Event):
            if not message.time_nano:
                now = self._clock()
                message.time_nano = now
                message.time = now // 1_000_000_000
            if not message.scope:
                message.scope = "local"
            message.x_seq = f"{self.epoch}-{self._seq}"
            raw = _encoder.encode(message)
            env = Envelope(self._seq, message, raw, without_legacy(raw) if message.status else raw)
            if self.journal is not None:
                self.journal.append((self.epoch, self._seq), message.time_nano, raw)
            self._history.append(env)
        else:
            env = Envelope(self._seq, message)
        for sub in tuple(self._subs):
            sub._offer(env)
        return env

    def event(self, type_: str, action: str, actor_id: str, attributes: dict[str, str] | None = None,
              *, legacy_from: str = "") -> Envelope[Event]:
        """Publish a Docker event. Container events carry the legacy status/id/from keys."""
        attrs = dict(attributes or {})
        ev = Event(type=type_, action=action, actor=Actor(actor_id, attrs))
        if type_ == "container" or type_ == "image":
            ev.status = action
            ev.id = actor_id
            ev.from_ = legacy_from
        return self.publish(ev)

    def subscribe(self, predicate: Callable[[Any], bool] | None = None, *, maxsize: int = DEFAULT_QUEUE,
                  on_lag: Callable[[], None] | None = None) -> Subscription:
        sub = Subscription(self, predicate, maxsize, on_lag)
        self._subs.add(sub)
        return sub

    def history(self) -> list[Envelope[Event]]:
        return list(self._history)

    @property
    def seq(self) -> int:
        return self._seq
