"""The per-version table: a row trims or rewrites the union shape only for the versions it
names, `*` walks lists and maps, and an object with nothing to trim goes out untouched."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from asyncdock.api import shapes
from asyncdock.api.shapes import Change


def _older_aliases(doc: dict[str, Any]) -> None:
    for ep in doc["Networks"].values():
        ep["Aliases"] = [*ep["Aliases"], "shortid"]


TABLE = (
    Change((1, 44), "t", "added", "Networks.*.DNSNames"),
    Change((1, 45), "t", "changed", older=_older_aliases),
    Change((1, 52), "t", "removed", "IPAddress"),
    Change((1, 44), "t", "removed", "Images.*.VirtualSize"),
)


def _doc() -> dict[str, Any]:
    return {"IPAddress": "10.0.0.2", "Images": [{"Size": 1, "VirtualSize": 1}],
            "Networks": {"a": {"Aliases": ["web"], "DNSNames": ["web", "c1"]}}}


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(shapes, "CHANGES", TABLE)
    shapes._ops.cache_clear()
    yield
    shapes._ops.cache_clear()


def test_each_version_gets_its_own_shape(table: None) -> None:
    assert shapes.shape("t", _doc(), (1, 41)) == {
        "IPAddress": "10.0.0.2", "Images": [{"Size": 1, "VirtualSize": 1}],
        "Networks": {"a": {"Aliases": ["web", "shortid"]}}}
    assert shapes.shape("t", _doc(), (1, 44)) == {
        "IPAddress": "10.0.0.2", "Images": [{"Size": 1}],
        "Networks": {"a": {"Aliases": ["web", "shortid"], "DNSNames": ["web", "c1"]}}}
    assert shapes.shape("t", _doc(), (1, 54)) == {
        "Images": [{"Size": 1}], "Networks": {"a": {"Aliases": ["web"], "DNSNames": ["web", "c1"]}}}
    assert shapes.shape("other", _doc(), (1, 41)) == _doc()


def test_nothing_to_trim_leaves_the_struct_as_it_is(table: None) -> None:
    class S(msgspec.Struct):
        IPAddress: str

    s = S("x")
    assert not shapes.needs_shaping("other", (1, 41))
    assert shapes.for_version("other", s, (1, 41)) is s
    assert shapes.for_version("t", S("x"), (1, 54)) == {}


def test_the_real_table_names_known_views_and_sorted_versions() -> None:
    views = {v for k, v in vars(shapes).items() if k.isupper() and isinstance(v, str)}
    for c in shapes.CHANGES:
        assert c.view in views, c
        assert (1, 24) < c.version <= (1, 54), c
        assert (c.kind == "changed") == (c.older is not None), c
        assert c.kind == "changed" or c.path, c
