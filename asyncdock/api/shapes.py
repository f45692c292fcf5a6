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

from ..base import errors
from ..base.apiversion import Version
from ..containers.models import EndpointSettings, NetworkingConfig

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
NETWORK = "network"                    # GET /networks/{id}
NETWORK_SUMMARY = "network-summary"    # one item of GET /networks
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


def _events_as_ndjson(d: Doc) -> None:
    d["ContentType"] = "application/x-ndjson"


# ---- containers: the functions of their "changed" rows (each rewrites the newest shape into
# the older one, in place)
_BUILTIN_NETWORKS = ("bridge", "host", "none")


def _hostconfig_kernel_memory(doc: Doc) -> None:
    # up to 1.41 both were always there, 0 when unset; 1.42 omits them when unset
    hc = doc.get("HostConfig")
    if isinstance(hc, dict):
        hc.setdefault("KernelMemory", 0)
        hc.setdefault("KernelMemoryTCP", 0)


def _config_onbuild(doc: Doc) -> None:
    cfg = doc.get("Config")
    if isinstance(cfg, dict):
        cfg.setdefault("OnBuild", None)


def _aliases_with_short_id(doc: Doc) -> None:
    # Up to 1.44 the aliases of a user-defined network's endpoint end with the short id (moby
    # appends it and drops duplicates); from 1.45 they are exactly what create/connect was given.
    short = str(doc.get("Id", ""))[:12]
    nets = (doc.get("NetworkSettings") or {}).get("Networks") or {}
    for name, ep in nets.items():
        if name in _BUILTIN_NETWORKS or not isinstance(ep, dict) or not short:
            continue
        aliases = list(ep.get("Aliases") or [])
        if short not in aliases:
            aliases.append(short)
        ep["Aliases"] = aliases


CHANGES: tuple[Change, ...] = (
    # ---- containers (GET /containers/{id}/json, GET /containers/json, stats)
    *(Change((1, 52), CONTAINER, "removed", f"NetworkSettings.{key}",
             note="NetworkSettings no longer returns the deprecated top-level endpoint fields")
      for key in _LEGACY_NETWORK_SETTINGS),
    Change((1, 42), CONTAINER, "changed", older=_hostconfig_kernel_memory,
           note="GET /containers/{id}/json now omits the KernelMemory and KernelMemoryTCP if they are not set"),
    Change((1, 43), CONTAINER, "added", "HostConfig.Annotations",
           note="POST /containers/create now accepts Annotations as part of HostConfig"),
    Change((1, 44), CONTAINER, "added", "Config.Healthcheck.StartInterval",
           note="POST /containers/create now accepts a HealthConfig.StartInterval"),
    *(Change((1, 44), view, "added", f"{mounts}.*.BindOptions.{key}",
             note="BindOptions.ReadOnlyNonRecursive and BindOptions.ReadOnlyForceRecursive")
      for view, mounts in ((CONTAINER, "HostConfig.Mounts"), (CONTAINER_SUMMARY, "HostConfig.Mounts"))
      for key in ("ReadOnlyNonRecursive", "ReadOnlyForceRecursive")),
    *(Change((1, 44), view, "added", "NetworkSettings.Networks.*.DNSNames",
             note="A new field named DNSNames ... has been added")
      for view in (CONTAINER, CONTAINER_SUMMARY)),
    Change((1, 45), CONTAINER, "changed", older=_aliases_with_short_id,
           note="Aliases no longer contains the short container ID"),
    Change((1, 46), CONTAINER_SUMMARY, "added", "HostConfig.Annotations",
           note="GET /containers/json now returns the annotations of containers"),
    *(Change((1, 48), view, "added", "NetworkSettings.Networks.*.GwPriority",
             note="GwPriority field in EndpointsConfig / NetworkSettings for each network endpoint")
      for view in (CONTAINER, CONTAINER_SUMMARY)),
    Change((1, 52), CONTAINER, "changed", older=_config_onbuild,
           note="GET /container/{id}/json now omits Config.OnBuild if its value is empty"),
    Change((1, 52), CONTAINER, "removed", "HostConfig.KernelMemoryTCP",
           note="Removed the KernelMemoryTCP field from GET /containers/{id}/json"),
    Change((1, 52), CONTAINER_SUMMARY, "added", "Health",
           note="Health in the container summary (swagger: Added in v1.52)"),
    Change((1, 52), STATS, "added", "os_type",
           note="GET /containers/{id}/stats now returns an os_type field"),
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
           note="content-type negotiation: application/x-ndjson or application/json-seq (application/json before)"),
    Change((1, 53), EVENT_STREAM, "changed", older=_events_as_ndjson,
           note="GET /events now also supports application/jsonl (the first of 1.53's produces)"),
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
    # 1.52 sends both (swagger 1.52 documents only the new ones: see tests/support/swagger.py)
    *(Change((1, 53), SYSTEM_DF, "removed", key,
             note="Starting with API v1.53, the legacy fields will no longer be returned")
      for key in ("LayersSize", "Images", "Containers", "Volumes", "BuildCache")),
    # ---- network: GET /networks, /networks/{id}
    *(Change((1, 48), view, "added", "EnableIPv4", note="networks report EnableIPv4")
      for view in (NETWORK, NETWORK_SUMMARY)),
    # moby 29's list item is network.Summary: the Network fields without Containers (always {} in a list)
    Change((1, 52), NETWORK_SUMMARY, "removed", "Containers",
           note="NetworkSummary (swagger 1.52): a list item no longer carries Containers"),
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


