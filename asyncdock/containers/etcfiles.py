"""The /etc/hostname, /etc/hosts and /etc/resolv.conf a container gets (bind-mounted)."""
from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

from ..util.atomic import atomic_write_bytes
from .deps import NetworkAttacher
from .models import ContainerRecord

_HOSTS_BASE = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)
# Docker's fallback when the host names only loopback resolvers (they are useless in a netns).
_DEFAULT_DNS = ("8.8.8.8", "8.8.4.4")


def host_gateway_ip() -> str:
    """`host-gateway` in --add-host when the network manager has no bridge address to offer:
    the host's primary address."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent by a UDP connect
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def hosts_file(rec: ContainerRecord, net: NetworkAttacher | None = None, links: list[str] | None = None) -> str:
    """`links`: the lines of legacy links (containers/links.py), after the container's own."""
    lines = [_HOSTS_BASE]
    for entry in rec.host_config.extra_hosts or []:
        name, _, ip = entry.partition(":")
        if ip == "host-gateway":
            ip = (net.host_gateway_ip() if net is not None else "") or host_gateway_ip()
        lines.append(f"{ip}\t{name}\n")
    if net is not None:
        # the container's own address(es) and name, as Docker writes them
        lines.extend(line if line.endswith("\n") else line + "\n"
                     for line in net.hosts_entries(rec.id, rec.config.hostname))
    lines.extend(links or ())
    return "".join(lines)


def resolv_conf(rec: ContainerRecord, host_resolv: str = "/etc/resolv.conf", net: NetworkAttacher | None = None) -> str:
    hc = rec.host_config
    host_mode = hc.network_mode == "host"
    try:
        text = Path(host_resolv).read_text()
    except OSError:
        text = ""
    nameservers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0].startswith(("#", ";")):
            continue
        if parts[0] == "nameserver" and len(parts) > 1:
            try:
                loopback = ipaddress.ip_address(parts[1]).is_loopback
            except ValueError:
                continue
            if host_mode or not loopback:
                nameservers.append(parts[1])
        elif parts[0] == "search":
            search = parts[1:]
        elif parts[0] == "options":
            options = parts[1:]
    embedded = net.dns_servers(rec.id) if net is not None else None
    if embedded:
        # user-defined networks: the embedded server answers names and forwards the rest
        nameservers = list(embedded)
    elif hc.dns:
        nameservers = list(hc.dns)
    if hc.dns_search:
        search = list(hc.dns_search)
    if hc.dns_options:
        options = list(hc.dns_options)
    if not nameservers:
        nameservers = list(_DEFAULT_DNS)
    out = "".join(f"nameserver {ns}\n" for ns in nameservers)
    if search:
        out += "search " + " ".join(search) + "\n"
    if options:
        out += "options " + " ".join(options) + "\n"
    return out


def write_etc_files(rec: ContainerRecord, files_dir: Path, net: NetworkAttacher | None = None,
                    links: list[str] | None = None) -> None:
    files_dir.mkdir(parents=True, exist_ok=True)
    hostname = rec.config.hostname if rec.host_config.uts_mode != "host" else socket.gethostname()
    atomic_write_bytes(files_dir / "hostname", (hostname + "\n").encode(), durable=False, mode=0o644)
    atomic_write_bytes(files_dir / "hosts", hosts_file(rec, net, links).encode(), durable=False, mode=0o644)
    atomic_write_bytes(files_dir / "resolv.conf", resolv_conf(rec, net=net).encode(), durable=False, mode=0o644)
