"""Compiled seccomp filters, reused across containers through crun's `run.oci.seccomp_bpf_data`
annotation.

crun 1.8 compiles the spec's seccomp section with libseccomp on every `create` (about 15 ms for
Docker's default profile, a third of the whole create). Nearly every container carries the same
profile, so the filter crun compiled for the first one -- which it leaves in its state directory
as `seccomp.bpf` -- is kept, keyed by a digest of the seccomp section, and handed to later creates
as the annotation, which crun loads as is (Podman feeds crun precompiled filters the same way).
The section stays in config.json: the annotation takes precedence in crun, and the bundle still
says what the filter is.
"""
from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import msgspec

ANNOTATION = "run.oci.seccomp_bpf_data"
FAIL_UNKNOWN = "run.oci.seccomp_fail_unknown_syscall"

# A handful of profiles at most in practice (default, unconfined has none, custom ones); the
# bound only keeps a daemon fed endless distinct profiles from growing without limit.
MAX_ENTRIES = 32


def profile_key(spec: dict[str, Any]) -> str | None:
    """Digest of the spec's seccomp section (None: no seccomp). msgspec encodes dicts in
    insertion order, and the engine builds the section the same way each time."""
    linux = spec.get("linux")
    section = linux.get("seccomp") if isinstance(linux, dict) else None
    if not section:
        return None
    # crun compiles differently when told to fail on unknown syscalls.
    strict = (spec.get("annotations") or {}).get(FAIL_UNKNOWN)
    return hashlib.sha256(msgspec.json.encode([section, strict])).hexdigest()


class SeccompCache:
    def __init__(self, state_root: Path) -> None:
        self.state_root = Path(state_root)
        self._filters: dict[str, str] = {}  # profile key -> base64 BPF
        self._pending: dict[str, str] = {}  # container id -> key of a filter crun compiles now

    def __len__(self) -> int:
        return len(self._filters)

    def apply(self, container_id: str, spec: dict[str, Any]) -> bool:
        """Put a cached filter in `spec` (True), or remember to harvest crun's compilation of
        this profile after the create. A user's own annotation of the same name wins."""
        key = profile_key(spec)
        if key is None:
            return False
        annotations = spec.setdefault("annotations", {})
        if ANNOTATION in annotations:
            return False
        cached = self._filters.get(key)
        if cached is None:
            self._pending[container_id] = key
            return False
        annotations[ANNOTATION] = cached
        return True

    def created(self, container_id: str) -> None:
        """After a successful create: keep the filter crun compiled, if this create compiled
        one. An unreadable or empty file just means no caching."""
        key = self._pending.pop(container_id, None)
        if key is None or key in self._filters:
            return
        try:
            data = (self.state_root / container_id / "seccomp.bpf").read_bytes()
        except OSError:
            return
        # A BPF program is a whole number of 8-byte sock_filter instructions.
        if not data or len(data) % 8:
            return
        if len(self._filters) >= MAX_ENTRIES:
            self._filters.pop(next(iter(self._filters)))
        self._filters[key] = base64.b64encode(data).decode()

    def failed(self, container_id: str) -> None:
        self._pending.pop(container_id, None)
