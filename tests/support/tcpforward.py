"""A loopback TCP listener that forwards each connection to a Unix socket (for clients that
speak only TCP, such as the schemathesis CLI). Half-closes are passed on both ways, so the
server sees what the client did; it listens on 127.0.0.1 only and lives in a daemon thread
for as long as the context manager."""
from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()


async def _serve(path: str, ready: asyncio.Future[int], stop: asyncio.Event) -> None:
    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            s_reader, s_writer = await asyncio.open_unix_connection(path)
        except OSError:
            c_writer.close()
            return
        try:
            await asyncio.gather(_pipe(c_reader, s_writer), _pipe(s_reader, c_writer))
        finally:
            c_writer.close()
            s_writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    ready.set_result(server.sockets[0].getsockname()[1])
    async with server:
        await stop.wait()


@contextlib.contextmanager
def forward_tcp_to_unix(path: str) -> Iterator[int]:
    """Yields the port on 127.0.0.1 that leads to the Unix socket at `path`."""
    loop = asyncio.new_event_loop()
    ready: asyncio.Future[int] = loop.create_future()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(_serve(path, ready, stop),), daemon=True,
                              name="tcp-to-unix")
    thread.start()
    try:
        port = asyncio.run_coroutine_threadsafe(asyncio.wait_for(asyncio.shield(ready), 10), loop).result(15)
        yield port
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