# ---- requests: what a request body means at the version it names: what an older client's body
# cannot set (moby's router zeroes it before the daemon sees it) and what a newer one may no longer send.
CONTAINER_CREATE = "container-create"  # the body of POST /containers/create
CONTAINER_UPDATE = "container-update"  # the body of POST /containers/{id}/update
CONTAINER_STOP = "container-stop"      # the query of POST /containers/{id}/stop and /restart


class RequestChange(NamedTuple):
    """A version's change to what a request accepts. `check` runs on the decoded body of a
    request `below` the version (the older meaning) or `since` it (the newer one): it may rewrite
    the body in place, raise an EngineError with moby's text, or return a warning for the answer."""

    version: Version
    view: str
    when: Literal["below", "since"]
    check: Callable[[Any], str | None]
    note: str = ""


def _mounts(body: Any) -> list[Any]:
    hc = getattr(body, "host_config", None)
    return list(getattr(hc, "mounts", None) or [])


def _endpoints(body: Any) -> dict[str, Any]:
    nc = getattr(body, "networking_config", None)
    eps = getattr(nc, "endpoints_config", None) if nc is not None else None
    return eps if eps is not None else {}


def _opt(options: Any, key: str) -> Any:
    return options.get(key) if isinstance(options, dict) else None


def _drop_kernel_memory(body: Any) -> None:
    if body.host_config is not None:
        body.host_config.kernel_memory = 0


def _mount_options_match_type(body: Any) -> None:
    for m in _mounts(body):
        for attr, kind, label in (("volume_options", "volume", "VolumeOptions"), ("bind_options", "bind", "BindOptions"),
                                  ("tmpfs_options", "tmpfs", "TmpfsOptions")):
            if getattr(m, attr) is not None and m.type != kind:
                raise errors.InvalidParameter(f'{label} must not be specified on mount type "{m.type}"')


def _old_mount_options(body: Any) -> None:
    # below 1.42 the wrong-type options were not validated but dropped, and CreateMountpoint
    # and a Linux ConsoleSize did not exist
    for m in _mounts(body):
        if m.volume_options is not None and m.type != "volume":
            m.volume_options = None
        if m.tmpfs_options is not None and m.type != "tmpfs":
            m.tmpfs_options = None
        if isinstance(m.bind_options, dict):
            m.bind_options.pop("CreateMountpoint", None)
    if body.host_config is not None:
        body.host_config.console_size = [0, 0]


def _drop_annotations(body: Any) -> None:
    if body.host_config is not None:
        body.host_config.annotations = None


def _drop_start_interval(body: Any) -> None:
    if body.healthcheck is not None:
        body.healthcheck.start_interval = 0


