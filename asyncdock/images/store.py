"""Image records, repository references (tags and digests) and Docker's delete rules.

    <root>/<id hex>.json        one ImageRecord per image (atomic JSON)
    <root>/references.json      normalised reference -> image ID (RepoTags/RepoDigests derive from it)

An image's ID is the digest of its config blob (kept in the content store); its layers are
snapshots named by chain ID. All mutations hold one lock and write atomically.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import msgspec

from ..base.timefmt import rfc3339nano
from ..content.store import ContentStore
from ..base.errors import Conflict, InvalidParameter, NotFound
from ..registry.reference import Reference, parse_any, parse_normalized
from ..snapshots.base import Snapshotter
from .materialize import LayerMaterializer
from ..util.atomic import atomic_write_json
from ..util.corrupt import move_aside
from ..base.ids import short_id
from ..base.oci import ContainerConfig, ImageConfig, decode_config

log = logging.getLogger(__name__)



class LayerBlob(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    digest: str  # compressed blob digest, as in the manifest
    media_type: str
    size: int  # compressed size


class ImageRecord(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    id: str  # "sha256:<config digest hex>"
    diff_ids: list[str]
    layers: list[LayerBlob]
    layer_sizes: list[int]  # unpacked size of each layer's snapshot
    created: str = ""  # the config's `created` (RFC 3339)
    created_ns: int = 0
    manifest_digests: list[str] = msgspec.field(default_factory=list)  # manifest (+ index) blobs
    last_tag_time: str = ""  # RFC 3339; "" is Go's zero time (never tagged by `docker tag`)
    # The local image this one was made from (commit, build steps): moby's parent link, which
    # `docker history` walks and which makes an untagged image an intermediate, not dangling.
    # Pulled and loaded images have none.
    parent: str = ""

    @property
    def size(self) -> int:
        return sum(self.layer_sizes)

    @property
    def chain_ids(self) -> list[str]:
        return chain_ids(self.diff_ids)


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    out: list[str] = []
    for d in diff_ids:
        if not out:
            out.append(d)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


class ImageUse(NamedTuple):
    """A container that uses an image (what the injected `in_use` callable reports)."""

    container_id: str
    running: bool = False


# The container store's answer: ImageUse tuples, bare container IDs (taken as stopped), or
# container records (`.id` and `.state.running`).
InUse = Callable[[str], Sequence[object]]
Settled = Callable[[], Awaitable[None]]


def _as_use(u: object) -> ImageUse:
    if isinstance(u, ImageUse):
        return u
    if isinstance(u, str):
        return ImageUse(u, False)
    state = getattr(u, "state", None)
    running = bool(getattr(state, "running", False) if state is not None else getattr(u, "running", False))
    return ImageUse(str(getattr(u, "id")), running)


class ImageDeleteConflict(Conflict):
    def __init__(self, image_id: str, message: str, *, hard: bool, used: bool) -> None:
        force_msg = "cannot be forced" if hard else "must be forced"
        super().__init__(f"conflict: unable to delete {short_id(image_id)} ({force_msg}) - {message}")
        self.hard = hard
        self.used = used


# Docker's conflict classes (daemon/images/image_delete.go).
_CHILD, _RUNNING, _ACTIVE_REF, _STOPPED = 1, 2, 4, 8
_HARD = _CHILD | _RUNNING
_SOFT = _ACTIVE_REF | _STOPPED


class _RefFile(msgspec.Struct, forbid_unknown_fields=True):
    references: dict[str, str] = msgspec.field(default_factory=dict)


class PruneReport(msgspec.Struct):
    deleted: list[dict[str, str]]
    reclaimed: int


def _key(ref: Reference) -> str:
    """The reference store's key: a digest reference drops any tag; a bare name means :latest."""
    if ref.digest is not None:
        return str(Reference(ref.domain, ref.path, None, ref.digest))
    return str(ref.with_default_tag())


