"""A client attached to a container's stdio (attach, and attach over a websocket): its share of
the container's output, the way to its stdin, the replay of its logs, the attach and detach
events. The wire side (hijack, stdcopy frames, websocket frames) is api/streams'."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

from ..logs.base import LogDriver, LogNotReadable, LogRecord, ReadOptions
from .models import ContainerRecord
from .stdio import OutputHub, StdinSide

if TYPE_CHECKING:
    from .supervisor import Supervisor


class Attachment:
    """One client's attachment, from its subscription (made before the client gets its answer,
    so that `docker run` attached first sees all of the output) to `close()`."""

    def __init__(self, mgr: Supervisor, rec: ContainerRecord, *, stream: bool) -> None:
        self._mgr = mgr
        self._rec = rec
        self._live = lv = mgr.live(rec)
        if lv.hub.closed and not rec.state.running:
            lv.hub = OutputHub()  # output of the next start (`docker start -a`)
        # (stream, bytes) of the container's output, None at its end; None without stream=1
        self.output: asyncio.Queue[tuple[int, bytes] | None] | None = lv.hub.subscribe() if stream else None

    def attached(self) -> None:
        self._mgr.publish(self._rec, "attach")

    def detached(self) -> None:
        self._mgr.publish(self._rec, "detach")

    def stdin(self) -> StdinSide | None:
        """The container's stdin, None when it has none (no OpenStdin)."""
        rec, lv = self._rec, self._live
        if not rec.config.open_stdin:
            return None

        def close_stdin() -> None:
            # Client closed its side: with StdinOnce (docker run -i), the container's stdin
            # closes too, so `cat` sees EOF and exits.
            writer = lv.stdin_w
            if rec.config.stdin_once and writer is not None:
                lv.stdin_w = None
                writer.close()

        return StdinSide(lv.started.wait, lambda: lv.stdin_w, close_stdin)

    async def replay(self, drivers: Mapping[str, LogDriver], *, stdout: bool,
                     stderr: bool) -> AsyncIterator[LogRecord]:
        """What the log driver kept (logs=1), nothing when it keeps nothing."""
        rec = self._rec
        driver = drivers.get(rec.host_config.log_config.type)
        if driver is None:
            return
        opts = ReadOptions(stdout=stdout, stderr=stderr, follow=False)
        try:
            async for record in driver.read(self._mgr.store.dir(rec.id), rec.id, opts, lambda: False):
                yield record
        except LogNotReadable:
            return

    def close(self) -> None:
        if self.output is not None:
            self._live.hub.unsubscribe(self.output)
