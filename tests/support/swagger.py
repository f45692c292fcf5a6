"""Check an API response against moby's swagger document of the version it answered (issue 14).

`load(version)` reads moby's document (`engine-api-v<version>-swagger.yaml`, Swagger 2.0) and
`ApiSpec.check(method, path, status, content_type, body)` answers every way the response differs
from the response schema of the matching operation, as `Mismatch`es:

- the schema, turned into JSON Schema (draft 4, which Swagger 2.0 is built on): `$ref`s into
  `#/definitions` resolve, `x-nullable: true` admits `null`, `additionalProperties` as written,
  `format` and the documentation keys ignored; validated with `jsonschema`;
- strict keys: an object whose schema lists `properties` may only carry the keys listed there (a
  schema that admits extra properties would let a field of a newer version leak into an older
  one), unless its `additionalProperties` is a schema (a map);
- a status the operation does not document, a JSON schema answered without `application/json`,
  a body on a 204.

Nothing is excused but what moby's own dockerd does: `CORRECTIONS` patch the document where
dockerd's Go code contradicts it, `UNDOCUMENTED_KEYS` lists keys dockerd sends that the document
does not name; each with its evidence (a transcript of dockerd 20.10 in
shared/reference/docker-api-transcripts/, or moby's Go types).
"""
from __future__ import annotations

import copy
import functools
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ("1.41", "1.44", "1.52", "1.54")


def spec_dir() -> Path:
    """moby's documents: ../shared/ beside the checkout (as CI lays it), else the workplace's
    copy, or where ASYNCDOCK_SWAGGER_DIR says."""
    env = os.environ.get("ASYNCDOCK_SWAGGER_DIR")
    if env:
        return Path(env)
    beside = ROOT.parent / "shared/reference/docker-api-transcripts/spec"
    return beside if beside.is_dir() else Path("/work/shared/reference/docker-api-transcripts/spec")


def spec_path(version: str) -> Path:
    return spec_dir() / f"engine-api-v{version}-swagger.yaml"


@dataclass(frozen=True)
class Correction:
    """At `where` (instance path segments from the body's root: `[]` every list item, `*` any one
    key) of `route`'s answers, each of `keys` may hold any of `accepts` though the document
    rejects it. The document is otherwise as moby wrote it."""
    route: str
    where: str
    keys: tuple[str, ...]
    accepts: tuple[Any, ...]
    evidence: str
    versions: tuple[str, ...] = VERSIONS


@dataclass(frozen=True)
class SchemaFix:
    """Replace the schema at `pointer` (keys into moby's document) by `schema` in `versions`:
    for a document whose structure contradicts what dockerd sends, not a single value."""
    versions: tuple[str, ...]
    pointer: tuple[str, ...]
    schema: Any
    evidence: str


@dataclass(frozen=True)
class UndocumentedKey:
    """dockerd sends `key` in the objects at `where` (instance path segments: `[]` for every list
    item, `*` for any one key) of `route`'s answers, in `versions`, though the document omits it."""
    versions: tuple[str, ...]
    route: str
    where: str
    key: str
    evidence: str


