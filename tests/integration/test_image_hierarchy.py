"""Images with a local parent (what commit and build steps make) through a real daemon and the
docker CLI 28, as dockerd's classic image store treats them: `docker images` hides untagged
intermediates unless `-a`, `dangling` means untagged and childless, `docker rmi` refuses a
parent and walks up from a child, `docker history` names the parent images.

No route makes such images yet: they are added to the stopped daemon's store with the store's
own API (tests/support/imagetree.py) and the daemon is started again."""
from __future__ import annotations

import json
from typing import Any, NamedTuple

from asyncdock.images.store import ImageRecord, ImageStore
from tests.conftest import DaemonFactory
from tests.support.daemon import Daemon
from tests.support.imagetree import make_image, seed_stopped


class Chain(NamedTuple):
    base: ImageRecord  # busybox, pulled
    mid: ImageRecord  # untagged, a RUN layer
    app: ImageRecord  # app:1, a LABEL step on mid


def chain(d: Daemon) -> Chain:
    d.docker("pull", "-q", "busybox")

    async def build(store: ImageStore) -> Chain:
        base = store.resolve("busybox")
        mid = await make_image(store, base, step="RUN make mid", created="2024-03-01T00:00:00Z",
                               files={"mid": b"m" * 3000})
        app = await make_image(store, mid, step="LABEL a=b", created="2024-03-02T00:00:00Z",
                               labels={"a": "b"}, tag="app:1")
        return Chain(base, mid, app)

    return seed_stopped(d, build)


def short(image_id: str) -> str:
    return image_id[7:19]


def listed(d: Daemon, *args: str) -> list[str]:
    out = d.docker("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}", *args).stdout
    return sorted(out.splitlines())


def test_images_hides_intermediates_and_all_shows_them(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory()
    c = chain(d)
    tops = sorted([f"app:1 {short(c.app.id)}", f"busybox:latest {short(c.base.id)}"])
    assert listed(d) == tops
    assert listed(d, "-a") == sorted([*tops, f"<none>:<none> {short(c.mid.id)}"])
    status, body = d.request("GET", "/images/json?all=1")
    assert status == 200
    parents = {s["Id"]: s["ParentId"] for s in json.loads(body)}
    assert parents == {c.app.id: c.mid.id, c.mid.id: c.base.id, c.base.id: ""}
    # dangling: untagged and without children; the intermediate is neither listed nor dangling
    assert d.docker("images", "-q", "-f", "dangling=true").stdout == ""
    assert d.docker("images", "-a", "-q", "-f", "dangling=true").stdout == ""
    assert listed(d, "-a", "-f", "dangling=false") == tops
    p = d.docker("images", "-f", "dangling=true", "-f", "dangling=false", check=False)
    assert p.stderr.strip() == "Error response from daemon: invalid filter 'dangling=[false true]'"
    # before / since keep working, and keep hiding the intermediate without -a
    assert listed(d, "-f", "before=app:1") == [f"busybox:latest {short(c.base.id)}"]
    assert listed(d, "-a", "-f", "before=app:1") == sorted([f"busybox:latest {short(c.base.id)}",
                                                            f"<none>:<none> {short(c.mid.id)}"])
    assert listed(d, "-a", "-f", "since=busybox") == sorted([f"app:1 {short(c.app.id)}",
                                                            f"<none>:<none> {short(c.mid.id)}"])
    # once its child is gone (without pruning parents), the intermediate is a dangling image
    d.docker("rmi", "--no-prune", "app:1")
    assert d.docker("images", "-q", "-f", "dangling=true").stdout.split() == [short(c.mid.id)]
    assert listed(d) == sorted([f"<none>:<none> {short(c.mid.id)}", f"busybox:latest {short(c.base.id)}"])


def test_rmi_refuses_a_parent_and_walks_up_from_a_child(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory()
    c = chain(d)
    for args in ((short(c.mid.id),), ("-f", short(c.mid.id))):
        p = d.docker("rmi", *args, check=False)
        assert p.returncode == 1
        assert p.stderr.strip() == (f"Error response from daemon: conflict: unable to delete {short(c.mid.id)} "
                                    "(cannot be forced) - image has dependent child images")
    status, body = d.request("DELETE", f"/images/{c.mid.id}")
    assert status == 409 and json.loads(body)["message"].endswith("image has dependent child images")
    # busybox is tagged: its tag goes, the image stays for its child
    assert d.docker("rmi", "busybox").stdout.splitlines()[0] == "Untagged: busybox:latest"
    assert short(c.base.id) in d.docker("images", "-a", "-q").stdout.split()
    d.docker("tag", c.base.id, "busybox")
    # the child: untagged and deleted, then its untagged parent with its layer; busybox stays
    out = d.docker("rmi", "app:1").stdout.splitlines()
    assert out == ["Untagged: app:1", f"Deleted: {c.app.id}", f"Deleted: {c.mid.id}",
                   f"Deleted: {c.mid.chain_ids[-1]}"]
    assert listed(d, "-a") == [f"busybox:latest {short(c.base.id)}"]


def test_history_names_the_parent_images(daemon_factory: DaemonFactory, registry: Any) -> None:
    d = daemon_factory()
    c = chain(d)
    out = d.docker("history", "--no-trunc", "--format", "{{.ID}}|{{.CreatedBy}}", "app:1").stdout.splitlines()
    assert [line.split("|")[0] for line in out] == [c.app.id, c.mid.id, c.base.id]
    assert [line.split("|")[1] for line in out][:2] == ["LABEL a=b", "RUN make mid"]
    status, body = d.request("GET", "/images/app:1/history")
    assert status == 200
    assert [h["Tags"] for h in json.loads(body)] == [["app:1"], None, ["busybox:latest"]]
    # past the first pulled image (no parent), the pulled history stays <missing>
    layers = registry.ref("layers")
    d.docker("pull", "-q", layers)

    async def build(store: ImageStore) -> ImageRecord:
        return await make_image(store, store.resolve(layers), step="CMD [\"sh\"]",
                                created="2024-04-01T00:00:00Z", tag="onlayers:1")

    child = seed_stopped(d, build)
    ids = d.docker("history", "-q", "--no-trunc", "onlayers:1").stdout.split()
    assert ids[:2] == [child.id, store_id(d, layers)]
    assert len(ids) > 3 and set(ids[2:]) == {"<missing>"}


def store_id(d: Daemon, ref: str) -> str:
    return d.docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
