"""Docker API routes that later issues build. They answer 501 with a message naming the feature,
never a bare 404, so a client shows the user what is missing. Routes whose truthful answer is
already known (nothing to prune, no such network) answer that instead."""
from __future__ import annotations

from ...base.errors import NotFound, NotImplementedYet
from ..http import Request, Response, Router, json_response

_LATER: tuple[tuple[str, str, str], ...] = (
    ("POST", "/images/{name:.+}/push", "image push"),
    ("GET", "/images/search", "image search"),
    ("POST", "/session", "build sessions"),
    ("GET", "/distribution/{name:.+}/json", "distribution inspect"),
    ("GET", "/plugins/privileges", "plugin install"), ("POST", "/plugins/pull", "plugin install"),
)


def _later(feature: str):  # type: ignore[no-untyped-def]
    async def handler(req: Request) -> Response:
        raise NotImplementedYet(f"{feature} is not implemented in asyncdock yet ({req.method} {req.path})")
    return handler


async def plugin_get(req: Request) -> Response:
    raise NotFound(f'plugin "{req.match["name"]}" not found')


async def plugins_list(req: Request) -> Response:
    return json_response([])


def register(router: Router) -> None:
    router.add("GET", "/plugins", plugins_list)
    router.add("GET", "/plugins/{name:.+}/json", plugin_get)
    for method, pattern, feature in _LATER:
        router.add(method, pattern, _later(feature))
    # /networks and /volumes: routes/networks.py and routes/volumes.py; swarm: routes/swarm.py
