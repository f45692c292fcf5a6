"""`asyncdock.Engine`: the engine in this process, with the client's resource API on `.client`.

Choice: the client talks to the engine's own API app through a socketpair whose server end is
handed to asyncdock's HTTP protocol (`InProcessTransport`). Nothing listens and no socket file
exists, yet every call runs the very code a daemon runs, streams and hijacked attach/exec
included. Calling route handlers directly would need fake Request objects and could not express
hijacking; a private temporary socket would work too but leaves a path others could connect to.
"""
from __future__ import annotations

from typing import Any

from ..engine import Engine as _CoreEngine
from .api import Client
from .transport import InProcessTransport


class EmbeddedEngine(_CoreEngine):
    """`async with asyncdock.Engine(data_root=..., exec_root=...) as engine:` then
    `engine.client.containers.run(...)`, `engine.client.events(...)`, ... (needs root, like the
    daemon). `engine.containers` / `engine.images` stay the engine's own managers."""

    client: Client

    async def start(self) -> None:
        await super().start()
        from ..api.server import App

        self.app = App(self)
        self.client = Client(transport=InProcessTransport(self.app))

    async def __aenter__(self) -> EmbeddedEngine:
        await self.start()
        return self

    async def close(self) -> None:
        c: Any = getattr(self, "client", None)
        if c is not None:
            await c.close()
        await super().close()
