"""Many small writes to a stream as few: `docker logs` of 300,000 lines was 300,000 chunks and as
many send(2) calls, most of the engine's time for it."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class Coalescer:
    """Pieces added while the task runs on go out as one chunk when it next yields to the loop
    (so a follower sees a line as soon as the reader waits for more), or at once, under the
    client's flow control, past LIMIT bytes."""

    LIMIT = 256 * 1024

    def __init__(self, write_nowait: Callable[[bytes], None], write: Callable[[bytes], Awaitable[None]]) -> None:
        self._write_nowait = write_nowait
        self._write = write
        self._parts: list[bytes] = []
        self._size = 0
        self._handle: asyncio.Handle | None = None

    def add(self, data: bytes) -> bool:
        """Hold `data`; True once LIMIT is held, when the caller must `await flush()` (a plain
        call, not a coroutine: it runs once per log line)."""
        self._parts.append(data)
        self._size += len(data)
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_soon(self._flush_now)
        return self._size >= self.LIMIT

    def _take(self) -> bytes:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        data = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        return data

    def _flush_now(self) -> None:
        self._handle = None
        self._write_nowait(self._take())

    async def flush(self) -> None:
        """Write out what is held, waiting for the client to take it."""
        await self._write(self._take())

    def discard(self) -> None:
        self._take()
