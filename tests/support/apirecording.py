"""A recorded set of requests for issue 14: one scripted scenario that calls every implemented
route answering JSON (and the error answers of each), at a given API version, on any engine's
socket. The same script runs against asyncdock (validated against moby's swagger document of
that version, tests/integration/test_api_schemas.py) and against a real dockerd (the JSON shapes
of both compared step by step, under the `dockerd` marker).

Each `Exchange` is named by its step (stable across engines and runs: ids differ, steps do not)
and by its group, the view a test asserts on its own (system, containers, exec, images, networks,
volumes, events, errors). What the scenario creates carries the label `asyncdock.schema=<run>`,
prunes are filtered by it (the daemon may be shared), and everything is removed at the end.
"""
from __future__ import annotations

import json
import re
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.daemon import UnixHTTPConnection

GROUPS = ("system", "events", "containers", "exec", "images", "networks", "volumes", "errors")
LABEL = "asyncdock.schema"


@dataclass(frozen=True)
class Exchange:
    step: str
    group: str
    method: str
    path: str  # as sent, with its /vX.Y prefix and query
    status: int
    content_type: str | None
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class ScenarioError(AssertionError):
    pass


@dataclass
class Recorder:
    socket: str
    version: str
    exchanges: list[Exchange] = field(default_factory=list)

    def call(self, group: str, step: str, method: str, path: str, body: Any = None, *,
             expect: int | tuple[int, ...] | None = None, raw: bytes | None = None,
             version: str | None = None, timeout: float = 60) -> Exchange:
        """One request on `path` (unversioned; the recorder adds /v<version>), recorded. With
        `expect`, a different status stops the scenario (what follows would make no sense)."""
        sent = f"/v{version or self.version}{path}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn = UnixHTTPConnection(self.socket, timeout=timeout)
        try:
            conn.request(method, sent, body=data, headers=headers)
            resp = conn.getresponse()
            ex = Exchange(step, group, method, sent, resp.status, resp.getheader("Content-Type"), resp.read())
        finally:
            conn.close()
        self.exchanges.append(ex)
        wanted = (expect,) if isinstance(expect, int) else expect
        if wanted is not None and ex.status not in wanted:
            raise ScenarioError(f"{step}: {method} {sent} answered {ex.status} (wanted {expect}): {ex.body[:300]!r}")
        return ex

    def quiet(self, method: str, path: str, body: Any = None) -> None:
        """A clean-up request, not recorded, whatever it answers."""
        conn = UnixHTTPConnection(self.socket, timeout=60)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, f"/v{self.version}{path}", body=data,
                         headers={"Content-Type": "application/json"} if data else {})
            conn.getresponse().read()
        except OSError:
            pass
        finally:
            conn.close()


