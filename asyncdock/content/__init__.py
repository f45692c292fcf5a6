"""Content store: blobs by digest and resumable named ingests."""
from .store import ContentError, ContentStore, DigestMismatch, IngestLocked, IngestWriter, sha256_digest

__all__ = ["ContentError", "ContentStore", "DigestMismatch", "IngestLocked", "IngestWriter", "sha256_digest"]
