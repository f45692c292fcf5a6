"""Legacy links (`docker run --link target:alias`) through the real docker CLI, as Docker 29 does
them: /etc/hosts lines, HostConfig.Links in inspect, the link name in the target's Names, start
errors for a stopped target, `docker rm --link`; the environment variables as issue 14 asks
(Docker 29 sets them only with DOCKER_KEEP_DEPRECATED_LEGACY_LINKS_ENV_VARS=1), off with =0."""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import DaemonFactory
from tests.support.daemon import Daemon

BUSYBOX = "busybox"


@pytest.fixture
def tag() -> Iterator[str]:
    yield "l" + uuid.uuid4().hex[:10]


def _rm_all(d: Daemon, label: str) -> None:
    ids = d.docker("ps", "-a", "-q", "--filter", f"label={label}").stdout.split()
    if ids:
        d.docker("rm", "-f", *ids, check=False)


@pytest.fixture
def lab(d: Daemon, tag: str) -> Iterator[str]:
    label = f"asyncdock.test={tag}"
    yield label
    _rm_all(d, label)


def _target(d: Daemon, lab: str, name: str) -> tuple[str, str]:
    """A running busybox with exposed ports and an environment: (id, bridge address)."""
    cid = d.docker("run", "-d", "--label", lab, "--name", name, "--expose", "80", "--expose", "81",
                   "--expose", "53/udp", "-e", "COLOR=blue", "-e", "HOME=/nowhere", BUSYBOX,
                   "sleep", "600").stdout.strip()
    ip = d.docker("inspect", "--format", "{{.NetworkSettings.IPAddress}}", cid).stdout.strip()
    assert ip
    return cid, ip


def test_link_hosts_inspect_names_and_rm_link(d: Daemon, lab: str, tag: str) -> None:
    cid, ip = _target(d, lab, f"{tag}-db")
    r = d.docker("run", "--label", lab, "--name", f"{tag}-app", "--link", f"{tag}-db:db", BUSYBOX,
                 "sh", "-c", "cat /etc/hosts; echo ---; env")
    hosts, _, env = r.stdout.partition("---\n")
    assert f"{ip}\tdb {cid[:12]} {tag}-db\n" in hosts
    # the link's variables by default (Docker 29 needs DOCKER_KEEP_DEPRECATED_LEGACY_LINKS_ENV_VARS=1)
    assert f"DB_NAME=/{tag}-app/db" in env.splitlines()
    assert "deprecated" in r.stderr  # the create warning, as Docker 29 prints it
    links = json.loads(d.docker("inspect", "--format", "{{json .HostConfig.Links}}", f"{tag}-app").stdout)
    assert links == [f"/{tag}-db:/{tag}-app/db"]
    # the link name names the target, as in Docker's name registry
    assert d.docker("inspect", "--format", "{{.Id}}", f"{tag}-app/db").stdout.strip() == cid
    names = d.docker("ps", "--no-trunc", "--filter", f"id={cid}", "--format", "{{.Names}}").stdout.strip()
    assert sorted(names.split(",")) == sorted([f"{tag}-db", f"{tag}-app/db"])
    # a plain name is no link to remove
    r = d.docker("rm", "--link", f"{tag}-db", check=False)
    assert r.returncode == 1
    assert "Conflict, cannot remove the default link name of the container" in r.stderr
    d.docker("rm", "--link", f"/{tag}-app/db")
    assert d.docker("inspect", "--format", "{{json .HostConfig.Links}}", f"{tag}-app").stdout.strip() == "null"
    r = d.docker("inspect", f"{tag}-app/db", check=False)
    assert r.returncode == 1 and "No such" in r.stderr
    r = d.docker("rm", "--link", f"/{tag}-app/db", check=False)
    assert r.returncode == 1 and f"No such container: {tag}-app/db" in r.stderr
    # the parent starts again without the link
    d.docker("start", "-a", f"{tag}-app")