# Where moby's document is wrong against dockerd itself. Nothing else is excused. Most are Go's
# encoding/json writing a nil slice or map (a field without `omitempty`) as `null` where the
# document does not say x-nullable; the evidence is dockerd 20.10's answer in the transcript named.
_T = "shared/reference/docker-api-transcripts/"
CORRECTIONS: tuple[Correction, ...] = (
    Correction("GET /containers/{id}/json", "HostConfig",
               ("Binds", "CapAdd", "CapDrop", "DeviceCgroupRules", "DeviceRequests", "ExtraHosts", "GroupAdd",
                "Links", "SecurityOpt", "VolumesFrom"), (None,),
               _T + "inspect.md: `docker inspect tx-insp`, nil []string/[]DeviceRequest of container.HostConfig"),
    Correction("GET /containers/{id}/json", "HostConfig", ("MemorySwappiness", "PidsLimit"), (None,),
               _T + "inspect.md: *int64 of container.Resources, nil when not set"),
    Correction("GET /containers/{id}/json", "HostConfig", ("Isolation",), ("",),
               _T + "inspect.md: container.Isolation is \"\" on Linux (the enum lists Windows' values only)"),
    Correction("GET /containers/{id}/json", "HostConfig.RestartPolicy", ("Name",), ("no",),
               _T + "inspect.md: RestartPolicy.Name \"no\" (dockerd's default; the 1.41 enum omits it)"),
    Correction("GET /containers/{id}/json", "Config", ("Cmd", "Entrypoint", "Env", "OnBuild", "Volumes"), (None,),
               _T + "inspect.md: nil strslice/[]string/map of container.Config"),
    Correction("GET /containers/{id}/json", "", ("ExecIDs",), (None,),
               _T + "inspect.md: nil []string ExecIDs of a container without execs (later documents "
               "forgot x-nullable)"),
    Correction("GET /containers/{id}/json", "NetworkSettings", ("SecondaryIPAddresses", "SecondaryIPv6Addresses"),
               (None,), _T + "inspect.md: nil []network.Address of NetworkSettingsBase"),
    # DNSNames (1.44) likewise: moby api/types/network EndpointSettings.DNSNames []string, no
    # omitempty, nil on the default bridge (it has no embedded DNS)
    *(Correction(route, where, ("Aliases", "DriverOpts", "IPAMConfig", "Links", "DNSNames"), (None,),
                 _T + "ps.md, inspect.md: nil fields of network.EndpointSettings")
      for route, where in (("GET /containers/json", "[].NetworkSettings.Networks.*"),
                           ("GET /containers/{id}/json", "NetworkSettings.Networks.*"),
                           ("GET /system/df", "Containers.[].NetworkSettings.Networks.*"))),
    Correction("GET /images/json", "[]", ("Labels",), (None,),
               _T + "images.md: `docker images`, nil map of ImageSummary for an image without labels"),
    *(Correction("GET /images/{name}/json", where,
                 ("Cmd", "Entrypoint", "Env", "Labels", "OnBuild", "Volumes"), (None,),
                 _T + "inspect.md: `docker image inspect`, nil fields of the image's container.Config")
      for where in ("Config", "ContainerConfig")),
    Correction("GET /info", "", ("GenericResources", "Warnings"), (None,),
               _T + "version-info.md: `docker info`, nil slices of system.Info"),
    Correction("GET /info", "", ("Isolation",), ("",), _T + "version-info.md: Isolation \"\" on Linux"),
    Correction("GET /info", "Plugins", ("Authorization",), (None,), _T + "version-info.md: nil PluginsInfo slice"),
    Correction("GET /info", "Swarm", ("RemoteManagers",), (None,), _T + "version-info.md: nil swarm.Info slice"),
    Correction("POST /containers/{id}/wait", "", ("Error",), (None,),
               _T + "lifecycle.md, run.md: *WaitExitError, nil for a clean exit"),
    *(Correction(f"POST /{kind}/prune", "", (key,), (None,), _T + f"prune.md: nil {key} of an empty prune")
      for kind, key in (("containers", "ContainersDeleted"), ("images", "ImagesDeleted"),
                        ("networks", "NetworksDeleted"), ("build", "CachesDeleted"))),
    Correction("GET /system/df", "Images.[]", ("Labels",), (None,),
               _T + "images.md: the same ImageSummary as the image list, nil Labels"),
    # not in the transcripts: moby's Go types, fields without omitempty
    Correction("POST /volumes/prune", "", ("VolumesDeleted",), (None,),
               "moby api/types VolumesPruneReport.VolumesDeleted []string, nil when none (as the other prunes)"),
    Correction("GET /volumes", "", ("Warnings",), (None,),
               "moby api/types/volume ListResponse.Warnings []string, nil from the local driver"),
    Correction("POST /containers/{id}/update", "", ("Warnings",), (None,),
               "moby api/types/container UpdateResponse (ContainerUpdateOKBody).Warnings []string, nil"),
    Correction("GET /exec/{id}/json", "", ("ExitCode",), (None,),
               "moby daemon/exec Config.ExitCode *int, nil until the process exits (copied to ExecInspect)"),
    *(Correction(route, where, ("Options",), (None,),
                 "moby api/types/network IPAM.Options map[string]string, nil for a network created without")
      for route, where in (("GET /networks", "[].IPAM"), ("GET /networks/{id}", "IPAM"))),
)

