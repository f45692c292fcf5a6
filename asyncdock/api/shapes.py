"""Version-shaped JSON: the one table of what each Engine API version added to, removed from or
changed in the objects the routes answer with, and the function the encoders call with it.

An encoder builds the union shape of an object: every field of the newest version plus every
field some version removed, each filled truthfully. `shape(view, doc, version)` then trims it to
what the request's version documents: a field `added` at V is dropped below V, one `removed` at V
is dropped from V on, and a `changed` entry's function rewrites the newest meaning into the old
one below V. The routes never test versions themselves; a version's difference is a row here.

Paths are dotted keys; `*` stands for every element of a list or every value of a map
(`NetworkSettings.Networks.*.DNSNames`). The `note` is the line of moby's API CHANGELOG the row
implements."""
from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any, Literal, NamedTuple

import msgspec

from ..base.apiversion import Version

Doc = dict[str, Any]


class Change(NamedTuple):
    version: Version
    view: str
    kind: Literal["added", "removed", "changed"]
    path: str = ""
    # for "changed": rewrites, in place, a newest-shape object into the shape of older versions
    older: Callable[[Doc], None] | None = None
    note: str = ""


# The views: the objects of the routes' answers, by name.
CONTAINER = "container"                # GET /containers/{id}/json
CONTAINER_SUMMARY = "container-summary"  # one item of GET /containers/json
IMAGE = "image"                        # GET /images/{name}/json
IMAGE_SUMMARY = "image-summary"        # one item of GET /images/json
SYSTEM_DF = "system-df"                # GET /system/df
EVENT = "event"                        # one message of GET /events
INFO = "info"                          # GET /info
VERSION = "version"                    # GET /version
NETWORK = "network"                    # GET /networks/{id}, one item of GET /networks
VOLUME = "volume"                      # GET /volumes/{name}, one item of GET /volumes
STATS = "stats"                        # one reading of GET /containers/{id}/stats
# Requests: what an older client's body cannot set (moby's router zeroes it before the daemon sees it)
CONTAINER_CREATE = "container-create"  # the body of POST /containers/create

_LEGACY_NETWORK_SETTINGS = (
    "Bridge", "HairpinMode", "LinkLocalIPv6Address", "LinkLocalIPv6PrefixLen", "SecondaryIPAddresses",
    "SecondaryIPv6Addresses", "EndpointID", "Gateway", "GlobalIPv6Address", "GlobalIPv6PrefixLen",
    "IPAddress", "IPPrefixLen", "IPv6Gateway", "MacAddress")

CHANGES: tuple[Change, ...] = (
    # ---- containers
    *(Change((1, 52), CONTAINER, "removed", f"NetworkSettings.{key}",
             note="NetworkSettings no longer returns the deprecated top-level endpoint fields")
      for key in _LEGACY_NETWORK_SETTINGS),
    Change((1, 44), CONTAINER_CREATE, "added", "Healthcheck.StartInterval",
           note="HealthConfig.StartInterval: the probe interval during the start period"),
    # ---- images
    Change((1, 44), IMAGE, "removed", "VirtualSize", note="VirtualSize is omitted; use Size"),
    Change((1, 44), IMAGE_SUMMARY, "removed", "VirtualSize", note="VirtualSize is omitted; use Size"),
    Change((1, 44), SYSTEM_DF, "removed", "Images.*.VirtualSize", note="VirtualSize is omitted; use Size"),
    Change((1, 45), IMAGE, "removed", "Container", note="Container and ContainerConfig are gone"),
    Change((1, 45), IMAGE, "removed", "ContainerConfig", note="Container and ContainerConfig are gone"),
    # ---- events
    *(Change((1, 52), EVENT, "removed", key, note="events no longer include status, id and from")
      for key in ("status", "id", "from")),
)


class _Op(NamedTuple):
    keys: tuple[str, ...]
    older: Callable[[Doc], None] | None  # None: delete the path


@lru_cache(maxsize=512)
def _ops(view: str, version: Version) -> tuple[_Op, ...]:
    # A memo of a pure function of the table: the routes shape every answer of a view with it.
    ops: list[_Op] = []
    for c in CHANGES:
        if c.view != view:
            continue
        if c.kind == "added" and version < c.version or c.kind == "removed" and version >= c.version:
            ops.append(_Op(tuple(c.path.split(".")), None))
        elif c.kind == "changed" and version < c.version:
            ops.append(_Op((), c.older))
    # newest changes first: an old version undoes them in the reverse of the order they were made
    return tuple(ops[::-1])


def needs_shaping(view: str, version: Version) -> bool:
    """Whether `shape` would change anything: hot paths encode their structs directly when not."""
    return bool(_ops(view, version))


def shape(view: str, doc: Doc, version: Version) -> Doc:
    """`doc` (the union shape, a fresh object the caller owns) trimmed, in place, to `version`."""
    for op in _ops(view, version):
        if op.older is not None:
            op.older(doc)
        else:
            _delete(doc, op.keys)
    return doc


def _delete(node: Any, keys: tuple[str, ...]) -> None:
    head, rest = keys[0], keys[1:]
    if head == "*":
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for child in children:
            if rest:
                _delete(child, rest)
        return
    if not isinstance(node, dict):
        return
    if not rest:
        node.pop(head, None)
    elif head in node:
        _delete(node[head], rest)


def for_version(view: str, obj: Any, version: Version) -> Any:
    """`obj` (a Struct or the union-shape dict) as `version` documents it, ready to encode. A
    Struct with nothing to trim is returned as it is, so it encodes without a detour."""
    if not _ops(view, version):
        return obj
    doc = msgspec.to_builtins(obj) if not isinstance(obj, dict) else obj
    return shape(view, doc, version)