def _no_force_recursive(body: Any) -> None:
    for m in _mounts(body):
        if m.type == "bind" and _opt(m.bind_options, "ReadOnlyForceRecursive"):
            raise errors.InvalidParameter("BindOptions.ReadOnlyForceRecursive needs API v1.44 or newer")


# Below 1.44 a read-only bind (-v and --mount alike) is plain `ro`, not recursively read-only:
# moby's router passes DefaultReadOnlyNonRecursive, which the route hands the manager
# (readonly_non_recursive) and the row below shows where the request carries BindOptions.
READONLY_RECURSIVE_SINCE: Version = (1, 44)


def readonly_non_recursive(version: Version) -> bool:
    return version < READONLY_RECURSIVE_SINCE


def _readonly_binds_non_recursive(body: Any) -> None:
    # moby sets it on the request's own BindOptions (inspect shows it), or on a copy where
    # the request has none
    for m in _mounts(body):
        if m.type == "bind" and m.read_only and isinstance(m.bind_options, dict):
            m.bind_options["ReadOnlyNonRecursive"] = True


def _one_endpoint(body: Any) -> None:
    eps = _endpoints(body)
    if len(eps) > 1:
        raise errors.InvalidParameter(
            "Container cannot be created with multiple network endpoints: " + ", ".join(eps))


def _network_name(body: Any) -> str:
    mode = (body.host_config.network_mode if body.host_config is not None else "") or "default"
    return "bridge" if mode == "default" else mode


def _mac_bridge_or_user(body: Any) -> bool:
    mode = _network_name(body)
    return mode not in ("host", "none") and not mode.startswith("container:")


def _old_mac_address(body: Any) -> None:
    # below 1.44 only the container-wide MacAddress existed: it becomes the endpoint's
    eps = _endpoints(body)
    if not body.mac_address:
        for ep in eps.values():
            if ep is not None:
                ep.mac_address = ""
        return
    if not _mac_bridge_or_user(body):
        raise errors.InvalidParameter("conflicting options: mac-address and the network mode")
    if not eps:
        body.networking_config = body.networking_config or NetworkingConfig()
        body.networking_config.endpoints_config = eps = {_network_name(body): EndpointSettings()}
    for name, ep in list(eps.items()):
        if ep is None:
            ep = eps[name] = EndpointSettings()
        ep.mac_address = body.mac_address


def _deprecated_mac_address(body: Any) -> str | None:
    mac = body.mac_address
    if not mac:
        return None
    if _mac_bridge_or_user(body):
        name = _network_name(body)
        eps = _endpoints(body)
        if not eps:
            body.networking_config = body.networking_config or NetworkingConfig()
            body.networking_config.endpoints_config = {name: EndpointSettings(mac_address=mac)}
        else:
            ep = eps.get(name)
            if name not in eps:
                raise errors.InvalidParameter("if a container-wide MAC address is supplied, HostConfig.NetworkMode "
                                              "must match the identity of a network in NetworkSettings.Networks")
            if ep is None:
                ep = eps[name] = EndpointSettings()
            if not ep.mac_address:
                ep.mac_address = mac
            elif ep.mac_address != mac:
                raise errors.InvalidParameter("the container-wide MAC address must match the endpoint-specific MAC "
                                              "address for the main network, or be left empty")
    body.mac_address = None
    return "The container-wide MacAddress field is now deprecated. It should be specified in EndpointsConfig instead."


def _no_container_mac_address(body: Any) -> None:
    if body.mac_address:
        raise errors.InvalidParameter("Config.MacAddress is no longer supported since API v1.52: set the MAC address "
                                      "in the endpoint settings of NetworkingConfig.EndpointsConfig instead")


def _no_subpath(body: Any) -> None:
    for m in _mounts(body):
        if _opt(m.volume_options, "Subpath"):
            raise errors.InvalidParameter("VolumeOptions.Subpath needs API v1.45 or newer")


def _empty_port_bindings(body: Any) -> str | None:
    bindings = body.host_config.port_bindings if body.host_config is not None else None
    empty = sorted(port for port, binds in (bindings or {}).items() if not binds)
    if not empty:
        return None
    return ("Following container port(s) have an empty list of port-bindings: " + ", ".join(empty) + ". Starting "
            "with API 1.53, such bindings will be discarded.")


