"""`docker system df` and `docker system df -v` through the docker CLI 28, and `GET /system/df`
as dockerd's classic image store counts it: images as `docker images` lists them (intermediates
hidden) with SharedSize over all images, container counts, the layers' size, volumes with
UsageData, the build cache (the builder's: untagged intermediates, shared when an image sits on them). The image with a parent is seeded into the
stopped daemon's store (tests/support/imagetree.py)."""
from __future__ import annotations

import json

from asyncdock.images.store import ImageRecord, ImageStore
from tests.conftest import DaemonFactory
from tests.support.imagetree import make_image, seed_stopped


def test_system_df_and_verbose(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory()
    d.docker("pull", "-q", "busybox")

    async def build(store: ImageStore) -> tuple[ImageRecord, ImageRecord, ImageRecord]:
        base = store.resolve("busybox")
        mid = await make_image(store, base, step="RUN make", created="2024-03-01T00:00:00Z",
                               files={"mid": b"m" * 3000})
        app = await make_image(store, mid, step="LABEL a=b", created="2024-03-02T00:00:00Z",
                               labels={"a": "b"}, tag="app:1")
        return base, mid, app

    base, mid, app = seed_stopped(d, build)
    d.docker("volume", "create", "used")
    d.docker("volume", "create", "idle")
    cid = d.docker("create", "--name", "dfc", "-v", "used:/data", "app:1", "true").stdout.strip()
    try:
        (d.data_root / "volumes" / "idle" / "_data" / "f").write_bytes(b"v" * 20000)

        rows = [line.split() for line in d.docker("system", "df").stdout.splitlines()]
        assert rows[0] == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
        # two images: the intermediate is not one of them; all of app's layers are shared (with
        # mid and busybox), so the CLI finds nothing in use and all of it reclaimable
        assert rows[1] == ["Images", "2", "1", "1.988MB", "1.988MB", "(100%)"]
        assert rows[2] == ["Containers", "1", "0", "0B", "0B"]
        assert rows[3][:4] == ["Local", "Volumes", "2", "1"] and rows[3][5] == rows[3][4] != "0B"
        # the intermediate is the build cache, shared: app is built on it
        assert rows[4] == ["Build", "Cache", "1", "0", "0B", "0B"]  # the CLI sums only unshared records

        out = d.docker("system", "df", "-v").stdout.splitlines()
        sections = [line for line in out if line.endswith(":") or line.startswith("Build cache usage")]
        assert sections == ["Images space usage:", "Containers space usage:", "Local Volumes space usage:",
                            "Build cache usage: 0B"]
        images = out[out.index("Images space usage:") + 2:out.index("Containers space usage:") - 1]
        assert images[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE", "SHARED", "SIZE",
                                     "UNIQUE", "SIZE", "CONTAINERS"]
        assert [r.split()[:3] + r.split()[-4:] for r in images[1:]] == [
            ["app", "1", app.id[7:19], "1.99MB", "1.988MB", "0B", "1"],
            ["busybox", "latest", base.id[7:19], "1.98MB", "1.985MB", "0B", "0"]]
        containers = out[out.index("Containers space usage:") + 2:out.index("Local Volumes space usage:") - 1]
        assert containers[1].split()[:4] == [cid[:12], "app:1", '"true"', "1"]
        volumes = out[out.index("Local Volumes space usage:") + 2:]
        assert volumes[0].split() == ["VOLUME", "NAME", "LINKS", "SIZE"]
        assert sorted(v.split()[:2] for v in volumes[1:3]) == [["idle", "0"], ["used", "1"]]
        assert out[-2].split() == ["CACHE", "ID", "CACHE", "TYPE", "SIZE", "CREATED", "LAST", "USED", "USAGE",
                                   "SHARED"]
        row = out[-1].split()
        assert row[:3] == [mid.id[7:19], "regular", "3kB"] and row[-1] == "true"

        status, body = d.request("GET", "/v1.47/system/df")
        assert status == 200
        df = json.loads(body)
        assert df["LayersSize"] == base.size + 3000 == app.size
        assert {i["Id"]: (i["ParentId"], i["Containers"], i["SharedSize"], i["Size"]) for i in df["Images"]} == {
            app.id: (mid.id, 1, app.size, app.size), base.id: ("", 0, base.size, base.size)}
        assert [(c["ID"], c["Parents"], c["Size"], c["Shared"], c["InUse"]) for c in df["BuildCache"]] == [
            (mid.id[7:32], [base.id[7:32]], 3000, True, False)]
        usage = {v["Name"]: v["UsageData"] for v in df["Volumes"]}
        assert usage["used"] == {"Size": 0, "RefCount": 1}
        assert usage["idle"]["RefCount"] == 0 and usage["idle"]["Size"] >= 20000
        status, body = d.request("GET", "/v1.54/system/df?verbose=1")
        assert status == 200
        df = json.loads(body)
        assert set(df) == {"ImageUsage", "ContainerUsage", "VolumeUsage", "BuildCacheUsage"}
        assert {k: v for k, v in df["ImageUsage"].items() if k != "Items"} == {
            "ActiveCount": 1, "TotalCount": 2, "TotalSize": app.size}
        assert df["VolumeUsage"]["Reclaimable"] == usage["idle"]["Size"] and df["BuildCacheUsage"]["TotalCount"] == 1
    finally:
        d.docker("rm", "dfc")
        d.docker("volume", "rm", "used", "idle")
