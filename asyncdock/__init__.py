"""asyncdock: a Docker-compatible container engine on asyncio.

The public API is imported lazily so that `asyncdock ps` starts fast.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Client", "Engine", "APIError", "NotFound", "Conflict", "__version__"]
from .base.version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client
    from .client.embedded import EmbeddedEngine as Engine
    from .base.errors import APIError, Conflict, NotFound


def __getattr__(name: str) -> Any:
    if name == "Client":
        from .client import Client

        return Client
    if name == "Engine":
        # The core engine plus `.client`: the Client's resource API, in-process (no socket).
        from .client.embedded import EmbeddedEngine

        return EmbeddedEngine
    if name in ("APIError", "NotFound", "Conflict", "EngineError"):
        from .base import errors

        return getattr(errors, name)
    raise AttributeError(name)
