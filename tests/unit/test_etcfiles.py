"""/etc/hosts for a container: --add-host entries, `host-gateway` resolved even when the network
manager has no bridge address to offer."""
from __future__ import annotations

import ipaddress

from asyncdock.containers.etcfiles import hosts_file
from asyncdock.containers.models import ContainerConfig, ContainerRecord, HostConfig


class _Net:
    """The two calls hosts_file makes of the network manager, answering as it does before its
    default bridge exists."""

    def host_gateway_ip(self) -> str:
        return ""

    def hosts_entries(self, cid: str, hostname: str) -> list[str]:
        return []


def _record(extra_hosts: list[str]) -> ContainerRecord:
    return ContainerRecord(id="a" * 64, name="/x", created="", created_ns=0, image="busybox", image_id="",
                           path="sh", args=[], config=ContainerConfig(hostname="aaaaaaaaaaaa"),
                           host_config=HostConfig(extra_hosts=extra_hosts))


def test_add_host_entries_and_host_gateway_never_empty() -> None:
    text = hosts_file(_record(["db:10.1.2.3", "gw:host-gateway"]), _Net())
    assert text.startswith("127.0.0.1\tlocalhost\n")
    assert "10.1.2.3\tdb\n" in text
    gw_line = next(line for line in text.splitlines() if line.endswith("\tgw"))
    ipaddress.ip_address(gw_line.split("\t")[0])  # a real address, not ""
