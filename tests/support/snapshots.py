"""Helpers for the snapshotter tests (tests/conformance/test_snapshotter.py and
tests/integration/test_snapshotters.py): layer tars made in memory, the unpacker's protocol
(prepare, extract with apply_layer, commit), and mounts undone on exit."""
from __future__ import annotations

import asyncio
import contextlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

from asyncdock.snapshots import mount as mnt
from asyncdock.snapshots.base import Mount, Snapshotter
from asyncdock.snapshots.unpack import apply_layer

TAR = "application/vnd.oci.image.layer.v1.tar"


@contextlib.contextmanager
def mounted(mounts: list[Mount], target: Path) -> Iterator[Path]:
    target.mkdir(parents=True, exist_ok=True)
    mnt.mount(mounts, target)
    try:
        yield target
    finally:
        mnt.unmount(target)


def layer(*entries: tuple[str, str, bytes | str]) -> bytes:
    """Entries: ("dir", name, ""), ("file", name, data), ("symlink", name, target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for kind, name, arg in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1_600_000_000
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            elif kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, str(arg)
                tf.addfile(ti)
            else:
                data = arg.encode() if isinstance(arg, str) else arg
                ti.size, ti.mode = len(data), 0o644
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


async def unpack(s: Snapshotter, name: str, parent: str | None, blob: bytes) -> str:
    """The unpacker's protocol: prepare (without the parent when layers are independent),
    extract into the upper dir, commit with the real parent."""
    key = f"extract-{name}"
    await s.prepare(key, None if s.independent_layers else parent)
    diff_id = await asyncio.to_thread(apply_layer, io.BytesIO(blob), s.upper_dir(key),
                                      whiteouts=s.whiteouts, media_type=TAR)
    await s.commit(name, key, parent=parent)
    return diff_id


async def chain(s: Snapshotter, blobs: list[bytes]) -> str:
    """Committed snapshots layer-0 .. layer-N-1, each on the previous; the top's name."""
    parent = None
    for i, blob in enumerate(blobs):
        await unpack(s, f"layer-{i}", parent, blob)
        parent = f"layer-{i}"
    assert parent is not None
    return parent
