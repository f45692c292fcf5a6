"""Swarm, nodes, services, tasks, secrets and configs on a node that is not in a swarm.

asyncdock never joins a swarm, so it answers every one of these routes as Docker does on such a
node: 503 with moby's texts (daemon/cluster errNoManager and errNoSwarm). Clients depend on
the exact answer: docker-py's and testcontainers' clean-up call `POST /swarm/leave?force=1` and
take only Docker's 503 as harmless. What Docker checks before it asks the cluster (a request
body that is not JSON, an unknown filter, a version that is not a number) is checked first here
too, with the same status. Init and join are the one place Docker would act: there we say we
cannot, as a 501 naming the feature.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ...base.errors import InvalidParameter, NotImplementedYet, Unavailable
from ...base.filters import parse_filters
from ..http import Request, Response, Router

NOT_MANAGER = ('This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" '
               'to connect this node to swarm and try again.')
NOT_IN_SWARM = "This node is not part of a swarm"

Handler = Callable[[Request], Awaitable[Response]]

# The filters each list route validates before it asks the cluster (moby daemon/cluster
# filters.go, services.go); tasks validate theirs only inside the manager action.
_FILTERS: dict[str, tuple[str, ...] | None] = {
    "services": ("name", "id", "label", "mode", "runtime"),
    "nodes": ("name", "id", "label", "role", "membership", "node.label"),
    "tasks": None,
    "secrets": ("names", "name", "id", "label"),
    "configs": ("name", "id", "label"),
}


# what Go's strconv.ParseBool accepts
_GO_BOOLS = frozenset(("1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"))


def _parse_uint(raw: str) -> int | None:
    return int(raw) if raw.isascii() and raw.isdigit() else None


def _version_param(req: Request, what: str) -> None:
    raw = req.query.get("version", "")
    if _parse_uint(raw) is None:
        if what in ("secret", "config"):
            raise InvalidParameter(f"invalid {what} version")
        # Go's strconv.ParseUint text, as Docker quotes it
        raise InvalidParameter(f"invalid {what} version '{raw}': strconv.ParseUint: parsing \"{raw}\": invalid syntax")


async def _body(req: Request) -> None:
    """The JSON body Docker decodes before it looks at the cluster state."""
    await req.json(dict[str, Any])


def _bool_param(req: Request, key: str) -> None:
    value = req.query.get(key)
    if value and value not in _GO_BOOLS:
        raise InvalidParameter(f'invalid value for {key}: {value}: strconv.ParseBool: parsing "{value}": invalid syntax')


def _no_manager(*, body: bool = False, version: str = "", bools: tuple[str, ...] = ()) -> Handler:
    async def handler(req: Request) -> Response:
        if body:
            await _body(req)
        if version:
            _version_param(req, version)
        for key in bools:
            _bool_param(req, key)
        raise Unavailable(NOT_MANAGER)
    return handler


def _list(resource: str) -> Handler:
    allowed = _FILTERS[resource]

    async def handler(req: Request) -> Response:
        parse_filters(req.query.get("filters"), allowed)
        if resource == "services":
            _bool_param(req, "status")
        raise Unavailable(NOT_MANAGER)
    return handler


def _cannot(action: str) -> Handler:
    async def handler(req: Request) -> Response:
        await _body(req)
        raise NotImplementedYet(f"asyncdock cannot {action} a swarm: swarm mode is not supported")
    return handler


async def leave(req: Request) -> Response:
    # with or without force: there is nothing to leave
    raise Unavailable(NOT_IN_SWARM)


def register(router: Router) -> None:
    router.add("POST", "/swarm/init", _cannot("init"))
    router.add("POST", "/swarm/join", _cannot("join"))
    router.add("POST", "/swarm/leave", leave)
    router.add("GET", "/swarm", _no_manager())
    router.add("GET", "/swarm/unlockkey", _no_manager())
    router.add("POST", "/swarm/update", _no_manager(body=True, version="swarm"))
    router.add("POST", "/swarm/unlock", _no_manager(body=True))

    router.add("GET", "/services", _list("services"))
    router.add("GET", "/services/{id}", _no_manager(bools=("insertDefaults",)))
    router.add("POST", "/services/create", _no_manager(body=True))
    router.add("POST", "/services/{id}/update", _no_manager(body=True, version="service"))
    router.add("DELETE", "/services/{id}", _no_manager())
    router.add("GET", "/services/{id}/logs", _no_manager())

    router.add("GET", "/nodes", _list("nodes"))
    router.add("GET", "/nodes/{id}", _no_manager())
    router.add("DELETE", "/nodes/{id}", _no_manager())
    router.add("POST", "/nodes/{id}/update", _no_manager(body=True, version="node"))

    router.add("GET", "/tasks", _list("tasks"))
    router.add("GET", "/tasks/{id}", _no_manager())
    router.add("GET", "/tasks/{id}/logs", _no_manager())

    for kind, what in (("secrets", "secret"), ("configs", "config")):
        router.add("GET", f"/{kind}", _list(kind))
        router.add("POST", f"/{kind}/create", _no_manager(body=True))
        router.add("DELETE", f"/{kind}/{{id}}", _no_manager())
        router.add("GET", f"/{kind}/{{id}}", _no_manager())
        router.add("POST", f"/{kind}/{{id}}/update", _no_manager(body=True, version=what))
