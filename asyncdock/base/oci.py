"""Wire models of images: OCI / Docker schema 2 manifests, indexes, descriptors, image configs.

Inbound documents come from registries we do not control, so no struct forbids unknown fields.
The image config keeps Docker's own spelling (`config` block in PascalCase, `os.version`...).
"""
from __future__ import annotations

from typing import Any

import msgspec

from .healthcheck import HealthConfig as _HealthConfig

# Media types
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
# What we ask registries for, most preferred first (as containerd/dockerd send it).
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, DOCKER_MANIFEST, OCI_MANIFEST))

LAYER_TYPES = (
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
)


class Platform(msgspec.Struct, frozen=True):
    architecture: str = ""
    os: str = ""
    variant: str = ""
    os_version: str = msgspec.field(default="", name="os.version")
    os_features: list[str] | None = msgspec.field(default=None, name="os.features")

    def __str__(self) -> str:
        s = f"{self.os}/{self.architecture}"
        return f"{s}/{self.variant}" if self.variant else s


class Descriptor(msgspec.Struct, frozen=True, omit_defaults=True):
    mediaType: str
    digest: str
    size: int
    urls: list[str] | None = None
    annotations: dict[str, str] | None = None
    platform: Platform | None = None

    @property
    def short_id(self) -> str:
        """The 12-hex ID Docker shows for a layer in progress output."""
        return self.digest.split(":", 1)[-1][:12]


class Index(msgspec.Struct, omit_defaults=True):
    """OCI image index or Docker manifest list."""

    schemaVersion: int = 2
    mediaType: str = ""
    manifests: list[Descriptor] = msgspec.field(default_factory=list)
    annotations: dict[str, str] | None = None


class Manifest(msgspec.Struct, omit_defaults=True):
    """OCI image manifest or Docker schema 2 manifest."""

    schemaVersion: int = 2
    mediaType: str = ""
    config: Descriptor | None = None
    layers: list[Descriptor] = msgspec.field(default_factory=list)
    annotations: dict[str, str] | None = None


class _Probe(msgspec.Struct):
    schemaVersion: int = 0
    mediaType: str = ""
    manifests: list[Any] | None = None
    config: Any = None
    layers: list[Any] | None = None


class HealthConfig(_HealthConfig):
    """An image config's health check: the same fields as a create request's."""


class ContainerConfig(msgspec.Struct, rename="pascal"):
    """The `config` block of an image config (Docker's container.Config; OCI's ImageConfig is a
    subset of it). Docker-built images carry every field, OCI ones only some."""

    hostname: str = ""
    domainname: str = ""
    user: str = ""
    attach_stdin: bool = False
    attach_stdout: bool = False
    attach_stderr: bool = False
    exposed_ports: dict[str, Any] | None = None
    tty: bool = False
    open_stdin: bool = False
    stdin_once: bool = False
    env: list[str] | None = None
    cmd: list[str] | None = None
    healthcheck: HealthConfig | None = None
    args_escaped: bool = False
    image: str = ""
    volumes: dict[str, Any] | None = None
    working_dir: str = ""
    entrypoint: list[str] | None = None
    network_disabled: bool = False
    mac_address: str = ""
    on_build: list[str] | None = msgspec.field(default=None, name="OnBuild")
    labels: dict[str, str] | None = None
    stop_signal: str = ""
    stop_timeout: int | None = None
    shell: list[str] | None = None


class History(msgspec.Struct, omit_defaults=True):
    created: str = ""
    created_by: str = ""
    author: str = ""
    comment: str = ""
    empty_layer: bool = False


class RootFS(msgspec.Struct):
    type: str = "layers"
    diff_ids: list[str] = msgspec.field(default_factory=list)


class ImageConfig(msgspec.Struct, omit_defaults=True):
    """The image configuration blob (its digest is the image ID)."""

    architecture: str = ""
    os: str = ""
    variant: str = ""
    os_version: str = msgspec.field(default="", name="os.version")
    os_features: list[str] | None = msgspec.field(default=None, name="os.features")
    created: str = ""
    author: str = ""
    config: ContainerConfig | None = None
    container: str = ""
    container_config: ContainerConfig | None = None
    docker_version: str = ""
    comment: str = ""
    history: list[History] = msgspec.field(default_factory=list)
    rootfs: RootFS = msgspec.field(default_factory=RootFS)


_probe_decoder = msgspec.json.Decoder(_Probe)
_index_decoder = msgspec.json.Decoder(Index)
_manifest_decoder = msgspec.json.Decoder(Manifest)
_config_decoder = msgspec.json.Decoder(ImageConfig)


class ManifestError(ValueError):
    pass


def classify_manifest(body: bytes, content_type: str) -> str:
    """The media type of a fetched manifest document: the body's own `mediaType` field first,
    then the Content-Type header, then its shape (OCI makes `mediaType` optional)."""
    try:
        probe = _probe_decoder.decode(body)
    except msgspec.DecodeError as e:
        raise ManifestError(f"invalid manifest: {e}") from None
    if probe.mediaType:
        return probe.mediaType
    ct = content_type.split(";", 1)[0].strip()
    if ct in INDEX_TYPES or ct in MANIFEST_TYPES or ct in DOCKER_SCHEMA1:
        return ct
    if probe.manifests is not None:
        return OCI_INDEX
    if probe.config is not None:
        return OCI_MANIFEST
    if probe.schemaVersion == 1:
        return DOCKER_SCHEMA1[0]
    raise ManifestError("unrecognised manifest document")


def decode_index(body: bytes) -> Index:
    try:
        return _index_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise ManifestError(f"invalid image index: {e}") from None


def decode_manifest(body: bytes) -> Manifest:
    try:
        m = _manifest_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise ManifestError(f"invalid image manifest: {e}") from None
    if m.config is None:
        raise ManifestError("invalid image manifest: no config descriptor")
    return m


def decode_config(body: bytes) -> ImageConfig:
    try:
        return _config_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise ManifestError(f"invalid image config: {e}") from None
