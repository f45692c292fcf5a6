"""Build arguments with moby's rules (builder/dockerfile/buildargs.go): what `--build-arg` gave,
what ARG declared before FROM (meta args) and in the current stage, which were used, and the
predefined proxy arguments (usable undeclared, left out of the RUN history text)."""
from __future__ import annotations

import copy
from collections.abc import Mapping

BUILTIN = frozenset({"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
                     "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"})


class BuildArgs:
    def __init__(self, from_options: Mapping[str, str | None]) -> None:
        self.from_options: dict[str, str | None] = dict(from_options)
        self.allowed: dict[str, str | None] = {}
        self.meta: dict[str, str | None] = {}
        self.referenced: set[str] = set()

    def clone_for_stage(self) -> BuildArgs:
        """A stage's copy: the options, meta args and what was used so far, no declared ARGs."""
        c = copy.copy(self)
        c.from_options = dict(self.from_options)
        c.meta = dict(self.meta)
        c.referenced = set(self.referenced)
        c.allowed = {}
        return c

    def merge_referenced(self, other: BuildArgs) -> None:
        self.referenced |= other.referenced

    def add_meta(self, key: str, value: str | None) -> None:
        self.meta[key] = value

    def add(self, key: str, value: str | None) -> None:
        self.allowed[key] = value
        self.referenced.add(key)

    def is_referenced_or_not_builtin(self, key: str) -> bool:
        return key in self.referenced or key not in BUILTIN

    def _get(self, key: str, mapping: Mapping[str, str | None]) -> tuple[str, bool]:
        default = mapping.get(key)
        opt = self.from_options.get(key)
        if opt is not None:
            return opt, True
        if default is None:
            meta = self.meta.get(key)
            if meta is not None:
                return meta, True
            return "", False
        return default, key in mapping

    def _all_from(self, mapping: Mapping[str, str | None]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key in [*mapping, *(k for k in BUILTIN if k not in mapping)]:
            value, ok = self._get(key, mapping)
            if ok:
                out[key] = value
        return out

    def all_allowed(self) -> dict[str, str]:
        return self._all_from(self.allowed)

    def all_meta(self) -> dict[str, str]:
        return self._all_from(self.meta)

    def filter_allowed(self, env: list[str] | None) -> list[str]:
        """The allowed args an environment does not already set, as KEY=value."""
        have = {kv.partition("=")[0] for kv in env or ()}
        return [f"{k}={v}" for k, v in self.all_allowed().items() if k not in have]

    def unused(self) -> list[str]:
        return sorted(k for k in self.from_options if k not in BUILTIN and k not in self.referenced)
