"""The async Python API: `Client` for any Docker-compatible socket, `EmbeddedEngine` (exported as
`asyncdock.Engine`) for the same calls in-process."""
from __future__ import annotations

from .api import (Client, Container, ContainerError, Containers, Execs, ExecStream, HijackedStream, Images,
                  api_error)
from .transport import InProcessTransport, UnixTransport

__all__ = ["Client", "Container", "ContainerError", "Containers", "Execs", "ExecStream", "HijackedStream",
           "Images", "InProcessTransport", "UnixTransport", "api_error", "EmbeddedEngine"]


def __getattr__(name: str):  # noqa: ANN202
    if name == "EmbeddedEngine":
        from .embedded import EmbeddedEngine

        return EmbeddedEngine
    raise AttributeError(name)
