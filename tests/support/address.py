"""Addresses of what serves the registry API on loopback in the tests: the registry itself and
the fault-injecting proxy in front of it."""
from __future__ import annotations


class LoopbackRegistryAddress:
    """`host`, `url` and image references for a server on 127.0.0.1:`port` (set once bound)."""

    port: int

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def ref(self, name: str, tag: str = "latest") -> str:
        """`ref("busybox")` -> "127.0.0.1:PORT/library/busybox:latest"; names with a "/" are kept."""
        repo = name if "/" in name else f"library/{name}"
        return f"{self.host}/{repo}:{tag}"