# Where the document's structure is wrong against dockerd (applied to the document at load).
SCHEMA_FIXES: tuple[SchemaFix, ...] = (
    # 1.41 defines ContainerSummary as the array the list answers, and /system/df's Containers
    # then lists arrays of it; dockerd sends one array of container summaries there
    SchemaFix(("1.41",), ("paths", "/system/df", "get", "responses", 200, "schema", "properties", "Containers"),
              {"$ref": "#/definitions/ContainerSummary"},
              "moby api/types DiskUsage.Containers []*Container; the document of 1.44 fixes it"),
    # 1.41's summary lists Mounts as the create-time Mount; dockerd sends the MountPoint of inspect
    SchemaFix(("1.41",), ("definitions", "ContainerSummary", "items", "properties", "Mounts", "items"),
              {"$ref": "#/definitions/MountPoint"},
              "moby api/types Container.Mounts []MountPoint; the document of 1.44 fixes it"),
)

# Keys dockerd itself sends that the document does not list (strict mode's allow-list).
# asyncdock's own additions carry a vendor prefix no Docker field can have (swagger's `x-` rule for
# extensions): the event cursor `x-asyncdock-seq` and /info's `X-AsyncdockRuntimeProbes`. Clients
# ignore keys they do not know; the prefix keeps a newer Docker field from hiding among them.
VENDOR_PREFIXES = ("x-asyncdock",)

UNDOCUMENTED_KEYS: tuple[UndocumentedKey, ...] = (
    UndocumentedKey(("1.41",), "GET /info", "", "KernelMemoryTCP",
                    _T + "version-info.md: `docker info` of dockerd 20.10 (system.Info has it since 1.40; "
                    "the document of 1.41 forgot it, 1.44's lists it)"),
    # the deprecated status/id/from that dockerd sent beside Type/Action/Actor until 1.52 removed
    # them (CHANGELOG of 1.52), and scope (added at 1.30, documented from 1.44)
    # types.NetworkResource has had ConfigFrom/ConfigOnly since 1.30; 1.44's document lists them
    *(UndocumentedKey(("1.41",), route, where, key, "moby api/types NetworkResource.ConfigFrom, .ConfigOnly "
                      "(no omitempty): `docker network inspect` of dockerd 20.10 shows both")
      for route, where in (("GET /networks", "[]"), ("GET /networks/{id}", "")) for key in ("ConfigFrom", "ConfigOnly")),
    *(UndocumentedKey(versions, "GET /events", "", key,
                      _T + "events.md: `docker events` of dockerd 20.10; spec/engine-api-CHANGELOG.md, 1.52")
      for versions, keys in ((("1.41",), ("scope", "status", "id", "from")), (("1.44",), ("status", "id", "from")))
      for key in keys),
    *(UndocumentedKey(("1.52",), "GET /system/df", "", key,
                      "spec/engine-api-CHANGELOG.md, 1.52: \"API v1.52 returns both the legacy and current fields "
                      "... Starting with API v1.53, the legacy fields will no longer be returned\"")
      for key in ("LayersSize", "Images", "Containers", "Volumes", "BuildCache")),
)

# Answers that are a stream of JSON documents, one a line, each an instance of the schema.
STREAMED = frozenset({
    ("GET", "/events"), ("GET", "/containers/{id}/stats"), ("POST", "/images/create"),
    ("POST", "/images/{name}/push"), ("POST", "/images/load"), ("POST", "/build"),
})

