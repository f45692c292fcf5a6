"""A small rtnetlink client on Python's own AF_NETLINK sockets: just what the bridge driver needs
(links, veth pairs, bridges, addresses, the default route, dumps of links and IPv4 routes).

Why not iproute2 or pyroute2: every `ip` run is a fork + exec (2-3 ms each, several per
container start) and pyroute2 costs megabytes of RSS and a slow import. The messages here are
built with `struct` from the kernel's uapi (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h).

A socket belongs to the network namespace of the thread that opened it, for good: to act inside
a container's netns open a socket while in it (netns.run_in) and keep using it from anywhere.
One `Netlink` object is used by one thread at a time (requests and acks are matched by sequence
number on a private socket, not shared between threads). Every call blocks: a worker thread's job.

Errors are `NetlinkError` (an OSError) worded as `ip` words them ("RTNETLINK answers: File
exists", or "Error: <the kernel's extended ack>."), so users see what they saw with iproute2.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11

# message types (linux/netlink.h, linux/rtnetlink.h)
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_SETLINK = 19
RTM_NEWADDR = 20
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_GETROUTE = 26

# flags
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_ECHO = 0x8
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_ACK_TLVS = 0x200  # in an NLMSG_ERROR: TLVs (the extended ack) follow
NLM_F_CAPPED = 0x100    # in an NLMSG_ERROR: the request's payload was left out
NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

# multicast groups (bit numbers, linux/rtnetlink.h enum rtnetlink_groups)
RTNLGRP_LINK = 1

# link attributes (linux/if_link.h)
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_IFALIAS = 20
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFF_UP = 0x1

# address attributes (linux/if_addr.h)
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_BROADCAST = 4

# routes (linux/rtnetlink.h)
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_TABLE = 15
RT_TABLE_UNSPEC = 0
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1
RTN_BROADCAST = 3

_NLMSGHDR = struct.Struct("=IHHII")    # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")   # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")   # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_NLATTR = struct.Struct("=HH")         # len, type
_RECV_SIZE = 1 << 16


class NetlinkError(OSError):
    """The kernel refused a request. `errno` is the kernel's; `strerror` reads like iproute2's."""


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, data: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    raw = _NLATTR.pack(_NLATTR.size + len(data), kind) + data
    return raw + b"\0" * (_align(len(raw)) - len(raw))


def attr_str(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def nest(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def parse_attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """Attributes of a message body from `offset` (the last one of a type wins)."""
    out: dict[int, bytes] = {}
    end = len(data)
    while offset + _NLATTR.size <= end:
        length, kind = _NLATTR.unpack_from(data, offset)
        if length < _NLATTR.size or offset + length > end:
            break
        out[kind & NLA_TYPE_MASK] = data[offset + _NLATTR.size:offset + length]
        offset += _align(length)
    return out


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def mac_bytes(mac: str) -> bytes:
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError(f"invalid MAC address {mac!r}")
    return bytes(int(p, 16) for p in parts)


def ifinfomsg(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    alias: str
    flags: int
    master: int


@dataclass(frozen=True)
class Route4:
    dst: str     # "" for a default route
    dst_len: int
    table: int
    type: int


class Netlink:
    """One NETLINK_ROUTE socket, in the network namespace of the thread that made it."""

    def __init__(self, groups: int = 0) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            # Extended acks carry the kernel's own words for a refusal (what `ip` prints);
            # capped acks keep error replies small (our request is not echoed back).
            for opt in (NETLINK_EXT_ACK, NETLINK_CAP_ACK):
                try:
                    self.sock.setsockopt(SOL_NETLINK, opt, 1)
                except OSError:
                    pass
            self.sock.bind((0, groups))
        except BaseException:
            self.sock.close()
            raise
        self._seq = int.from_bytes(os.urandom(2), "little")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def subscribe(self, group: int) -> None:
        self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)

    # ------------------------------------------------------------------ transport
    def _send(self, msg_type: int, flags: int, body: bytes) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        self.sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, flags | NLM_F_REQUEST, self._seq, 0)
                       + body)
        return self._seq

    def _replies(self, seq: int) -> Iterator[tuple[int, int, bytes]]:
        """(type, flags, body) of the replies to request `seq`, up to and including its ack
        or NLMSG_DONE. Raises NetlinkError on an error ack."""
        while True:
            for mtype, mflags, mseq, body in _messages(self.sock.recv(_RECV_SIZE)):
                if mseq != seq:
                    continue  # a late reply to an earlier request (or a notification): not ours
                if mtype == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", body)
                    if code == 0:
                        yield mtype, mflags, body
                        return
                    raise _error(-code, body, mflags)
                if mtype == NLMSG_DONE:
                    return
                if mtype == NLMSG_OVERRUN:
                    raise NetlinkError(errno.ENOBUFS, "RTNETLINK answers: netlink overrun")
                yield mtype, mflags, body

    def request(self, msg_type: int, body: bytes, flags: int = 0) -> list[tuple[int, bytes]]:
        """Send one request and wait for the kernel's ack; returns (type, body) of any replies
        before it (with NLM_F_ECHO: the object as made)."""
        return [(mtype, mbody) for mtype, _, mbody in self._replies(self._send(msg_type, flags | NLM_F_ACK, body))
                if mtype != NLMSG_ERROR]

    def dump(self, msg_type: int, body: bytes) -> Iterator[tuple[int, bytes]]:
        """(type, body) of every object a dump request returns."""
        for mtype, _, mbody in self._replies(self._send(msg_type, NLM_F_DUMP, body)):
            yield mtype, mbody

    # ------------------------------------------------------------------ links
    def links(self) -> list[Link]:
        out = []
        for mtype, body in self.dump(RTM_GETLINK, ifinfomsg()):
            if mtype == RTM_NEWLINK:
                out.append(_link(body))
        return out

    def link(self, name: str) -> Link | None:
        """The link called `name`, None when there is none."""
        try:
            for mtype, _, body in self._replies(self._send(RTM_GETLINK, 0, ifinfomsg() + attr_str(IFLA_IFNAME, name))):
                if mtype == RTM_NEWLINK:
                    return _link(body)
        except NetlinkError as e:
            if e.errno == errno.ENODEV:
                return None
            raise
        return None

    def index(self, name: str) -> int:
        lk = self.link(name)
        if lk is None:
            raise NetlinkError(errno.ENODEV, f'Cannot find device "{name}"')
        return lk.index

    def add_bridge(self, name: str, *, mtu: int | None = None) -> None:
        attrs = attr_str(IFLA_IFNAME, name) + nest(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "bridge"))
        if mtu is not None:
            attrs += attr_u32(IFLA_MTU, mtu)
        self.request(RTM_NEWLINK, ifinfomsg() + attrs, NLM_F_CREATE | NLM_F_EXCL)

    def add_veth(self, name: str, peer: str, *, mtu: int | None = None, master: int = 0, up: bool = False,
                 peer_mac: str = "", peer_netns_fd: int = -1) -> int:
        """A veth pair in one request: `name` here (enslaved to `master`, up if asked) and
        `peer` created directly in the netns of `peer_netns_fd` (no move afterwards). The peer
        cannot be brought up in the same request (the kernel opens it before the pair is
        linked: ENOTCONN): set it up afterwards from a socket in its netns. Returns the ifindex
        of `name`."""
        peer_attrs = attr_str(IFLA_IFNAME, peer)
        if mtu is not None:
            peer_attrs += attr_u32(IFLA_MTU, mtu)
        if peer_mac:
            peer_attrs += attr(IFLA_ADDRESS, mac_bytes(peer_mac))
        if peer_netns_fd >= 0:
            peer_attrs += attr_u32(IFLA_NET_NS_FD, peer_netns_fd)
        peer_msg = ifinfomsg() + peer_attrs
        attrs = attr_str(IFLA_IFNAME, name)
        if mtu is not None:
            attrs += attr_u32(IFLA_MTU, mtu)
        if master:
            attrs += attr_u32(IFLA_MASTER, master)
        attrs += nest(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "veth"),
                      nest(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_msg)))
        # NLM_F_ECHO: the kernel (>= 6.3) answers with the link as made, index included, which
        # spares a lookup (the first one of a new veth costs about 0.5 ms); older kernels
        # ignore the flag and we ask.
        replies = self.request(RTM_NEWLINK, ifinfomsg(0, IFF_UP if up else 0, IFF_UP if up else 0) + attrs,
                               NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO)
        for mtype, body in replies:
            if mtype == RTM_NEWLINK:
                lk = _link(body)
                if lk.name == name:
                    return lk.index
        return self.index(name)

    def set_link(self, index: int, *, up: bool | None = None, alias: str | None = None, mtu: int | None = None,
                 master: int | None = None, mac: str = "") -> None:
        flags = change = 0
        if up is not None:
            change = IFF_UP
            flags = IFF_UP if up else 0
        attrs = b""
        if alias is not None:
            attrs += attr_str(IFLA_IFALIAS, alias)
        if mtu is not None:
            attrs += attr_u32(IFLA_MTU, mtu)
        if master is not None:
            attrs += attr_u32(IFLA_MASTER, master)
        if mac:
            attrs += attr(IFLA_ADDRESS, mac_bytes(mac))
        self.request(RTM_SETLINK, ifinfomsg(index, flags, change) + attrs)

    def del_link(self, index: int = 0, name: str = "") -> bool:
        """Delete a link by index or name; False when it was already gone."""
        body = ifinfomsg(index) + (attr_str(IFLA_IFNAME, name) if name and not index else b"")
        try:
            self.request(RTM_DELLINK, body)
        except NetlinkError as e:
            if e.errno in (errno.ENODEV, errno.ENOENT):
                return False
            raise
        return True

    # ------------------------------------------------------------------ addresses and routes
    def add_addr4(self, index: int, ip: str, prefix_len: int) -> None:
        """An IPv4 address with its broadcast address (as Docker sets it)."""
        iface = ipaddress.IPv4Interface(f"{ip}/{prefix_len}")
        body = _IFADDRMSG.pack(socket.AF_INET, prefix_len, 0, RT_SCOPE_UNIVERSE, index)
        body += attr(IFA_LOCAL, iface.ip.packed) + attr(IFA_ADDRESS, iface.ip.packed)
        if prefix_len < 31:
            body += attr(IFA_BROADCAST, iface.network.broadcast_address.packed)
        self.request(RTM_NEWADDR, body, NLM_F_CREATE | NLM_F_EXCL)

    def add_default_route4(self, gateway: str, oif: int) -> None:
        body = _RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
        body += attr(RTA_GATEWAY, ipaddress.IPv4Address(gateway).packed) + attr_u32(RTA_OIF, oif)
        self.request(RTM_NEWROUTE, body, NLM_F_CREATE | NLM_F_EXCL)

    def routes4(self) -> list[Route4]:
        """Every IPv4 route of every table (`ip -4 route show table all`)."""
        out = []
        body = _RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_UNSPEC, 0, 0, 0, 0)
        for mtype, mbody in self.dump(RTM_GETROUTE, body):
            if mtype != RTM_NEWROUTE or len(mbody) < _RTMSG.size:
                continue
            family, dst_len, _, _, table, _, _, rtype, _ = _RTMSG.unpack_from(mbody)
            if family != socket.AF_INET:
                continue
            attrs = parse_attrs(mbody, _RTMSG.size)
            if RTA_TABLE in attrs:
                (table,) = struct.unpack("=I", attrs[RTA_TABLE][:4])
            dst = socket.inet_ntop(socket.AF_INET, attrs[RTA_DST][:4]) if RTA_DST in attrs else ""
            out.append(Route4(dst, dst_len, table, rtype))
        return out


def _link(body: bytes) -> Link:
    _, _, index, flags, _ = _IFINFOMSG.unpack_from(body)
    attrs = parse_attrs(body, _IFINFOMSG.size)
    master = struct.unpack("=I", attrs[IFLA_MASTER][:4])[0] if IFLA_MASTER in attrs else 0
    return Link(index=index, name=_cstr(attrs.get(IFLA_IFNAME, b"")), alias=_cstr(attrs.get(IFLA_IFALIAS, b"")),
                flags=flags, master=master)


def _error(code: int, body: bytes, flags: int) -> NetlinkError:
    """iproute2's wording: the kernel's extended-ack text when it gave one, else strerror."""
    msg = ""
    if flags & NLM_F_ACK_TLVS:
        # after the error code: the request's header, plus its payload unless capped
        off = 4 + _NLMSGHDR.size
        if not flags & NLM_F_CAPPED and len(body) >= off:
            (req_len,) = struct.unpack_from("=I", body, 4)
            off = 4 + _align(req_len)
        raw = parse_attrs(body, off).get(NLMSGERR_ATTR_MSG)
        if raw:
            msg = _cstr(raw)
    if msg:
        return NetlinkError(code, f"Error: {msg.rstrip('.')}.")
    return NetlinkError(code, f"RTNETLINK answers: {os.strerror(code)}")


def parse_link_event(data: bytes) -> Iterator[tuple[int, Link]]:
    """(type, link) of the RTM_NEWLINK / RTM_DELLINK notifications in one datagram of a
    socket subscribed to RTNLGRP_LINK."""
    for mtype, _, _, body in _messages(data):
        if mtype in (RTM_NEWLINK, RTM_DELLINK) and len(body) >= _IFINFOMSG.size:
            yield mtype, _link(body)


def _messages(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, sequence, body) of each netlink message in one datagram."""
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        length, mtype, mflags, mseq, _ = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size:
            break
        yield mtype, mflags, mseq, data[off + _NLMSGHDR.size:off + length]
        off += _align(length)
