"""Typed messages carried by the bus.

`Event` is Docker's event object: mixed-case keys (`Type`, `Action`, `Actor` beside `scope`,
`time`, `timeNano`), so every field is named explicitly. The legacy `status`/`id`/`from` keys are
omitted when empty, as Docker's `omitempty` does (image events carry no `from`).
"""
from __future__ import annotations

import msgspec


class Actor(msgspec.Struct):
    id: str = msgspec.field(name="ID")
    attributes: dict[str, str] = msgspec.field(default_factory=dict, name="Attributes")


class Event(msgspec.Struct, omit_defaults=True, kw_only=True):
    status: str = ""
    id: str = ""
    from_: str = msgspec.field(default="", name="from")
    type: str = msgspec.field(name="Type")
    action: str = msgspec.field(name="Action")
    actor: Actor = msgspec.field(name="Actor")
    scope: str = ""  # the bus fills in "local"; empty only so omit_defaults never drops it
    time: int = 0
    time_nano: int = msgspec.field(default=0, name="timeNano")
    # asyncdock's cursor, "EPOCH-COUNTER" (Docker clients ignore unknown keys).
    x_seq: str = msgspec.field(default="", name="x-asyncdock-seq")


class LayerProgress(msgspec.Struct, omit_defaults=True):
    """Per-layer pull progress, published so a second client can watch a pull it did not start.

    `ref` is the normalised image reference being pulled; `message` is the Docker JSON progress
    message exactly as the puller streams it to its own client.
    """

    ref: str
    message: dict[str, object]


_TYPE_KEY = b'"Type":'


def without_legacy(raw: bytes) -> bytes:
    """An encoded Event without its leading status/id/from keys (API 1.52 dropped them).

    They are the Struct's first fields, so they are all that precedes the `"Type":` key; a string
    value cannot hold that byte sequence (its quotes would be escaped), so the first match is the
    key. A byte splice, not a decode: the events route sends every event to every reader."""
    i = raw.find(_TYPE_KEY)
    return raw if i <= 1 else b"{" + raw[i:]