_DOC_KEYS = frozenset({"description", "example", "format", "readOnly", "discriminator", "xml",
                       "externalDocs", "title", "default"})
_SCHEMA_MAPS = frozenset({"properties", "definitions", "patternProperties"})
_SCHEMA_ONE = frozenset({"items", "additionalProperties", "not"})
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf"})
_NULL = {"type": "null"}


@dataclass(frozen=True)
class Mismatch:
    version: str
    route: str       # "GET /containers/{id}/json 200"
    where: str       # JSON path in the body: $.HostConfig.Mounts
    what: str

    def __str__(self) -> str:
        return f"{self.version} {self.route} {self.where}: {self.what}"


def to_json_schema(node: Any) -> Any:
    """One Swagger 2.0 schema (or a map of them) as JSON Schema draft 4."""
    if isinstance(node, list):
        return [to_json_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k.startswith("x-") or k in _DOC_KEYS:
            continue
        if k in _SCHEMA_MAPS:
            out[k] = {name: to_json_schema(s) for name, s in v.items()}
        elif k in _SCHEMA_ONE and isinstance(v, dict):
            out[k] = to_json_schema(v)
        elif k in _SCHEMA_LISTS:
            out[k] = [to_json_schema(s) for s in v]
        elif k == "type" and v == "file":
            out[k] = "string"
        else:
            out[k] = v
    if node.get("x-nullable") is True:
        if "type" in out and "$ref" not in out and "allOf" not in out:
            out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else [*out["type"], "null"]
            if "enum" in out and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
        else:
            # siblings of a $ref are ignored by draft 4: admit null beside the whole schema
            out = {"anyOf": [_NULL, out]}
    return out


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    doc: dict[str, Any]
    produces: tuple[str, ...]


class ApiSpec:
    def __init__(self, version: str, doc: dict[str, Any]) -> None:
        self.version = version
        self.doc = doc
        self.definitions: dict[str, Any] = to_json_schema(doc.get("definitions", {}))
        self._produces = tuple(doc.get("produces", ()))
        templates = list(doc.get("paths", {}))
        # a literal path before a template; fewer parameters first; a parameter is one segment,
        # then (image and volume names hold slashes, dockerd's router reads them with .*) any
        self._matchers: list[tuple[re.Pattern[str], str]] = []
        ranked = sorted(templates, key=lambda t: (t.count("{"), -len(re.sub(r"\{[^}]+\}", "", t))))
        for one_segment in (True, False):
            for t in ranked:
                rx = "".join(("[^/]+" if one_segment else ".+") if part.startswith("{") else re.escape(part)
                             for part in re.split(r"(\{[^}]+\})", t) if part)
                self._matchers.append((re.compile(rx + "$"), t))
        self._validators: dict[tuple[str, str, str], jsonschema.protocols.Validator] = {}

    # -- operations ------------------------------------------------------------------------
    def operation(self, method: str, path: str) -> Operation | None:
        bare = strip_version(path.split("?", 1)[0])
        for rx, template in self._matchers:
            if rx.match(bare):
                op = self.doc["paths"][template].get(method.lower())
                if op is None:
                    continue
                return Operation(method.upper(), template, op, tuple(op.get("produces", self._produces)))
        return None

    def response_schema(self, op: Operation, status: int) -> tuple[bool, Any]:
        """(documented, JSON schema or None) of `op`'s answer with `status`."""
        responses = op.doc.get("responses", {})
        resp = responses.get(str(status), responses.get(status, responses.get("default")))
        if resp is None:
            return False, None
        schema = resp.get("schema")
        return True, to_json_schema(schema) if schema is not None else None

    def _validator(self, op: Operation, status: int, schema: Any) -> jsonschema.protocols.Validator:
        key = (op.method, op.template, str(status))
        v = self._validators.get(key)
        if v is None:
            root = {**schema, "definitions": self.definitions} if isinstance(schema, dict) else schema
            v = jsonschema.Draft4Validator(root)
            self._validators[key] = v
        return v

    # -- the check ---------------------------------------------------------------------------
    def check(self, method: str, path: str, status: int, content_type: str | None, body: bytes,
              *, strict: bool = True) -> list[Mismatch]:
        op = self.operation(method, path)
        if op is None:
            return [Mismatch(self.version, f"{method} {path}", "$", "no such operation in the document")]
        route = f"{op.method} {op.template}"
        label = f"{route} {status}"
        documented, schema = self.response_schema(op, status)
        if not documented and status >= 400:
            # dockerd maps an error's kind to its status the same way on every route
            # (httputils.MakeErrorHandler; errdefs), documented there or not: a 409 of a pause of
            # a stopped container (transcripts' lifecycle.md), the 400 of a version too new
            # (version-info.md). Its body is still the one ErrorResponse.
            documented, schema = True, {"$ref": "#/definitions/ErrorResponse"}
        if not documented:
            codes = ", ".join(str(c) for c in op.doc.get("responses", {}))
            return [Mismatch(self.version, label, "$", f"status {status} is not documented (documented: {codes})")]
        mime = (content_type or "").split(";", 1)[0].strip().lower()
        if schema is None:
            if status == 204 and body:
                return [Mismatch(self.version, label, "$", f"a body on a 204: {body[:80]!r}")]
            return []
        if method.upper() == "HEAD":
            return []
        if isinstance(schema, dict) and schema.get("type") == "string" and mime != "application/json":
            return []  # a text or binary answer (logs, export, ping's OK): no JSON to check
        # a stream's JSON may come as the operation's own media types (events: jsonl, x-ndjson, json-seq)
        streamed = (op.method, op.template) in STREAMED
        if mime != "application/json" and not (streamed and mime in op.doc.get("produces", ())):
            return [Mismatch(self.version, label, "$", f"content type {content_type!r} for a JSON schema")]
        if mime == "application/json-seq":
            body = body.replace(b"\x1e", b"")
        try:
            docs = _documents(body.decode(), streamed)
        except ValueError as e:
            return [Mismatch(self.version, label, "$", f"not JSON ({e}): {body[:80]!r}")]
        out: list[Mismatch] = []
        validator = self._validator(op, status, schema)
        corrections = [c for c in CORRECTIONS if self.version in c.versions and c.route == route]
        for prefix, instance in docs:
            for err in validator.iter_errors(instance):
                for leaf in _leaves(err):
                    if _corrected(leaf, corrections):
                        continue
                    out.append(Mismatch(self.version, label, _render(prefix, leaf.absolute_path), _message(leaf)))
            if strict:
                allowed = self._allowed(route)
                for where, key in self._extra_keys(instance, schema, [], allowed):
                    if key.lower().startswith(VENDOR_PREFIXES):
                        continue
                    out.append(Mismatch(self.version, label, _render(prefix, where),
                                        f"key {key!r} is not documented at {self.version}"))
        return out

    def _allowed(self, route: str) -> list[UndocumentedKey]:
        return [u for u in UNDOCUMENTED_KEYS if self.version in u.versions and u.route == route]

    # -- strict keys ---------------------------------------------------------------------
    def _resolve(self, schema: Any) -> Any:
        while isinstance(schema, dict) and "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            schema = self.definitions[name]
        return schema

    def _effective(self, schema: Any, instance: Any) -> tuple[dict[str, Any] | None, Any, Any]:
        """(properties or None if the schema lists none, additionalProperties, items) of the
        schema an instance meets, through $ref, allOf and the null branch of a nullable."""
        props: dict[str, Any] | None = None
        addl: Any = None
        items: Any = None
        stack = [schema]
        while stack:
            s = self._resolve(stack.pop())
            if not isinstance(s, dict):
                continue
            if "properties" in s:
                props = {**(props or {}), **s["properties"]}
            if isinstance(s.get("additionalProperties"), dict):
                addl = s["additionalProperties"]
            if "items" in s:
                items = s["items"]
            stack.extend(s.get("allOf", ()))
            for branch in (*s.get("anyOf", ()), *s.get("oneOf", ())):
                if branch != _NULL or instance is None:
                    stack.append(branch)
        return props, addl, items

    def _extra_keys(self, instance: Any, schema: Any, where: list[str | int],
                    allowed: Sequence[UndocumentedKey]) -> Iterator[tuple[list[str | int], str]]:
        props, addl, items = self._effective(schema, instance)
        if isinstance(instance, dict):
            for k, v in instance.items():
                if props is not None and k in props:
                    yield from self._extra_keys(v, props[k], [*where, k], allowed)
                elif isinstance(addl, dict):
                    yield from self._extra_keys(v, addl, [*where, k], allowed)
                elif props is not None and not any(u.key == k and _matches(u.where, where) for u in allowed):
                    yield where, k
        elif isinstance(instance, list) and items is not None:
            for n, v in enumerate(instance):
                yield from self._extra_keys(v, items, [*where, n], allowed)


def _documents(text: str, streamed: bool) -> list[tuple[str, Any]]:
    """The body's JSON document, or each of a stream's (one a line on the wire; any layout)."""
    if not streamed:
        return [("$", json.loads(text))]
    decoder = json.JSONDecoder()
    out: list[tuple[str, Any]] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return out
        doc, pos = decoder.raw_decode(text, pos)
        out.append((f"$<{len(out) + 1}>", doc))


def _corrected(err: jsonschema.ValidationError, corrections: Sequence[Correction]) -> bool:
    path = list(err.absolute_path)
    if not path or isinstance(path[-1], int):
        return False
    *parent, key = path
    return any(key in c.keys and _matches(c.where, parent) and any(
        err.instance == a and type(err.instance) is type(a) for a in c.accepts) for c in corrections)


def strip_version(path: str) -> str:
    return re.sub(r"^/v\d+\.\d+(?=/)", "", path)


def _matches(pattern: str, where: Sequence[str | int]) -> bool:
    want = [p for p in pattern.split(".") if p and p != "$"]
    have = ["[]" if isinstance(p, int) else p for p in where]
    return len(want) == len(have) and all(w in ("*", h) for w, h in zip(want, have))


def _leaves(err: jsonschema.ValidationError) -> Iterator[jsonschema.ValidationError]:
    """The errors that say what is wrong: through a nullable's anyOf, the non-null branch's."""
    if err.validator == "anyOf" and err.context and err.instance is not None:
        inner = [e for e in err.context if not (e.validator == "type" and e.validator_value == "null")]
        if inner:
            for e in inner:
                yield from _leaves(e)
            return
    yield err


def _message(err: jsonschema.ValidationError) -> str:
    if err.validator in ("type", "enum", "required", "additionalProperties"):
        text = err.message
    else:
        text = f"fails {err.validator} {json.dumps(err.validator_value)[:120]}"
    return text if len(text) < 200 else text[:200] + "..."


def _render(prefix: str, path: Sequence[str | int] | Any) -> str:
    out = prefix
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


@functools.lru_cache(maxsize=None)
def _load_doc(version: str) -> dict[str, Any]:
    with open(spec_path(version), encoding="utf-8") as f:
        return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # type: ignore[no-any-return]


def load(version: str) -> ApiSpec:
    """moby's document of `version`, its structure fixed where SCHEMA_FIXES say (a fresh
    ApiSpec: it memoizes validators)."""
    doc = _load_doc(version)
    fixes = [f for f in SCHEMA_FIXES if version in f.versions]
    if fixes:
        doc = copy.deepcopy(doc)
        for fix in fixes:
            *parents, last = fix.pointer
            node: Any = doc
            for k in parents:
                node = node[k]
            node[last] = fix.schema
    return ApiSpec(version, doc)
