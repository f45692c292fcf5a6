"""runc, driven through its CLI (asyncdock.runtime.cli). Nothing runc-specific is needed beyond
finding the binary: runc handles cgroup v1, hybrid and v2 hosts alike."""
from __future__ import annotations

from pathlib import Path

from asyncdock.plugins import InitContext, Registration
from asyncdock.runtime.cli import CLIRuntime, find_binary


class RuncRuntime(CLIRuntime):
    pass


def factory(ctx: InitContext) -> RuncRuntime:
    opts = ctx.options
    return RuncRuntime(name=str(opts.get("name") or "runc"),
                       path=str(opts.get("path") or find_binary("runc")),
                       root=Path(ctx.root), runtime_args=list(opts.get("runtime_args") or ()))


plugin = Registration(kind="runtime", id="runc", factory=factory,
                      description="runc (OCI reference runtime) through its CLI")
