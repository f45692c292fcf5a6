"""Content-addressed blobs with resumable, named ingests (containerd's local content store shape).

    <root>/blobs/sha256/<hex>             immutable, complete, verified blobs
    <root>/ingest/<sha256(ref)>/data      bytes received so far for one in-flight blob
    <root>/ingest/<sha256(ref)>/ref       the ingest's name (so gc can report it)
    <root>/ingest/<sha256(ref)>/total     the expected size
    <root>/tmp/                           small blobs being put (emptied at start-up)

A blob appears under blobs/ only by an atomic rename of a fully written, fsynced and verified
ingest, so nothing half-written is ever visible as a blob. An ingest outlives cancellation and
daemon restarts: opening the same ref again continues at `offset` (its prefix is re-hashed, since
a hash state cannot be saved). Every method here blocks; callers run them in worker threads.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Collection
from pathlib import Path

from ..base.errors import EngineError, NotFound
from ..util.atomic import atomic_write_bytes, fsync_dir
from ..util.fstree import remove_tree_quietly

log = logging.getLogger(__name__)

_HEX64 = re.compile(r"^[a-f0-9]{64}$")
_READ = 1 << 20


class ContentError(EngineError):
    """A blob failed verification or its ingest cannot be used (HTTP 500)."""


class DigestMismatch(ContentError):
    def __init__(self, expected: str, actual: str, size: int, expected_size: int | None) -> None:
        if expected_size is not None and size != expected_size:
            msg = (f"content verification failed for {expected}: received {size} bytes, "
                   f"expected {expected_size}")
        else:
            msg = f"content verification failed for {expected}: the data hashes to {actual}"
        super().__init__(msg)
        self.expected = expected
        self.actual = actual


class IngestLocked(ContentError):
    pass


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _hex_of(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or not _HEX64.match(hexpart):
        raise ContentError(f"unsupported or malformed digest {digest!r}")
    return hexpart


class ContentStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._blobs = self.root / "blobs" / "sha256"
        self._ingest = self.root / "ingest"
        self._tmp = self.root / "tmp"  # small blobs being put (names private to one writer)
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._ingest.mkdir(parents=True, exist_ok=True)
        remove_tree_quietly(self._tmp)  # what a crash left mid-put
        self._tmp.mkdir(parents=True, exist_ok=True)
        # One writer per ref at a time (one daemon per data root, so a process-local lock is
        # enough); gc skips refs that are open.
        self._lock = threading.Lock()
        self._open: set[str] = set()

    # ---- blobs
    def path(self, digest: str) -> Path:
        return self._blobs / _hex_of(digest)

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"content {digest}: not found") from None

    def read_bytes(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"content {digest}: not found") from None

    def put(self, data: bytes, expected: str | None = None) -> str:
        """Store a small blob held in memory (manifests, configs); returns its digest."""
        digest = sha256_digest(data)
        if expected is not None and digest != expected:
            raise DigestMismatch(expected, digest, len(data), None)
        p = self.path(digest)
        if not p.exists():
            # A private temporary name: two pulls may store the same manifest at once.
            tmp = self._tmp / uuid.uuid4().hex
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self._commit_file(tmp, digest)
            finally:
                tmp.unlink(missing_ok=True)
        return digest

    def scratch_dir(self, prefix: str) -> Path:
        """A new private directory for one job's large temporary files (an archive being
        loaded), on the blobs' file system so that `adopt` is a rename. It goes with tmp/ at
        the next start if the job never removes it."""
        d = self._tmp / f"{prefix}{uuid.uuid4().hex}"
        d.mkdir(mode=0o700)
        return d

    def adopt(self, src: Path, digest: str) -> str:
        """Make the file `src`, which the caller wrote and hashed to `digest` (under
        scratch_dir), the blob `digest`: fsync and rename, no copy. An existing blob wins."""
        _hex_of(digest)
        if self.exists(digest):
            src.unlink(missing_ok=True)
            return digest
        fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._commit_file(src, digest)
        return digest

    def writer(self) -> BlobWriter:
        """A new blob whose digest is known only once written (a layer compressed here)."""
        return BlobWriter(self)

    def delete(self, digest: str) -> bool:
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def list(self) -> list[str]:
        return sorted("sha256:" + p.name for p in self._blobs.iterdir() if _HEX64.match(p.name))

    # ---- ingests
    @staticmethod
    def ref_for(digest: str) -> str:
        """The stable ingest name for a blob, so a later pull of the same blob resumes it."""
        return f"blob-{digest}"

    def _ingest_dir(self, ref: str) -> Path:
        return self._ingest / hashlib.sha256(ref.encode()).hexdigest()

    def ingest(self, ref: str, expected_digest: str, expected_size: int | None) -> IngestWriter:
        """Open (or continue) the ingest named `ref`. Raises IngestLocked if it is open already."""
        _hex_of(expected_digest)
        with self._lock:
            if ref in self._open:
                raise IngestLocked(f"ingest {ref} is in use by another transfer")
            self._open.add(ref)
        try:
            return IngestWriter(self, ref, self._ingest_dir(ref), expected_digest, expected_size)
        except BaseException:
            self._release(ref)
            raise

    def ingest_offset(self, ref: str) -> int:
        """Bytes kept for `ref` (0 when there is no ingest)."""
        try:
            return (self._ingest_dir(ref) / "data").stat().st_size
        except FileNotFoundError:
            return 0

    def list_ingests(self) -> dict[str, int]:
        """ref -> bytes on disk, for every ingest."""
        out: dict[str, int] = {}
        for d in self._ingest.iterdir():
            try:
                ref = (d / "ref").read_text()
                out[ref] = (d / "data").stat().st_size
            except OSError:
                continue
        return out

    def gc_ingests(self, keep_refs: Collection[str] = (), older_than: float = 0.0) -> list[str]:
        """Drop ingests nobody is writing, not in `keep_refs`, untouched for `older_than` seconds.
        Returns the refs removed (or directory names, for ingests too broken to name)."""
        removed: list[str] = []
        cutoff = time.time() - older_than
        keep = set(keep_refs)
        for d in list(self._ingest.iterdir()):
            try:
                ref = (d / "ref").read_text()
            except OSError:
                ref = None
            if ref is not None and (ref in keep or ref in self._open):
                continue
            try:
                mtime = max((p.stat().st_mtime for p in d.iterdir()), default=d.stat().st_mtime)
            except OSError:
                mtime = 0.0
            if mtime > cutoff:
                continue
            if not remove_tree_quietly(d):
                continue  # the next gc tries again
            removed.append(ref if ref is not None else d.name)
        return removed

    def _release(self, ref: str) -> None:
        with self._lock:
            self._open.discard(ref)

    def _commit_file(self, src: Path, digest: str) -> None:
        dst = self.path(digest)
        os.replace(src, dst)
        fsync_dir(dst.parent)


class IngestWriter:
    """One in-flight blob. Not thread-safe: one thread writes it at a time."""

    def __init__(self, store: ContentStore, ref: str, directory: Path, expected: str,
                 expected_size: int | None) -> None:
        self._store = store
        self.ref = ref
        self.expected = expected
        self.expected_size = expected_size
        self._dir = directory
        self._closed = False
        directory.mkdir(parents=True, exist_ok=True)
        data = directory / "data"
        self.data_path = data
        self._hash = hashlib.sha256()
        fd = os.open(data, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(fd).st_size
            if expected_size is not None and size > expected_size:
                # More than the blob holds: not a prefix of it. Start over.
                os.ftruncate(fd, 0)
                size = 0
            # Re-hash what an earlier attempt left, so the digest covers the whole blob.
            done = 0
            while done < size:
                chunk = os.pread(fd, min(_READ, size - done), done)
                if not chunk:
                    break
                self._hash.update(chunk)
                done += len(chunk)
            os.lseek(fd, done, os.SEEK_SET)
            if done != size:
                os.ftruncate(fd, done)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.offset = done
        self.resumed_from = done
        if not (directory / "ref").exists():
            atomic_write_bytes(directory / "ref", ref.encode(), durable=False)
            atomic_write_bytes(directory / "total", str(expected_size or 0).encode(), durable=False)

    def write(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk)
        self._hash.update(view)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.offset += len(chunk)

    def truncate(self) -> None:
        """Forget every byte received (a server that cannot resume sends the blob again)."""
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._hash = hashlib.sha256()
        self.offset = 0
        self.resumed_from = 0

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    def verify(self) -> None:
        """Raise DigestMismatch unless what was written is exactly the expected blob."""
        actual = self.digest
        size_ok = self.expected_size is None or self.offset == self.expected_size
        if not size_ok or actual != self.expected:
            raise DigestMismatch(self.expected, actual, self.offset, self.expected_size)

    def commit(self) -> str:
        """Verify, fsync and atomically move the data into blobs/. On a mismatch the ingest is
        discarded (its bytes are wrong, resuming it would fail again) and DigestMismatch raised."""
        if self._closed:
            raise ContentError(f"ingest {self.ref} is closed")
        try:
            self.verify()
        except DigestMismatch:
            self.abort()
            raise
        os.fsync(self._fd)
        os.close(self._fd)
        self._closed = True
        try:
            if self._store.exists(self.expected):
                # Someone else committed the same content meanwhile; ours is redundant.
                pass
            else:
                self._store._commit_file(self.data_path, self.expected)
        finally:
            remove_tree_quietly(self._dir)
            self._store._release(self.ref)
        return self.expected

    def close(self) -> None:
        """Stop writing but keep the bytes for a later resume."""
        if self._closed:
            return
        self._closed = True
        try:
            os.close(self._fd)
        finally:
            self._store._release(self.ref)

    def abort(self) -> None:
        """Drop the ingest and its bytes."""
        if not self._closed:
            self._closed = True
            try:
                os.close(self._fd)
            except OSError:
                pass
        remove_tree_quietly(self._dir)
        self._store._release(self.ref)

    def __enter__(self) -> IngestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlobWriter:
    """A blob written here whose digest is its hash at the end: bytes go to a private file
    under tmp/ (readable at `path` while it grows); `commit` moves it into blobs/."""

    def __init__(self, store: ContentStore) -> None:
        self._store = store
        self.path = store._tmp / uuid.uuid4().hex
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        assert self._fd is not None
        view = memoryview(data)
        self._hash.update(view)
        n = len(view)
        while view:
            view = view[os.write(self._fd, view):]
        self.size += n
        return n

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    def finish(self) -> str:
        """No more bytes: fsync and close; the file stays at `path` until commit."""
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        return self.digest

    def commit(self) -> str:
        digest = self.finish()
        try:
            if not self._store.exists(digest):
                self._store._commit_file(self.path, digest)
        finally:
            self.path.unlink(missing_ok=True)
        return digest

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.path.unlink(missing_ok=True)
