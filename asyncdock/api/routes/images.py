"""/images/*, /auth: pull with Docker's progress stream, list, inspect, history, tag, remove,
prune. Response shapes are dockerd 20.10's (API 1.41), field order included."""
from __future__ import annotations

import logging
from typing import Any

import msgspec

from ...base.errors import EngineError, InvalidParameter, NotFound
from ...base.timefmt import ZERO_TIME, parse_docker_time, parse_timestamp_filter, rfc3339nano
from ...images import progress as pm
from ...base.oci import ContainerConfig, HealthConfig
from ...images.store import ImageRecord, ImageStore
from ...registry.auth import AuthConfig, decode_registry_auth
from ...registry.platforms import normalize_arch, parse_platform
from ...registry.reference import familiar_match, parse_pull_reference
from ...util.errtext import client_text
from ...base.filters import bool_or_default, match_label, parse_filters
from .. import shapes
from ..http import Request, Response, Router, StreamResponse, empty_response, json_response

log = logging.getLogger(__name__)

# Our snapshotters under the names Docker tools know (GraphDriver.Name, `docker info`).
_DRIVER_NAMES = {"overlayfs": "overlay2", "overlay": "overlay2", "copy": "vfs"}


def register(router: Router) -> None:
    # search and build answer 501 from routes/unimplemented.py (build: routes/build.py once built);
    # commit and import (fromSrc) are routes/commit.py's, save/load routes/image_archive.py's.
    router.add("POST", "/images/create", create)
    router.add("GET", "/images/json", list_images)
    router.add("POST", "/images/prune", prune)
    router.add("POST", "/auth", auth)
    router.add("GET", "/images/{name:.+}/history", history)
    router.add("GET", "/images/{name:.+}/json", inspect)
    router.add("POST", "/images/{name:.+}/tag", tag)
    router.add("POST", "/images/{name:.+}/push", push)
    router.add("DELETE", "/images/{name:.+}", delete)


# ---------------------------------------------------------------------------------------------
# POST /images/create

async def create(req: Request) -> Response | StreamResponse:
    q = req.query
    if q.get("fromSrc"):
        from .commit import import_image  # docker import: routes/commit.py

        return await import_image(req)
    # The platform first, as moby: its error wins over a bad reference, and nothing is contacted.
    platform = parse_platform(q["platform"]) if q.get("platform") else None
    from_image = q.get("fromImage", "")
    if not from_image:
        raise InvalidParameter("fromImage or fromSrc is required")  # dockerd falls through to import
    ref = parse_pull_reference(from_image, q.get("tag", ""))
    auth = decode_registry_auth(req.headers.get("x-registry-auth"))
    stream: StreamResponse | None = None

    async def progress(msg: dict[str, Any]) -> None:
        nonlocal stream
        # The 200 goes out with the first message, after the manifest resolved, as dockerd
        # does: a registry 404 or auth failure before that is a plain JSON error.
        if stream is None:
            stream = await req.stream(content_type="application/json")
        await stream.write(pm.encode(msg))

    try:
        await req.engine.puller.pull(ref, auth, progress, platform=platform)
    except EngineError as e:
        if stream is None:
            raise
        await stream.write(pm.encode(pm.error(str(e))))
    except Exception as e:  # noqa: BLE001 - in-stream, every failure is an error message
        if stream is None:
            raise
        log.error("pull of %s failed: %s", ref, client_text(e))
        log.debug("traceback of the failed pull of %s", ref, exc_info=e)
        await stream.write(pm.encode(pm.error(client_text(e))))
    if stream is None:  # pragma: no cover - a pull always says "Pulling from" first
        stream = await req.stream(content_type="application/json")
    return stream


# ---------------------------------------------------------------------------------------------
# POST /images/{name}/push

async def push(req: Request) -> StreamResponse:
    name = req.match["name"]
    tag = req.query.get("tag", "")
    auth = decode_registry_auth(req.headers.get("x-registry-auth"))
    pusher = req.engine.pusher
    pusher.target(name, tag)  # a malformed name or tag is a 400, before the stream
    # Everything, errors included, is in the stream: dockerd says which repository it pushes
    # before it looks the image up.
    stream = await req.stream(content_type="application/json")

    async def progress(msg: dict[str, Any]) -> None:
        await stream.write(pm.encode(msg))

    try:
        await pusher.push(name, tag, auth, progress)
    except EngineError as e:
        await stream.write(pm.encode(pm.error(str(e))))
    except Exception as e:  # noqa: BLE001 - in-stream, every failure is an error message
        log.error("push of %s failed: %s", name, client_text(e))
        log.debug("traceback of the failed push of %s", name, exc_info=e)
        await stream.write(pm.encode(pm.error(client_text(e))))
    return stream


# ---------------------------------------------------------------------------------------------
# GET /images/json

