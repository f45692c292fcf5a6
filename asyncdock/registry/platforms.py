"""Picking one manifest out of an index for a platform (containerd's platforms matcher, reduced to
what Linux hosts need)."""
from __future__ import annotations

import platform as _platform
from collections.abc import Sequence

from ..base.errors import InvalidParameter
from ..base.oci import Descriptor, Platform

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "i386": "386",
         "i686": "386", "armv7l": "arm", "armv6l": "arm", "armv5tel": "arm", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64", "mips64": "mips64"}

# Variants a CPU can run, best first. amd64 images rarely say a variant; "v1" is the baseline.
_COMPATIBLE = {
    ("amd64", "v4"): ("v4", "v3", "v2", "v1", ""),
    ("amd64", "v3"): ("v3", "v2", "v1", ""),
    ("amd64", "v2"): ("v2", "v1", ""),
    ("amd64", ""): ("", "v1"),
    ("arm64", ""): ("", "v8"),
    ("arm64", "v8"): ("v8", ""),
    ("arm", "v7"): ("v7", "v6", "v5", ""),
    ("arm", "v6"): ("v6", "v5", ""),
    ("arm", "v5"): ("v5", ""),
}


def normalize_arch(arch: str, variant: str = "") -> tuple[str, str]:
    arch = _ARCH.get(arch.lower(), arch.lower())
    variant = variant.lower()
    if arch == "arm64" and variant in ("8", "v8"):
        variant = ""
    if arch == "arm" and variant == "" :
        variant = "v7"
    if arch == "amd64" and variant == "v1":
        variant = ""
    return arch, variant


def host_platform() -> Platform:
    machine = _platform.machine()
    variant = ""
    if machine.startswith("armv") and len(machine) > 4 and machine[4].isdigit():
        variant = "v" + machine[4]
    arch, variant = normalize_arch(machine, variant)
    return Platform(architecture=arch, os="linux", variant=variant)


def parse_platform(spec: str) -> Platform:
    """`os[/arch[/variant]]` as the `platform` query parameter gives it."""
    parts = [p for p in spec.strip().lower().split("/")]
    if not parts or not parts[0] or len(parts) > 3 or any(not p for p in parts):
        raise InvalidParameter(f"\"{spec}\": unknown operating system or architecture: invalid argument")
    os_ = parts[0]
    if len(parts) == 1:
        host = host_platform()
        return Platform(architecture=host.architecture, os=os_, variant=host.variant)
    arch, variant = normalize_arch(parts[1], parts[2] if len(parts) == 3 else "")
    return Platform(architecture=arch, os=os_, variant=variant)


def select_manifest(manifests: Sequence[Descriptor], want: Platform) -> Descriptor | None:
    """The best entry for `want`: exact variant first, then older compatible variants. Entries
    without a platform (attestations carry "unknown/unknown") never match."""
    want_arch, want_variant = normalize_arch(want.architecture, want.variant)
    order = _COMPATIBLE.get((want_arch, want_variant), (want_variant,))
    best: tuple[int, int] | None = None
    chosen: Descriptor | None = None
    for pos, d in enumerate(manifests):
        p = d.platform
        if p is None or p.os.lower() != want.os.lower():
            continue
        arch, variant = normalize_arch(p.architecture, p.variant)
        if arch != want_arch or variant not in order:
            continue
        rank = (order.index(variant), pos)
        if best is None or rank < best:
            best, chosen = rank, d
    return chosen
