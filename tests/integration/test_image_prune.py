"""`docker image prune` through the docker CLI 28 as dockerd's ImagePrune answers it: dangling
only by default (untagged images without children, taking their untagged parents with them),
`-a`, `until` (timestamps and Go durations), `label` / `label!`, the space reclaimed, and
Docker's errors for bad filters. Images with a parent are seeded into the stopped daemon's
store (tests/support/imagetree.py); no route makes them yet."""
from __future__ import annotations

import json
import time

from asyncdock.base.timefmt import rfc3339nano
from asyncdock.images.store import ImageRecord, ImageStore
from tests.conftest import DaemonFactory
from tests.support.daemon import Daemon
from tests.support.imagetree import make_image, seed_stopped


def tags(d: Daemon) -> list[str]:
    return sorted(d.docker("images", "-a", "--format", "{{.Repository}}:{{.Tag}}").stdout.split())


def prune_lines(d: Daemon, *args: str) -> list[str]:
    return d.docker("image", "prune", "-f", *args).stdout.splitlines()


def test_prune_dangling_takes_untagged_parents_and_leaves_intermediates(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory()
    d.docker("pull", "-q", "busybox")

    async def build(store: ImageStore) -> tuple[ImageRecord, ...]:
        base = store.resolve("busybox")
        mid = await make_image(store, base, step="RUN mid", created="2024-03-01T00:00:00Z",
                               files={"mid": b"m" * 3000})
        top = await make_image(store, mid, step="RUN top", created="2024-03-02T00:00:00Z",
                               files={"top": b"t" * 200})
        # a tagged image on an untagged intermediate of its own: neither is dangling
        imid = await make_image(store, base, step="RUN other", created="2024-03-03T00:00:00Z",
                                files={"other": b"o" * 100})
        kept = await make_image(store, imid, step="CMD [\"sh\"]", created="2024-03-04T00:00:00Z", tag="kept:1")
        return mid, top, imid, kept

    mid, top, imid, kept = seed_stopped(d, build)
    out = prune_lines(d)
    assert out == ["Deleted Images:", f"deleted: {top.id}", f"deleted: {top.chain_ids[-1]}",
                   f"deleted: {mid.id}", f"deleted: {mid.chain_ids[-1]}", "",
                   "Total reclaimed space: 3.2kB"]
    assert tags(d) == ["<none>:<none>", "busybox:latest", "kept:1"]
    assert d.docker("images", "-a", "-q", "--no-trunc").stdout.split().count(imid.id) == 1
    status, body = d.request("POST", "/images/prune")
    assert status == 200 and json.loads(body) == {"ImagesDeleted": None, "SpaceReclaimed": 0}


def test_prune_all_until_keeps_recent_images(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory()
    d.docker("pull", "-q", "busybox")  # created 2024-01-01
    recent = rfc3339nano(time.time_ns() - 60 * 10**9)

    async def build(store: ImageStore) -> tuple[ImageRecord, ImageRecord]:
        base = store.resolve("busybox")
        old = await make_image(store, base, step="RUN old", created="2024-03-01T00:00:00Z",
                               files={"old": b"o" * 1000}, tag="old:1")
        new = await make_image(store, base, step="RUN new", created=recent, files={"new": b"n" * 1000}, tag="new:1")
        return old, new

    old, new = seed_stopped(d, build)
    out = prune_lines(d, "-a", "--filter", "until=1h")
    # busybox is old enough too: as dockerd, -a removes its tags, and the image stays for its
    # child new:1 (now an intermediate)
    assert sorted(out[1:-2]) == sorted(["untagged: old:1", f"deleted: {old.id}", f"deleted: {old.chain_ids[-1]}",
                                        "untagged: busybox:latest",
                                        next(x for x in out if x.startswith("untagged: busybox@sha256:"))])
    assert out[-1] == "Total reclaimed space: 1kB"
    assert tags(d) == ["<none>:<none>", "new:1"]
    assert sorted(d.docker("images", "-a", "-q", "--no-trunc").stdout.split()) == sorted([new.id, new.parent])
    # a timestamp instead of a duration: nothing older is left
    assert prune_lines(d, "-a", "--filter", f"until={int(time.time()) - 3600}") == ["Total reclaimed space: 0B"]
    # without until, -a takes new:1 and its parent
    out = prune_lines(d, "-a")
    assert f"deleted: {new.id}" in out and f"deleted: {new.parent}" in out and tags(d) == []


def test_prune_label_filters(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory()
    d.docker("pull", "-q", "busybox")

    async def build(store: ImageStore) -> dict[str, ImageRecord]:
        base = store.resolve("busybox")
        ab_mid = await make_image(store, base, step="LABEL a=b", created="2024-03-01T00:00:00Z", labels={"a": "b"},
                                  files={"ab": b"x" * 500})
        ab = await make_image(store, ab_mid, step="CMD [\"sh\"]", created="2024-03-02T00:00:00Z", tag="ab:1")
        ac = await make_image(store, base, step="LABEL a=c", created="2024-03-03T00:00:00Z", labels={"a": "c"},
                              tag="ac:1")
        both = await make_image(store, base, step="LABEL a=c team=x", created="2024-03-04T00:00:00Z",
                                labels={"a": "c", "team": "x"}, tag="both:1")
        return {"ab_mid": ab_mid, "ab": ab, "ac": ac, "both": both}

    im = seed_stopped(d, build)
    out = prune_lines(d, "-a", "--filter", "label=a=b")
    # ab:1 inherits a=b; its untagged parent goes with it, busybox (tagged, no label) stays
    assert out == ["Deleted Images:", "untagged: ab:1", f"deleted: {im['ab'].id}", f"deleted: {im['ab_mid'].id}",
                   f"deleted: {im['ab_mid'].chain_ids[-1]}", "", "Total reclaimed space: 500B"]
    assert tags(d) == ["ac:1", "both:1", "busybox:latest"]
    # label! refuses only the images that match every one of its items (moby's MatchKVList):
    # both:1 has a=c and team=x and stays; ac:1 goes; busybox (no labels at all) is untagged and
    # stays for its children
    out = prune_lines(d, "-a", "--filter", "label!=a=c", "--filter", "label!=team=x")
    assert "untagged: ac:1" in out and f"deleted: {im['ac'].id}" in out and "untagged: busybox:latest" in out
    assert tags(d) == ["<none>:<none>", "both:1"]


def test_prune_filter_errors(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory()
    cases = {
        ("--filter", "x=1"): "invalid filter 'x'",
        ("--filter", "until=soon"):
            "invalid value for 'until' filter: failed to parse value as time or duration: \"soon\"",
        ("--filter", "until=1h", "--filter", "until=2h"): "more than one until filter specified",
        # the CLI adds dangling=false for -a: both values, which dockerd refuses
        ("-a", "--filter", "dangling=true"): "invalid filter 'dangling=[false true]'",
    }
    for args, text in cases.items():
        p = d.docker("image", "prune", "-f", *args, check=False)
        assert (p.returncode, p.stderr.strip()) == (1, f"Error response from daemon: {text}"), args
    status, body = d.request("POST", "/images/prune?filters=" + '{"until":["soon"]}')
    assert status == 400 and json.loads(body)["message"].startswith("invalid value for 'until' filter: ")
