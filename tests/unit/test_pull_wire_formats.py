"""Small pure pieces of the pull path: Docker's progress JSON byte for byte (pull.md), the
X-Registry-Auth header, WWW-Authenticate parsing, platform selection, chain IDs, certs.d."""
from __future__ import annotations

import base64
import hashlib
import json
import ssl
import subprocess
from pathlib import Path

import pytest

from asyncdock.config import DaemonConfig
from asyncdock.images import progress as pm
from asyncdock.base.oci import Descriptor, Platform, classify_manifest
from asyncdock.images.store import chain_ids
from asyncdock.registry.auth import AuthConfig, decode_registry_auth, encode_registry_auth, parse_challenges
from asyncdock.registry.client import RegistryClient
from asyncdock.registry.platforms import normalize_arch, parse_platform, select_manifest


def test_progress_messages_match_dockerd() -> None:
    # Lines copied from docker-api-transcripts/pull.md (dockerd 20.10.24).
    assert pm.encode(pm.status("Pulling from library/busybox", "latest")) == \
        b'{"status":"Pulling from library/busybox","id":"latest"}\r\n'
    assert pm.encode(pm.layer_status("Pulling fs layer", "70484b5bb606")) == \
        b'{"status":"Pulling fs layer","progressDetail":{},"id":"70484b5bb606"}\r\n'
    assert pm.encode(pm.layer_progress("Downloading", "70484b5bb606", 36445, 1084326)) == (
        b'{"status":"Downloading","progressDetail":{"current":36445,"total":1084326},'
        b'"progress":"[=\\u003e                                                 ]  36.45kB/1.084MB",'
        b'"id":"70484b5bb606"}\r\n')
    assert pm.encode(pm.layer_progress("Extracting", "70484b5bb606", 851968, 1084326)) == (
        b'{"status":"Extracting","progressDetail":{"current":851968,"total":1084326},'
        b'"progress":"[=======================================\\u003e           ]    852kB/1.084MB",'
        b'"id":"70484b5bb606"}\r\n')
    assert pm.encode(pm.layer_progress("Extracting", "70484b5bb606", 1084326, 1084326)) == (
        b'{"status":"Extracting","progressDetail":{"current":1084326,"total":1084326},'
        b'"progress":"[==================================================\\u003e]  1.084MB/1.084MB",'
        b'"id":"70484b5bb606"}\r\n')
    digest = "sha256:90d24b314c8314e64f483ec517c113505010fbdf47934b41c42f05f09549e892"
    assert pm.encode(pm.status(f"Digest: {digest}")) == ('{"status":"Digest: %s"}\r\n' % digest).encode()
    assert pm.encode(pm.error("boom <x> & y")) == \
        b'{"errorDetail":{"message":"boom \\u003cx\\u003e \\u0026 y"},"error":"boom \\u003cx\\u003e \\u0026 y"}\r\n'


@pytest.mark.parametrize("size,text", [(0, "0B"), (999, "999B"), (1000, "1kB"), (36445, "36.45kB"),
                                       (1084326, "1.084MB"), (852000, "852kB"), (105 << 20, "110.1MB")])
def test_human_size(size: int, text: str) -> None:
    assert pm.human_size(size) == text


def test_progress_bar_edges() -> None:
    assert pm.progress_bar(0, 0) == ""
    assert pm.progress_bar(5000, 0) == "     5kB"  # no total: just the amount, %8v
    assert pm.progress_bar(10, 5).endswith("      10B")  # wonky current > total drops the total
    assert pm.layer_progress("Downloading", "x", 0, 10)["progressDetail"] == {"total": 10}


def test_registry_auth_header() -> None:
    assert decode_registry_auth(None) is None
    assert decode_registry_auth("e30=") is None  # the CLI's "{}"
    assert decode_registry_auth("garbage!!") is None
    cfg = AuthConfig(username="u", password="p/+?", serveraddress="127.0.0.1:5000")
    enc = encode_registry_auth(cfg)
    assert decode_registry_auth(enc) == cfg
    assert decode_registry_auth(enc.rstrip("=")) == cfg  # unpadded, as some clients send it
    std = base64.b64encode(json.dumps({"username": "u", "password": "p"}).encode()).decode()
    assert decode_registry_auth(std).credentials() == ("u", "p")
    assert AuthConfig(auth=base64.b64encode(b"a:b:c").decode()).credentials() == ("a", "b:c")
    assert decode_registry_auth(encode_registry_auth(AuthConfig(identitytoken="tok"))).identitytoken == "tok"


