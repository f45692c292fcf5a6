"""Every state file the engine writes under a data root, parsed: none may be empty, torn or
half-written (the promise of asyncdock/util/atomic.py), and no temp file of an atomic write
may be left behind.

What is checked (the writers are the callers of atomic_write_* and the append-only logs):
  engine-id                              non-empty
  images/**.json                         image records, references.json
  containers/<id>/record.json            container records
  containers/<id>/{hostname,hosts,resolv.conf}  non-empty
  containers/<id>/*-json.log*            every line a whole JSON object (json-file driver)
  snapshots/<name>/metadata.json         the snapshotter's metadata
  network/**.json, volumes/.meta/*.json  network and volume stores
  events/state.json, events/*.seg        journal state; every segment scans to its end
  content/blobs/sha256/<hex>             the bytes hash to the name
  content/ingest/<dir>/{ref,total}       non-empty
Layer contents (snapshots/*/snapshots/<n>/fs, .../work) and volume data (_data) are the
images' and users' files, not state, and are not walked.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from asyncdock.events.journal import scan

_NOT_STATE_DIRS = frozenset({"fs", "work", "_data"})


def _json(path: Path, problems: list[str]) -> None:
    data = path.read_bytes()
    if not data.strip():
        problems.append(f"{path}: empty")
        return
    try:
        json.loads(data)
    except ValueError as e:
        problems.append(f"{path}: not JSON ({e})")


def _json_lines(path: Path, problems: list[str]) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        problems.append(f"{path}: last line is torn")
    for i, line in enumerate(data.splitlines(), 1):
        try:
            obj = json.loads(line)
        except ValueError as e:
            problems.append(f"{path}:{i}: not a whole JSON line ({e}): {line[:80]!r}")
            return
        if not isinstance(obj, dict) or "stream" not in obj or "time" not in obj:
            problems.append(f"{path}:{i}: not a json-file record: {line[:80]!r}")
            return


def _nonempty(path: Path, problems: list[str]) -> None:
    if path.stat().st_size == 0:
        problems.append(f"{path}: empty")


def _blob(path: Path, problems: list[str]) -> None:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    if h.hexdigest() != path.name:
        problems.append(f"{path}: content hashes to {h.hexdigest()}")


def _segment(path: Path, problems: list[str]) -> None:
    data = path.read_bytes()
    _, end = scan(data)
    if end != len(data):
        problems.append(f"{path}: valid records end at {end} of {len(data)} bytes")


def check_state(data_root: Path) -> tuple[list[str], list[Path]]:
    """(problems found, the state files checked) under `data_root`."""
    problems: list[str] = []
    checked: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(data_root):
        here = Path(dirpath)
        rel = here.relative_to(data_root).parts
        if rel[:1] == ("snapshots",) or rel[:1] == ("volumes",):
            dirnames[:] = [d for d in dirnames if d not in _NOT_STATE_DIRS]
        for name in filenames:
            path = here / name
            if ".tmp-" in name and name.startswith("."):
                problems.append(f"{path}: temp file of an atomic write left behind")
                continue
            top = rel[0] if rel else ""
            check = None
            if top == "content" and rel[1:3] == ("blobs", "sha256"):
                check = _blob
            elif top == "content" and rel[1:2] == ("ingest",) and name in ("ref", "total"):
                check = _nonempty
            elif top == "events" and name.endswith(".seg"):
                check = _segment
            elif top == "containers" and "-json.log" in name:
                check = _json_lines
            elif top == "containers" and name in ("hostname", "hosts", "resolv.conf"):
                check = _nonempty
            elif name.endswith(".json") and top in ("images", "containers", "snapshots", "network",
                                                    "volumes", "events"):
                check = _json
            elif not rel and name == "engine-id":
                check = _nonempty
            if check is not None:
                check(path, problems)
                checked.append(path)
    return problems, checked
