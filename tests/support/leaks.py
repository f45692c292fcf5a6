"""What a running daemon holds that it does not know about: processes in bundles, mounts, runtime
state, cgroups, links, netns pins and nftables rules of containers or networks it no longer
lists. After a crash and a restart, the restarted daemon must have cleaned all of them."""
from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from asyncdock.runtime.cgroups import cgroup_dirs

from . import netcheck
from .daemon import Daemon, _processes_under, _runtime_containers, mounts_under


@dataclass
class EngineView:
    """What the engine lists: running containers, every container id the test ever saw (the
    ones it no longer lists included: their leftovers are searched for) and networks."""
    running: set[str]
    known: set[str] = field(default_factory=set)
    networks: set[str] = field(default_factory=set)
    netns: set[str] = field(default_factory=set)  # running containers' SandboxKey paths


def container_cgroups(cids: Iterable[str], parent: str = "/asyncdock") -> list[Path]:
    """The cgroup directories (every hierarchy) of these containers that still exist."""
    return [p for cid in cids for p in cgroup_dirs(f"{parent}/{cid}") if p.exists()]


def _bundle_id(path: str, bundles: str) -> str | None:
    if not path.startswith(bundles + "/"):
        return None
    return path[len(bundles) + 1:].split("/", 1)[0]


def _nft_rule_ifnames(tag: str) -> set[str]:
    """Interface names the rules of this daemon's chains match on."""
    names: set[str] = set()
    for chain in netcheck.our_chains(tag):
        res = subprocess.run(["nft", "list", "chain", "ip", "asyncdock", chain], capture_output=True,
                             text=True, timeout=30)
        names |= set(re.findall(r'[io]ifname (?:!= )?"([^"]+)"', res.stdout))
        for group in re.findall(r"[io]ifname (?:!= )?\{([^}]*)\}", res.stdout):
            names |= {n.strip().strip('"') for n in group.split(",") if n.strip()}
    return names


def unknown_to_engine(d: Daemon, view: EngineView) -> list[str]:
    """Describe everything of `d` in the kernel or under its roots that no running container or
    listed network owns. Empty when clean."""
    found: list[str] = []
    running = view.running
    bundles = str((d.exec_root / "bundles").resolve())
    # processes whose root or cwd is a bundle of a container that is not running
    for pid, cmdline in _processes_under([d.exec_root / "bundles"]):
        try:
            where = [str(Path(f"/proc/{pid}/root").readlink()), str(Path(f"/proc/{pid}/cwd").readlink())]
        except OSError:
            continue
        owners = {_bundle_id(w, bundles) for w in where} - {None}
        if not owners <= running:
            found.append(f"process {pid} ({cmdline}) in the bundle of {sorted(owners)}")
    bundle_dirs = {p.name for p in (d.exec_root / "bundles").iterdir()} if (d.exec_root / "bundles").exists() else set()
    found += [f"bundle {b}" for b in sorted(bundle_dirs - running)]
    # mounts: a running container's rootfs, and the runtime binaries' read-only pins
    for point in mounts_under([d.root]):
        owner = _bundle_id(point, bundles)
        if owner is not None and owner in running and point == f"{bundles}/{owner}/rootfs":
            continue
        if re.fullmatch(re.escape(str((d.exec_root / "runtime").resolve())) + r"/\.[\w-]+\.exe", point):
            continue
        if point in view.netns:
            continue
        found.append(f"mount {point}")
    for _binary, rt_root, cid in _runtime_containers(d.exec_root / "runtime"):
        if cid not in running:
            found.append(f"runtime state of {cid[:12]} in {rt_root}")
    found += [f"cgroup {p}" for p in container_cgroups(view.known - running)]
    # links: bridges of listed networks, host ends of running containers' veths
    tag = netcheck.daemon_tag(d.data_root)
    bridges: set[str] = set()
    for name, alias in netcheck.our_link_aliases(tag).items():
        kind, _, ident = alias.split(":", 2)[2].partition(":")  # asyncdock:TAG:net:ID12, ...:ep:CID12
        if kind == "net" and any(n.startswith(ident) for n in view.networks):
            bridges.add(name)
        elif kind == "ep" and any(c.startswith(ident) for c in running):
            pass
        else:
            found.append(f"link {name} ({alias})")
    for pin in netcheck.netns_pins(d.exec_root):
        if str(d.exec_root.resolve() / "netns" / pin) not in view.netns:
            found.append(f"netns pin {pin}")
    for chain in netcheck.our_chains(tag):
        if chain not in (f"post_{tag}", f"fwd_{tag}"):
            found.append(f"nftables chain {chain}")
    found += [f"nftables rule on {n}" for n in sorted(_nft_rule_ifnames(tag) - bridges)]
    return found