def dump(exchanges: list[Exchange], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for ex in exchanges:
            body: Any
            try:
                body = json.loads(ex.body) if ex.body else None
            except ValueError:
                body = ex.body.decode(errors="replace")
            f.write(json.dumps({"step": ex.step, "group": ex.group, "method": ex.method, "path": ex.path,
                                "status": ex.status, "content_type": ex.content_type, "body": body}) + "\n")


def load_dump(path: Path) -> list[Exchange]:
    out = []
    for line in path.read_text().splitlines():
        d = json.loads(line)
        body = d["body"]
        raw = b"" if body is None else body.encode() if isinstance(body, str) else json.dumps(body).encode()
        out.append(Exchange(d["step"], d["group"], d["method"], d["path"], d["status"], d["content_type"], raw))
    return out


def _q(**params: Any) -> str:
    return "?" + urllib.parse.urlencode({k: json.dumps(v) if isinstance(v, dict) else v for k, v in params.items()})


def _at_least(version: str, floor: tuple[int, int]) -> bool:
    major, minor = version.split(".")
    return (int(major), int(minor)) >= floor


def run_scenario(rec: Recorder, *, image: str = "busybox") -> None:
    """The scenario (`image` present on the engine, with `sh`, `sleep`, `true`). Names are
    unique to the run; everything it made is removed at the end."""
    run = uuid.uuid4().hex[:10]
    labels = {LABEL: run}
    by_label = {"label": [f"{LABEL}={run}"]}
    n = {k: f"schema-{run}-{k}" for k in ("net1", "net2", "vol", "main", "done", "stopped", "tag")}
    try:
        _scenario(rec, image, labels, by_label, n)
    finally:
        for c in ("main", "done", "stopped"):
            rec.quiet("DELETE", f"/containers/{n[c]}?force=1&v=1")
        rec.quiet("DELETE", f"/images/{n['tag']}:t")
        for net in ("net1", "net2"):
            rec.quiet("DELETE", f"/networks/{n[net]}")
        rec.quiet("DELETE", f"/volumes/{n['vol']}?force=1")


def _scenario(rec: Recorder, image: str, labels: dict[str, str], by_label: dict[str, list[str]],
              n: dict[str, str]) -> None:
    v = rec.version
    since = int(time.time()) - 1
    # ---- system
    rec.call("system", "ping", "GET", "/_ping", expect=200)
    rec.call("system", "ping head", "HEAD", "/_ping", expect=200)
    rec.call("system", "version", "GET", "/version", expect=200)
    rec.call("system", "info", "GET", "/info", expect=200)

    # ---- networks and volumes the container uses
    for net in ("net1", "net2"):
        rec.call("networks", f"network create {net}", "POST", "/networks/create",
                 {"Name": n[net], "Driver": "bridge", "Labels": labels, "CheckDuplicate": True}, expect=201)
    rec.call("volumes", "volume create", "POST", "/volumes/create",
             {"Name": n["vol"], "Labels": labels, "Driver": "local"}, expect=201)

    # ---- containers
    health: dict[str, Any] = {"Test": ["CMD-SHELL", "true"], "Interval": 1_000_000_000, "Timeout": 1_000_000_000,
                              "Retries": 3, "StartPeriod": 0}
    if _at_least(v, (1, 44)):
        health["StartInterval"] = 1_000_000_000
    endpoints: dict[str, Any] = {n["net1"]: {"Aliases": ["main-alias"]}}
    if _at_least(v, (1, 44)):  # several networks at create came with 1.44
        endpoints[n["net2"]] = {}
    rec.call("containers", "create", "POST", f"/containers/create?name={n['main']}", {
        "Image": image, "Cmd": ["sleep", "300"], "Labels": labels, "Healthcheck": health,
        "ExposedPorts": {"80/tcp": {}},
        "HostConfig": {"Binds": [f"{n['vol']}:/data"], "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1",
                                                                                    "HostPort": ""}]},
                       "NetworkMode": n["net1"]},
        "NetworkingConfig": {"EndpointsConfig": endpoints}}, expect=201)
    rec.call("containers", "create done", "POST", f"/containers/create?name={n['done']}",
             {"Image": image, "Cmd": ["true"], "Labels": labels}, expect=201)
    rec.call("containers", "create stopped", "POST", f"/containers/create?name={n['stopped']}",
             {"Image": image, "Cmd": ["sh", "-c", "echo hello; echo oops >&2"], "Labels": labels}, expect=201)
    rec.call("containers", "start", "POST", f"/containers/{n['main']}/start", expect=204)
    rec.call("containers", "start done", "POST", f"/containers/{n['done']}/start", expect=204)
    rec.call("containers", "wait", "POST", f"/containers/{n['done']}/wait", expect=200)
    rec.call("containers", "start stopped", "POST", f"/containers/{n['stopped']}/start", expect=204)
    rec.call("containers", "wait stopped", "POST", f"/containers/{n['stopped']}/wait?condition=not-running",
             expect=200)
    if not _at_least(v, (1, 44)):
        rec.call("networks", "network connect", "POST", f"/networks/{n['net2']}/connect",
                 {"Container": n["main"], "EndpointConfig": {"Aliases": ["second"]}}, expect=200)
    rec.call("containers", "list", "GET", "/containers/json", expect=200)
    rec.call("containers", "list all size", "GET", "/containers/json" + _q(all=1, size=1, filters=by_label),
             expect=200)
    rec.call("containers", "inspect", "GET", f"/containers/{n['main']}/json", expect=200)
    rec.call("containers", "inspect size", "GET", f"/containers/{n['main']}/json?size=1", expect=200)
    rec.call("containers", "inspect exited", "GET", f"/containers/{n['done']}/json", expect=200)
    rec.call("containers", "top", "GET", f"/containers/{n['main']}/top", expect=200)
    rec.call("containers", "top ps args", "GET", f"/containers/{n['main']}/top?ps_args=-ef", expect=200)
    rec.call("containers", "stats", "GET", f"/containers/{n['main']}/stats?stream=0", expect=200)
    rec.call("containers", "stats one-shot", "GET", f"/containers/{n['main']}/stats?stream=0&one-shot=1", expect=200)
    rec.call("containers", "changes", "GET", f"/containers/{n['main']}/changes", expect=200)
    rec.call("containers", "update", "POST", f"/containers/{n['main']}/update",
             {"Memory": 64 * 1024 * 1024, "MemorySwap": -1, "RestartPolicy": {"Name": "on-failure",
                                                                               "MaximumRetryCount": 2}},
             expect=200)
    rec.call("containers", "logs", "GET", f"/containers/{n['stopped']}/logs?stdout=1&stderr=1&tail=1", expect=200)
    rec.call("containers", "rename", "POST", f"/containers/{n['stopped']}/rename?name={n['stopped']}-r",
             expect=204)
    rec.call("containers", "rename back", "POST", f"/containers/{n['stopped']}-r/rename?name={n['stopped']}",
             expect=204)

    # ---- exec
    ex = rec.call("exec", "exec create", "POST", f"/containers/{n['main']}/exec",
                  {"Cmd": ["true"], "AttachStdout": True, "AttachStderr": True}, expect=201).json()
    rec.call("exec", "exec inspect", "GET", f"/exec/{ex['Id']}/json", expect=200)

    # ---- images
    rec.call("images", "image list", "GET", "/images/json", expect=200)
    rec.call("images", "image list digests", "GET", "/images/json?digests=1&all=1", expect=200)
    rec.call("images", "image inspect", "GET", f"/images/{image}/json", expect=200)
    rec.call("images", "image history", "GET", f"/images/{image}/history", expect=200)
    rec.call("images", "image tag", "POST", f"/images/{image}/tag?repo={n['tag']}&tag=t", expect=201)
    rec.call("images", "image inspect tag", "GET", f"/images/{n['tag']}:t/json", expect=200)
    rec.call("images", "image delete", "DELETE", f"/images/{n['tag']}:t", expect=200)
    rec.call("images", "image prune empty", "POST", "/images/prune" + _q(filters=by_label), expect=200)

    # ---- networks
    rec.call("networks", "network list", "GET", "/networks", expect=200)
    rec.call("networks", "network list filtered", "GET", "/networks" + _q(filters=by_label), expect=200)
    rec.call("networks", "network inspect", "GET", f"/networks/{n['net1']}", expect=200)
    rec.call("networks", "network inspect verbose", "GET", f"/networks/{n['net2']}?verbose=1", expect=200)
    rec.call("networks", "network inspect bridge", "GET", "/networks/bridge", expect=200)
    rec.call("networks", "network disconnect", "POST", f"/networks/{n['net2']}/disconnect",
             {"Container": n["main"], "Force": False}, expect=200)
    rec.call("networks", "network connect again", "POST", f"/networks/{n['net2']}/connect",
             {"Container": n["main"]}, expect=200)
    rec.call("containers", "inspect two networks", "GET", f"/containers/{n['main']}/json", expect=200)

    # ---- volumes
    rec.call("volumes", "volume list", "GET", "/volumes", expect=200)
    rec.call("volumes", "volume list filtered", "GET", "/volumes" + _q(filters=by_label), expect=200)
    rec.call("volumes", "volume inspect", "GET", f"/volumes/{n['vol']}", expect=200)

    # ---- system df, events with since/until
    rec.call("system", "system df", "GET", "/system/df", expect=200)
    until = int(time.time()) + 1
    rec.call("events", "events since until", "GET", "/events" + _q(since=since, until=until), expect=200)
    rec.call("events", "events filtered", "GET", "/events" + _q(since=since, until=until,
                                                                filters={"type": ["container"]}), expect=200)

    # ---- errors: each answer's body is the one {"message": ...}
    rec.call("errors", "version too new", "GET", "/version", version="1.99", expect=400)
    rec.call("errors", "container not found", "GET", "/containers/no-such-container-x/json", expect=404)
    rec.call("errors", "create bad json", "POST", "/containers/create", raw=b"{not json", expect=400)
    rec.call("errors", "create no image", "POST", "/containers/create", {"Image": "no-such-image-x:nope"},
             expect=404)
    rec.call("errors", "create name conflict", "POST", f"/containers/create?name={n['main']}",
             {"Image": image}, expect=409)
    rec.call("errors", "start started", "POST", f"/containers/{n['main']}/start", expect=304)
    rec.call("errors", "remove running", "DELETE", f"/containers/{n['main']}", expect=409)
    rec.call("errors", "exec in stopped", "POST", f"/containers/{n['stopped']}/exec", {"Cmd": ["true"]},
             expect=409)
    rec.call("errors", "top of stopped", "GET", f"/containers/{n['stopped']}/top", expect=409)
    rec.call("errors", "wait not found", "POST", "/containers/no-such-container-x/wait", expect=404)
    rec.call("errors", "logs not found", "GET", "/containers/no-such-container-x/logs?stdout=1", expect=404)
    rec.call("errors", "rename conflict", "POST", f"/containers/{n['stopped']}/rename?name={n['done']}",
             expect=409)
    rec.call("errors", "exec not found", "GET", "/exec/no-such-exec-x/json", expect=404)
    rec.call("errors", "image not found", "GET", "/images/no-such-image-x/json", expect=404)
    rec.call("errors", "history not found", "GET", "/images/no-such-image-x/history", expect=404)
    rec.call("errors", "tag not found", "POST", "/images/no-such-image-x/tag?repo=x&tag=y", expect=404)
    rec.call("errors", "image delete in use", "DELETE", f"/images/{image}", expect=409)
    rec.call("errors", "image delete not found", "DELETE", "/images/no-such-image-x", expect=404)
    rec.call("errors", "network not found", "GET", "/networks/no-such-network-x", expect=404)
    rec.call("errors", "network create conflict", "POST", "/networks/create", {"Name": n["net1"]}, expect=409)
    rec.call("errors", "network remove in use", "DELETE", f"/networks/{n['net1']}", expect=(403, 409))
    rec.call("errors", "volume not found", "GET", "/volumes/no-such-volume-x", expect=404)
    rec.call("errors", "volume remove in use", "DELETE", f"/volumes/{n['vol']}", expect=409)

    # ---- the end: stop, prune what the scenario made, remove the rest
    rec.call("containers", "kill", "POST", f"/containers/{n['main']}/kill", expect=204)
    rec.call("containers", "wait killed", "POST", f"/containers/{n['main']}/wait", expect=200)
    rec.call("containers", "prune", "POST", "/containers/prune" + _q(filters=by_label), expect=200)
    rec.call("containers", "prune empty", "POST", "/containers/prune" + _q(filters=by_label), expect=200)
    rec.call("networks", "network prune", "POST", "/networks/prune" + _q(filters=by_label), expect=200)
    rec.call("networks", "network prune empty", "POST", "/networks/prune" + _q(filters=by_label), expect=200)
    # named volumes too: from 1.42 a prune takes anonymous volumes only, unless `all`
    every = {**by_label, "all": ["true"]} if _at_least(v, (1, 42)) else by_label
    rec.call("volumes", "volume prune", "POST", "/volumes/prune" + _q(filters=every), expect=200)
    rec.call("volumes", "volume prune empty", "POST", "/volumes/prune" + _q(filters=by_label), expect=200)
    rec.call("system", "system df after", "GET", "/system/df", expect=200)


