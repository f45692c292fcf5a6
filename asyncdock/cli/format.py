"""The docker CLI's output rules: tabwriter tables, Go-template subset, human durations and
sizes, `docker ps` cells."""
from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from typing import Any

# stdlib-only, so `asyncdock ps` stays fast
from ..base.timefmt import human_duration


def human_size(n: float) -> str:
    """go-units HumanSizeWithPrecision(n, 3): decimal units, 3 significant digits."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n /= 1000.0
        i += 1
    return f"{float(f'{n:.3g}'):g}{units[i]}"


def ellipsis(s: str, n: int) -> str:
    return s if len(s) <= n else s[:n - 1] + "…"


def go_quote(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def tabwrite(rows: list[list[str]], minwidth: int = 10, padding: int = 3) -> str:
    """text/tabwriter with (minwidth 10, tabwidth 1, padding 3, ' '), as the docker CLI uses;
    the last cell of a row is not padded."""
    if not rows:
        return ""
    ncol = max(len(r) for r in rows)
    widths = [0] * ncol
    for r in rows:
        for i, c in enumerate(r[:-1]):
            widths[i] = max(widths[i], max(minwidth, len(c) + padding))
    out = ["".join(c.ljust(widths[i]) if i < len(r) - 1 else c for i, c in enumerate(r)) for r in rows]
    return "\n".join(out) + "\n"


_HEADER_FIELD = re.compile(r"\{\{-?\s*(?:json\s+)?\.(\w*)[^}]*\}\}")


def render(template: str, items: list[dict[str, Any]], headers: dict[str, str]) -> str:
    """A `--format` template over each item (Go's text/template subset of cli/gotemplate.py);
    `table ...` adds the header row (each `{{.Field}}` named by `headers`) and aligns columns."""
    from .gotemplate import execute, parse

    template = template.replace("\\t", "\t").replace("\\n", "\n")
    table = template.startswith("table")
    if table:
        template = template[5:].lstrip()
    nodes = parse(template)
    if table:
        header = _HEADER_FIELD.sub(lambda m: headers.get(m.group(1), m.group(1).upper()), template)
        rows = [header.split("\t")] + [execute(nodes, i).split("\t") for i in items]
        return tabwrite(rows)
    return "".join(execute(nodes, i) + "\n" for i in items)


def ps_item(c: dict[str, Any], trunc: bool = True, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    created = c.get("Created", 0)
    names = [n.lstrip("/") for n in c.get("Names") or [] if "/" not in n.lstrip("/")]
    command = c.get("Command", "")
    ports = []
    for p in c.get("Ports") or []:
        if p.get("PublicPort"):
            ports.append(f"{p.get('IP', '')}:{p['PublicPort']}->{p['PrivatePort']}/{p.get('Type', 'tcp')}")
        else:
            ports.append(f"{p['PrivatePort']}/{p.get('Type', 'tcp')}")
    labels = c.get("Labels") or {}
    nets = (c.get("NetworkSettings") or {}).get("Networks") or {}
    return {
        "Command": go_quote(ellipsis(command, 20) if trunc else command),
        "CreatedAt": datetime.fromtimestamp(created, timezone.utc).strftime("%Y-%m-%d %H:%M:%S +0000 UTC"),
        "ID": c.get("Id", "")[:12] if trunc else c.get("Id", ""),
        "Image": c.get("Image", ""),
        "Labels": ",".join(f"{k}={v}" for k, v in labels.items()),
        "LocalVolumes": str(sum(1 for m in c.get("Mounts") or [] if m.get("Driver") == "local")),
        "Mounts": ",".join(m.get("Name") or m.get("Source", "") for m in c.get("Mounts") or []),
        "Names": ",".join(names),
        "Networks": ",".join(sorted(nets)),
        "Platform": c.get("ImageManifestDescriptor", {}).get("platform") if c.get("ImageManifestDescriptor") else None,  # type: ignore[dict-item]
        "Ports": ", ".join(ports),
        "RunningFor": human_duration(now - created) + " ago",
        "Size": human_size(c.get("SizeRw", 0) or 0) + (
            f" (virtual {human_size(c['SizeRootFs'])})" if c.get("SizeRootFs") else ""),
        "State": c.get("State", ""),
        "Status": c.get("Status", ""),
    }


PS_HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
              "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS", "Size": "SIZE",
              "Names": "NAMES", "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS",
              "LocalVolumes": "LOCAL VOLUMES"}
PS_DEFAULT = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"

IMAGES_HEADERS = {"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID", "CreatedSince": "CREATED",
                  "Size": "SIZE", "Digest": "DIGEST", "CreatedAt": "CREATED AT"}
IMAGES_DEFAULT = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"


def image_items(images: list[dict[str, Any]], now: float | None = None) -> list[dict[str, str]]:
    now = time.time() if now is None else now
    out = []
    for im in images:
        tags = im.get("RepoTags") or []
        digests = im.get("RepoDigests") or []
        base = {"ID": im.get("Id", "").removeprefix("sha256:")[:12],
                "CreatedSince": human_duration(now - im.get("Created", 0)) + " ago",
                "CreatedAt": datetime.fromtimestamp(im.get("Created", 0), timezone.utc).strftime("%Y-%m-%d %H:%M:%S +0000 UTC"),
                "Size": human_size(im.get("Size", 0)), "Digest": "<none>"}
        if not tags:
            repo = digests[0].split("@")[0] if digests else "<none>"
            out.append({**base, "Repository": repo, "Tag": "<none>"})
        for t in tags:
            repo, _, tag = t.rpartition(":")
            out.append({**base, "Repository": repo, "Tag": tag})
    return out
