"""Picking one manifest out of an index for a platform (containerd's platforms matcher, reduced to
what Linux hosts need)."""
from __future__ import annotations

import json
import platform as _platform
import re
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


# containerd's platforms.Parse (what moby answers `platform` with): its component grammars, the
# OS and architecture names Go knows (a lone component must be one of them), its error texts.
_SPECIFIER_RE = r"^[A-Za-z0-9_.-]+$"
_OS_RE = r"^([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.%-]*)((?:\+[A-Za-z0-9_.%-]+)*)\))?$"
_KNOWN_OS = frozenset("aix android darwin dragonfly freebsd hurd illumos ios js linux nacl netbsd openbsd plan9 "
                      "solaris windows zos".split())
_KNOWN_ARCH = frozenset("386 amd64 amd64p32 arm armbe arm64 arm64be ppc64 ppc64le loong64 mips mipsle mips64 "
                        "mips64le mips64p32 mips64p32le ppc riscv riscv64 s390 s390x sparc sparc64 wasm".split())


def _q(text: str) -> str:
    """Go's %q, for the texts that reach an error."""
    return json.dumps(text, ensure_ascii=False)


def parse_platform(spec: str) -> Platform:
    """`os[/arch[/variant]]` as the `platform` query parameter gives it; anything containerd's
    parser refuses is refused with its text (moby answers it as 400 before any pull starts)."""
    def invalid(text: str) -> InvalidParameter:
        return InvalidParameter(f"{text}: invalid argument")

    if "*" in spec:
        raise invalid(f"{_q(spec)}: wildcards not yet supported")
    parts = spec.split("/", 3)
    os_match = re.match(_OS_RE, parts[0])
    if os_match is None:
        raise invalid(f"{_q(parts[0])} is an invalid OS component of {_q(spec)}: OSAndVersion specifier "
                      f"component must match {_q(_OS_RE)}")
    for part in parts[1:]:
        if re.match(_SPECIFIER_RE, part) is None:
            raise invalid(f"{_q(part)} is an invalid component of {_q(spec)}: platform specifier component "
                          f"must match {_q(_SPECIFIER_RE)}")
    os_ = os_match.group(1).lower()
    os_ = "darwin" if os_ == "macos" else os_
    if len(parts) == 1:
        host = host_platform()
        if os_ in _KNOWN_OS:
            return Platform(architecture=host.architecture, os=os_, variant=host.variant)
        arch, variant = normalize_arch(parts[0])
        if arch in _KNOWN_ARCH:
            return Platform(architecture=arch, os="linux", variant=variant)
        raise invalid(f"{_q(spec)}: unknown operating system or architecture")
    if len(parts) > 3:
        raise invalid(f"{_q(spec)}: cannot parse platform specifier")
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
