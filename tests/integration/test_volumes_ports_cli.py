"""Issue 6's command block through the docker CLI: -P with the image's ExposedPorts, `docker port`,
the PORTS column, anonymous volumes from the image's VOLUME with its content copied up, bind
mounts (-v host:ctr:ro), --tmpfs, --mount, --volumes-from, `network rm` of a network in use,
`system df` and `system prune --volumes`. Traffic goes only to 127.0.0.1."""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from tests.support.daemon import Daemon


def _u() -> str:
    return uuid.uuid4().hex[:8]


def test_publish_all_and_docker_port(shared_daemon: Daemon, registry: Any) -> None:
    d = shared_daemon
    image = registry.ref("library/configured")
    name = "pa-" + _u()
    d.docker("run", "-d", "-P", "--name", name, image)
    try:
        ports = json.loads(d.docker("inspect", "-f", "{{json .NetworkSettings.Ports}}", name).stdout)
        assert set(ports) == {"8080/tcp", "9999/udp"}
        tcp = ports["8080/tcp"][0]
        assert tcp["HostIp"] == "0.0.0.0" and tcp["HostPort"].isdigit() and int(tcp["HostPort"]) > 0
        out = d.docker("port", name).stdout
        assert f"8080/tcp -> 0.0.0.0:{tcp['HostPort']}" in out
        assert d.docker("port", name, "8080").stdout.strip() == f"0.0.0.0:{tcp['HostPort']}"
        row = d.docker("ps", "--filter", f"name={name}", "--format", "{{.Ports}}").stdout
        assert f"0.0.0.0:{tcp['HostPort']}->8080/tcp" in row
    finally:
        d.docker("rm", "-f", "-v", name, check=False)


def test_image_volume_copy_up_and_volumes_from(shared_daemon: Daemon, registry: Any) -> None:
    d = shared_daemon
    image = registry.ref("library/configured")
    src = "vs-" + _u()
    d.docker("create", "--name", src, "--entrypoint", "sh", image, "-c", "sleep 60")
    try:
        mounts = json.loads(d.docker("inspect", "-f", "{{json .Mounts}}", src).stdout)
        assert len(mounts) == 1 and mounts[0]["Type"] == "volume" and mounts[0]["Destination"] == "/data"
        anon = mounts[0]["Name"]
        assert len(anon) == 64  # an anonymous volume, named like Docker's
        out = d.docker("run", "--rm", "--volumes-from", f"{src}:ro", "busybox", "cat", "/data/seed.txt").stdout
        assert out == "seeded volume content\n"  # the image's content was copied into the new volume
        r = d.docker("run", "--rm", "--volumes-from", f"{src}:ro", "busybox", "touch", "/data/x", check=False)
        assert r.returncode != 0 and "Read-only file system" in r.stderr + r.stdout
    finally:
        d.docker("rm", "-v", src, check=False)
    assert anon not in d.docker("volume", "ls", "-q").stdout  # rm -v removed the anonymous volume


def test_bind_tmpfs_and_mount_flags(shared_daemon: Daemon, tmp_path: Path) -> None:
    d = shared_daemon
    (tmp_path / "hello.txt").write_text("from the host\n")
    out = d.docker("run", "--rm", "-v", f"{tmp_path}:/src:ro", "busybox", "cat", "/src/hello.txt").stdout
    assert out == "from the host\n"
    r = d.docker("run", "--rm", "-v", f"{tmp_path}:/src:ro", "busybox", "touch", "/src/new", check=False)
    assert r.returncode != 0 and not (tmp_path / "new").exists()
    d.docker("run", "--rm", "--mount", f"type=bind,source={tmp_path},target=/w", "busybox", "sh", "-c",
             "echo written > /w/out.txt")
    assert (tmp_path / "out.txt").read_text() == "written\n"
    out = d.docker("run", "--rm", "--tmpfs", "/run:size=1m", "busybox", "sh", "-c",
                   "grep ' /run ' /proc/mounts").stdout
    assert out.split()[2] == "tmpfs" and "size=1024k" in out
    vol = "mv-" + _u()
    d.docker("run", "--rm", "--mount", f"type=volume,source={vol},target=/v", "busybox", "sh", "-c", "echo v > /v/f")
    try:
        assert d.docker("run", "--rm", "-v", f"{vol}:/v", "busybox", "cat", "/v/f").stdout == "v\n"
    finally:
        d.docker("volume", "rm", vol, check=False)


def test_network_in_use_refused_then_removed(shared_daemon: Daemon) -> None:
    d = shared_daemon
    net, c = "inuse-" + _u(), "nu-" + _u()
    d.docker("network", "create", net)
    d.docker("run", "-d", "--network", net, "--name", c, "busybox", "sleep", "60")
    try:
        r = d.docker("network", "rm", net, check=False)
        assert r.returncode != 0 and "has active endpoints" in r.stderr
    finally:
        d.docker("rm", "-f", c, check=False)
    d.docker("network", "rm", net)
    assert net not in d.docker("network", "ls", "--format", "{{.Name}}").stdout.split()


def test_system_df_and_prune_volumes(daemon: Daemon) -> None:
    vol = "df-" + _u()
    daemon.docker("volume", "create", vol)
    daemon.docker("run", "--rm", "-v", f"{vol}:/d", "busybox", "sh", "-c", "dd if=/dev/zero of=/d/f bs=1k count=64 2>/dev/null")
    df = daemon.docker("system", "df", "-v").stdout
    assert vol in df and "Local Volumes space usage" in df
    out = daemon.docker("system", "prune", "-f", "--volumes").stdout
    assert vol in out and "Total reclaimed space" in out
    assert vol not in daemon.docker("volume", "ls", "-q").stdout.split()
