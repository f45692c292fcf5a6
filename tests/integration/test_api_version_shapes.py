"""Version-shaped JSON of images, events, info, version, system df and networks (issue 14): each
version answers with the fields moby's API CHANGELOG gives it (api/shapes.py's CHANGES rows),
raw HTTP at /v1.xx/ through the harness daemon, plus Docker's 1.41 shapes (RepoDigests null,
Plugins, runc's own commit)."""
from __future__ import annotations

import json
import subprocess
import time
from typing import Any
from urllib.parse import quote

from tests.support.daemon import Daemon


def _get(d: Daemon, path: str, headers: dict[str, str] | None = None) -> Any:
    status, body = d.request("GET", path, headers=headers)
    assert status == 200, (path, body)
    return json.loads(body)


def _runtime_commit(binary: str) -> tuple[str, str]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()
    commit = next(x.partition(":")[2].strip() for x in out if x.startswith("commit:"))
    return out[0].split()[2], commit


def test_images_and_events_by_version(daemon: Daemon, registry: Any) -> None:
    ref = registry.ref("busybox")
    daemon.docker("pull", ref)
    image_id = _get(daemon, f"/v1.54/images/{ref}/json")["Id"]
    digest_ref = _get(daemon, f"/v1.54/images/{ref}/json")["RepoDigests"][0]
    # An image with a tag and no digest: Docker lists RepoDigests as null before 1.43, [] after.
    daemon.docker("tag", ref, "shapes/nodigest:1")
    daemon.docker("rmi", ref)  # the digest reference goes with the last registry tag
    assert digest_ref not in _get(daemon, "/v1.54/images/shapes/nodigest:1/json")["RepoDigests"]
    [old] = [i for i in _get(daemon, "/v1.41/images/json") if i["Id"] == image_id]
    assert old["RepoDigests"] is None and old["RepoTags"] == ["shapes/nodigest:1"]
    assert old["VirtualSize"] == old["Size"] and old["Containers"] == -1 and old["SharedSize"] == -1
    [new] = [i for i in _get(daemon, "/v1.54/images/json") if i["Id"] == image_id]
    assert new["RepoDigests"] == [] and "VirtualSize" not in new and new["Containers"] == 0
    cid = daemon.docker("create", "shapes/nodigest:1", "true").stdout.strip()
    try:
        assert [i["Containers"] for i in _get(daemon, "/v1.51/images/json") if i["Id"] == image_id] == [1]
        assert [i["Containers"] for i in _get(daemon, "/v1.50/images/json") if i["Id"] == image_id] == [-1]
    finally:
        daemon.docker("rm", cid)
    # shared-size is a 1.42 parameter; until a 1.44 filter (unversioned, as in moby)
    assert [i["SharedSize"] for i in _get(daemon, "/v1.41/images/json?shared-size=1")] == [-1]
    assert [i["SharedSize"] for i in _get(daemon, "/v1.42/images/json?shared-size=1")] == [0]
    assert _get(daemon, "/v1.41/images/json?filters=" + quote(json.dumps({"until": ["1"]}))) == []
    status, body = daemon.request("GET", "/v1.54/images/json?identity=1")
    assert status == 400 and json.loads(body)["message"] == "conflicting options: identity requires manifests=1"
    assert daemon.request("GET", "/v1.53/images/json?identity=1")[0] == 200  # unknown before 1.54

    # image inspect: what each version removed or started to omit
    v141 = _get(daemon, "/v1.41/images/shapes/nodigest:1/json")
    assert {"Container", "ContainerConfig", "VirtualSize", "Parent", "DockerVersion", "Author"} <= set(v141)
    assert v141["Config"]["Hostname"] == "" and v141["Config"]["Tty"] is False
    v145 = _get(daemon, "/v1.45/images/shapes/nodigest:1/json")
    assert "Container" not in v145 and "ContainerConfig" not in v145 and "VirtualSize" not in v145
    v150 = _get(daemon, "/v1.50/images/shapes/nodigest:1/json")
    assert "Hostname" not in v150["Config"] and "Tty" not in v150["Config"] and "Image" not in v150["Config"]
    assert v150["Config"]["WorkingDir"] == "" and "Parent" in v150
    v152 = _get(daemon, "/v1.52/images/shapes/nodigest:1/json")
    assert "WorkingDir" not in v152["Config"] and v152["Config"]["Cmd"] == ["sh"]
    assert not {"Parent", "DockerVersion", "Author"} & set(v152)
    # platform: inspect 1.49, history 1.48 (JSON-encoded OCI platform); ignored before
    arm = "platform=" + quote(json.dumps({"os": "linux", "architecture": "arm64"}))
    amd = "platform=" + quote(json.dumps({"os": "linux", "architecture": v152["Architecture"]}))
    status, body = daemon.request("GET", f"/v1.49/images/shapes/nodigest:1/json?{arm}")
    assert status == 404 and "does not provide the specified platform (linux/arm64)" in json.loads(body)["message"]
    assert daemon.request("GET", f"/v1.49/images/shapes/nodigest:1/json?{amd}")[0] == 200
    assert daemon.request("GET", f"/v1.48/images/shapes/nodigest:1/json?{arm}")[0] == 200
    assert daemon.request("GET", f"/v1.49/images/shapes/nodigest:1/json?{amd}&manifests=1")[0] == 400
    assert daemon.request("GET", f"/v1.48/images/shapes/nodigest:1/history?{arm}")[0] == 404
    assert daemon.request("GET", f"/v1.47/images/shapes/nodigest:1/history?{arm}")[0] == 200

    # events: status/id/from gone at 1.52, and the stream's content type negotiated
    until = f"until={time.time():.3f}"
    status, body = daemon.request("GET", f"/v1.51/events?since=0&{until}")
    tags = [e for e in map(json.loads, body.splitlines()) if e.get("Action") == "tag"]
    assert status == 200 and tags and tags[0]["status"] == "tag" and tags[0]["id"] == image_id
    conn_ct = _events_content_type(daemon, "/v1.51/events?since=0&" + until)
    assert conn_ct == "application/json"
    status, body = daemon.request("GET", f"/v1.52/events?since=0&{until}")
    events = [json.loads(line) for line in body.splitlines()]
    assert events and all(not {"status", "id", "from"} & set(e) for e in events)
    assert [e["Actor"]["ID"] for e in events if e["Action"] == "tag"][:1] == [image_id]
    # the first of each version's documented `produces`: x-ndjson at 1.52, jsonl from 1.53
    assert _events_content_type(daemon, "/v1.52/events?since=0&" + until) == "application/x-ndjson"
    assert _events_content_type(daemon, "/v1.53/events?since=0&" + until) == "application/jsonl"
    assert _events_content_type(daemon, "/v1.52/events?since=0&" + until,
                                "application/x-ndjson") == "application/x-ndjson"
    status, body = daemon.request("GET", f"/v1.54/events?since=0&{until}",
                                  headers={"Accept": "application/json-seq"})
    records = body.split(b"\x1e")
    assert records[0] == b"" and len(records) == len(events) + 1
    assert all(r.endswith(b"\n") and json.loads(r)["Type"] for r in records[1:])

    # empty prune answers: null lists, as dockerd sends them
    for path, answer in (("/v1.41/networks/prune", {"NetworksDeleted": None}),
                         ("/v1.41/volumes/prune", {"VolumesDeleted": None, "SpaceReclaimed": 0}),
                         ("/v1.41/build/prune", {"CachesDeleted": None, "SpaceReclaimed": 0}),
                         ("/v1.41/images/prune", {"ImagesDeleted": None, "SpaceReclaimed": 0})):
        status, body = daemon.request("POST", path)
        assert status == 200 and json.loads(body) == answer, path
    daemon.docker("rmi", "shapes/nodigest:1")


