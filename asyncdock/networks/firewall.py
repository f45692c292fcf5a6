"""Our own nftables table (`table ip asyncdock`) and IPv4 forwarding.

The table is rewritten whole in one nft transaction on every change, so it never holds a
half-applied rule set; it is deleted when no network needs it. Nothing outside it is touched.
Forwarding is switched on only while a bridge needs outbound NAT, and put back as it was (the
original value is kept in a file, so a restart after a crash restores it too).
"""
from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..util.atomic import atomic_write_bytes

log = logging.getLogger(__name__)

TABLE = "asyncdock"
_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


class FirewallError(RuntimeError):
    pass


@dataclass(frozen=True)
class BridgeRule:
    bridge: str
    subnet: str
    masquerade: bool = True
    internal: bool = False


def _nft(script: str) -> None:
    nft = shutil.which("nft")
    if nft is None:
        raise FirewallError("bridge networking needs nftables: the `nft` command is not installed")
    res = subprocess.run([nft, "-f", "-"], input=script, capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise FirewallError(f"nftables refused our rules (does the kernel have nf_tables with NAT and "
                            f"masquerade?): {res.stderr.strip()}")


def render(tag: str, rules: list[BridgeRule]) -> str:
    """This daemon's two base chains in the shared table (several daemons on one host, as in the
    tests, each own their chains; the table goes when the last chain does)."""
    t = f"ip {TABLE}"
    ours = ", ".join(f'"{r.bridge}"' for r in rules)
    lines = [f"add table {t}",
             f"add chain {t} post_{tag} {{ type nat hook postrouting priority srcnat; policy accept; }}",
             f"add chain {t} fwd_{tag} {{ type filter hook forward priority filter; policy accept; }}",
             f"flush chain {t} post_{tag}", f"flush chain {t} fwd_{tag}"]
    for r in rules:
        if r.masquerade and not r.internal:
            lines.append(f'add rule {t} post_{tag} ip saddr {r.subnet} oifname != "{r.bridge}" masquerade')
        # isolation between our networks (Docker's DOCKER-ISOLATION chains)
        lines.append(f'add rule {t} fwd_{tag} iifname "{r.bridge}" oifname != "{r.bridge}" oifname {{ {ours} }} drop')
        if r.internal:
            lines.append(f'add rule {t} fwd_{tag} iifname "{r.bridge}" oifname != "{r.bridge}" drop')
            lines.append(f'add rule {t} fwd_{tag} oifname "{r.bridge}" iifname != "{r.bridge}" drop')
    return "\n".join(lines) + "\n"


def apply(tag: str, rules: list[BridgeRule]) -> None:
    if not rules:
        remove_chains(tag)
        return
    _nft(render(tag, rules))  # one nft run: one atomic transaction


def remove_chains(tag: str) -> None:
    nft = shutil.which("nft")
    if nft is None:
        return
    for chain in (f"post_{tag}", f"fwd_{tag}"):
        subprocess.run([nft, "delete", "chain", "ip", TABLE, chain], capture_output=True, timeout=30)
    res = subprocess.run([nft, "-j", "list", "table", "ip", TABLE], capture_output=True, text=True, timeout=30)
    if res.returncode == 0 and '"chain"' not in res.stdout:
        subprocess.run([nft, "delete", "table", "ip", TABLE], capture_output=True, timeout=30)


def check() -> None:
    """Try a throwaway table with a masquerade rule: refuse clearly when nf_tables NAT is missing."""
    probe = "asyncdock_probe"
    try:
        _nft(f"table ip {probe} {{\n chain p {{ type nat hook postrouting priority srcnat; policy accept;\n"
             f"  ip saddr 192.0.2.0/32 oifname \"lo\" masquerade\n }}\n}}\n")
    finally:
        nft = shutil.which("nft")
        if nft:
            subprocess.run([nft, "delete", "table", "ip", probe], capture_output=True, timeout=30)


class Forwarding:
    """IPv4 forwarding on while needed; restored to what it was."""

    def __init__(self, state_file: Path) -> None:
        self.state_file = state_file

    def recover(self) -> None:
        """A previous run died with forwarding switched on by us: restore first."""
        self.restore()

    def enable(self) -> None:
        cur = _FORWARD.read_text().strip()
        if cur == "1":
            return
        if not self.state_file.exists():
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            # atomic: a crash must not leave an empty file that reads as "was off"
            atomic_write_bytes(self.state_file, cur.encode())
        try:
            _FORWARD.write_text("1")
        except OSError as e:
            raise FirewallError(f"cannot enable IPv4 forwarding (needed for outbound NAT): {e}") from None

    def restore(self) -> None:
        try:
            orig = self.state_file.read_text().strip()
        except FileNotFoundError:
            return
        try:
            _FORWARD.write_text(orig or "0")
        except OSError as e:
            log.warning("could not restore net.ipv4.ip_forward=%s: %s", orig, e)
            return
        self.state_file.unlink(missing_ok=True)
