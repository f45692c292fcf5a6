"""The issue's round trip through the docker CLI 28: build -> push -> rmi -> pull -> run gives
the same image ID, and save -> rmi -> load gives it too (every stage of the trip is asyncdock's:
the classic builder's layers and config blob, the pusher's manifest, the puller's verification)."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from tests.support.daemon import Daemon

ENV = {"DOCKER_BUILDKIT": "0"}


def _id(d: Daemon, ref: str) -> str:
    return str(d.docker("image", "inspect", "-f", "{{.Id}}", ref).stdout.strip())


def test_build_push_rmi_pull_run_keeps_the_image_id(daemon: Daemon, registry: Any, tmp_path: Path) -> None:
    d = daemon
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\nCOPY msg /msg\nRUN echo built >> /msg\nENV W=1\nCMD [\"cat\", \"/msg\"]\n")
    (tmp_path / "msg").write_text("hello\n")
    ref = f"{registry.host}/rt-{uuid.uuid4().hex[:8]}/app:1"
    d.docker("build", "-q", "-t", ref, str(tmp_path), env=ENV)
    built = _id(d, ref)
    assert d.docker("run", "--rm", ref).stdout == "hello\nbuilt\n"

    out = d.docker("push", ref).stdout
    assert "1: digest: sha256:" in out
    d.docker("rmi", ref)
    assert d.docker("images", "-q", ref).stdout.strip() == ""
    d.docker("pull", "-q", ref)
    assert _id(d, ref) == built
    assert d.docker("run", "--rm", ref).stdout == "hello\nbuilt\n"

    archive = tmp_path / "out.tar"
    d.docker("save", "-o", str(archive), ref)
    d.docker("rmi", ref)
    d.docker("load", "-i", str(archive))
    assert _id(d, ref) == built
    assert d.docker("run", "--rm", ref).stdout == "hello\nbuilt\n"