def is_image_id_prefix(image_id: str, possible: str) -> bool:
    if image_id.startswith(possible):
        return True
    _, _, hexpart = image_id.partition(":")
    return hexpart.startswith(possible)


def _is_single_reference(refs: Sequence[Reference]) -> bool:
    """All references are in one repository and at most one of them is a tag."""
    if len(refs) <= 1:
        return len(refs) == 1
    single: Reference | None = None
    canonical: set[str] = set()
    for r in refs:
        if r.digest is not None:
            canonical.add(r.name)
        elif single is None:
            single = r
        else:
            return False
    if single is None:
        single = refs[0]
    return len(canonical) == 1 and single.name in canonical


class ImageStore:
    def __init__(self, root: str | Path, content: ContentStore, snapshotter: Snapshotter, *,
                 bus: object | None = None, in_use: InUse | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.content = content
        self.snapshotter = snapshotter
        self.bus = bus
        self._in_use: InUse = in_use or (lambda _id: ())
        self._settled: Settled | None = None
        self._lock = asyncio.Lock()
        self._images: dict[str, ImageRecord] = {}
        self._refs: dict[str, str] = {}
        self._configs: dict[str, ImageConfig] = {}
        self._pruning = False
        # Layer snapshots unpacked from their blobs after registration (commit), or repaired.
        self.layers = LayerMaterializer(content, snapshotter)
        self._load()

    def set_in_use(self, fn: InUse, settled: Settled | None = None) -> None:
        """Inject the container store's view: which containers use an image ID, and a wait for
        the snapshots of removed containers to be gone (they sit on the image's layers, and go
        in the background)."""
        self._in_use = fn
        self._settled = settled

    # ---- persistence
    def _load(self) -> None:
        dec = msgspec.json.Decoder(ImageRecord)
        for p in self.root.glob("*.json"):
            if p.name == "references.json":
                continue
            try:
                rec = dec.decode(p.read_bytes())
            except (OSError, msgspec.DecodeError, msgspec.ValidationError) as e:
                move_aside(p, e, "image record")
                continue
            self._images[rec.id] = rec
        refs_path = self.root / "references.json"
        if refs_path.exists():
            try:
                refs = msgspec.json.decode(refs_path.read_bytes(), type=_RefFile).references
            except (OSError, msgspec.DecodeError, msgspec.ValidationError) as e:
                move_aside(refs_path, e, "image references file")
                refs = {}
            self._refs = {k: v for k, v in refs.items() if v in self._images}

    async def remove_unreferenced_layers(self) -> list[str]:
        """At start-up: remove layer snapshots no image uses, what a crash left between an
        image's record and its layers (an interrupted pull's committed layers, an image removal
        that did not get to its layers). Their blobs stay: a pull again unpacks from them
        without a download. Anything a container's or a view's snapshot sits on is kept."""
        infos = {i.name: i for i in await self.snapshotter.list()}
        keep: set[str] = set()
        for rec in self._images.values():
            keep.update(rec.chain_ids)
        for info in infos.values():
            if info.kind != "committed":
                parent = info.parent
                while parent is not None and parent not in keep:
                    keep.add(parent)
                    parent = infos[parent].parent if parent in infos else None
        doomed = {name for name, i in infos.items() if i.kind == "committed" and name not in keep}
        removed: list[str] = []
        # children before their parents: a snapshot with children cannot go
        while doomed:
            leaves = doomed - {infos[n].parent for n in doomed}
            if not leaves:
                break
            for name in sorted(leaves):
                doomed.discard(name)
                try:
                    await self.snapshotter.remove(name)
                    removed.append(name)
                except Exception as e:  # noqa: BLE001 - a failed cleanup never stops the daemon
                    log.warning("cannot remove unused layer snapshot %s: %s", name, e)
        if removed:
            log.info("removed %d layer snapshot(s) no image uses (left by a previous run)", len(removed))
        return removed

    def _record_path(self, image_id: str) -> Path:
        return self.root / (image_id.split(":", 1)[-1] + ".json")

    async def _save_record(self, rec: ImageRecord) -> None:
        await asyncio.to_thread(atomic_write_json, self._record_path(rec.id), rec)

    async def _save_refs(self) -> None:
        snapshot = _RefFile(dict(self._refs))
        await asyncio.to_thread(atomic_write_json, self.root / "references.json", snapshot)

    # ---- queries
    def get(self, image_id: str) -> ImageRecord:
        try:
            return self._images[image_id]
        except KeyError:
            raise NotFound(f"No such image: {image_id}") from None

    def find(self, image_id: str) -> ImageRecord | None:
        return self._images.get(image_id)

    def list(self) -> list[ImageRecord]:
        return list(self._images.values())

    def references(self, image_id: str) -> list[Reference]:
        """Every reference to the image, lexically sorted like Docker's reference store."""
        out = [parse_normalized(k) for k, v in sorted(self._refs.items()) if v == image_id]
        return out

    def repo_tags(self, image_id: str) -> list[str]:
        return [r.familiar for r in self.references(image_id) if r.digest is None]

    def repo_digests(self, image_id: str) -> list[str]:
        return [r.familiar for r in self.references(image_id) if r.digest is not None]

    def lookup(self, ref: Reference) -> str | None:
        """The image a reference points to. Tag+digest looks up by digest, as Docker does."""
        return self._refs.get(_key(ref))

    def has_references(self, image_id: str) -> bool:
        return any(v == image_id for v in self._refs.values())

    def children(self, image_id: str) -> list[ImageRecord]:
        """The images made from this one (moby's imageStore.Children)."""
        return [r for r in self._images.values() if r.parent == image_id]

    def parent_ids(self) -> set[str]:
        """Every image ID that is the parent of another image."""
        return {r.parent for r in self._images.values() if r.parent}

    def heads(self) -> list[ImageRecord]:
        """The images no other image was made from (moby's imageStore.Heads)."""
        parents = self.parent_ids()
        return [r for r in self._images.values() if r.id not in parents]

    def is_intermediate(self, image_id: str, parents: set[str] | None = None) -> bool:
        """Untagged (no reference at all) and the parent of another image: what `docker images`
        hides without `-a` and prune skips (its children free it)."""
        if parents is None:
            parents = self.parent_ids()
        return image_id in parents and not self.has_references(image_id)

    def is_dangling(self, image_id: str) -> bool:
        """moby's imageIsDangling: no reference and no child image."""
        return not self.has_references(image_id) and not self.children(image_id)

    def resolve(self, name: str) -> ImageRecord:
        """Docker's GetImage: full ID or digest, a reference (tag defaults to latest), an
        `sha256:`-prefixed or bare unique ID prefix. NotFound says "No such image: <name>"."""
        parsed = parse_any(name)  # a malformed name is a 400, as in dockerd
        if isinstance(parsed, str):  # an ID / digest
            rec = self._images.get(parsed)
            if rec is not None:
                return rec
            raise NotFound(f"No such image: {parsed}")
        image_id = self.lookup(parsed)
        if image_id is not None and image_id in self._images:
            return self._images[image_id]
        rec = self._search_prefix(name)
        if rec is not None:
            return rec
        raise NotFound(f"No such image: {parsed.with_default_tag().familiar}")

    def _search_prefix(self, prefix: str) -> ImageRecord | None:
        hexpart = prefix[7:] if prefix.startswith("sha256:") else prefix
        if not hexpart or any(c not in "0123456789abcdef" for c in hexpart):
            return None
        found = [r for i, r in self._images.items() if i[7:].startswith(hexpart)]
        return found[0] if len(found) == 1 else None

    def config(self, record: ImageRecord) -> ImageConfig:
        cfg = self._configs.get(record.id)
        if cfg is None:
            cfg = decode_config(self.content.read_bytes(record.id))
            self._configs[record.id] = cfg
        return cfg

    @staticmethod
    def top_chain_id(record: ImageRecord) -> str | None:
        ids = record.chain_ids
        return ids[-1] if ids else None

    async def ensure_layers(self, record: ImageRecord) -> str | None:
        """The image's top chain ID, once every layer snapshot of it exists (a background
        unpack awaited, a missing one unpacked from its blob)."""
        await self.layers.ensure(record.chain_ids, [(b.digest, b.media_type) for b in record.layers],
                                 list(record.diff_ids))
        return self.top_chain_id(record)

    def _users(self, image_id: str) -> list[ImageUse]:
        return [_as_use(u) for u in self._in_use(image_id)]

    # ---- events
    def event(self, action: str, image_id: str, name: str, *, actor: str = "") -> None:
        """An image event as dockerd logs it: the image's labels (while it exists) and `name`;
        the actor is the image ID unless given (push names the reference it pushed)."""
        if self.bus is None:
            return
        attrs: dict[str, str] = {}
        rec = self._images.get(image_id)
        if rec is not None:
            try:
                attrs.update((self.config(rec).config or _EMPTY_CFG).labels or {})
            except Exception:  # noqa: BLE001 - an event must never fail the operation
                pass
        if name:
            attrs["name"] = name
        self.bus.event("image", action, actor or image_id, attrs)  # type: ignore[attr-defined]

    # ---- mutations
    async def add(self, record: ImageRecord) -> None:
        """Register a pulled (or loaded) image; its config blob must be in the content store."""
        async with self._lock:
            existing = self._images.get(record.id)
            if existing is not None:
                merged = sorted(set(existing.manifest_digests) | set(record.manifest_digests))
                if merged == existing.manifest_digests:
                    return
                record = msgspec.structs.replace(existing, manifest_digests=merged)
            self._images[record.id] = record
            await self._save_record(record)

    async def set_reference(self, ref: Reference, image_id: str) -> str | None:
        """Point `ref` at the image; returns the image it pointed at before (None if new)."""
        async with self._lock:
            if image_id not in self._images:
                raise NotFound(f"No such image: {image_id}")
            key = _key(ref)
            old = self._refs.get(key)
            if old != image_id:
                self._refs[key] = image_id
                await self._save_refs()
            return old

    async def tag(self, name: str, repo: str, tag: str = "") -> str:
        """`docker tag`: returns the new reference's familiar string."""
        rec = self.resolve(name)
        new = parse_normalized(repo)
        if tag:
            new = new.trimmed().with_tag(tag)
        if new.digest is not None:
            raise InvalidParameter("refusing to create a tag with a digest reference")
        if new.familiar_name == "sha256":
            raise InvalidParameter("refusing to create an ambiguous tag using digest algorithm as name")
        new = new.with_default_tag()
        async with self._lock:
            self._refs[str(new)] = rec.id
            rec = msgspec.structs.replace(rec, last_tag_time=_now_rfc3339())
            self._images[rec.id] = rec
            await self._save_refs()
            await self._save_record(rec)
        self.event("tag", rec.id, new.familiar)
        return new.familiar

    async def untag(self, name: str) -> str:
        """Remove one reference (tag or digest), never the image; returns its familiar form."""
        ref = parse_normalized(name)
        async with self._lock:
            image_id = self.lookup(ref)
            if image_id is None:
                raise NotFound(f"No such image: {ref.with_default_tag().familiar}")
            await self._remove_ref(ref)
        self.event("untag", image_id, image_id)
        return (ref if ref.digest is not None else ref.with_default_tag()).familiar

    async def _remove_ref(self, ref: Reference) -> None:
        self._refs.pop(_key(ref), None)
        await self._save_refs()

    async def delete(self, name: str, *, force: bool = False, noprune: bool = False) -> list[dict[str, str]]:
        """`docker rmi`, with Docker's rules (daemon/images/image_delete.go); the records are
        the API's `[{"Untagged": ...}, {"Deleted": ...}]`."""
        async with self._lock:
            return await self._delete(name, force=force, noprune=noprune)

    async def _delete(self, name: str, *, force: bool, noprune: bool) -> list[dict[str, str]]:
        rec = self.resolve(name)
        image_id = rec.id
        refs = self.references(image_id)
        records: list[dict[str, str]] = []
        quiet = False
        if not is_image_id_prefix(image_id, name):
            # A reference was given: remove it first; the image goes only if nothing else
            # refers to it.
            if not force and _is_single_reference(refs):
                users = self._users(image_id)
                if users:
                    raise Conflict(f"conflict: unable to remove repository reference \"{name}\" (must force) - "
                                   f"container {short_id(users[0].container_id)} is using its referenced image "
                                   f"{short_id(image_id)}")
            parsed = parse_normalized(name)
            if parsed.digest is None:
                parsed = parsed.with_default_tag()
            await self._remove_ref(parsed)
            self.event("untag", image_id, image_id)
            records.append({"Untagged": parsed.familiar})
            refs = self.references(image_id)
            if parsed.digest is None and not any(r.digest is None and r.name == parsed.name for r in refs):
                # The last tag of a repository takes that repository's digests with it.
                remaining: list[Reference] = []
                for r in refs:
                    if r.digest is not None and r.name == parsed.name:
                        await self._remove_ref(r)
                        records.append({"Untagged": r.familiar})
                    else:
                        remaining.append(r)
                refs = remaining
            if refs:
                return records
            quiet = True
        elif _is_single_reference(refs):
            mask = _HARD | (0 if force else (_SOFT & ~_ACTIVE_REF))
            conflict = self._conflict(image_id, mask)
            if conflict is not None:
                raise conflict
            for r in refs:
                await self._remove_ref(r)
                self.event("untag", image_id, image_id)
                records.append({"Untagged": r.familiar})
        await self._delete_image(rec, records, force=force, noprune=noprune, quiet=quiet)
        return records

    def _conflict(self, image_id: str, mask: int) -> ImageDeleteConflict | None:
        if mask & _CHILD and self.children(image_id):
            return ImageDeleteConflict(image_id, "image has dependent child images", hard=True, used=False)
        users = self._users(image_id)
        if mask & _RUNNING:
            running = next((u for u in users if u.running), None)
            if running is not None:
                return ImageDeleteConflict(image_id, "image is being used by running container "
                                           f"{short_id(running.container_id)}", hard=True, used=True)
        if mask & _ACTIVE_REF and self.has_references(image_id):
            return ImageDeleteConflict(image_id, "image is referenced in multiple repositories", hard=False, used=False)
        if mask & _STOPPED:
            stopped = next((u for u in users if not u.running), None)
            if stopped is not None:
                return ImageDeleteConflict(image_id, "image is being used by stopped container "
                                           f"{short_id(stopped.container_id)}", hard=False, used=True)
        return None

    async def _delete_image(self, rec: ImageRecord, records: list[dict[str, str]], *, force: bool, noprune: bool,
                            quiet: bool) -> None:
        """moby's imageDeleteHelper: delete the image unless a conflict stops it, then (unless
        noprune) walk up its parents, deleting each untagged, unused one without other
        children, quietly: the first conflict ends the walk."""
        mask = _HARD | (0 if force else _SOFT)
        if quiet:
            # After untagging by name, an image a container still uses stays (as `<none>`):
            # dockerd 20.10 does this even with -f (see rmi.md).
            mask |= _STOPPED
        conflict = self._conflict(rec.id, mask)
        if conflict is not None:
            if quiet and (not self.is_dangling(rec.id) or conflict.used):
                return
            raise conflict
        parent = rec.parent if rec.parent in self._images else ""
        for r in self.references(rec.id):
            await self._remove_ref(r)
            self.event("untag", rec.id, rec.id)
            records.append({"Untagged": r.familiar})
        users = self._users(rec.id)
        del self._images[rec.id]
        await asyncio.to_thread(self._record_path(rec.id).unlink, missing_ok=True)
        self.event("delete", rec.id, rec.id)
        records.append({"Deleted": rec.id})
        if not users:
            # (else a container's rootfs still sits on these layers)
            for chain in await self._release_layers(rec):
                records.append({"Deleted": chain})
        if noprune or not parent:
            return
        await self._delete_image(self._images[parent], records, force=False, noprune=False, quiet=True)

    async def _release_layers(self, rec: ImageRecord) -> list[str]:
        """Remove the image's snapshots (top first) and blobs that no other image shares."""
        if self._settled is not None:
            await self._settled()
        others_chains: set[str] = set()
        others_blobs: set[str] = set()
        for other in self._images.values():
            others_chains.update(other.chain_ids)
            others_blobs.update(layer.digest for layer in other.layers)
            others_blobs.update(other.manifest_digests)
            others_blobs.add(other.id)
        removed: list[str] = []
        for chain in reversed(rec.chain_ids):
            if chain in others_chains:
                break  # its parents are shared too
            await self.layers.settle(chain)
            try:
                if await self.snapshotter.exists(chain):
                    await self.snapshotter.remove(chain)
            except Exception as e:  # noqa: BLE001 - keep the rest consistent, say why
                log.warning("cannot remove snapshot %s of image %s: %s", chain, rec.id, e)
                break
            removed.append(chain)
        blobs = [layer.digest for layer in rec.layers] + list(rec.manifest_digests) + [rec.id]
        doomed = [b for b in dict.fromkeys(blobs) if b not in others_blobs]
        await asyncio.to_thread(lambda: [self.content.delete(b) for b in doomed])
        self._configs.pop(rec.id, None)
        return removed

    async def prune(self, *, dangling_only: bool = True, until_ns: int | None = None,
                    label_filter: Callable[[dict[str, str]], bool] | None = None) -> PruneReport:
        """`POST /images/prune` as moby's ImagePrune: the candidates are the images without
        children (dangling_only) or all of them, less untagged intermediates (deleting their
        children frees them), less those created after `until` or refused by the label filter
        (an image without a container config is never refused, as in moby). Each goes by
        every reference (or by ID when it has none) with its untagged parents; conflicts are
        skipped. The space reclaimed is the size of the layers removed."""
        if self._pruning:
            raise Conflict("a prune operation is already running")
        self._pruning = True
        try:
            return await self._prune(dangling_only, until_ns, label_filter)
        finally:
            self._pruning = False

    async def _prune(self, dangling_only: bool, until_ns: int | None,
                     label_filter: Callable[[dict[str, str]], bool] | None) -> PruneReport:
        sizes: dict[str, int] = {}
        for rec in self._images.values():
            sizes.update(zip(rec.chain_ids, rec.layer_sizes))
        candidates = self.heads() if dangling_only else list(self._images.values())
        parents = self.parent_ids()
        top: list[ImageRecord] = []
        for rec in candidates:
            if self.is_intermediate(rec.id, parents):
                continue
            if until_ns is not None and (not rec.created_ns or rec.created_ns > until_ns):
                continue
            if label_filter is not None:
                try:
                    cfg = self.config(rec).config
                except Exception:  # noqa: BLE001 - unreadable: a label filter cannot vouch for it
                    continue
                if cfg is not None and not label_filter(cfg.labels or {}):
                    continue
            top.append(rec)
        deleted: list[dict[str, str]] = []
        for rec in top:
            if rec.id not in self._images:
                continue  # gone with an earlier one (a parent freed by its child)
            refs = self.references(rec.id)
            targets: list[str]
            if refs:
                if dangling_only and any(r.digest is None for r in refs):
                    continue  # tagged: only digest references make it dangling
                targets = [str(r) for r in refs]
            else:
                targets = [rec.id.split(":", 1)[1]]
            for target in targets:
                try:
                    deleted.extend(await self.delete(target, force=False))
                except (Conflict, NotFound):
                    continue
        reclaimed = sum(sizes.get(d["Deleted"], 0) for d in deleted if "Deleted" in d)
        return PruneReport(deleted, reclaimed)


_EMPTY_CFG = ContainerConfig()


def _now_rfc3339() -> str:
    return rfc3339nano(time.time_ns())
