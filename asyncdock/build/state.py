"""What the builder's parts share: a stage's state (moby's dispatchState), the in-stream
failure, and what the dispatchers ask of a build (`Steps`, which builder.Build implements)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import msgspec

from ..base import errors
from ..base.oci import ContainerConfig, ImageConfig
from .buildargs import BuildArgs

if TYPE_CHECKING:
    from ..images.store import ImageRecord, ImageStore
    from .shellwords import Lex

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class BuildFailed(errors.EngineError):
    """A failure inside the stream: the errorDetail (with the exit code of a failed RUN)."""

    status = 500

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class StageState:
    """moby's dispatchState: the run config being built, the current image, the stage's args."""

    args: BuildArgs
    name: str = ""
    image_id: str = ""
    image: ImageRecord | None = None
    image_config: ImageConfig | None = None
    run_config: ContainerConfig = field(default_factory=ContainerConfig)
    cmd_set: bool = False
    maintainer: str = ""
    os: str = "linux"
    arch: str = ""

    def env(self) -> list[str]:
        """What word expansion sees: the config's env and the allowed args it does not set."""
        own = list(self.run_config.env or [])
        return own + self.args.filter_allowed(own)


class Steps(Protocol):
    """The build as the dispatchers see it: output, base images, and the step kinds."""

    lex: Lex

    @property
    def images(self) -> ImageStore: ...
    async def out(self, text: str) -> None: ...
    def stage(self, name: str) -> str | None: ...
    async def check_platform(self, spec: str) -> None: ...
    async def image_for(self, name: str) -> ImageRecord: ...
    async def commit_config_step(self, state: StageState, cc: ContainerConfig) -> None: ...
    async def workdir_step(self, state: StageState, cc: ContainerConfig) -> None: ...
    async def run_step(self, state: StageState, run: ContainerConfig, probe: ContainerConfig) -> None: ...
    async def copy_step(self, state: StageState, cmd: str, sources: list[str], dest: str, *, chown: str,
                        chmod: str, source_image: ImageRecord | None, add: bool) -> None: ...


def config_copy(cfg: ContainerConfig) -> ContainerConfig:
    return msgspec.convert(msgspec.to_builtins(cfg), ContainerConfig)


__all__ = ["BuildFailed", "DEFAULT_PATH", "StageState", "Steps", "config_copy"]
