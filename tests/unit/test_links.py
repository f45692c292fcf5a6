"""containers/links.py: Docker's link parsing and link variables (moby daemon/links ToEnv)."""
from __future__ import annotations

import pytest

from asyncdock.base import errors
from pathlib import Path

from asyncdock.containers.links import link_env, parse_link, split_link_ref
from asyncdock.containers.models import ContainerConfig, ContainerRecord, HostConfig, LinkRecord
from asyncdock.containers.store import ContainerStore


@pytest.mark.parametrize("value,expected", [
    ("db", ("db", "db")), ("db:alias", ("db", "alias")), ("/db:/app/alias", ("db", "alias"))])
def test_parse_link(value: str, expected: tuple[str, str]) -> None:
    assert parse_link(value) == expected


@pytest.mark.parametrize("value,message", [("", "empty string specified for links"),
                                           ("a:b:c", "bad format for links: a:b:c")])
def test_parse_link_refuses(value: str, message: str) -> None:
    with pytest.raises(errors.InvalidParameter, match=message):
        parse_link(value)


def test_split_link_ref() -> None:
    assert split_link_ref("app/db") == ("/app", "db")
    assert split_link_ref("/app/db") == ("/app", "db")
    assert split_link_ref("db") == ("", "db")


def test_env_ranges_tcp_first_and_skipped_vars() -> None:
    env = link_env("/app/my-db", "10.0.0.2", ["PASSWORD=x", "HOME=/root", "PATH=/bin", "NOVALUE"],
                   {"6379/tcp": {}, "6380/tcp": {}, "6381/tcp": {}, "53/udp": {}, "9000": {}})
    assert env[0] == "MY_DB_PORT=tcp://10.0.0.2:6379"
    ranged = [e for e in env if "_START" in e or "_END" in e]
    assert ranged == ["MY_DB_PORT_6379_TCP_START=tcp://10.0.0.2:6379", "MY_DB_PORT_6379_TCP_PORT_START=6379",
                      "MY_DB_PORT_6379_TCP_END=tcp://10.0.0.2:6381", "MY_DB_PORT_6379_TCP_PORT_END=6381"]
    # tcp before udp; "9000" is tcp
    order = [e.split("=")[0] for e in env if e.endswith("_PROTO=tcp") or e.endswith("_PROTO=udp")]
    assert order == ["MY_DB_PORT_6379_TCP_PROTO", "MY_DB_PORT_6380_TCP_PROTO", "MY_DB_PORT_6381_TCP_PROTO",
                     "MY_DB_PORT_9000_TCP_PROTO", "MY_DB_PORT_53_UDP_PROTO"]
    assert env[-2:] == ["MY_DB_NAME=/app/my-db", "MY_DB_ENV_PASSWORD=x"]


def test_env_without_ports() -> None:
    assert link_env("/a/b", "10.0.0.3", [], {}) == ["B_NAME=/a/b"]


def _rec(cid: str, name: str, links: list[LinkRecord] | None = None) -> ContainerRecord:
    return ContainerRecord(id=cid, name=name, created="", created_ns=0, image="busybox", image_id="sha256:x",
                           path="true", args=[], config=ContainerConfig(), host_config=HostConfig(),
                           links=links or [])


def test_store_link_names_survive_a_load_move_with_a_rename_and_go_with_the_target(tmp_path: Path) -> None:
    target, parent = "a" * 64, "b" * 64
    store = ContainerStore(tmp_path)
    for rec in (_rec(target, "/db"), _rec(parent, "/app", [LinkRecord("db", target, "/db")])):
        store.save(rec)
    store = ContainerStore(tmp_path)
    store.load()
    assert store.get("app/db").id == target
    assert store.link_names_of(target) == ["/app/db"]
    app = store.get("app")
    store.drop_link_names(app)
    app.name = "/web"
    store.add_link_names(app)
    assert store.find("app/db") is None and store.get("/web/db").id == target
    store.remove(store.get("db"))
    assert store.find("web/db") is None and store.link_names_of(target) == []