def test_link_errors(d: Daemon, lab: str, tag: str) -> None:
    r = d.docker("run", "--label", lab, "--link", f"{tag}-nothere:x", BUSYBOX, "true", check=False)
    assert r.returncode == 125
    assert f"could not get container for {tag}-nothere: No such container: {tag}-nothere" in r.stderr
    d.docker("create", "--label", lab, "--name", f"{tag}-stopped", BUSYBOX, "true")
    r = d.docker("run", "--label", lab, "--name", f"{tag}-p", "--link", f"{tag}-stopped:s", BUSYBOX, "true",
                 check=False)
    assert r.returncode == 125
    assert f"Cannot link to a non running container: /{tag}-stopped AS /{tag}-p/s" in r.stderr
    r = d.docker("run", "--label", lab, "--network", "host", "--link", f"{tag}-stopped:s", BUSYBOX, "true",
                 check=False)
    assert r.returncode == 125
    assert "conflicting options: host type networking can't be used with links" in r.stderr
    status, body = d.request("POST", "/containers/create", {"Image": BUSYBOX, "HostConfig": {
        "Links": ["a:b:c"]}})
    assert (status, json.loads(body)) == (400, {"message": "bad format for links: a:b:c"})


def test_link_env_off_with_dockers_switch(daemon_factory: DaemonFactory, monkeypatch: pytest.MonkeyPatch,
                                          tag: str) -> None:
    monkeypatch.setenv("DOCKER_KEEP_DEPRECATED_LEGACY_LINKS_ENV_VARS", "0")
    d = daemon_factory()
    d.docker("pull", "-q", BUSYBOX)
    lab = f"asyncdock.test={tag}"
    try:
        _target(d, lab, f"{tag}-db")
        r = d.docker("run", "--label", lab, "--link", f"{tag}-db:db", BUSYBOX, "env")
        assert not [line for line in r.stdout.splitlines() if line.startswith("DB_")]
    finally:
        _rm_all(d, lab)


def test_link_env_variables(d: Daemon, lab: str, tag: str) -> None:
    try:
        _, ip = _target(d, lab, f"{tag}-web-db")
        r = d.docker("run", "--label", lab, "--name", f"{tag}-web", "--link", f"{tag}-web-db:my-db",
                     "-e", "MY_DB_ENV_COLOR=mine",
                     BUSYBOX, "env")
        env = sorted(line for line in r.stdout.splitlines() if line.startswith("MY_DB_"))
        assert env == sorted([
            f"MY_DB_NAME=/{tag}-web/my-db",
            f"MY_DB_PORT=tcp://{ip}:80",
            f"MY_DB_PORT_80_TCP=tcp://{ip}:80", f"MY_DB_PORT_80_TCP_ADDR={ip}", "MY_DB_PORT_80_TCP_PORT=80",
            "MY_DB_PORT_80_TCP_PROTO=tcp",
            f"MY_DB_PORT_81_TCP=tcp://{ip}:81", f"MY_DB_PORT_81_TCP_ADDR={ip}", "MY_DB_PORT_81_TCP_PORT=81",
            "MY_DB_PORT_81_TCP_PROTO=tcp",
            f"MY_DB_PORT_80_TCP_START=tcp://{ip}:80", "MY_DB_PORT_80_TCP_PORT_START=80",
            f"MY_DB_PORT_80_TCP_END=tcp://{ip}:81", "MY_DB_PORT_80_TCP_PORT_END=81",
            f"MY_DB_PORT_53_UDP=udp://{ip}:53", f"MY_DB_PORT_53_UDP_ADDR={ip}", "MY_DB_PORT_53_UDP_PORT=53",
            "MY_DB_PORT_53_UDP_PROTO=udp",
            # the container's own Env wins over the link's; HOME and PATH are never passed on
            "MY_DB_ENV_COLOR=mine",
        ])
    finally:
        _rm_all(d, lab)

