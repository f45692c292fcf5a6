"""Networks and containers' network attachments, persisted atomically (one JSON file each)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import msgspec

from ..util.atomic import atomic_write_json
from ..util.corrupt import move_aside
from .base import Network

log = logging.getLogger(__name__)


class Attachment(msgspec.Struct, kw_only=True):
    """A container's wish to be on a network (survives stop and daemon restarts)."""

    network_id: str
    aliases: list[str] = msgspec.field(default_factory=list)
    ipv4: str = ""
    links: list[str] = msgspec.field(default_factory=list)
    driver_opts: dict[str, str] | None = None
    mac: str = ""          # asked for at create or connect (API 1.44); "" picks one from the address
    gw_priority: int = 0   # API 1.48


class ContainerNet(msgspec.Struct, kw_only=True):
    id: str
    name: str
    mode: str  # "bridge" (default), "host", "none", "container:<id>", or a network's name
    attachments: list[Attachment] = msgspec.field(default_factory=list)
    extra_hosts: list[str] = msgspec.field(default_factory=list)


class NetworkStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.nets_dir = root / "networks"
        self.ctr_dir = root / "containers"
        self.nets_dir.mkdir(parents=True, exist_ok=True)
        self.ctr_dir.mkdir(parents=True, exist_ok=True)
        self.networks: dict[str, Network] = {}
        self.containers: dict[str, ContainerNet] = {}

    def load(self) -> None:
        for d, cls, into in ((self.nets_dir, Network, self.networks), (self.ctr_dir, ContainerNet, self.containers)):
            for p in d.glob("*.json"):
                try:
                    obj = msgspec.json.decode(p.read_bytes(), type=cls)
                except (OSError, msgspec.DecodeError) as e:
                    move_aside(p, e, f"{cls.__name__} record")
                    continue
                into[obj.id] = obj  # type: ignore[index]

    def save_network(self, net: Network) -> None:
        atomic_write_json(self.nets_dir / f"{net.id}.json", net)
        self.networks[net.id] = net

    def delete_network(self, net: Network) -> None:
        try:
            os.unlink(self.nets_dir / f"{net.id}.json")
        except FileNotFoundError:
            pass
        self.networks.pop(net.id, None)

    def save_container(self, c: ContainerNet) -> None:
        atomic_write_json(self.ctr_dir / f"{c.id}.json", c)
        self.containers[c.id] = c

    def delete_container(self, cid: str) -> None:
        try:
            os.unlink(self.ctr_dir / f"{cid}.json")
        except FileNotFoundError:
            pass
        self.containers.pop(cid, None)
