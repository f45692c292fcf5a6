"""ContentStore: atomic commit, mismatch discard, resume from an offset, ingest gc."""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from asyncdock.content.store import ContentStore, DigestMismatch, IngestLocked, sha256_digest
from asyncdock.base.errors import NotFound

DATA = os.urandom(3 << 20) + b"tail"
DIGEST = sha256_digest(DATA)


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "content")


def _visible_blobs(store: ContentStore) -> list[str]:
    return store.list()


def test_put_read_delete(store: ContentStore) -> None:
    d = store.put(b"hello")
    assert d == "sha256:" + hashlib.sha256(b"hello").hexdigest()
    assert store.exists(d) and store.read_bytes(d) == b"hello" and store.size(d) == 5
    assert store.put(b"hello", expected=d) == d  # idempotent
    with pytest.raises(DigestMismatch):
        store.put(b"other", expected=d)
    assert store.list() == [d]
    assert store.delete(d) and not store.exists(d) and not store.delete(d)
    with pytest.raises(NotFound):
        store.read_bytes(d)


def test_ingest_commit_is_atomic(store: ContentStore) -> None:
    ref = store.ref_for(DIGEST)
    w = store.ingest(ref, DIGEST, len(DATA))
    assert w.offset == 0
    w.write(DATA[:100])
    # A partial blob is never visible as content.
    assert not store.exists(DIGEST) and _visible_blobs(store) == []
    w.write(DATA[100:])
    assert w.commit() == DIGEST
    assert store.read_bytes(DIGEST) == DATA
    assert store.list_ingests() == {}
    # No temporary files are left next to the blob.
    assert sorted(p.name for p in store.path(DIGEST).parent.iterdir()) == [DIGEST[7:]]


def test_mismatch_discards_ingest(store: ContentStore) -> None:
    ref = store.ref_for(DIGEST)
    w = store.ingest(ref, DIGEST, len(DATA))
    w.write(DATA[:-1] + b"X")
    with pytest.raises(DigestMismatch) as exc:
        w.commit()
    assert DIGEST in str(exc.value)
    assert not store.exists(DIGEST)
    assert store.ingest_offset(ref) == 0 and store.list_ingests() == {}
    # Wrong size is reported as such.
    w = store.ingest(ref, DIGEST, len(DATA))
    w.write(DATA[:10])
    with pytest.raises(DigestMismatch, match="received 10 bytes, expected"):
        w.commit()


def test_resume_from_offset(store: ContentStore) -> None:
    ref = store.ref_for(DIGEST)
    w = store.ingest(ref, DIGEST, len(DATA))
    w.write(DATA[: 1 << 20])
    w.close()  # a cancelled pull: the bytes stay
    assert store.ingest_offset(ref) == 1 << 20
    assert store.list_ingests() == {ref: 1 << 20}
    # A later transfer (or a new store over the same root: a daemon restart) continues there,
    # and the prefix is re-hashed so the final digest covers the whole blob.
    again = ContentStore(store.root)
    w = again.ingest(ref, DIGEST, len(DATA))
    assert w.offset == 1 << 20 and w.resumed_from == 1 << 20
    w.write(DATA[1 << 20:])
    assert w.commit() == DIGEST
    assert again.read_bytes(DIGEST) == DATA


def test_resume_oversized_partial_restarts(store: ContentStore) -> None:
    ref = store.ref_for(DIGEST)
    w = store.ingest(ref, DIGEST, 10)
    w.write(b"x" * 20)
    w.close()
    w = store.ingest(ref, DIGEST, 10)
    assert w.offset == 0
    w.abort()


def test_truncate_and_verify(store: ContentStore) -> None:
    ref = store.ref_for(DIGEST)
    w = store.ingest(ref, DIGEST, len(DATA))
    w.write(b"garbage")
    w.truncate()
    assert w.offset == 0
    w.write(DATA)
    w.verify()
    w.commit()
    assert store.exists(DIGEST)


def test_one_writer_per_ref(store: ContentStore) -> None:
    ref = store.ref_for(DIGEST)
    w = store.ingest(ref, DIGEST, len(DATA))
    with pytest.raises(IngestLocked):
        store.ingest(ref, DIGEST, len(DATA))
    w.close()
    store.ingest(ref, DIGEST, len(DATA)).abort()


def test_gc_ingests(store: ContentStore) -> None:
    keep_d, drop_d, young_d = (sha256_digest(x) for x in (b"keep", b"drop", b"young"))
    for d in (keep_d, drop_d, young_d):
        w = store.ingest(store.ref_for(d), d, 100)
        w.write(b"partial")
        w.close()
    busy = store.ingest(store.ref_for(sha256_digest(b"busy")), sha256_digest(b"busy"), 100)
    busy.write(b"p")
    old = time.time() - 3600
    for ref in (store.ref_for(keep_d), store.ref_for(drop_d), store.ref_for(sha256_digest(b"busy"))):
        d = store._ingest_dir(ref)
        for p in d.iterdir():
            os.utime(p, (old, old))
    removed = store.gc_ingests(keep_refs={store.ref_for(keep_d)}, older_than=600)
    assert removed == [store.ref_for(drop_d)]
    assert set(store.list_ingests()) == {store.ref_for(keep_d), store.ref_for(young_d),
                                         store.ref_for(sha256_digest(b"busy"))}
    busy.abort()
