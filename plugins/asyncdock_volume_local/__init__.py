"""The local volume driver: <data-root>/volumes/<name>/_data, optionally a filesystem mounted
there while containers use it (`--opt type=tmpfs --opt device=tmpfs --opt o=size=64m`, as
Docker's local driver)."""
from __future__ import annotations

import logging
import os
import subprocess
import threading
from pathlib import Path

from asyncdock.base.errors import InvalidParameter, SystemError_
from asyncdock.plugins import InitContext, Registration
from asyncdock.util.fstree import disk_usage, remove_tree_quietly

log = logging.getLogger(__name__)

_KNOWN = {"type", "device", "o", "size"}


class LocalDriver:
    name = "local"

    def __init__(self, ctx: InitContext) -> None:
        self.root = ctx.root
        self.root.mkdir(parents=True, exist_ok=True)
        self._refs: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def path(self, name: str) -> Path:
        return self.root / name / "_data"

    def create(self, name: str, options: dict[str, str]) -> None:
        bad = set(options) - _KNOWN
        if bad:
            raise InvalidParameter(f"invalid option: {sorted(bad)[0]!r}")
        if ("type" in options) != ("device" in options) and "size" not in options:
            raise InvalidParameter("missing required option: \"device\"" if "type" in options
                                   else "missing required option: \"type\"")
        p = self.path(name)
        p.parent.mkdir(mode=0o701, exist_ok=True)
        p.mkdir(mode=0o755, exist_ok=True)

    def remove(self, name: str) -> None:
        d = self.root / name
        data = self.path(name)
        if os.path.ismount(data):
            subprocess.run(["umount", "-l", str(data)], capture_output=True)
        # Never into a volume still mounted (remove_tree refuses to cross a mount point).
        if not remove_tree_quietly(d):
            log.warning("cannot remove all of volume directory %s", d)

    def mount(self, name: str, ref: str, options: dict[str, str]) -> Path:
        p = self.path(name)
        if not options.get("type"):
            return p
        with self._lock:
            refs = self._refs.setdefault(name, set())
            if not refs and not os.path.ismount(p):
                argv = ["mount", "-t", options["type"]]
                if options.get("o"):
                    argv += ["-o", options["o"]]
                argv += [options.get("device") or options["type"], str(p)]
                res = subprocess.run(argv, capture_output=True, text=True)
                if res.returncode != 0:
                    raise SystemError_(f"error while mounting volume '{p}': {res.stderr.strip()}")
            refs.add(ref)
        return p

    def unmount(self, name: str, ref: str) -> None:
        with self._lock:
            refs = self._refs.get(name)
            if refs is None:
                return
            refs.discard(ref)
            if not refs:
                self._refs.pop(name, None)
                p = self.path(name)
                if os.path.ismount(p):
                    subprocess.run(["umount", "-l", str(p)], capture_output=True)

    def usage(self, name: str) -> int:
        try:
            return disk_usage(self.path(name))
        except OSError:
            return 0

    def unmount_all(self) -> None:
        with self._lock:
            for name in list(self._refs):
                p = self.path(name)
                if os.path.ismount(p):
                    subprocess.run(["umount", "-l", str(p)], capture_output=True)
            self._refs.clear()


plugin = Registration(kind="volume", id="local", factory=LocalDriver, description="volumes under <data-root>/volumes")