def summary(store: ImageStore, rec: ImageRecord, tags: list[str], digests: list[str], *,
            containers: int = -1, shared_size: int = -1) -> dict[str, Any]:
    """One image of `GET /images/json` in the union shape (shapes.IMAGE_SUMMARY trims it)."""
    labels = _labels(store, rec)
    return {
        "Containers": containers,
        "Created": rec.created_ns // 1_000_000_000 if rec.created_ns else 0,
        "Id": rec.id,
        "Labels": labels or None,
        "ParentId": rec.parent,
        "RepoDigests": digests,
        "RepoTags": tags,
        "SharedSize": shared_size,
        "Size": rec.size,
        "VirtualSize": rec.size,
    }


def image_users(req: Request) -> dict[str, int]:
    """How many containers (any state) each image ID has."""
    users: dict[str, int] = {}
    for rec in req.engine.containers.store:
        users[rec.image_id] = users.get(rec.image_id, 0) + 1
    return users


def shared_sizes(images: list[ImageRecord]) -> dict[str, int]:
    """Per image, the bytes of its layers that another image uses too (Docker's SharedSize)."""
    layer_users: dict[str, int] = {}
    for img in images:
        for cid in set(img.chain_ids):
            layer_users[cid] = layer_users.get(cid, 0) + 1
    return {img.id: sum(s for c, s in zip(img.chain_ids, img.layer_sizes) if layer_users.get(c, 0) > 1)
            for img in images}


def _labels(store: ImageStore, rec: ImageRecord) -> dict[str, str] | None:
    try:
        cfg = store.config(rec).config
    except EngineError:
        return None
    return cfg.labels if cfg is not None else None


async def list_images(req: Request) -> Response:
    store: ImageStore = req.engine.images
    query = shapes.for_version(shapes.IMAGE_LIST_QUERY, dict(req.query), req.api_version)
    filters = parse_filters(query.get("filters"),
                            ("dangling", "label", "before", "since", "reference", "until"))
    if req.arg_bool("identity") and "identity" in query and not req.arg_bool("manifests"):
        raise InvalidParameter("conflicting options: identity requires manifests=1")
    items = list_summaries(req, store, filters, show_all=req.arg_bool("all"),
                           with_shared="shared-size" in query and req.arg_bool("shared-size"))
    return json_response([shapes.for_version(shapes.IMAGE_SUMMARY, s, req.api_version) for s in items])


def list_summaries(req: Request, store: ImageStore, filters: dict[str, list[str]], *, show_all: bool,
                   with_shared: bool) -> list[dict[str, Any]]:
    """moby's ImageService.Images: the summaries, newest first. An untagged image with children
    (an intermediate of a commit or build) shows only with `all`; `dangling=true` takes only the
    images without children (moby's Heads) and untagged ones of those."""
    dangling = bool_or_default(filters.get("dangling"), "dangling", False)
    not_dangling = "dangling" in filters and not dangling
    before = _created_of(store, filters.get("before", []))
    since = _created_of(store, filters.get("since", []), newest=True)
    until = _until(filters["until"]) if filters.get("until") else None
    patterns = filters.get("reference", [])
    images = store.list()
    parents = store.parent_ids()
    users = image_users(req)
    shared = shared_sizes(images) if with_shared else {}
    out: list[dict[str, Any]] = []
    for rec in images:
        if dangling and rec.id in parents:
            continue
        if before is not None and rec.created_ns >= before:
            continue
        if since is not None and rec.created_ns <= since:
            continue
        if until is not None and rec.created_ns >= until:
            continue
        if "label" in filters and not match_label(_labels(store, rec) or {}, filters["label"]):
            continue
        refs = store.references(rec.id)
        if patterns:
            refs = [r for r in refs if any(familiar_match(p, r) for p in patterns)]
        tags = [r.familiar for r in refs if r.digest is None]
        digests = [r.familiar for r in refs if r.digest is not None]
        if not tags and not digests:
            if not show_all and rec.id in parents:
                continue
            if not_dangling or patterns:
                continue
        elif dangling and tags:
            continue
        out.append(summary(store, rec, tags, digests, containers=users.get(rec.id, 0),
                           shared_size=shared.get(rec.id, -1)))
    out.sort(key=lambda s: s["Created"], reverse=True)
    return out


def _until(values: list[str]) -> int:
    try:
        return min(parse_timestamp_filter(v) for v in values)
    except InvalidParameter as e:
        raise InvalidParameter(f"invalid value for 'until' filter: {e}") from None


def _created_of(store: ImageStore, names: list[str], newest: bool = False) -> int | None:
    if not names:
        return None
    times = [store.resolve(n).created_ns for n in names]
    return max(times) if newest else min(times)


# ---------------------------------------------------------------------------------------------
# GET /images/{name}/json

