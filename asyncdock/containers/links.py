"""Legacy links (`docker run --link target:alias`, HostConfig.Links) on the default bridge, as
moby does them (daemon/links, daemon/links.go, registerLinks, setupLinkedContainers,
addLegacyLinks, rmLink).

A link is kept in the linking container's record (target id and alias). Its name,
`/<parent>/<alias>`, names the target in the container store as Docker's name registry does
(so `docker inspect parent/alias` and `docker rm --link /parent/alias` find it, and `docker ps`
lists it among the target's Names). At the parent's start the target must run on the default
bridge; the parent's /etc/hosts gets `<ip>\t<alias> <hostname> <name>` and its environment
ALIAS_NAME, ALIAS_PORT..., ALIAS_ENV_... Docker 29 sets those only with
DOCKER_KEEP_DEPRECATED_LEGACY_LINKS_ENV_VARS=1 in the daemon's environment (moby PR #50719,
removal planned for v30); we keep them on, as issue 14 asks (clients' link tests read them),
and =0 turns them off. On a user-defined network Docker registers no legacy link: there `--link` is the
endpoint's Links (an alias of the target), which the network side keeps.

Everything here is computed from records and the network manager's view: nothing is read from
any container's files.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..base import errors
from .models import ContainerRecord, LinkRecord

BUILTIN_MODES = ("", "default", "bridge", "host", "none")
DEPRECATION_WARNING = ("Links on the default bridge network are deprecated and will be removed in a future "
                       "release. Use a custom network instead.")

Find = Callable[[str], ContainerRecord | None]


def parse_link(value: str) -> tuple[str, str]:
    """(target name, alias) of one HostConfig.Links entry: `name`, `name:alias`, or the form
    inspect shows, `/name:/parent/alias` (moby opts.ParseLink)."""
    if value == "":
        raise errors.InvalidParameter("empty string specified for links")
    parts = value.split(":")
    if len(parts) > 2:
        raise errors.InvalidParameter(f"bad format for links: {value}")
    if len(parts) == 1:
        return value, value
    if parts[0].startswith("/"):
        return parts[0][1:], parts[1].rsplit("/", 1)[-1]
    return parts[0], parts[1]


def is_legacy(network_mode: str) -> bool:
    """Legacy links exist for containers on the built-in networks only (moby registerLinks
    returns early for a user-defined network)."""
    return network_mode in BUILTIN_MODES or network_mode.startswith("container:")


def plan(rec: ContainerRecord, find: Find) -> list[LinkRecord]:
    """The links of a container being created, checked as Docker checks them at create."""
    hc = rec.host_config
    wanted = list(hc.links or [])
    if not wanted:
        return []
    mode = hc.network_mode or "default"
    if mode.startswith("container:"):
        raise errors.InvalidParameter("conflicting options: container type network can't be used with links. "
                                      "This would result in undefined behavior")
    if mode == "host":
        raise errors.InvalidParameter("conflicting options: host type networking can't be used with links. "
                                      "This would result in undefined behavior")
    if not is_legacy(mode):
        return []
    out: list[LinkRecord] = []
    for value in wanted:
        name, alias = parse_link(value)
        child = _target(name, find)
        if child.host_config.network_mode == "host":
            raise errors.InvalidParameter("conflicting options: host type networking can't be used with links. "
                                          "This would result in undefined behavior")
        alias = alias.strip("/")
        if any(link.alias == alias for link in out):
            continue  # Docker: the name is taken, the second link is ignored
        out.append(LinkRecord(alias=alias, target_id=child.id, target_name=child.name))
    return out


def _target(name: str, find: Find) -> ContainerRecord:
    """The container a link reaches: through `container:<x>` network modes to the one that owns
    the network namespace."""
    ref = name
    while True:
        child = find(ref)
        if child is None:
            # InvalidParameter rather than NotFound: a client would report the image missing
            raise errors.InvalidParameter(f"could not get container for {name}: No such container: {ref}")
        mode = child.host_config.network_mode
        if not mode.startswith("container:"):
            return child
        ref = mode.split(":", 1)[1]


def link_name(parent_name: str, alias: str) -> str:
    return f"{parent_name}/{alias}"


def inspect_links(rec: ContainerRecord, find: Find) -> list[str] | None:
    """HostConfig.Links as inspect shows it: `/<target>:/<parent>/<alias>`, null when none."""
    out = []
    for link in rec.links:
        target = find(link.target_id)
        out.append(f"{target.name if target is not None else link.target_name}:{link_name(rec.name, link.alias)}")
    return out or None


def create_warnings(rec: ContainerRecord) -> list[str]:
    mode = rec.host_config.network_mode or "default"
    return [DEPRECATION_WARNING] if rec.host_config.links and mode in ("default", "bridge") else []


def split_link_ref(ref: str) -> tuple[str, str]:
    """`/parent/alias` (as `docker rm --link` sends it, with or without the leading slash) ->
    ("/parent", "alias"); ("", name) for a name with no parent."""
    full = ref if ref.startswith("/") else "/" + ref
    parent, _, alias = full.rpartition("/")
    return parent, alias


# ---------------------------------------------------------------- at start
@dataclass(frozen=True)
class StartLinks:
    env: list[str]
    hosts: list[str]  # /etc/hosts lines, each ending in a newline


NO_LINKS = StartLinks([], [])


def at_start(rec: ContainerRecord, find: Find, bridge_address: Callable[[str], str | None], *,
             with_env: bool) -> StartLinks:
    """What the links of a starting container give it; raises when a target cannot be reached
    (Docker's start errors)."""
    env: list[str] = []
    hosts: list[str] = []
    if not rec.links or (rec.host_config.network_mode or "default") not in ("default", "bridge"):
        return StartLinks(env, hosts)
    for link in rec.links:
        full = link_name(rec.name, link.alias)
        target = find(link.target_id)
        name = target.name if target is not None else link.target_name
        if target is None or not target.state.running:
            raise errors.Conflict(f"Cannot link to a non running container: {name} AS {full}")
        ip = bridge_address(target.id)
        if not ip:
            raise errors.Conflict(f"Cannot link to {name}, as it does not belong to the default network")
        names = [link.alias, target.config.hostname]
        if link.alias != name[1:]:
            names.append(name[1:])
        hosts.append(f"{ip}\t{' '.join(n for n in names if n)}\n")
        if with_env:
            env.extend(link_env(full, ip, target.config.env or [], target.config.exposed_ports or {}))
    return StartLinks(env, hosts)


def _port(key: str) -> tuple[int, str]:
    num, _, proto = key.partition("/")
    return int(num), (proto or "tcp").lower()


def _port_order(p: tuple[int, str]) -> tuple[int, str, int]:
    # TCP first, then by protocol, then by number (moby withTCPPriority)
    return (0 if p[1] == "tcp" else 1, p[1] if p[1] != "tcp" else "", p[0])


def link_env(name: str, ip: str, env: Iterable[str], exposed_ports: dict[str, Any] | Iterable[str]) -> list[str]:
    """The variables a link gives the linking container (moby daemon/links Link.ToEnv): per
    port `<ALIAS>_PORT_<n>_<PROTO>` with _ADDR, _PORT, _PROTO; `<ALIAS>_PORT` for the first
    port; _START/_END for each run of consecutive ports; `<ALIAS>_NAME`; and the target's
    environment as `<ALIAS>_ENV_<VAR>`, less HOME and PATH."""
    alias = name.rsplit("/", 1)[-1].upper().replace("-", "_")
    ports: list[tuple[int, str]] = []
    for key in exposed_ports:
        try:
            ports.append(_port(key))
        except ValueError:
            continue
    ports.sort(key=_port_order)
    out: list[str] = []
    start = end = (0, "")
    for i, (num, proto) in enumerate(ports):
        if i == 0:
            start = end = (num, proto)
            out.append(f"{alias}_PORT={proto}://{ip}:{num}")
        prefix = f"{alias}_PORT_{num}_{proto.upper()}"
        out += [f"{prefix}={proto}://{ip}:{num}", f"{prefix}_ADDR={ip}", f"{prefix}_PORT={num}",
                f"{prefix}_PROTO={proto}"]
        if num == end[0] + 1 and proto == end[1]:
            end = (num, proto)
            if i < len(ports) - 1:
                continue
        if end != start:
            prefix = f"{alias}_PORT_{start[0]}_{start[1].upper()}"
            out += [f"{prefix}_START={start[1]}://{ip}:{start[0]}", f"{prefix}_PORT_START={start[0]}",
                    f"{prefix}_END={end[1]}://{ip}:{end[0]}", f"{prefix}_PORT_END={end[0]}"]
        start = end = (num, proto)
    out.append(f"{alias}_NAME={name}")
    for entry in env:
        var, sep, value = entry.partition("=")
        if not sep or var in ("HOME", "PATH"):
            continue
        out.append(f"{alias}_ENV_{var}={value}")
    return out
