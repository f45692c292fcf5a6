"""Which OCI runtimes the daemon offers, and its default: every runtime is probed at start-up
(concurrently: each probe runs a real `true` container).

- Built-in runtimes: one per registration (runc, crun), the binary found on PATH.
- daemon.json `runtimes`: {name: {path, runtimeArgs}} -- extra instances of the CLI runtime;
  the path's basename picks the behaviour (a ".../crun" gets crun's hybrid-cgroup handling,
  anything else the generic runc-compatible CLI). A name equal to a built-in overrides it.
- The default: `default-runtime` when configured (the daemon refuses to start if it fails its
  probe), else crun when its probe passes, else runc.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from asyncdock.config import DaemonConfig
from asyncdock.plugins import InitContext, Registration
from asyncdock.runtime.base import OCIRuntime, ProbeResult
from asyncdock.runtime.cli import CLIRuntime

log = logging.getLogger(__name__)

PREFERENCE = ("crun", "runc")


class RuntimeUnavailable(Exception):
    """The configured default runtime is unknown or does not work: the daemon must not start."""


def _state_dir(config: DaemonConfig, name: str) -> Path:
    return Path(config.exec_root) / "runtime" / name


def _flavour(path: str, registrations: Mapping[str, Registration]) -> Registration | None:
    base = os.path.basename(path)
    for rid, reg in registrations.items():
        if base == rid or base.startswith(rid + "-") or base.startswith(rid + "."):
            return reg
    return None


def build_runtimes(config: DaemonConfig,
                   registrations: Mapping[str, Registration]) -> dict[str, OCIRuntime]:
    runtimes: dict[str, OCIRuntime] = {}
    for rid, reg in registrations.items():
        runtimes[rid] = reg.factory(InitContext(root=_state_dir(config, rid), options={}))
    for name, rc in config.runtimes.items():
        path = rc.path or name
        options = {"name": name, "path": path, "runtime_args": list(rc.runtime_args)}
        reg = _flavour(path, registrations)
        if reg is not None:
            runtimes[name] = reg.factory(InitContext(root=_state_dir(config, name),
                                                     options=options))
        else:
            runtimes[name] = CLIRuntime(name=name, path=path, root=_state_dir(config, name),
                                        runtime_args=rc.runtime_args)
    return runtimes


async def select_runtimes(
    config: DaemonConfig, registrations: Mapping[str, Registration], work_dir: Path,
    rootfs: Path,
) -> tuple[str, dict[str, OCIRuntime], dict[str, ProbeResult]]:
    """(default name, runtimes by name, probe results by name). `work_dir` holds the probes'
    throw-away bundles; `rootfs` is a directory with /bin/busybox."""
    runtimes = build_runtimes(config, registrations)
    try:
        return await _select(config, runtimes, work_dir, rootfs)
    except BaseException:
        for rt in runtimes.values():
            rt.close()
        raise


async def _select(
    config: DaemonConfig, runtimes: dict[str, OCIRuntime], work_dir: Path, rootfs: Path,
) -> tuple[str, dict[str, OCIRuntime], dict[str, ProbeResult]]:
    names = list(runtimes)
    results = await asyncio.gather(*(runtimes[n].probe(Path(work_dir), Path(rootfs))
                                     for n in names))
    probes = dict(zip(names, results))
    for name, p in probes.items():
        if p.ok:
            log.info("runtime %s (%s %s) works: %.3fs", name, p.path, p.version, p.seconds)
        else:
            log.warning("runtime %s (%s) unavailable: %s", name, p.path, p.error)

    wanted = config.default_runtime
    if wanted:
        if wanted not in runtimes:
            raise RuntimeUnavailable(f"default runtime {wanted} is not configured "
                                     f"(known: {', '.join(sorted(runtimes))})")
        if not probes[wanted].ok:
            raise RuntimeUnavailable(f"default runtime {wanted} ({probes[wanted].path}) does not "
                                     f"work on this host: {probes[wanted].error}")
        return wanted, runtimes, probes
    for name in PREFERENCE:
        if name in probes and probes[name].ok:
            return name, runtimes, probes
    working = [n for n in names if probes[n].ok]
    if working:
        return working[0], runtimes, probes
    log.error("no OCI runtime works on this host: %s",
              "; ".join(f"{n}: {p.error}" for n, p in probes.items()))
    return ("runc" if "runc" in runtimes else names[0] if names else "runc"), runtimes, probes
