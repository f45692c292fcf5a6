"""`docker import` through a real daemon: `docker export | docker import`, compressed tars,
a loopback URL, and bad input that leaves nothing behind."""
from __future__ import annotations

import bz2
import gzip
import http.server
import io
import json
import lzma
import os
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o755, 1_600_000_000
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _stream(raw: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in raw.split(b"\r\n") if line]


def test_export_import_round_trip(daemon: Daemon) -> None:
    d = daemon
    d.docker("run", "--name", "c1", "busybox", "sh", "-c", "echo exported > /marker")
    exported = d.docker("export", "c1", text=False).stdout
    out = d.docker("import", "-c", 'CMD ["sh"]', "-m", "imported it", "-", "flat:1", input=exported).stdout
    image_id = out.decode().strip()
    assert image_id.startswith("sha256:")
    assert d.docker("run", "--rm", "flat:1", "cat", "/marker").stdout == "exported\n"
    assert d.docker("run", "--rm", "-i", "flat:1", input="echo from-the-default-sh\n").stdout == "from-the-default-sh\n"
    doc = json.loads(d.request("GET", "/v1.41/images/flat:1/json")[1])
    assert doc["Id"] == image_id and doc["Config"]["Cmd"] == ["sh"]
    assert doc["Comment"] == "imported it" and len(doc["RootFS"]["Layers"]) == 1
    assert doc["Parent"] == "" and doc["Os"] == "linux" and doc["Architecture"]
    hist = json.loads(d.request("GET", "/v1.41/images/flat:1/history")[1])
    assert len(hist) == 1 and hist[0]["Id"] == image_id and hist[0]["Comment"] == "imported it"
    assert hist[0]["Size"] > 0
    d.docker("rm", "c1")
    d.docker("rmi", "flat:1")


@pytest.mark.parametrize("codec", ["gzip", "bzip2", "xz", "zstd"])
def test_import_compressed(daemon: Daemon, codec: str) -> None:
    raw = _tar({"hello": b"#!/bin/sh\necho hi\n", "dir/f": b"x"})
    if codec == "gzip":
        body = gzip.compress(raw)
    elif codec == "bzip2":
        body = bz2.compress(raw)
    elif codec == "xz":
        body = lzma.compress(raw)
    else:
        import zstandard

        body = zstandard.ZstdCompressor().compress(raw)
    status, out = daemon.request("POST", f"/v1.41/images/create?fromSrc=-&repo=packed&tag={codec}", body=body)
    assert status == 200, out
    msgs = _stream(out)
    assert msgs[-1]["status"].startswith("sha256:")  # type: ignore[union-attr]
    doc = json.loads(daemon.request("GET", f"/v1.41/images/packed:{codec}/json")[1])
    assert doc["Id"] == msgs[-1]["status"]
    import hashlib
    assert doc["RootFS"]["Layers"] == ["sha256:" + hashlib.sha256(raw).hexdigest()]
    daemon.docker("rmi", f"packed:{codec}")


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback web server for the tar."""
    handler = type("H", (http.server.SimpleHTTPRequestHandler,),
                   {"log_message": lambda *a: None,
                    "__init__": lambda self, *a, **k: http.server.SimpleHTTPRequestHandler.__init__(
                        self, *a, directory=str(tmp_path), **k)})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", tmp_path
    finally:
        srv.shutdown()
        srv.server_close()
        t.join()


def test_import_from_a_url(daemon: Daemon, web: tuple[str, Path]) -> None:
    base, root = web
    (root / "root.tar.gz").write_bytes(gzip.compress(_tar({"from-url": b"yes"})))
    status, out = daemon.request(
        "POST", f"/v1.41/images/create?fromSrc={base}/root.tar.gz&repo=fromurl&changes=ENV%20X%3D1")
    assert status == 200, out
    msgs = _stream(out)
    assert msgs[0] == {"status": f"Downloading from {base}/root.tar.gz"}
    assert msgs[-1]["status"].startswith("sha256:")  # type: ignore[union-attr]
    doc = json.loads(daemon.request("GET", "/v1.41/images/fromurl/json")[1])
    assert doc["Config"]["Env"] == ["X=1"]
    # the CLI: `docker import URL`
    out2 = daemon.docker("import", f"{base}/root.tar.gz", "fromurl:cli").stdout
    lines = out2.splitlines()
    assert lines[0] == f"Downloading from {base}/root.tar.gz" and lines[-1].startswith("sha256:")
    cli = json.loads(daemon.request("GET", "/v1.41/images/fromurl:cli/json")[1])
    assert cli["RootFS"] == doc["RootFS"] and cli["Id"] == lines[-1]
    daemon.docker("rmi", "fromurl", "fromurl:cli")
    # a missing file is an error in the stream, nothing stored
    status, out = daemon.request("POST", f"/v1.41/images/create?fromSrc={base}/nope.tar&repo=gone")
    assert status == 400
    assert json.loads(out)["message"].startswith(f"failed to GET {base}/nope.tar with status 404 ")
    assert "gone" not in daemon.docker("images", "--format", "{{.Repository}}").stdout.split()


def test_import_bad_input_stores_nothing(daemon: Daemon) -> None:
    d = daemon
    before_images = d.docker("images", "-q").stdout
    status, out = d.request("POST", "/v1.41/images/create?fromSrc=-&repo=bad", body=b"this is not a tar" * 100)
    assert status == 400 and "invalid tar" in json.loads(out)["message"]
    status, out = d.request("POST", "/v1.41/images/create?fromSrc=-&repo=bad",
                            body=gzip.compress(b"\x00garbage" * 1000))
    assert status == 400
    truncated = gzip.compress(_tar({"big": os.urandom(100_000)}))[:20_000]
    status, out = d.request("POST", "/v1.41/images/create?fromSrc=-&repo=bad", body=truncated)
    assert status == 400
    status, out = d.request("POST", "/v1.41/images/create?fromSrc=-&repo=bad&changes=RUN%20x", body=_tar({"a": b"a"}))
    assert status == 400 and json.loads(out) == {"message": "RUN is not a valid change command"}
    for query in ("fromSrc=ftp://x/y", "fromSrc=-&platform=nope/", "fromSrc=-&repo=UPPER", "fromSrc=-&changes=ENV"):
        status, out = d.request("POST", f"/v1.41/images/create?{query}", body=_tar({"a": b"a"}))
        assert status == 400 and list(json.loads(out)) == ["message"], (query, out)
    res = d.docker("import", "-", "bad:cli", input=b"nope", check=False)
    assert res.returncode != 0 and b"invalid tar" in res.stderr
    assert d.docker("images", "-q").stdout == before_images
    data = Path(d.data_root)
    assert not list((data / "content" / "ingest").glob("*"))
    # no snapshot directory but those of real layers (an active snapshot's removal reaches
    # metadata.json with the next write, its directory goes at once)
    snaps = json.loads((data / "snapshots" / "overlayfs" / "metadata.json").read_text())["snapshots"]
    layers = {str(r["id"]) for k, r in snaps.items() if r["kind"] == "committed"}
    assert {p.name for p in (data / "snapshots" / "overlayfs" / "snapshots").iterdir()} <= layers
