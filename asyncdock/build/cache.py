"""The classic build cache (moby image/cache): a step hits when a local image's parent is the
current image and its container_config matches the step's (moby's `compare`). Images are the
cache, so it survives a restart with them; the children-by-parent index lives in memory and is
rebuilt from the image records (no config read) when the store changed under it."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..base.oci import ContainerConfig

if TYPE_CHECKING:
    from ..images.store import ImageRecord, ImageStore

log = logging.getLogger(__name__)


def compare(a: ContainerConfig | None, b: ContainerConfig | None) -> bool:
    """moby image/cache/compare.go."""
    if a is None or b is None or a.open_stdin or b.open_stdin:
        return False
    if (a.attach_stdout, a.attach_stderr, a.user, a.tty) != (b.attach_stdout, b.attach_stderr, b.user, b.tty):
        return False
    if list(a.cmd or []) != list(b.cmd or []) or list(a.entrypoint or []) != list(b.entrypoint or []):
        return False
    if sorted(a.env or []) != sorted(b.env or []) or len(a.env or []) != len(b.env or []):
        return False
    if dict(a.labels or {}) != dict(b.labels or {}):
        return False
    if set(a.exposed_ports or {}) != set(b.exposed_ports or {}):
        return False
    if set(a.volumes or {}) != set(b.volumes or {}):
        return False
    return True


class BuildCache:
    def __init__(self, images: ImageStore) -> None:
        self.images = images
        self._children: dict[str, list[str]] = {}
        self._known: int = -1  # how many records the index was built from

    def _index(self) -> dict[str, list[str]]:
        records = self.images.list()
        if len(records) != self._known:
            children: dict[str, list[str]] = {}
            for rec in records:
                if rec.parent:
                    children.setdefault(rec.parent, []).append(rec.id)
            self._children = children
            self._known = len(records)
        return self._children

    def added(self, rec: ImageRecord) -> None:
        """A step's new image (kept in the index without a rebuild)."""
        self._index()
        if rec.parent:
            lst = self._children.setdefault(rec.parent, [])
            if rec.id not in lst:
                lst.append(rec.id)
                self._known += 1

    def lookup(self, parent: str, config: ContainerConfig, *, os_: str = "linux") -> str | None:
        """The newest child of `parent` whose container_config matches."""
        best: ImageRecord | None = None
        for cid in self._index().get(parent, ()):
            rec = self.images.find(cid)
            if rec is None:
                continue
            cfg = self.images.config(rec)
            if (cfg.os or "linux") != os_ or not compare(cfg.container_config, config):
                continue
            if best is None or rec.created_ns > best.created_ns:
                best = rec
        return best.id if best is not None else None

    def _intermediates(self) -> list[ImageRecord]:
        """Untagged images that are some image's parent or were made by a build step."""
        out: list[ImageRecord] = []
        for rec in self.images.list():
            if rec.parent and not self.images.references(rec.id):
                out.append(rec)
        return out

    def records(self) -> list[dict[str, Any]]:
        """Each cached intermediate image as a swagger `BuildCache` record (docker system df)."""
        from ..base.timefmt import rfc3339nano

        out: list[dict[str, Any]] = []
        # An intermediate under another image is that image's layers too: shared, so
        # `docker system df` does not count it reclaimable (prune() would not remove it).
        parents = {r.parent for r in self.images.list() if r.parent}
        for rec in self._intermediates():
            cfg = self.images.config(rec)
            cc = cfg.container_config
            desc = " ".join(cc.cmd or []) if cc is not None else ""
            parent = self.images.find(rec.parent)
            size = max(0, rec.size - (parent.size if parent is not None else 0))  # the step's own layer
            created = rfc3339nano(rec.created_ns) if rec.created_ns else cfg.created
            out.append({"ID": rec.id.partition(":")[2][:25], "Parents": [rec.parent.partition(":")[2][:25]],
                        "Type": "regular", "Description": desc, "InUse": False, "Shared": rec.id in parents,
                        "Size": size, "CreatedAt": created, "LastUsedAt": created, "UsageCount": 0})
        return out

    async def prune(self, *, all_: bool = False) -> tuple[list[str], int]:
        """Remove untagged intermediate images no container and no other image uses."""
        deleted: list[str] = []
        reclaimed = 0
        changed = True
        while changed:
            changed = False
            parents = {r.parent for r in self.images.list() if r.parent}
            for rec in self._intermediates():
                if rec.id in parents:
                    continue
                before = rec.size
                try:
                    await self.images.delete(rec.id)
                except Exception:  # noqa: BLE001 - in use: not reclaimable now
                    continue
                deleted.append(rec.id.partition(":")[2][:25])
                reclaimed += before
                changed = True
        self._known = -1
        return deleted, reclaimed