def test_parse_challenges() -> None:
    [ch] = parse_challenges(['Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                             'scope="repository:library/busybox:pull"'])
    assert ch.scheme == "bearer"
    assert ch.params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                         "scope": "repository:library/busybox:pull"}
    both = parse_challenges(['Basic realm="x", Bearer realm="y",service=s'])
    assert [c.scheme for c in both] == ["basic", "bearer"]
    assert both[1].params == {"realm": "y", "service": "s"}


def test_platform_selection() -> None:
    def d(arch: str, os_: str = "linux", variant: str = "") -> Descriptor:
        return Descriptor("application/vnd.oci.image.manifest.v1+json", f"sha256:{arch}{variant}".ljust(71, "0"), 1,
                          platform=Platform(architecture=arch, os=os_, variant=variant))

    entries = [d("arm64", variant="v8"), d("amd64"), d("unknown", "unknown"), d("arm", variant="v7")]
    assert select_manifest(entries, Platform("amd64", "linux")) is entries[1]
    assert select_manifest(entries, Platform("arm64", "linux")) is entries[0]
    assert select_manifest(entries, Platform("arm", "linux", "v7")) is entries[3]
    assert select_manifest(entries, Platform("s390x", "linux")) is None
    # amd64/v3 hosts take a v2 image over a baseline one, and a baseline one when that is all.
    assert select_manifest([d("amd64"), d("amd64", variant="v2")], Platform("amd64", "linux", "v3")).platform.variant == "v2"
    assert normalize_arch("x86_64") == ("amd64", "") and normalize_arch("aarch64", "v8") == ("arm64", "")
    assert parse_platform("linux/arm64") == Platform("arm64", "linux")
    assert str(parse_platform("linux/arm/v6")) == "linux/arm/v6"


def test_chain_ids_as_docker() -> None:
    diffs = ["sha256:" + "a" * 64, "sha256:" + "b" * 64]
    ids = chain_ids(diffs)
    assert ids[0] == diffs[0]
    assert ids[1] == "sha256:" + hashlib.sha256(f"{diffs[0]} {diffs[1]}".encode()).hexdigest()


def test_classify_manifest() -> None:
    assert classify_manifest(b'{"schemaVersion":2,"manifests":[]}', "") == "application/vnd.oci.image.index.v1+json"
    assert classify_manifest(b'{"schemaVersion":2,"config":{}}', "application/octet-stream") == \
        "application/vnd.oci.image.manifest.v1+json"
    assert classify_manifest(b'{"schemaVersion":2,"mediaType":"x"}', "") == "x"


def test_certs_d_ca_is_loaded(tmp_path: Path) -> None:
    certs = tmp_path / "certs.d" / "registry.example:5000"
    certs.mkdir(parents=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=asyncdock-test-ca", "-keyout", str(tmp_path / "ca.key"), "-out", str(certs / "ca.crt")],
                   check=True, capture_output=True)
    client = RegistryClient(DaemonConfig(config_dir=str(tmp_path)))
    ctx = client._ssl_context("registry.example:5000")
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED
    subjects = [dict(x[0] for x in c["subject"]).get("commonName") for c in ctx.get_ca_certs()]
    assert "asyncdock-test-ca" in subjects
    other = client._ssl_context("elsewhere.example")
    assert "asyncdock-test-ca" not in [dict(x[0] for x in c["subject"]).get("commonName")
                                       for c in other.get_ca_certs()]


def test_endpoints_and_insecure_registries(tmp_path: Path) -> None:
    import asyncio

    cfg = DaemonConfig(config_dir=str(tmp_path), insecure_registries=["10.0.0.0/8", "myreg:5000"],
                       registry_mirrors=["http://127.0.0.1:5001", "https://mirror.example/"])
    client = RegistryClient(cfg)

    async def main() -> None:
        assert await client.is_insecure("10.1.2.3:5000")
        assert await client.is_insecure("myreg:5000")
        assert await client.is_insecure("127.0.0.1:5000") and await client.is_insecure("[::1]:5000")
        assert not await client.is_insecure("8.8.8.8")
        # Insecure: https without verification first, then plain http (dockerd's order).
        eps = await client.endpoints("127.0.0.1:5000")
        assert [(e.base, e.ssl) for e in eps] == [("https://127.0.0.1:5000", False), ("http://127.0.0.1:5000", None)]
        # docker.io: the mirrors, then the Hub.
        eps = await client.endpoints("docker.io")
        assert [e.base for e in eps] == ["http://127.0.0.1:5001", "https://mirror.example",
                                         "https://registry-1.docker.io"]
        assert [e.mirror for e in eps] == [True, True, False]
        secure = await client.endpoints("8.8.8.8:443")
        assert len(secure) == 1 and isinstance(secure[0].ssl, ssl.SSLContext)

    asyncio.run(main())