def _events_content_type(d: Daemon, path: str, accept: str | None = None) -> str:
    from tests.support.daemon import UnixHTTPConnection

    conn = UnixHTTPConnection(str(d.socket), timeout=30)
    try:
        conn.request("GET", path, headers={"Accept": accept} if accept else {})
        resp = conn.getresponse()
        resp.read()
        return str(resp.getheader("Content-Type"))
    finally:
        conn.close()


def test_info_and_version_by_version(shared_daemon: Daemon) -> None:
    old = _get(shared_daemon, "/v1.41/info")
    assert old["Plugins"]["Volume"] == ["local"] and old["Plugins"]["Network"] == ["bridge", "host", "null"]
    assert old["BridgeNfIptables"] is False and "KernelMemoryTCP" in old
    assert old["RegistryConfig"]["AllowNondistributableArtifactsCIDRs"] == []
    assert "FirewallBackend" not in old and "CDISpecDirs" not in old
    runc_version, runc_commit = _runtime_commit("runc")
    assert old["RuncCommit"] == {"ID": runc_commit, "Expected": runc_commit}
    new = _get(shared_daemon, "/v1.54/info")
    assert not {"BridgeNfIptables", "BridgeNfIp6tables", "KernelMemoryTCP", "KernelMemory"} & set(new)
    assert "AllowNondistributableArtifactsCIDRs" not in new["RegistryConfig"]
    assert new["RuncCommit"] == {"ID": runc_commit} and new["InitCommit"] == {"ID": ""}
    assert new["FirewallBackend"] == {"Driver": "nftables"} and new["CDISpecDirs"] == []
    text = shared_daemon.docker("info").stdout
    assert f"runc version: {runc_commit}" in text
    comps = {c["Name"]: c for c in _get(shared_daemon, "/v1.54/version")["Components"]}
    assert comps["runc"]["Version"] == runc_version and comps["runc"]["Details"]["GitCommit"] == runc_commit
    crun_version, crun_commit = _runtime_commit("crun")
    if "crun" in comps:
        assert comps["crun"]["Version"] == crun_version
        assert comps["crun"]["Details"]["GitCommit"] == crun_commit


def test_system_df_and_networks_by_version(shared_daemon: Daemon) -> None:
    old = _get(shared_daemon, "/v1.41/system/df?type=volume")  # type is unknown to 1.41
    assert {"LayersSize", "Images", "Containers", "Volumes", "BuildCache"} <= set(old)
    assert not {"ImageUsage", "VolumeUsage"} & set(old)
    only = _get(shared_daemon, "/v1.42/system/df?type=volume")
    assert set(only) == {"Volumes"}
    status, body = shared_daemon.request("GET", "/v1.42/system/df?type=bogus")
    assert status == 400 and json.loads(body)["message"] == "unknown object type: bogus"
    both = _get(shared_daemon, "/v1.52/system/df")
    assert {"LayersSize", "Images", "ImageUsage", "ContainerUsage", "VolumeUsage", "BuildCacheUsage"} <= set(both)
    assert both["ImageUsage"].get("TotalCount", 0) == len(both["Images"])
    verbose = _get(shared_daemon, "/v1.52/system/df?verbose=1")
    assert set(verbose) == {"ImageUsage", "ContainerUsage", "VolumeUsage", "BuildCacheUsage"}
    assert "EnableIPv4" not in _get(shared_daemon, "/v1.47/networks/bridge")
    net = _get(shared_daemon, "/v1.48/networks/bridge")
    keys = list(net)
    assert net["EnableIPv4"] is True and keys.index("EnableIPv4") == keys.index("EnableIPv6") - 1
    assert all(n["EnableIPv4"] is True for n in _get(shared_daemon, "/v1.54/networks"))
