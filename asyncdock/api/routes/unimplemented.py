"""Docker API routes that later issues build. They answer 501 with a message naming the feature,
never a bare 404, so a client shows the user what is missing. Routes whose truthful answer is
already known (nothing to prune, no such network) answer that instead."""
from __future__ import annotations

from ...errors import NotFound, NotImplementedYet
from ..http import Request, Response, Router, json_response

_LATER: tuple[tuple[str, str, str], ...] = (
    ("POST", "/build", "image build"),
    ("POST", "/commit", "commit"),
    ("POST", "/images/{name:.+}/push", "image push"),
    ("GET", "/images/get", "image save"),
    ("GET", "/images/{name:.+}/get", "image save"),
    ("POST", "/images/load", "image load"),
    ("GET", "/images/search", "image search"),
    ("POST", "/session", "build sessions"),
    ("GET", "/swarm", "swarm mode"), ("POST", "/swarm/{rest:.*}", "swarm mode"),
    ("GET", "/nodes", "swarm nodes"), ("GET", "/nodes/{rest:.*}", "swarm nodes"),
    ("GET", "/services", "swarm services"), ("GET", "/services/{rest:.*}", "swarm services"),
    ("POST", "/services/{rest:.*}", "swarm services"),
    ("GET", "/tasks", "swarm tasks"), ("GET", "/tasks/{rest:.*}", "swarm tasks"),
    ("GET", "/secrets", "swarm secrets"), ("POST", "/secrets/{rest:.*}", "swarm secrets"),
    ("GET", "/configs", "swarm configs"), ("POST", "/configs/{rest:.*}", "swarm configs"),
    ("GET", "/distribution/{name:.+}/json", "distribution inspect"),
    ("GET", "/plugins/privileges", "plugin install"), ("POST", "/plugins/pull", "plugin install"),
    # Inside running containers (the next issue): exec, top, stats, files, resize.
    ("POST", "/containers/{id}/exec", "exec"), ("POST", "/exec/{id}/start", "exec"),
    ("POST", "/exec/{id}/resize", "exec resize"), ("GET", "/exec/{id}/json", "exec inspect"),
    ("GET", "/containers/{id}/top", "top"), ("GET", "/containers/{id}/stats", "stats"),
    ("GET", "/containers/{id}/changes", "container diff"), ("GET", "/containers/{id}/export", "container export"),
    ("GET", "/containers/{id}/archive", "copying files (docker cp)"),
    ("HEAD", "/containers/{id}/archive", "copying files (docker cp)"),
    ("PUT", "/containers/{id}/archive", "copying files (docker cp)"),
    ("POST", "/containers/{id}/resize", "terminal resize"),
    ("GET", "/containers/{id}/attach/ws", "attach over websocket"),
)


def _later(feature: str):  # type: ignore[no-untyped-def]
    async def handler(req: Request) -> Response:
        raise NotImplementedYet(f"{feature} is not implemented in asyncdock yet ({req.method} {req.path})")
    return handler


async def networks_prune(req: Request) -> Response:
    # No networks of ours exist until the networks issue lands: nothing to prune, truthfully.
    return json_response({"NetworksDeleted": None})


async def build_prune(req: Request) -> Response:
    return json_response({"CachesDeleted": None, "SpaceReclaimed": 0})


async def network_get(req: Request) -> Response:
    raise NotFound(f"network {req.match['id']} not found")


async def volume_get(req: Request) -> Response:
    raise NotFound(f"get {req.match['name']}: no such volume")


async def plugin_get(req: Request) -> Response:
    raise NotFound(f'plugin "{req.match["name"]}" not found')


async def plugins_list(req: Request) -> Response:
    return json_response([])


def register(router: Router) -> None:
    router.add("POST", "/networks/prune", networks_prune)
    router.add("POST", "/build/prune", build_prune)
    router.add("GET", "/plugins", plugins_list)
    router.add("GET", "/plugins/{name:.+}/json", plugin_get)
    for method, pattern, feature in _LATER:
        router.add(method, pattern, _later(feature))
    # Registered last so that the networks/volumes issue's own routes take precedence.
    router.add("GET", "/networks/{id:.+}", network_get)
    router.add("GET", "/volumes/{name:.+}", volume_get)
    for method, pattern, feature in (
        ("GET", "/networks", "networks"), ("POST", "/networks/create", "network create"),
        ("DELETE", "/networks/{id:.+}", "network remove"), ("POST", "/networks/{id}/connect", "network connect"),
        ("POST", "/networks/{id}/disconnect", "network disconnect"),
        ("GET", "/volumes", "volumes"), ("POST", "/volumes/create", "volume create"),
        ("DELETE", "/volumes/{name:.+}", "volume remove"), ("POST", "/volumes/prune", "volume prune"),
    ):
        router.add(method, pattern, _later(feature))