def _update_drop_kernel_memory(body: Any) -> None:
    if isinstance(body, dict):
        body.pop("KernelMemory", None)


def _update_drop_kernel_memory_tcp(body: Any) -> None:
    if isinstance(body, dict):
        body.pop("KernelMemoryTCP", None)


def _drop_stop_signal(params: Any) -> None:
    params.pop("signal", None)


def _none(fn: Callable[[Any], None]) -> Callable[[Any], str | None]:
    def run(body: Any) -> None:
        fn(body)
    return run


REQUEST_CHANGES: tuple[RequestChange, ...] = (
    # ---- containers (POST /containers/create, POST /containers/{id}/update)
    RequestChange((1, 42), CONTAINER_CREATE, "below", _none(_old_mount_options),
                  note="CreateMountpoint and ConsoleSize arrived in 1.42; wrong-type mount options were dropped"),
    RequestChange((1, 42), CONTAINER_CREATE, "since", _none(_drop_kernel_memory),
                  note="Removed the KernelMemory field from POST /containers/create"),
    RequestChange((1, 42), CONTAINER_CREATE, "since", _none(_mount_options_match_type),
                  note="rejects request if BindOptions|VolumeOptions|TmpfsOptions is set with a non-matching mount Type"),
    RequestChange((1, 42), CONTAINER_UPDATE, "since", _none(_update_drop_kernel_memory),
                  note="Removed the KernelMemory field from POST /containers/{id}/update"),
    RequestChange((1, 42), CONTAINER_STOP, "below", _none(_drop_stop_signal),
                  note="stop and restart now accept a signal query parameter"),
    RequestChange((1, 43), CONTAINER_CREATE, "below", _none(_drop_annotations),
                  note="POST /containers/create now accepts Annotations as part of HostConfig"),
    RequestChange((1, 44), CONTAINER_CREATE, "below", _none(_drop_start_interval),
                  note="POST /containers/create now accepts a HealthConfig.StartInterval"),
    RequestChange((1, 44), CONTAINER_CREATE, "below", _none(_no_force_recursive),
                  note="BindOptions.ReadOnlyForceRecursive"),
    RequestChange(READONLY_RECURSIVE_SINCE, CONTAINER_CREATE, "below", _none(_readonly_binds_non_recursive),
                  note="read-only bind mounts are now recursively read-only (ReadOnlyNonRecursive below)"),
    RequestChange((1, 44), CONTAINER_CREATE, "below", _none(_one_endpoint),
                  note="POST /containers/create now accepts multiple EndpointSettings"),
    RequestChange((1, 44), CONTAINER_CREATE, "below", _none(_old_mac_address),
                  note="endpoint-specific MacAddress; the container-wide one is migrated to it"),
    # (before the 1.44 row, which takes the container-wide address over: rows run in this order)
    RequestChange((1, 52), CONTAINER_CREATE, "since", _none(_no_container_mac_address),
                  note="POST /containers/create no longer supports Config.MacAddress"),
    RequestChange((1, 44), CONTAINER_CREATE, "since", _deprecated_mac_address,
                  note="The container-wide MacAddress field in Config is now deprecated"),
    RequestChange((1, 45), CONTAINER_CREATE, "below", _none(_no_subpath),
                  note="POST /containers/create now supports VolumeOptions.Subpath"),
    RequestChange((1, 52), CONTAINER_CREATE, "since", _empty_port_bindings,
                  note="backfilling empty PortBindings is deprecated, and a warning is returned"),
    RequestChange((1, 52), CONTAINER_UPDATE, "since", _none(_update_drop_kernel_memory_tcp),
                  note="Removed the KernelMemoryTCP field from POST /containers/{id}/update"),
)


def accepts(view: str, body: Any, version: Version) -> list[str]:
    """`body` (decoded, the caller's) rewritten in place to what it means at `version`, or an
    EngineError where that version refuses it; the warnings the answer carries."""
    warnings: list[str] = []
    for c in REQUEST_CHANGES:
        if c.view != view:
            continue
        if (version < c.version) if c.when == "below" else (version >= c.version):
            warning = c.check(body)
            if warning:
                warnings.append(warning)
    return warnings
