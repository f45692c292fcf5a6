"""What a daemon left in the kernel: links carrying our ifalias, our nftables chains, netns pins,
listeners. Used to assert that `network rm` and shutdown clean up everything of ours."""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path


def daemon_tag(data_root: Path | str) -> str:
    return hashlib.sha256(str(Path(data_root).resolve()).encode()).hexdigest()[:8]


def our_links(tag: str) -> list[str]:
    return list(our_link_aliases(tag))


def our_link_aliases(tag: str) -> dict[str, str]:
    """{name: ifalias} of the links carrying this daemon's tag."""
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True,
                                      check=True).stdout or "[]")
    return {lk["ifname"]: str(lk["ifalias"]) for lk in links
            if str(lk.get("ifalias", "")).startswith(f"asyncdock:{tag}:")}


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def our_chains(tag: str) -> list[str]:
    return [name for name in all_chains() if name.endswith(f"_{tag}")]


def all_chains() -> list[str]:
    """Every chain of the `ip asyncdock` table (whichever daemon made it)."""
    res = subprocess.run(["nft", "-j", "list", "table", "ip", "asyncdock"], capture_output=True, text=True)
    if res.returncode != 0:
        return []
    return [item["chain"]["name"] for item in json.loads(res.stdout).get("nftables", [])
            if item.get("chain")]


def nft_tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout


def netns_pins(exec_root: Path | str) -> list[str]:
    d = Path(exec_root) / "netns"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def tcp_listeners() -> set[int]:
    out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True).stdout
    ports = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            try:
                ports.add(int(parts[3].rsplit(":", 1)[1]))
            except ValueError:
                pass
    return ports
