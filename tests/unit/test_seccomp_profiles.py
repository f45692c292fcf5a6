"""The container manager's memo of converted default seccomp profiles."""
from __future__ import annotations

import json
import os
from pathlib import Path

from asyncdock.containers.seccomp import DefaultProfiles, default_profile

PROFILE = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
    ],
}


def _names(profile: dict) -> set[str]:
    return {n for rule in profile["syscalls"] for n in rule["names"]}


def test_same_bounding_set_converts_once_and_matches_a_fresh_conversion(tmp_path: Path) -> None:
    path = tmp_path / "seccomp.json"
    path.write_text(json.dumps(PROFILE))
    profiles = DefaultProfiles(path)
    plain = profiles.get(["CAP_CHOWN"])
    assert profiles.get(["CAP_CHOWN"]) is plain
    assert plain == default_profile(["CAP_CHOWN"], host_profile=path)
    admin = profiles.get(["CAP_CHOWN", "CAP_SYS_ADMIN"])
    assert "mount" in _names(admin) and "mount" not in _names(plain)


def test_a_changed_host_profile_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "seccomp.json"
    path.write_text(json.dumps(PROFILE))
    profiles = DefaultProfiles(path)
    before = profiles.get([])
    changed = dict(PROFILE, syscalls=[{"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}])
    path.write_text(json.dumps(changed))
    os.utime(path, ns=(1, 1))  # a different signature even within the clock's granularity
    after = profiles.get([])
    assert _names(before) == {"read", "write"} and _names(after) == {"getpid"}


def test_missing_host_profile_falls_back_to_the_builtin_rules(tmp_path: Path) -> None:
    profiles = DefaultProfiles(tmp_path / "absent.json")
    assert profiles.get([]) == default_profile([], host_profile=tmp_path / "absent.json")
