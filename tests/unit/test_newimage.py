"""images/newimage.py: a new image from a parent, a config, a layer and a history entry; its ID
depends only on its inputs."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import msgspec

from asyncdock.base.oci import ContainerConfig, History, ImageConfig
from asyncdock.images.layercommit import GZIP_LAYER, NewLayer
from asyncdock.images.newimage import make_image
from asyncdock.images.store import LayerBlob
from tests.unit.test_image_store import World


def test_make_image_appends_to_the_parent_and_is_deterministic(tmp_path: Path) -> None:
    async def main() -> None:
        w = World(tmp_path)
        parent = await w.image("busybox", [b"l0"])
        layer = NewLayer(diff_id="sha256:" + "1" * 64, blob=LayerBlob("sha256:" + "2" * 64, GZIP_LAYER, 10),
                         size=123, chain_id="sha256:" + "3" * 64)
        cfg = ImageConfig(config=ContainerConfig(cmd=["sh"]), author="me", comment="msg",
                          container="c" * 64, container_config=ContainerConfig(cmd=["sh", "-c", "x"]),
                          created="2026-01-02T03:04:05.123Z")
        hist = History(created_by="sh -c x", comment="msg", author="me")
        one = await make_image(w.store, w.content, parent=parent, config=cfg, layer=layer, history=hist,
                               parent_id_link=True)
        two = await make_image(w.store, w.content, parent=parent, config=cfg, layer=layer, history=hist,
                               parent_id_link=True)
        assert one.id == two.id
        assert one.parent == parent.id
        assert one.diff_ids == [*parent.diff_ids, layer.diff_id]
        assert one.layers[-1] == layer.blob and one.layer_sizes[-1] == 123
        doc = json.loads(w.content.read_bytes(one.id))
        # moby's order: V1Image's fields, then rootfs and history
        assert list(doc) == ["comment", "created", "container", "container_config", "author", "config",
                             "architecture", "os", "rootfs", "history"]
        assert doc["config"]["Cmd"] == ["sh"] and "ExposedPorts" not in doc["config"]
        assert doc["config"]["Env"] is None  # not omitempty in container.Config
        assert doc["history"][-1] == {"created": "2026-01-02T03:04:05.123Z", "author": "me",
                                      "created_by": "sh -c x", "comment": "msg"}
        assert doc["rootfs"]["diff_ids"] == one.diff_ids
        # No layer: the history entry says empty_layer, the rootfs stays the parent's
        empty = await make_image(w.store, w.content, parent=one, config=msgspec.structs.replace(cfg, comment=""),
                                 layer=None, history=History(created_by="x"), parent_id_link=False)
        edoc = json.loads(w.content.read_bytes(empty.id))
        assert edoc["history"][-1]["empty_layer"] is True and len(edoc["history"]) == 2
        assert empty.diff_ids == one.diff_ids and empty.parent == ""
        assert w.store.get(empty.id) == empty
    asyncio.run(main())
