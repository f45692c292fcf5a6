"""The classic build cache: a rebuild is all `Using cache` and gives the same image, also after a
daemon restart; a changed file's content misses from its COPY on, a touched mtime does not;
--no-cache misses everything; /build/prune removes the intermediate images it kept."""
from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon

ENV = {"DOCKER_BUILDKIT": "0"}
DOCKERFILE = "FROM busybox\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b\nENV X=1\nCMD [\"cat\", \"/b\"]\n"


def build(d: Daemon, ctx: Path, *args: str) -> str:
    return str(d.docker("build", *args, str(ctx), env=ENV).stdout)


def built_id(out: str) -> str:
    m = re.search(r"^Successfully built ([0-9a-f]{12})$", out, re.M)
    assert m is not None, out
    return m.group(1)


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    (tmp_path / "a.txt").write_text("one\n")
    return tmp_path


@pytest.fixture
def image(d: Daemon) -> Iterator[str]:
    t = f"bc-{uuid.uuid4().hex[:8]}"
    yield t
    d.docker("rmi", "-f", t, check=False)
    d.request("POST", "/v1.54/build/prune")


def test_rebuild_hits_cache_and_content_change_misses(d: Daemon, ctx: Path, image: str) -> None:
    first = build(d, ctx, "-t", image)
    assert "Using cache" not in first
    again = build(d, ctx, "-t", image)
    assert again.count(" ---> Using cache") == 4
    assert built_id(again) == built_id(first)
    # touching keeps the cache (mtimes are not in the checksum)
    st = os.stat(ctx / "a.txt")
    os.utime(ctx / "a.txt", (st.st_atime + 100, st.st_mtime + 100))
    touched = build(d, ctx, "-t", image)
    assert touched.count(" ---> Using cache") == 4
    # new content: COPY and every step after it run again
    (ctx / "a.txt").write_text("two\n")
    changed = build(d, ctx, "-t", image)
    assert changed.count(" ---> Using cache") == 0
    assert built_id(changed) != built_id(first)
    assert d.docker("run", "--rm", image).stdout == "two\n"
    nocache = build(d, ctx, "--no-cache", "-t", image)
    assert "Using cache" not in nocache


def test_cache_survives_restart_and_prune(daemon: Daemon, ctx: Path) -> None:
    d = daemon
    d.docker("pull", "-q", "busybox")
    first = build(d, ctx, "-t", "cached:1")
    d.restart()
    t0 = time.monotonic()
    again = build(d, ctx, "-t", "cached:1")
    elapsed = time.monotonic() - t0
    assert again.count(" ---> Using cache") == 4
    assert built_id(again) == built_id(first)
    assert elapsed < 5
    status, body = d.request("POST", "/v1.54/build/prune")
    assert status == 200
    # the tagged image and its parents stay: only dangling intermediates go
    assert json.loads(body)["CachesDeleted"] is None
    d.docker("rmi", "cached:1")
    status, body = d.request("POST", "/v1.54/build/prune")
    assert status == 200
    # (rmi may have taken the untagged parents already, as dockerd's does)
    assert len(json.loads(body)["CachesDeleted"] or []) <= 4
    assert d.docker("images", "-aq").stdout.split() == [d.docker("images", "-q", "busybox").stdout.strip()]


def test_cache_from_a_loaded_image(d: Daemon, ctx: Path, image: str, tmp_path: Path) -> None:
    """--cache-from (moby's ImageCache): an image with no local parent chain (loaded here, as
    after a pull) is the cache by its history; the steps are restored from it and the build
    gives the very image; a changed file misses from its COPY on."""
    first = build(d, ctx, "-t", image)
    full_id = d.docker("inspect", "-f", "{{.Id}}", image).stdout.strip()
    archive = tmp_path / "img.tar"
    d.docker("save", "-o", str(archive), image)
    d.docker("rmi", image)  # its untagged step images go with it
    d.docker("load", "-i", str(archive))
    hit = build(d, ctx, "--cache-from", image, "-t", image)
    assert hit.count(" ---> Using cache") == 4, hit
    assert built_id(hit) == built_id(first)
    assert d.docker("inspect", "-f", "{{.Id}}", image).stdout.strip() == full_id
    # the restored step images run: the RUN step's layer came from the loaded image
    assert d.docker("run", "--rm", image).stdout == "one\n"
    (ctx / "a.txt").write_text("two\n")
    miss = build(d, ctx, "--cache-from", image, "-t", image)
    assert miss.count(" ---> Using cache") == 0, miss
    assert d.docker("run", "--rm", image).stdout == "two\n"