class _PlatformQuery(msgspec.Struct):
    """The JSON-encoded OCI platform of the `platform` query parameter (inspect, history)."""

    os: str = ""
    architecture: str = ""
    variant: str = ""


def decode_platform(value: str) -> _PlatformQuery:
    try:
        p = msgspec.json.decode(value, type=_PlatformQuery)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise InvalidParameter(f"failed to parse platform: {e}") from None
    if not p.os or not p.architecture:
        raise InvalidParameter(f"invalid platform {value!r}: os and architecture are required")
    return p


def platform_text(p: _PlatformQuery) -> str:
    return "/".join(x for x in (p.os, p.architecture, p.variant) if x)


def config_dict(c: ContainerConfig | None) -> dict[str, Any]:
    """Docker's container.Config as JSON: omitempty where Go says so, null where it does not."""
    c = c or ContainerConfig()
    d: dict[str, Any] = {
        "Hostname": c.hostname, "Domainname": c.domainname, "User": c.user,
        "AttachStdin": c.attach_stdin, "AttachStdout": c.attach_stdout, "AttachStderr": c.attach_stderr,
    }
    if c.exposed_ports:
        d["ExposedPorts"] = {k: {} for k in c.exposed_ports}
    d.update({"Tty": c.tty, "OpenStdin": c.open_stdin, "StdinOnce": c.stdin_once, "Env": c.env, "Cmd": c.cmd})
    if c.healthcheck is not None:
        d["Healthcheck"] = _health_dict(c.healthcheck)
    if c.args_escaped:
        d["ArgsEscaped"] = True
    d.update({"Image": c.image, "Volumes": {k: {} for k in c.volumes} if c.volumes else None,
              "WorkingDir": c.working_dir, "Entrypoint": c.entrypoint})
    if c.network_disabled:
        d["NetworkDisabled"] = True
    if c.mac_address:
        d["MacAddress"] = c.mac_address
    d.update({"OnBuild": c.on_build, "Labels": c.labels})
    if c.stop_signal:
        d["StopSignal"] = c.stop_signal
    if c.stop_timeout is not None:
        d["StopTimeout"] = c.stop_timeout
    if c.shell:
        d["Shell"] = c.shell
    return d


def _health_dict(h: HealthConfig) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if h.test:
        d["Test"] = h.test
    for key, value in (("Interval", h.interval), ("Timeout", h.timeout), ("StartPeriod", h.start_period),
                       ("StartInterval", h.start_interval), ("Retries", h.retries)):
        if value:
            d[key] = value
    return d


def graph_driver(req: Request, rec: ImageRecord) -> dict[str, Any]:
    snap = req.engine.snapshotter
    name = getattr(snap, "name", "")
    driver = _DRIVER_NAMES.get(name, name)
    chains = rec.chain_ids
    if driver != "overlay2" or not chains:
        return {"Data": None, "Name": driver}
    try:
        top = snap.upper_dir(chains[-1])
        lower = [str(snap.upper_dir(c)) for c in reversed(chains[:-1])]  # overlay2: nearest first
    except EngineError:  # a layer snapshot is missing: say nothing rather than fail inspect
        return {"Data": None, "Name": driver}
    data: dict[str, str] = {}
    if lower:
        data["LowerDir"] = ":".join(lower)
    data["MergedDir"] = str(top.parent / "merged")
    data["UpperDir"] = str(top)
    data["WorkDir"] = str(top.parent / "work")
    return {"Data": data, "Name": driver}


def _go_time(value: str) -> str:
    """Go re-renders a parsed RFC 3339 time with RFC3339Nano (trailing zeros dropped)."""
    if not value:
        return ZERO_TIME
    try:
        return rfc3339nano(parse_docker_time(value))
    except ValueError:
        return value


