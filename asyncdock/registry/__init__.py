"""Registry access: reference grammar, credentials and the distribution API client."""
from .auth import AuthConfig, decode_registry_auth, encode_registry_auth
from .client import RegistryClient, RegistryError, Repository, ResolvedManifest, TransferStalled
from .reference import Reference, ReferenceError_, parse_any, parse_normalized, parse_pull_reference

__all__ = ["AuthConfig", "decode_registry_auth", "encode_registry_auth", "RegistryClient", "RegistryError",
           "Repository", "ResolvedManifest", "TransferStalled", "Reference", "ReferenceError_", "parse_any",
           "parse_normalized", "parse_pull_reference"]
