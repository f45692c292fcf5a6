"""Container records on disk (one atomic JSON per container) and Docker's lookup rules."""
from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec

from ..base.errors import Conflict, InvalidParameter, NotFound
from ..util.atomic import atomic_write_bytes
from ..util.corrupt import SUFFIX, move_aside
from ..util.fsflags import mark_topdir
from ..util.fstree import remove_tree, remove_tree_quietly
from .models import ContainerRecord

log = logging.getLogger(__name__)

RECORD = "record.json"
_TRASH = "rm-"  # prefix of a removed container's directory (ids are hex: no clash)
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ContainerRecord)


class ContainerStore:
    """Names are reserved in memory synchronously (no await between check and set), so two
    concurrent creates of one name cannot both win on one event loop."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        # Every container's directory sees files made and deleted (records rewritten
        # atomically, /etc files, logs). On ext4 without a journal, making an inode scans past
        # each one deleted in its block group in the last minute (longer while the inode
        # table block is dirty): with all containers in one
        # group, a burst of 50 spent ~13% of the engine's CPU there. The top-dir flag starts
        # each container's directory in a lightly used group of its own.
        mark_topdir(self.root)
        self._by_id: dict[str, ContainerRecord] = {}
        self._names: dict[str, str] = {}  # "/name" -> id
        # legacy link names ("/parent/alias", containers/links.py) -> the target's id, which
        # they also name in _names, as Docker's name registry does
        self._link_names: dict[str, str] = {}
        # containers whose record was found unreadable: their files and snapshot are kept
        self.unreadable: set[str] = set()

    def load(self) -> list[ContainerRecord]:
        """The records on disk. Directories of removals the daemon did not finish are left
        for purge_trash() (the caller runs it as a retried clean-up); those of creates a
        crash interrupted are removed here, a failure only logged."""
        for d in sorted(self.root.iterdir()):
            if d.name.startswith(_TRASH):
                continue
            f = d / RECORD
            if not f.exists():
                if d.is_dir() and any(p.name.startswith(RECORD + SUFFIX) for p in d.iterdir()):
                    self.unreadable.add(d.name)  # moved aside at an earlier start: kept
                elif d.is_dir() and not remove_tree_quietly(d):
                    # created but never committed (crash during create): nothing refers to it
                    log.warning("cannot remove %s, a container create that never finished", d)
                continue
            try:
                rec = _decoder.decode(f.read_bytes())
            except (OSError, msgspec.DecodeError) as e:
                move_aside(f, e, "container record")
                self.unreadable.add(d.name)
                continue
            self._by_id[rec.id] = rec
            self._names[rec.name] = rec.id
        for rec in self._by_id.values():
            self.add_link_names(rec)
        return list(self._by_id.values())

    def purge_trash(self) -> bool:
        """Remove the directories of removed containers (rm-*) still on disk: True when none
        is left. Blocking: run it in a thread."""
        left = 0
        for d in self.root.iterdir():
            if d.name.startswith(_TRASH):
                try:
                    remove_tree(d)
                except OSError as e:
                    left += 1
                    log.warning("cannot remove the files of a removed container, %s: %s", d, e)
        return not left

    def dir(self, cid: str) -> Path:
        return self.root / cid

    def reserve_name(self, name: str, cid: str) -> None:
        other = self._names.get(name)
        if other is not None and other != cid:
            raise Conflict(f'Conflict. The container name "{name}" is already in use by container "{other}". '
                           f"You have to remove (or rename) that container to be able to reuse that name.")
        self._names[name] = cid

    def release_name(self, name: str, cid: str) -> None:
        if self._names.get(name) == cid:
            del self._names[name]

    def name_taken(self, name: str) -> bool:
        return name in self._names

    def add_link_names(self, rec: ContainerRecord) -> None:
        """Name each target of `rec`'s links `/<rec>/<alias>`; a name already taken stays with
        its holder (Docker ignores that link's name)."""
        for link in rec.links:
            name = f"{rec.name}/{link.alias}"
            if name not in self._names and link.target_id in self._by_id:
                self._names[name] = link.target_id
                self._link_names[name] = link.target_id

    def drop_link_names(self, rec: ContainerRecord, parent_name: str | None = None) -> None:
        """Release the link names of `rec`'s links (under `parent_name`, its name before a rename)."""
        for link in rec.links:
            self.drop_link_name(f"{parent_name or rec.name}/{link.alias}")

    def drop_link_name(self, name: str) -> None:
        cid = self._link_names.pop(name, None)
        if cid is not None and self._names.get(name) == cid:
            del self._names[name]

    def link_names_of(self, cid: str) -> list[str]:
        """The link names that name container `cid` (the container list shows them in Names)."""
        return [n for n, i in self._link_names.items() if i == cid] if self._link_names else []

    async def add(self, rec: ContainerRecord) -> None:
        """Write a new record durably, then list it. The write (two fsyncs) runs in a thread:
        under a burst of creates, fsyncs in the event loop would stall every other request."""
        await asyncio.to_thread(self.save, rec)
        self._by_id[rec.id] = rec

    def save(self, rec: ContainerRecord, *, durable: bool = True) -> None:
        d = self.dir(rec.id)
        data = _encoder.encode(rec)
        try:
            atomic_write_bytes(d / RECORD, data, durable=durable)
        except FileNotFoundError:  # the first save: the directory is made on demand only
            d.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(d / RECORD, data, durable=durable)

    def remove(self, rec: ContainerRecord) -> Path | None:
        """Unlist the record (its name is free again) and rename its directory out of the way:
        one rename, and the record is gone for the next load(). Returns that directory, whose
        files (record, /etc files, logs) the caller deletes -- or the next load() after a
        crash."""
        self._by_id.pop(rec.id, None)
        self.release_name(rec.name, rec.id)
        # its own links' names, and those that named it
        self.drop_link_names(rec)
        for name in self.link_names_of(rec.id):
            self.drop_link_name(name)
        doomed = self.root / f"{_TRASH}{rec.id}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(self.dir(rec.id), doomed)
        except FileNotFoundError:
            return None
        return doomed

    def get(self, ref: str) -> ContainerRecord:
        """Full ID, then exact name, then unique ID prefix (Docker's order)."""
        if not ref:
            raise InvalidParameter("No container name or ID supplied")
        rec = self._by_id.get(ref)
        if rec is not None:
            return rec
        cid = self._names.get(ref if ref.startswith("/") else "/" + ref)
        if cid is not None:
            return self._by_id[cid]
        matches = [r for i, r in self._by_id.items() if i.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidParameter(f"Multiple IDs found with provided prefix: {ref}")
        raise NotFound(f"No such container: {ref}")

    def find(self, ref: str) -> ContainerRecord | None:
        try:
            return self.get(ref)
        except (NotFound, InvalidParameter):
            return None

    def __iter__(self) -> Iterator[ContainerRecord]:
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)
