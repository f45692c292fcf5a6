"""/networks: list, inspect, create, remove, connect, disconnect, prune (API 1.41)."""
from __future__ import annotations

from typing import Any


from ...base.errors import InvalidParameter, Unavailable
from ..bodies import NetworkConnect, NetworkCreate, NetworkDisconnect, checked
from ...base.filters import bool_filter, match_label, parse_filters
from .. import shapes
from ..http import Request, Response, Router, empty_response, json_response


def _shaped(req: Request, doc: dict[str, Any], view: str = shapes.NETWORK) -> dict[str, Any]:
    # Our bridge networks always have IPv4 IPAM (EnableIPv4 false needs experimental in moby).
    if "EnableIPv4" not in doc:
        doc = {k: v for pair in (((("EnableIPv4", True),) if k == "EnableIPv6" else ()) + ((k, v),)
                                 for k, v in doc.items()) for k, v in pair}
    return shapes.for_version(view, doc, req.api_version)  # type: ignore[no-any-return]


def _mgr(req: Request) -> Any:
    mgr = getattr(req.engine, "networks", None)
    if mgr is None:
        raise Unavailable("networking is not available")
    return mgr


async def list_networks(req: Request) -> Response:
    mgr = _mgr(req)
    f = parse_filters(req.query.get("filters"), ("name", "id", "driver", "label", "type", "scope", "dangling"))
    in_use = mgr.in_use_networks()
    out = []
    for net in mgr.list():
        if f.get("name") and not any(n in net.name for n in f["name"]):
            continue
        if f.get("id") and not any(net.id.startswith(i) for i in f["id"]):
            continue
        if f.get("driver") and net.driver not in f["driver"]:
            continue
        if f.get("label") and not match_label(net.labels, f["label"]):
            continue
        if f.get("scope") and net.scope not in f["scope"]:
            continue
        if f.get("type"):
            for t in f["type"]:
                if t not in ("custom", "builtin"):
                    raise InvalidParameter(f"invalid filter: 'type'='{t}'")
            kind = "builtin" if net.builtin else "custom"
            if kind not in f["type"]:
                continue
        dangling = bool_filter(f.get("dangling", []), "dangling")
        if dangling is not None and (net.builtin or net.id in in_use) == dangling:
            continue
        out.append(_shaped(req, mgr.network_json(net, containers=False), shapes.NETWORK_SUMMARY))
    return json_response(out)


async def inspect_network(req: Request) -> Response:
    mgr = _mgr(req)
    net = mgr.get(req.match["id"])
    return json_response(_shaped(req, mgr.network_json(net)))


async def create_network(req: Request) -> Response:
    mgr = _mgr(req)
    body = checked(await req.json(Any), NetworkCreate)
    net = await mgr.create(str(body.get("Name") or ""), str(body.get("Driver") or "bridge"),
                           options=body.get("Options") or {}, labels=body.get("Labels") or {},
                           ipam_cfg=body.get("IPAM") or None, internal=bool(body.get("Internal")),
                           attachable=bool(body.get("Attachable")), enable_ipv6=bool(body.get("EnableIPv6")),
                           check_duplicate=bool(body.get("CheckDuplicate", True)))
    return json_response({"Id": net.id, "Warning": ""}, status=201)


async def remove_network(req: Request) -> Response:
    await _mgr(req).remove(req.match["id"])
    return empty_response(204)


async def connect(req: Request) -> Response:
    body = checked(await req.json(Any), NetworkConnect)
    if not body.get("Container"):
        raise InvalidParameter("container is required")
    await _mgr(req).connect(req.match["id"], str(body["Container"]), body.get("EndpointConfig"))
    return empty_response(200)


async def disconnect(req: Request) -> Response:
    body = checked(await req.json(Any), NetworkDisconnect)
    if not body.get("Container"):
        raise InvalidParameter("container is required")
    await _mgr(req).disconnect(req.match["id"], str(body["Container"]), bool(body.get("Force")))
    return empty_response(200)


async def prune(req: Request) -> Response:
    f = parse_filters(req.query.get("filters"), ("until", "label", "label!"))
    deleted = await _mgr(req).prune(f)
    return json_response({"NetworksDeleted": deleted or None})


def register(router: Router) -> None:
    router.add("GET", "/networks", list_networks)
    router.add("POST", "/networks/create", create_network)
    router.add("POST", "/networks/prune", prune)
    router.add("POST", "/networks/{id}/connect", connect)
    router.add("POST", "/networks/{id}/disconnect", disconnect)
    router.add("GET", "/networks/{id:.+}", inspect_network)
    router.add("DELETE", "/networks/{id:.+}", remove_network)
