"""Version-shaped JSON: the one table of what each Engine API version added to, removed from or
changed in the objects the routes answer with, and the function the encoders call with it.

An encoder builds the union shape of an object: every field of the newest version plus every
field some version removed, each filled truthfully. `shape(view, doc, version)` then trims it to
what the request's version documents: a field `added` at V is dropped below V, one `removed` at V
is dropped from V on, one `omitted-empty` at V is dropped from V on when its value is empty
(Go's `omitempty` put on a field at V: "", 0, false, null, [] and {}), and a `changed` entry's
function rewrites the newest meaning into the old one below V. The routes never test versions themselves; a version's difference is a row here.

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
    kind: Literal["added", "removed", "changed", "omitted-empty"]
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
# The query parameters a route reads are a view too: a parameter `added` at V is unknown below it
# (dockerd ignores it there), so the route reads `for_version(QUERY_VIEW, dict(query), version)`.
IMAGE_LIST_QUERY = "image-list-query"  # GET /images/json
IMAGE_QUERY = "image-query"            # GET /images/{name}/json
IMAGE_HISTORY_QUERY = "image-history-query"  # GET /images/{name}/history
SYSTEM_DF_QUERY = "system-df-query"    # GET /system/df
# What the events stream is at a version, beside its messages: {"ContentType": default type}.
EVENT_STREAM = "event-stream"

_LEGACY_NETWORK_SETTINGS = (
    "Bridge", "HairpinMode", "LinkLocalIPv6Address", "LinkLocalIPv6PrefixLen", "SecondaryIPAddresses",
    "SecondaryIPv6Addresses", "EndpointID", "Gateway", "GlobalIPv6Address", "GlobalIPv6PrefixLen",
    "IPAddress", "IPPrefixLen", "IPv6Gateway", "MacAddress")

# ---- the older meanings ("changed" rows), each rewriting a newest-shape doc in place
def _none_placeholders(d: Doc) -> None:
    # before 1.43 an image with neither tag nor digest listed as <none>:<none> / <none>@<none>,
    # and an absent list was Go's nil
    if not d.get("RepoTags") and not d.get("RepoDigests"):
        d["RepoTags"], d["RepoDigests"] = ["<none>:<none>"], ["<none>@<none>"]
        return
    for key in ("RepoTags", "RepoDigests"):
        if not d.get(key):
            d[key] = None


def _df_none_placeholders(d: Doc) -> None:
    for image in d.get("Images") or ():
        _none_placeholders(image)


def _containers_unknown(d: Doc) -> None:
    d["Containers"] = -1


def _zero_created(d: Doc) -> None:
    if not d.get("Created"):
        d["Created"] = "0001-01-01T00:00:00Z"


def _events_as_json(d: Doc) -> None:
    d["ContentType"] = "application/json"


CHANGES: tuple[Change, ...] = (
    # ---- containers
    *(Change((1, 52), CONTAINER, "removed", f"NetworkSettings.{key}",
             note="NetworkSettings no longer returns the deprecated top-level endpoint fields")
      for key in _LEGACY_NETWORK_SETTINGS),
    # ---- images: GET /images/json
    Change((1, 42), IMAGE_LIST_QUERY, "added", "shared-size", note="images/json accepts shared-size"),
    Change((1, 43), IMAGE_SUMMARY, "changed", older=_none_placeholders,
           note="no hardcoded <none>:<none> and <none>@<none> for untagged images; empty arrays instead"),
    Change((1, 44), IMAGE_SUMMARY, "removed", "VirtualSize", note="VirtualSize is omitted; use Size"),
    Change((1, 47), IMAGE_LIST_QUERY, "added", "manifests", note="Manifests with manifests=1"),
    Change((1, 47), IMAGE_SUMMARY, "added", "Manifests", note="Manifests with manifests=1"),
    Change((1, 48), IMAGE_SUMMARY, "added", "Descriptor", note="Descriptor: the OCI descriptor of the image"),
    Change((1, 51), IMAGE_SUMMARY, "changed", older=_containers_unknown,
           note="Containers is the count of containers using the image; previously always -1"),
    Change((1, 54), IMAGE_LIST_QUERY, "added", "identity", note="images/json supports identity"),
    # ---- images: GET /images/{name}/json, history
    Change((1, 44), IMAGE, "removed", "VirtualSize", note="VirtualSize is omitted; use Size"),
    Change((1, 44), IMAGE, "omitted-empty", "Created", note="Created is omitted when the config has none"),
    Change((1, 44), IMAGE, "changed", older=_zero_created, note="(was 0001-01-01T00:00:00Z)"),
    Change((1, 45), IMAGE, "removed", "Container", note="Container and ContainerConfig are gone"),
    Change((1, 45), IMAGE, "removed", "ContainerConfig", note="Container and ContainerConfig are gone"),
    Change((1, 48), IMAGE, "added", "Descriptor", note="Descriptor: the OCI descriptor of the image"),
    Change((1, 48), IMAGE, "added", "Manifests", note="Manifests with manifests=1"),
    Change((1, 48), IMAGE_QUERY, "added", "manifests", note="Manifests with manifests=1"),
    Change((1, 48), IMAGE_HISTORY_QUERY, "added", "platform", note="history supports platform"),
    Change((1, 49), IMAGE_QUERY, "added", "platform", note="image inspect supports platform"),
    *(Change((1, 50), IMAGE, "removed", f"Config.{key}", note="Config no longer returns container-only fields")
      for key in ("Hostname", "Domainname", "AttachStdin", "AttachStdout", "AttachStderr", "Tty",
                  "OpenStdin", "StdinOnce", "Image", "NetworkDisabled", "MacAddress", "StopTimeout")),
    *(Change((1, 52), IMAGE, "omitted-empty", f"Config.{key}", note="Config fields omitted when not set")
      for key in ("Cmd", "Entrypoint", "Env", "Labels", "OnBuild", "User", "Volumes", "WorkingDir")),
    *(Change((1, 52), IMAGE, "omitted-empty", key, note="Parent, Comment, DockerVersion, Author omitted when empty")
      for key in ("Parent", "Comment", "DockerVersion", "Author")),
    # ---- events
    *(Change((1, 52), EVENT, "removed", key, note="events no longer include status, id and from")
      for key in ("status", "id", "from")),
    Change((1, 52), EVENT_STREAM, "changed", older=_events_as_json,
           note="content-type negotiation; application/jsonl by default (application/json before)"),
    # ---- info: GET /info
    *(Change((1, 42), INFO, "omitted-empty", key, note="KernelMemory(TCP) omitted if not supported")
      for key in ("KernelMemory", "KernelMemoryTCP")),
    Change((1, 44), INFO, "added", "CDISpecDirs", note="CDISpecDirs"),
    Change((1, 44), INFO, "added", "Runtimes.*.status", note="status properties in Runtimes"),
    # moby's router drops them from 1.47 on (the CHANGELOG says 1.49); the router is what clients see
    *(Change((1, 47), INFO, "removed", f"RegistryConfig.{key}", note="AllowNondistributableArtifacts* omitted")
      for key in ("AllowNondistributableArtifactsCIDRs", "AllowNondistributableArtifactsHostnames")),
    Change((1, 49), INFO, "added", "FirewallBackend", note="FirewallBackend"),
    *(Change((1, 49), INFO, "removed", f"{key}.Expected", note="the Expected commits are omitted")
      for key in ("ContainerdCommit", "RuncCommit", "InitCommit")),
    *(Change((1, 50), INFO, "removed", key, note="BridgeNfIptables and BridgeNfIp6tables are omitted")
      for key in ("BridgeNfIptables", "BridgeNfIp6tables")),
    Change((1, 52), INFO, "removed", "KernelMemoryTCP", note="KernelMemoryTCP removed from GET /info"),
    # ---- system-df: GET /system/df
    Change((1, 42), SYSTEM_DF_QUERY, "added", "type", note="system/df accepts type"),
    Change((1, 43), SYSTEM_DF, "changed", older=_df_none_placeholders,
           note="no hardcoded <none>:<none> and <none>@<none> for untagged images"),
    Change((1, 44), SYSTEM_DF, "removed", "Images.*.VirtualSize", note="VirtualSize is omitted; use Size"),
    Change((1, 52), SYSTEM_DF_QUERY, "added", "verbose", note="system/df supports verbose"),
    *(Change((1, 52), SYSTEM_DF, "added", key, note="ImageUsage, ContainerUsage, VolumeUsage, BuildCacheUsage")
      for key in ("ImageUsage", "ContainerUsage", "VolumeUsage", "BuildCacheUsage")),
    # ---- network: GET /networks, /networks/{id}
    Change((1, 48), NETWORK, "added", "EnableIPv4", note="networks report EnableIPv4"),
    # ---- volume
)


class _Op(NamedTuple):
    keys: tuple[str, ...]
    older: Callable[[Doc], None] | None  # None: delete the path
    only_empty: bool = False  # delete the path only where its value is empty


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
        elif c.kind == "omitted-empty" and version >= c.version:
            ops.append(_Op(tuple(c.path.split(".")), None, True))
    # newest changes first: an old version undoes them in the reverse of the order they were made
    return tuple(ops[::-1])


@lru_cache(maxsize=512)
def present(view: str, path: str, version: Version) -> bool:
    """Whether `path` of `view` is part of `version`'s shape: for the routes that answer with
    pre-encoded bytes (the events stream) and pick between encodings once per request."""
    keys = tuple(path.split("."))
    return not any(op.keys == keys and not op.only_empty and op.older is None for op in _ops(view, version))


def needs_shaping(view: str, version: Version) -> bool:
    """Whether `shape` would change anything: hot paths encode their structs directly when not."""
    return bool(_ops(view, version))


def shape(view: str, doc: Doc, version: Version) -> Doc:
    """`doc` (the union shape, a fresh object the caller owns) trimmed, in place, to `version`."""
    for op in _ops(view, version):
        if op.older is not None:
            op.older(doc)
        else:
            _delete(doc, op.keys, op.only_empty)
    return doc


def _empty(value: Any) -> bool:
    return value is None or value is False or value == 0 and not isinstance(value, bool) \
        or isinstance(value, (str, list, dict)) and not value


def _delete(node: Any, keys: tuple[str, ...], only_empty: bool = False) -> None:
    head, rest = keys[0], keys[1:]
    if head == "*":
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for child in children:
            if rest:
                _delete(child, rest, only_empty)
        return
    if not isinstance(node, dict):
        return
    if not rest:
        if head in node and (not only_empty or _empty(node[head])):
            del node[head]
    elif head in node:
        _delete(node[head], rest, only_empty)


def for_version(view: str, obj: Any, version: Version) -> Any:
    """`obj` (a Struct or the union-shape dict) as `version` documents it, ready to encode. A
    Struct with nothing to trim is returned as it is, so it encodes without a detour."""
    if not _ops(view, version):
        return obj
    doc = msgspec.to_builtins(obj) if not isinstance(obj, dict) else obj
    return shape(view, doc, version)