# -- shapes, to compare two engines' answers (not their values) ---------------------------------

_ID = re.compile(r"^(sha256:)?[0-9a-f]{12,64}$")


def shape(doc: Any) -> Any:
    """The shape of a JSON document: keys kept, values replaced by their kind (null, string,
    number, bool; an empty list or map marked so); keys that are ids collapse into `<id>`;
    a list's shape is the union of its items' shapes."""
    if isinstance(doc, dict):
        if not doc:
            return "{}"
        return {("<id>" if _ID.match(k) else k): shape(v) for k, v in sorted(doc.items())}
    if isinstance(doc, list):
        if not doc:
            return "[]"
        merged: Any = None
        for item in doc:
            merged = _union(merged, shape(item))
        return [merged]
    if doc is None:
        return "null"
    if isinstance(doc, bool):
        return "bool"
    if isinstance(doc, (int, float)):
        return "number"
    return "string"


def _union(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _union(a.get(k), b.get(k)) if k in a and k in b else a.get(k, b.get(k)) for k in {*a, *b}}
    return a if a == b else f"{a}|{b}" if isinstance(a, str) and isinstance(b, str) else a


def shape_of(ex: Exchange) -> Any:
    """An exchange's status and body shape; an event stream's, by event type and action."""
    if not ex.body or not (ex.content_type or "").startswith("application/json"):
        return {"status": ex.status}
    if ex.method == "GET" and "/events" in ex.path:
        decoder = json.JSONDecoder()
        text, pos, by_kind = ex.body.decode(), 0, {}
        while pos < len(text.rstrip()):
            while text[pos].isspace():
                pos += 1
            doc, pos = decoder.raw_decode(text, pos)
            kind = f"{doc.get('Type')} {doc.get('Action')}"
            by_kind[kind] = _union(by_kind.get(kind), shape(doc))
        return {"status": ex.status, "events": by_kind}
    return {"status": ex.status, "body": shape(ex.json())}


def shape_diff(ours: Any, theirs: Any, where: str = "$") -> Iterator[str]:
    """How our shape differs from theirs: keys only one side has, kinds that differ. An event
    kind only one engine emitted is not compared (the scenario does not pin every event)."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for k in sorted({*ours, *theirs}):
            if where.endswith(".events") and (k not in ours or k not in theirs):
                continue
            if k not in ours:
                yield f"{where}.{k}: missing (dockerd: {_brief(theirs[k])})"
            elif k not in theirs:
                yield f"{where}.{k}: extra (dockerd has none)"
            else:
                yield from shape_diff(ours[k], theirs[k], f"{where}.{k}")
    elif isinstance(ours, list) and isinstance(theirs, list):
        yield from shape_diff(ours[0], theirs[0], where + "[]")
    elif ours != theirs:
        yield f"{where}: {_brief(ours)} (dockerd: {_brief(theirs)})"


def _brief(s: Any) -> str:
    return s if isinstance(s, str) else "object" if isinstance(s, dict) else "list"
