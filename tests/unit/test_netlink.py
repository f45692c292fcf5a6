"""The rtnetlink codec (asyncdock.networks.netlink) without privileges: attribute layout as the
kernel's uapi lays it out, error wording as iproute2 words it, link notifications parsed, and
read-only dumps of this netns (links, IPv4 routes). Nothing is created or sent anywhere."""
from __future__ import annotations

import errno
import ipaddress
import json
import shutil
import socket
import struct
import subprocess

import pytest

from asyncdock.networks import ipam, netlink
from asyncdock.networks.netlink import (
    IFLA_IFALIAS,
    IFLA_IFNAME,
    IFLA_INFO_KIND,
    IFLA_LINKINFO,
    IFLA_MTU,
    NLA_F_NESTED,
    RTM_DELLINK,
    RTM_NEWLINK,
    Netlink,
    NetlinkError,
    attr,
    attr_str,
    attr_u32,
    ifinfomsg,
    mac_bytes,
    nest,
    parse_attrs,
    parse_link_event,
)


def test_attributes_are_padded_to_four_bytes() -> None:
    a = attr_str(IFLA_IFNAME, "eth0")  # 4 header + "eth0\0" = 9, padded to 12
    assert a == struct.pack("=HH", 9, IFLA_IFNAME) + b"eth0\0" + b"\0\0\0"
    assert attr_u32(IFLA_MTU, 1500) == struct.pack("=HHI", 8, IFLA_MTU, 1500)
    assert len(attr(1, b"")) == 4


def test_nested_attributes_round_trip() -> None:
    inner = attr_str(IFLA_INFO_KIND, "veth")
    n = nest(IFLA_LINKINFO, inner)
    length, kind = struct.unpack_from("=HH", n)
    assert kind == IFLA_LINKINFO | NLA_F_NESTED and length == 4 + len(inner)
    # the type mask drops NLA_F_NESTED: the caller looks attributes up by their plain type
    outer = parse_attrs(n)
    assert set(outer) == {IFLA_LINKINFO}
    assert parse_attrs(outer[IFLA_LINKINFO]) == {IFLA_INFO_KIND: b"veth\0"}


def test_parse_attrs_stops_at_a_truncated_attribute() -> None:
    data = attr_str(IFLA_IFNAME, "br0") + struct.pack("=HH", 40, IFLA_IFALIAS) + b"short"
    assert parse_attrs(data) == {IFLA_IFNAME: b"br0\0"}


def test_ifinfomsg_layout() -> None:
    # struct ifinfomsg: family u8, pad u8, type u16, index s32, flags u32, change u32
    assert ifinfomsg(7, 1, 1) == struct.pack("=BBHiII", socket.AF_UNSPEC, 0, 0, 7, 1, 1)
    assert len(ifinfomsg()) == 16


def test_mac_bytes() -> None:
    assert mac_bytes("02:42:ac:11:00:02") == bytes([2, 0x42, 0xAC, 0x11, 0, 2])
    with pytest.raises(ValueError):
        mac_bytes("02:42:ac:11:00")


def _error_msg(code: int, request_len: int, flags: int, tlvs: bytes = b"") -> tuple[bytes, int]:
    """The body of an NLMSG_ERROR: the error, the request's header (and payload unless capped)."""
    req_hdr = struct.pack("=IHHII", request_len, RTM_NEWLINK, 0x405, 9, 0)
    payload = b"" if flags & netlink.NLM_F_CAPPED else b"\0" * (request_len - 16)
    return struct.pack("=i", -code) + req_hdr + payload + tlvs, flags


def test_errors_read_like_iproute2() -> None:
    body, flags = _error_msg(errno.EEXIST, 40, netlink.NLM_F_CAPPED)
    e = netlink._error(errno.EEXIST, body, flags)
    assert isinstance(e, OSError) and e.errno == errno.EEXIST
    assert e.strerror == "RTNETLINK answers: File exists"
    # with the kernel's extended ack: its message, as `ip` prints it
    tlv = attr_str(netlink.NLMSGERR_ATTR_MSG, "Unknown device type")
    for capped in (True, False):
        fl = netlink.NLM_F_ACK_TLVS | (netlink.NLM_F_CAPPED if capped else 0)
        body, fl = _error_msg(errno.EOPNOTSUPP, 40, fl, tlv)
        e = netlink._error(errno.EOPNOTSUPP, body, fl)
        assert e.errno == errno.EOPNOTSUPP and e.strerror == "Error: Unknown device type."


def test_link_notifications_are_parsed() -> None:
    def msg(mtype: int, index: int, name: str, alias: str = "") -> bytes:
        body = ifinfomsg(index) + attr_str(IFLA_IFNAME, name) + (attr_str(IFLA_IFALIAS, alias) if alias else b"")
        return struct.pack("=IHHII", 16 + len(body), mtype, 0, 0, 0) + body

    data = msg(RTM_NEWLINK, 5, "veth1") + msg(RTM_DELLINK, 6, "veth2", "asyncdock:x:ep:y") + msg(3, 0, "")
    events = list(parse_link_event(data))
    assert [(t, lk.index, lk.name, lk.alias) for t, lk in events] == [
        (RTM_NEWLINK, 5, "veth1", ""), (RTM_DELLINK, 6, "veth2", "asyncdock:x:ep:y")]


def test_dump_links_of_this_netns() -> None:
    with Netlink() as nl:
        links = nl.links()
        lo = nl.link("lo")
        assert nl.link("no-such-link0") is None
        with pytest.raises(NetlinkError) as exc:
            nl.index("no-such-link0")
    assert exc.value.errno == errno.ENODEV and exc.value.strerror == 'Cannot find device "no-such-link0"'
    assert lo is not None and lo.name == "lo" and lo.flags & netlink.IFF_UP
    assert {lk.name: lk.index for lk in links}["lo"] == lo.index == socket.if_nametoindex("lo")
    assert {lk.name for lk in links} == {name for _, name in socket.if_nameindex()}


def _iproute2_routes() -> set[str]:
    out = subprocess.run(["ip", "-j", "-4", "route", "show", "table", "all"], capture_output=True, text=True,
                         check=True).stdout
    found = set()
    for r in json.loads(out or "[]"):
        dst = r.get("dst", "")
        if dst and dst != "default" and r.get("type") != "broadcast":
            net = ipaddress.IPv4Network(dst, strict=False)
            if net.prefixlen:
                found.add(str(net))
    return found


@pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2 as the reference")
def test_host_routes_match_iproute2() -> None:
    """ipam.host_routes (netlink) and `ip -4 route show table all` see the same destinations
    (other daemons on this host may add or drop a bridge meanwhile: read iproute2 before and
    after, what is in both must be seen, nothing outside either)."""
    before = _iproute2_routes()
    ours = {str(n) for n in ipam.host_routes()}
    after = _iproute2_routes()
    assert before & after <= ours <= before | after