def _valid_parent(target: ImageRecord, t_hist: list[Any], parent: ImageRecord | None, p_hist: list[Any]) -> bool:
    """moby image/cache isValidParent: the parent's history and layers are a prefix of the target's."""
    if not t_hist:
        return False
    if parent is None or (not p_hist and not parent.diff_ids):
        return True
    if len(p_hist) >= len(t_hist) or len(parent.diff_ids) > len(target.diff_ids):
        return False
    return p_hist == t_hist[:len(p_hist)] and list(parent.diff_ids) == list(target.diff_ids[:len(parent.diff_ids)])


def history_layer_index(t_hist: list[Any], index: int) -> int | None:
    """moby getLayerForHistoryIndex: the layer of history entry `index` (None: an empty one)."""
    if t_hist[index].empty_layer:
        return None
    return sum(1 for h in t_hist[:index] if not h.empty_layer)


class CacheFromSources:
    """`--cache-from` (moby image/cache ImageCache): the cache is the history of the named
    images, which need no local parent chain (a pulled or loaded image has none). A local hit
    counts only if it is an ancestor of a source; otherwise a source whose history and layers
    continue the current image's by this step's command (History.CreatedBy, the Cmd joined)
    gives the step: the source itself when it is that step's last entry, else an image restored
    from the source's layer and history entry, on the current image."""

    def __init__(self, images: ImageStore, local: BuildCache, refs: list[str],
                 make: Callable[[ImageRecord | None, ImageRecord, int, ContainerConfig], Awaitable[ImageRecord]]) -> None:
        self.images = images
        self.local = local
        self._make = make
        self.sources: list[ImageRecord] = []
        for ref in refs:
            try:
                self.sources.append(images.resolve(ref))
            except Exception as e:  # noqa: BLE001 - moby: "Could not look up ... skipping"
                log.warning("Could not look up %s for cache resolution, skipping: %s", ref, e)

    def _is_ancestor(self, image_id: str, ancestor: str) -> bool:
        seen: set[str] = set()
        cur = self.images.find(image_id)
        while cur is not None and cur.parent and cur.parent not in seen:
            if cur.parent == ancestor:
                return True
            seen.add(cur.parent)
            cur = self.images.find(cur.parent)
        return False

    async def lookup(self, parent_id: str, config: ContainerConfig, *, os_: str = "linux") -> str | None:
        hit = self.local.lookup(parent_id, config, os_=os_)
        if hit is not None and any(s.id == hit or self._is_ancestor(s.id, hit) for s in self.sources):
            return hit
        parent = self.images.find(parent_id) if parent_id else None
        p_hist = list(self.images.config(parent).history or []) if parent is not None else []
        created_by = " ".join(config.cmd or [])
        for target in self.sources:
            t_hist = list(self.images.config(target).history or [])
            if not _valid_parent(target, t_hist, parent, p_hist) or t_hist[len(p_hist)].created_by != created_by:
                continue
            if len(t_hist) - 1 == len(p_hist):
                return target.id
            rec = await self._make(parent, target, len(p_hist), config)
            self.sources = [target]
            return rec.id
        self.sources = []
        return None
