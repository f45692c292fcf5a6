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
    listed: set[str] = field(default_factory=set)  # every container it lists
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
    for p in container_cgroups(view.known - running):
        found.append(f"cgroup {p}")
        try:
            pids = (p / "cgroup.procs").read_text().split()
        except OSError:
            continue
        found += [f"process {pid} in the cgroup {p}" for pid in pids]
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


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The OCI chain IDs of an image's layers (the snapshotter names committed layers by them)."""
    import hashlib

    out: list[str] = []
    for diff in diff_ids:
        out.append(diff if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {diff}".encode()).hexdigest())
    return out


def snapshot_leftovers(d: Daemon, layers: set[str], containers: set[str]) -> list[str]:
    """Snapshots on disk that no image layer (chain ID in `layers`) or container owns.

    Read from the snapshotter's metadata file, which may still name an active snapshot whose
    removal has not been written yet (by design, see dirstore.remove()): such a record without
    its directory is not a leftover. A directory no record names, a committed layer no image
    uses or one whose directory is gone, and an active snapshot of no container are."""
    import msgspec

    found: list[str] = []
    for meta_path in Path(d.data_root, "snapshots").glob("*/metadata.json"):
        snaps_dir = meta_path.parent / "snapshots"
        try:
            meta = msgspec.json.decode(meta_path.read_bytes())
        except (OSError, msgspec.DecodeError) as e:
            return [f"unreadable {meta_path}: {e}"]
        records = meta.get("snapshots", {})
        ids = {str(r["id"]): key for key, r in records.items()}
        dirs = {p.name for p in snaps_dir.iterdir()} if snaps_dir.exists() else set()
        found += [f"snapshot directory {n} (no record)" for n in sorted(dirs - set(ids))]
        for key, r in sorted(records.items()):
            there = str(r["id"]) in dirs
            if r["kind"] == "committed":
                if key not in layers:
                    found.append(f"layer snapshot {key} ({r['id']}) of no image")
                elif not there:
                    found.append(f"layer snapshot {key} ({r['id']}) without its directory")
            elif there and key not in containers:
                found.append(f"{r['kind']} snapshot {key} ({r['id']}) of no container")
    return found
