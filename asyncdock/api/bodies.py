"""Shapes of request bodies that routes check before handing plain dicts to the managers.

Docker decodes these bodies into typed Go structs, so a wrong type anywhere (`"IPAM": 5`,
`"Labels": [null]`) is a 400 naming the field, never a failure deep in a manager. Unknown fields
are ignored, as Go's decoder does."""
from __future__ import annotations

from typing import Any

import msgspec

from ..base.errors import InvalidParameter
from .http import drop_nulls


class IPAMConfig(msgspec.Struct, rename="pascal"):
    subnet: str = ""
    ip_range: str = msgspec.field(default="", name="IPRange")
    gateway: str = ""
    auxiliary_addresses: dict[str, str] | None = msgspec.field(default=None, name="AuxiliaryAddresses")


class IPAM(msgspec.Struct, rename="pascal"):
    driver: str = ""
    config: list[IPAMConfig] | None = None
    options: dict[str, str] | None = None


class NetworkCreate(msgspec.Struct, rename="pascal"):
    name: str = ""
    driver: str = ""
    options: dict[str, str] | None = None
    labels: dict[str, str] | None = None
    ipam: IPAM | None = msgspec.field(default=None, name="IPAM")
    internal: bool = False
    attachable: bool = False
    ingress: bool = False
    enable_ipv6: bool = msgspec.field(default=False, name="EnableIPv6")
    check_duplicate: bool | None = None


class EndpointIPAMConfig(msgspec.Struct, rename="pascal"):
    ipv4_address: str = msgspec.field(default="", name="IPv4Address")
    ipv6_address: str = msgspec.field(default="", name="IPv6Address")
    link_local_ips: list[str] | None = msgspec.field(default=None, name="LinkLocalIPs")


class EndpointSettings(msgspec.Struct, rename="pascal"):
    ipam_config: EndpointIPAMConfig | None = msgspec.field(default=None, name="IPAMConfig")
    links: list[str] | None = None
    aliases: list[str] | None = None
    network_id: str = msgspec.field(default="", name="NetworkID")
    endpoint_id: str = msgspec.field(default="", name="EndpointID")
    gateway: str = ""
    ip_address: str = msgspec.field(default="", name="IPAddress")
    ip_prefix_len: int = msgspec.field(default=0, name="IPPrefixLen")
    ipv6_gateway: str = msgspec.field(default="", name="IPv6Gateway")
    global_ipv6_address: str = msgspec.field(default="", name="GlobalIPv6Address")
    global_ipv6_prefix_len: int = msgspec.field(default=0, name="GlobalIPv6PrefixLen")
    mac_address: str = ""
    driver_opts: dict[str, str] | None = None


class NetworkConnect(msgspec.Struct, rename="pascal"):
    container: str = ""
    endpoint_config: EndpointSettings | None = None


class NetworkDisconnect(msgspec.Struct, rename="pascal"):
    container: str = ""
    force: bool = False


class VolumeCreate(msgspec.Struct, rename="pascal"):
    name: str = ""
    driver: str = ""
    driver_opts: dict[str, str] | None = None
    labels: dict[str, str] | None = None


def checked(body: Any, shape: type[msgspec.Struct]) -> dict[str, Any]:
    """`body` (decoded JSON) when it fits `shape`; a 400 naming the first field that does not."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise InvalidParameter(f"invalid JSON: expected an object, got {type(body).__name__}")
    body = drop_nulls(body)  # a null member is an absent one, as for Go's decoder
    try:
        msgspec.convert(body, shape, strict=True)
    except msgspec.ValidationError as e:
        raise InvalidParameter(f"invalid request: {e}") from None
    return body
