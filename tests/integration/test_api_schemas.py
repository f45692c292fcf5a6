"""Every response of the recorded scenario (tests/support/apirecording.py) validates against
moby's swagger document of the version it answered, 1.41, 1.44, 1.52 and 1.54 (issue 14): the
schema of the operation and status, no key the version does not document (a field of a newer
version leaking into an older one), null only where the document or dockerd's own answers have
it (tests/support/swagger.py lists those). One test per version and view, so a view that matches
asserts on its own; a failure lists every mismatch (version, route, JSON path, what).
"""
from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Callable, Iterator

import pytest

from tests.support import apirecording, swagger
from tests.support.apirecording import Exchange, Recorder
from tests.support.daemon import Daemon

# a directory to write every exchange to (one JSON line each), to read what was answered
DUMP = os.environ.get("ASYNCDOCK_SCHEMA_DUMP")

Recordings = Callable[[str], list[Exchange]]


@pytest.fixture(scope="module")
def recordings(shared_daemon: Daemon) -> Iterator[Recordings]:
    """The scenario's exchanges at a version, recorded once per module."""
    shared_daemon.docker("pull", "-q", "busybox")
    done: dict[str, list[Exchange]] = {}

    def at(version: str) -> list[Exchange]:
        if version not in done:
            rec = Recorder(str(shared_daemon.socket), version)
            try:
                apirecording.run_scenario(rec)
            finally:
                if DUMP:
                    apirecording.dump(rec.exchanges, Path(DUMP) / f"asyncdock-v{version}.jsonl")
            done[version] = rec.exchanges
        return done[version]

    yield at


def mismatches(version: str, exchanges: list[Exchange], group: str | None = None) -> list[swagger.Mismatch]:
    spec = swagger.load(version)
    out: list[swagger.Mismatch] = []
    for ex in exchanges:
        if group is None or ex.group == group:
            out += spec.check(ex.method, ex.path, ex.status, ex.content_type, ex.body)
    return out


def _cases() -> list[object]:
    return list(_each_case())


def _each_case() -> Iterator[object]:
    for version in swagger.VERSIONS:
        for group in apirecording.GROUPS:
            yield pytest.param(version, group, id=f"{version}-{group}")


@pytest.mark.parametrize(("version", "group"), _cases())
def test_responses_match_the_schema(recordings: Recordings, version: str, group: str) -> None:
    exchanges = recordings(version)
    assert any(ex.group == group for ex in exchanges), f"the scenario has no {group} step"
    found = mismatches(version, exchanges, group)
    assert not found, f"{len(found)} mismatches against moby's {version} document:\n" + \
        "\n".join(sorted({str(m) for m in found}))


# -- the same scenario on a real dockerd (opt-in: the `dockerd` marker, make test-vs-docker) ----

DOCKERD = os.environ.get("ASYNCDOCK_DOCKERD_SOCKET", "/tmp/dockerd/docker.sock")
# Step paths where dockerd's shape may differ for a reason that is not a bug of ours, with it:
# the storage driver's private data (overlay2's directories; ours are a snapshotter's).
SHAPE_ALLOWED = ("$.body.GraphDriver.Data",)


@pytest.mark.dockerd
def test_shapes_match_dockerd(shared_daemon: Daemon) -> None:
    if not Path(DOCKERD).is_socket():
        pytest.fail(f"no dockerd at {DOCKERD}: start one as bench/README.md shows, or set ASYNCDOCK_DOCKERD_SOCKET")
    shared_daemon.docker("pull", "-q", "busybox")
    probe = Recorder(DOCKERD, "1.41")
    probe.call("system", "version", "GET", "/version", expect=200)
    theirs_max = tuple(int(x) for x in probe.exchanges[0].json()["ApiVersion"].split("."))
    version = "%d.%d" % min(theirs_max, (1, 54))
    probe.call("images", "pull", "POST", "/images/create?fromImage=busybox&tag=latest", expect=200, timeout=300)
    runs: dict[str, list[Exchange]] = {}
    for label, sock in (("asyncdock", str(shared_daemon.socket)), ("dockerd", DOCKERD)):
        rec = Recorder(sock, version)
        apirecording.run_scenario(rec)
        runs[label] = rec.exchanges
    theirs = {ex.step: ex for ex in runs["dockerd"]}
    found: list[str] = []
    for ex in runs["asyncdock"]:
        other = theirs.get(ex.step)
        if other is None:
            continue
        for diff in apirecording.shape_diff(apirecording.shape_of(ex), apirecording.shape_of(other)):
            if not diff.startswith(SHAPE_ALLOWED):
                found.append(f"{version} {ex.step} ({ex.method} {swagger.strip_version(ex.path)}): {diff}")
    assert not found, f"{len(found)} shape differences from dockerd:\n" + "\n".join(found)


def test_shape_diff_finds_what_differs() -> None:
    """The comparison itself, on two made-up answers: values do not count, shapes do."""
    def ex(body: bytes) -> Exchange:
        return Exchange("s", "images", "GET", "/v1.41/images/json", 200, "application/json", body)

    ours = ex(b'[{"Id": "sha256:aa", "RepoDigests": [], "Labels": null, "Size": 1, "Extra": 1}]')
    theirs = ex(b'[{"Id": "sha256:bb", "RepoDigests": null, "Labels": null, "Size": 2, "VirtualSize": 2}]')
    assert list(apirecording.shape_diff(apirecording.shape_of(ours), apirecording.shape_of(theirs))) == [
        "$.body[].Extra: extra (dockerd has none)", "$.body[].RepoDigests: [] (dockerd: null)",
        "$.body[].VirtualSize: missing (dockerd: number)"]