async def inspect(req: Request) -> Response:
    store: ImageStore = req.engine.images
    name = req.match["name"]
    query = shapes.for_version(shapes.IMAGE_QUERY, dict(req.query), req.api_version)
    if query.get("platform") and "manifests" in query and req.arg_bool("manifests"):
        raise InvalidParameter("conflicting options: manifests and platform options cannot both be set")
    try:
        rec = store.resolve(name)
    except NotFound as e:
        raise NotFound(f"no such image: {name}: {e}") from None
    cfg = store.config(rec)
    if cfg.os and "platform" in query and query["platform"]:
        want = decode_platform(query["platform"])
        have = (cfg.os, *normalize_arch(cfg.architecture, cfg.variant))
        if (want.os, *normalize_arch(want.architecture, want.variant)) != have:
            raise NotFound(f"image with reference {name} was found but does not provide the specified "
                           f"platform ({platform_text(want)})")
    # The union shape: every field of 1.54 and every field an older version had, each in
    # dockerd 20.10's order; shapes.IMAGE trims it to the request's version.
    body: dict[str, Any] = {
        "Id": rec.id,
        "RepoTags": store.repo_tags(rec.id),
        "RepoDigests": store.repo_digests(rec.id),
        "Parent": rec.parent,
        # moby's inspect: an image without a comment of its own shows its last history entry's
        # (commit writes the message there only)
        "Comment": cfg.comment or (cfg.history[-1].comment if cfg.history else ""),
        "Created": _go_time(cfg.created) if cfg.created else "",
        "Container": cfg.container,
        "ContainerConfig": config_dict(cfg.container_config),
        "DockerVersion": cfg.docker_version,
        "Author": cfg.author,
        "Config": config_dict(cfg.config),
        "Architecture": cfg.architecture,
    }
    if cfg.variant:
        body["Variant"] = cfg.variant
    body["Os"] = cfg.os
    if cfg.os_version:
        body["OsVersion"] = cfg.os_version
    body.update({
        "Size": rec.size,
        "VirtualSize": rec.size,
        "GraphDriver": graph_driver(req, rec),
        "RootFS": {"Type": cfg.rootfs.type or "layers", "Layers": list(rec.diff_ids)},
        "Metadata": {"LastTagTime": rec.last_tag_time or ZERO_TIME},
    })
    return json_response(shapes.for_version(shapes.IMAGE, body, req.api_version))


# ---------------------------------------------------------------------------------------------
# GET /images/{name}/history

async def history(req: Request) -> Response:
    store: ImageStore = req.engine.images
    name = req.match["name"]
    query = shapes.for_version(shapes.IMAGE_HISTORY_QUERY, dict(req.query), req.api_version)
    rec = store.resolve(name)
    cfg = store.config(rec)
    if cfg.os and query.get("platform"):
        want = decode_platform(query["platform"])
        if (want.os, *normalize_arch(want.architecture, want.variant)) != \
                (cfg.os, *normalize_arch(cfg.architecture, cfg.variant)):
            raise NotFound(f"image with reference {name} was found but does not provide the specified "
                           f"platform ({platform_text(want)})")
    items: list[dict[str, Any]] = []
    layer = 0
    for h in cfg.history:
        size = 0
        if not h.empty_layer:
            if layer >= len(rec.layer_sizes):
                raise EngineError("too many non-empty layers in History section")
            size = rec.layer_sizes[layer]
            layer += 1
        created = 0
        if h.created:
            try:
                created = parse_docker_time(h.created) // 1_000_000_000
            except ValueError:
                created = 0
        items.insert(0, {"Comment": h.comment, "Created": created, "CreatedBy": h.created_by,
                         "Id": "<missing>", "Size": size, "Tags": None})
    # moby's ImageHistory: the newest entry is the image's, the next its parent's, and so on
    # up the local parent chain; the entries past it stay <missing> (pulled history).
    image: ImageRecord | None = rec
    for item in items:
        if image is None:
            break
        item["Id"] = image.id
        item["Tags"] = store.repo_tags(image.id) or None
        image = store.find(image.parent) if image.parent else None
    return json_response(items)


# ---------------------------------------------------------------------------------------------
# POST /images/{name}/tag, DELETE /images/{name}, POST /images/prune

async def tag(req: Request) -> Response:
    await req.engine.images.tag(req.match["name"], req.query.get("repo", ""), req.query.get("tag", ""))
    return empty_response(201)


async def delete(req: Request) -> Response:
    records = await req.engine.images.delete(req.match["name"], force=req.arg_bool("force"),
                                             noprune=req.arg_bool("noprune"))
    return json_response(records)


async def prune(req: Request) -> Response:
    filters = parse_filters(req.query.get("filters"), ("dangling", "until", "label", "label!"))
    dangling_only = bool_or_default(filters.get("dangling"), "dangling", True)
    until = None
    if filters.get("until"):
        if len(filters["until"]) > 1:
            raise InvalidParameter("more than one until filter specified")
        until = _until(filters["until"])
    labels, not_labels = filters.get("label", []), filters.get("label!", [])

    def label_ok(lbl: dict[str, str]) -> bool:
        # moby's matchLabels: every `label` must match; `label!` refuses an image only when
        # all of its items match
        if labels and not match_label(lbl, labels):
            return False
        return not (not_labels and match_label(lbl, not_labels))

    report = await req.engine.images.prune(dangling_only=dangling_only, until_ns=until,
                                           label_filter=label_ok if labels or not_labels else None)
    return json_response({"ImagesDeleted": report.deleted or None, "SpaceReclaimed": report.reclaimed})


# ---------------------------------------------------------------------------------------------
# POST /auth

async def auth(req: Request) -> Response:
    cfg = await req.json(AuthConfig)
    status, identity = await req.engine.puller.registry.login(cfg)
    return json_response({"IdentityToken": identity, "Status": status})
