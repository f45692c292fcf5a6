"""Container answers in the shape of the API version a request names (api/shapes.py), and
Docker's JSON to the byte at 1.41 (the dockerd 20.10 transcripts)."""
from __future__ import annotations

import json
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.daemon import Daemon


def call(d: Daemon, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    status, raw = d.request(method, path, body)
    return status, (json.loads(raw) if raw.strip() else None)


def ok(d: Daemon, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    status, doc = call(d, method, path, body)
    assert status < 300, (status, doc)
    return doc


@pytest.fixture
def names(d: Daemon) -> Iterator[list[str]]:
    """Containers and networks the test makes, removed after it."""
    made: list[str] = []
    yield made
    for n in reversed(made):
        d.request("DELETE", f"/containers/{n}?force=1")
        d.request("DELETE", f"/networks/{n}")


def filters(**f: list[str]) -> str:
    return urllib.parse.quote(json.dumps(f))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_inspect_hostconfig_matches_dockerd_at_141_and_newest(d: Daemon, names: list[str]) -> None:
    name = unique("shape")
    names.append(name)
    d.docker("create", "--name", name, "busybox", "sleep", "100")
    old = ok(d, "GET", f"/v1.41/containers/{name}/json")
    hc = old["HostConfig"]
    # the docker CLI sends -1 and 0 for "not set": dockerd stores and shows null
    assert hc["MemorySwappiness"] is None and hc["PidsLimit"] is None
    for key in ("Mounts", "StorageOpt", "Sysctls", "Tmpfs", "Annotations"):
        assert key not in hc, key
    assert hc["KernelMemory"] == 0 and hc["KernelMemoryTCP"] == 0
    assert old["ExecIDs"] is None
    assert "OnBuild" in old["Config"] and old["Config"]["OnBuild"] is None
    new = ok(d, "GET", f"/v1.54/containers/{name}/json")
    assert "KernelMemory" not in new["HostConfig"] and "KernelMemoryTCP" not in new["HostConfig"]
    assert "OnBuild" not in new["Config"]
    mid = ok(d, "GET", f"/v1.51/containers/{name}/json")
    assert "KernelMemoryTCP" not in mid["HostConfig"] and mid["Config"]["OnBuild"] is None


def test_list_health_and_annotations_by_version(d: Daemon, names: list[str]) -> None:
    name = unique("ann")
    names.append(name)
    ok(d, "POST", f"/v1.54/containers/create?name={name}",
       {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Annotations": {"org.example/a": "1"}}})
    flt = filters(name=[name])
    [new] = ok(d, "GET", f"/v1.54/containers/json?all=1&filters={flt}")
    assert new["Health"] == {"Status": "none", "FailingStreak": 0}
    assert new["HostConfig"]["Annotations"] == {"org.example/a": "1"}
    [mid] = ok(d, "GET", f"/v1.46/containers/json?all=1&filters={flt}")
    assert "Health" not in mid and mid["HostConfig"]["Annotations"] == {"org.example/a": "1"}
    [old] = ok(d, "GET", f"/v1.45/containers/json?all=1&filters={flt}")
    assert "Annotations" not in old["HostConfig"] and "Health" not in old
    assert ok(d, "GET", f"/v1.54/containers/{name}/json")["HostConfig"]["Annotations"] == {"org.example/a": "1"}
    assert "Annotations" not in ok(d, "GET", f"/v1.42/containers/{name}/json")["HostConfig"]
    # a 1.42 client cannot set them: moby's router drops the field
    old_name = unique("ann-old")
    names.append(old_name)
    ok(d, "POST", f"/v1.42/containers/create?name={old_name}",
       {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Annotations": {"org.example/a": "1"}}})
    assert "Annotations" not in ok(d, "GET", f"/v1.54/containers/{old_name}/json")["HostConfig"]


def test_several_networks_at_create_with_mac_aliases_dns_names(d: Daemon, names: list[str]) -> None:
    n1, n2, name = unique("net-a"), unique("net-b"), unique("multi")
    for n in (n1, n2):
        ok(d, "POST", "/networks/create", {"Name": n})
        names.append(n)
    names.append(name)
    body = {"Image": "busybox", "Cmd": ["sleep", "100"],
            "HostConfig": {"NetworkMode": n1},
            "NetworkingConfig": {"EndpointsConfig": {
                n1: {"Aliases": ["web"], "MacAddress": "02:42:ac:11:00:99", "GwPriority": 5}, n2: {}}}}
    status, err = call(d, "POST", f"/v1.43/containers/create?name={name}", body)
    assert status == 400 and err["message"].startswith("Container cannot be created with multiple network endpoints: ")
    cid = ok(d, "POST", f"/v1.54/containers/create?name={name}", body)["Id"]
    ok(d, "POST", f"/containers/{name}/start")
    nets = ok(d, "GET", f"/v1.54/containers/{name}/json")["NetworkSettings"]["Networks"]
    assert set(nets) == {n1, n2}
    a = nets[n1]
    assert a["Aliases"] == ["web"] and a["MacAddress"] == "02:42:ac:11:00:99" and a["GwPriority"] == 5
    assert a["DNSNames"] == [name, "web", cid[:12]]
    assert nets[n2]["IPAddress"] and nets[n2]["DNSNames"] == [name, cid[:12]]
    mac = d.docker("exec", name, "cat", "/sys/class/net/eth0/address").stdout.strip()
    assert mac == "02:42:ac:11:00:99"
    at44 = ok(d, "GET", f"/v1.44/containers/{name}/json")["NetworkSettings"]["Networks"]
    assert at44[n1]["Aliases"] == ["web", cid[:12]] and "GwPriority" not in at44[n1]
    assert at44[n1]["DNSNames"] == [name, "web", cid[:12]]
    at43 = ok(d, "GET", f"/v1.43/containers/{name}/json")["NetworkSettings"]["Networks"]
    assert "DNSNames" not in at43[n1]
    [item] = ok(d, "GET", f"/v1.47/containers/json?filters={filters(name=[name])}")
    assert "GwPriority" not in item["NetworkSettings"]["Networks"][n1]
    assert item["NetworkSettings"]["Networks"][n1]["DNSNames"] == [name, "web", cid[:12]]


def test_container_wide_mac_address_by_version(d: Daemon, names: list[str]) -> None:
    net = unique("net-mac")
    ok(d, "POST", "/networks/create", {"Name": net})
    names.append(net)
    body = {"Image": "busybox", "Cmd": ["true"], "MacAddress": "02:42:ac:11:00:42", "HostConfig": {"NetworkMode": net}}
    old, mid = unique("mac-old"), unique("mac-mid")
    names += [old, mid]
    assert ok(d, "POST", f"/v1.41/containers/create?name={old}", body)["Warnings"] == []
    eps = ok(d, "GET", f"/v1.41/containers/{old}/json")["NetworkSettings"]["Networks"]
    assert eps[net]["MacAddress"] == "02:42:ac:11:00:42"
    warnings = ok(d, "POST", f"/v1.44/containers/create?name={mid}", body)["Warnings"]
    assert warnings == ["The container-wide MacAddress field is now deprecated. It should be specified in "
                        "EndpointsConfig instead."]
    assert ok(d, "GET", f"/containers/{mid}/json")["NetworkSettings"]["Networks"][net]["MacAddress"] == \
        "02:42:ac:11:00:42"
    status, err = call(d, "POST", f"/v1.52/containers/create?name={unique('mac-new')}", body)
    assert status == 400 and "Config.MacAddress" in err["message"]
    status, err = call(d, "POST", f"/v1.54/containers/create?name={unique('mac-bad')}",
                       {"Image": "busybox", "NetworkingConfig": {"EndpointsConfig": {net: {"MacAddress": "zz"}}},
                        "HostConfig": {"NetworkMode": net}})
    assert (status, err["message"]) == (400, "invalid MAC address zz")


def test_empty_port_bindings_warn_from_152(d: Daemon, names: list[str]) -> None:
    body = {"Image": "busybox", "Cmd": ["true"], "ExposedPorts": {"80/tcp": {}},
            "HostConfig": {"PortBindings": {"80/tcp": []}}}
    a, b = unique("pb-old"), unique("pb-new")
    names += [a, b]
    assert ok(d, "POST", f"/v1.51/containers/create?name={a}", body)["Warnings"] == []
    [warning] = ok(d, "POST", f"/v1.52/containers/create?name={b}", body)["Warnings"]
    assert "empty list of port-bindings: 80/tcp" in warning


def test_prune_counts_what_dockerd_counts(d: Daemon, names: list[str]) -> None:
    label = unique("prune")
    flt = filters(label=[label])
    # nothing matches: Docker's empty shape
    assert ok(d, "POST", f"/v1.41/containers/prune?filters={flt}") == {"ContainersDeleted": None, "SpaceReclaimed": 0}
    quiet, writer = unique("quiet"), unique("writer")
    names += [quiet, writer]
    d.docker("run", "--name", quiet, "--label", label, "busybox", "true")
    assert ok(d, "POST", f"/v1.41/containers/prune?filters={flt}")["SpaceReclaimed"] == 0
    d.docker("run", "--name", writer, "--label", label, "busybox", "sh", "-c", "head -c 1000 /dev/zero > /f")
    doc = ok(d, "POST", f"/v1.41/containers/prune?filters={flt}")
    assert doc["SpaceReclaimed"] == 1000 and len(doc["ContainersDeleted"]) == 1


def test_stats_os_type_from_152(d: Daemon, names: list[str]) -> None:
    name = unique("stats")
    names.append(name)
    d.docker("run", "-d", "--name", name, "busybox", "sleep", "100")
    assert ok(d, "GET", f"/v1.52/containers/{name}/stats?stream=0&one-shot=1")["os_type"] == "linux"
    assert "os_type" not in ok(d, "GET", f"/v1.51/containers/{name}/stats?stream=0&one-shot=1")


def test_stop_signal_parameter_from_142(d: Daemon, names: list[str]) -> None:
    name = unique("sig")
    names.append(name)
    script = "trap 'exit 7' USR1; trap 'exit 9' TERM; while :; do sleep 0.1; done"
    d.docker("run", "-d", "--name", name, "busybox", "sh", "-c", script)
    status, err = call(d, "POST", f"/v1.54/containers/{name}/stop?signal=NOPE")
    assert status == 400 and "Invalid signal" in err["message"]
    assert d.request("POST", f"/v1.42/containers/{name}/stop?signal=SIGUSR1&t=10")[0] == 204
    assert ok(d, "GET", f"/containers/{name}/json")["State"]["ExitCode"] == 7
    d.docker("start", name)
    # below 1.42 the parameter does not exist: the container's stop signal (TERM) is sent
    assert d.request("POST", f"/v1.41/containers/{name}/restart?signal=SIGUSR1&t=10")[0] == 204
    d.docker("stop", name)
    assert ok(d, "GET", f"/containers/{name}/json")["State"]["ExitCode"] == 9


def test_mount_type_image_and_subpath_are_refused_clearly(d: Daemon) -> None:
    status, err = call(d, "POST", "/v1.54/containers/create",
                       {"Image": "busybox", "HostConfig": {"Mounts": [{"Type": "image", "Source": "busybox",
                                                                        "Target": "/img"}]}})
    assert status == 501 and 'mount type "image"' in err["message"]
    sub = {"Image": "busybox", "HostConfig": {"Mounts": [{"Type": "volume", "Source": unique("v"), "Target": "/v",
                                                          "VolumeOptions": {"Subpath": "a"}}]}}
    status, err = call(d, "POST", "/v1.44/containers/create", sub)
    assert (status, err["message"]) == (400, "VolumeOptions.Subpath needs API v1.45 or newer")
    status, err = call(d, "POST", "/v1.44/containers/create",
                       {"Image": "busybox", "HostConfig": {"Mounts": [{"Type": "bind", "Source": "/tmp", "Target": "/t",
                                                                        "VolumeOptions": {}}]}})
    assert (status, err["message"]) == (400, 'VolumeOptions must not be specified on mount type "bind"')
