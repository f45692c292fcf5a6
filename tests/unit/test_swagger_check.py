"""The schema checker of tests/support/swagger.py: dockerd's own answers pass it (so what it
excuses is no more than dockerd needs), and what it is for is caught (a field of a newer version
in an older one, a null the document and dockerd do not have, a wrong type, an undocumented
success status)."""
from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from tests.support import swagger

TRANSCRIPTS = swagger.spec_dir().parent


def _exchanges() -> Iterator[tuple[str, str, str, int, str | None, str]]:
    """(file, method, path, status, content type, JSON body) of every exchange of the transcripts
    whose response body is shown whole (a trimmed one says so, or is no longer JSON)."""
    for f in sorted(TRANSCRIPTS.glob("*.md")):
        blocks = re.findall(r"^```(\w*)\n(.*?)^```", f.read_text(), re.S | re.M)
        req: list[str] | None = None
        resp: tuple[int, str | None] | None = None
        for lang, content in blocks:
            first = content.split("\n", 1)[0]
            if lang == "http" and re.match(r"^[A-Z]+ /", first):
                # only the exchanges of API 1.41 (the transcripts probe other versions too)
                req = first.split()[:2] if re.match(r"^[A-Z]+ /v1\.41/", first) else None
                resp = None
            elif lang == "http" and first.startswith("HTTP/1.1 ") and req:
                ct = re.search(r"^Content-Type: (.*)$", content, re.M | re.I)
                resp = (int(first.split()[1]), ct.group(1).strip() if ct else None)
            elif lang == "json" and req and resp:
                if "trimmed" not in content:
                    yield f.name, req[0], req[1], resp[0], resp[1], content
                resp = None


def test_dockerds_own_answers_match_its_document() -> None:
    if not TRANSCRIPTS.is_dir():
        pytest.fail(f"transcripts not found at {TRANSCRIPTS} (set ASYNCDOCK_SWAGGER_DIR)")
    spec = swagger.load("1.41")
    checked = 0
    found: list[str] = []
    for name, method, path, status, ctype, body in _exchanges():
        try:
            json.loads(body)
        except ValueError:
            if (method, spec.operation(method, path).template) not in swagger.STREAMED:  # type: ignore[union-attr]
                continue  # cut short in the transcript
        if spec.operation(method, path) is None:
            continue  # the transcripts' probes of paths that do not exist
        checked += 1
        found += [f"{name}: {m}" for m in spec.check(method, path, status, ctype, body.encode())]
    assert checked > 80, checked
    assert not found, "\n".join(found)


def _check(version: str, method: str, path: str, body: object, status: int = 200) -> list[str]:
    return [str(m) for m in swagger.load(version).check(method, path, status, "application/json",
                                                         json.dumps(body).encode())]


def test_a_field_of_a_newer_version_is_caught() -> None:
    vol = {"Name": "v", "Driver": "local", "Mountpoint": "/m", "Labels": {}, "Scope": "local", "Options": {}}
    assert _check("1.54", "GET", "/volumes/v", vol) == []
    # ClusterVolume came with 1.42: not a key of 1.41's Volume
    found = _check("1.41", "GET", "/v1.41/volumes/v", {**vol, "ClusterVolume": {}})
    assert found == ["1.41 GET /volumes/{name} 200 $: key 'ClusterVolume' is not documented at 1.41"]


def test_nulls_and_types() -> None:
    vol = {"Name": "v", "Driver": "local", "Mountpoint": "/m", "Labels": None, "Scope": "local", "Options": None}
    assert any("$.Labels: None is not of type 'object'" in m for m in _check("1.41", "GET", "/volumes/v", vol))
    # a null dockerd sends (an empty prune) passes, the same field of the wrong type does not
    assert _check("1.41", "POST", "/containers/prune", {"ContainersDeleted": None, "SpaceReclaimed": 0}) == []
    found = _check("1.41", "POST", "/containers/prune", {"ContainersDeleted": {}, "SpaceReclaimed": 0})
    assert found == ["1.41 POST /containers/prune 200 $.ContainersDeleted: {} is not of type 'array'"]


def test_statuses_and_error_bodies() -> None:
    # an error status a route does not list is still the one ErrorResponse
    assert _check("1.54", "POST", "/containers/x/pause", {"message": "not running"}, 409) == []
    assert _check("1.54", "POST", "/containers/x/pause", {"error": "not running"}, 409) == [
        "1.54 POST /containers/{id}/pause 409 $: 'message' is a required property",
        "1.54 POST /containers/{id}/pause 409 $: key 'error' is not documented at 1.54"]
    assert _check("1.54", "GET", "/containers/x/json", {}, 202)[0].endswith("status 202 is not documented "
                                                                             "(documented: 200, 404, 500)")


def test_paths_match_their_operations() -> None:
    spec = swagger.load("1.54")
    for path, template in (("/v1.54/images/json", "/images/json"),
                           ("/images/registry:5000/a/b:t/json", "/images/{name}/json"),
                           ("/containers/json?all=1", "/containers/json"),
                           ("/containers/abc/json", "/containers/{id}/json"),
                           ("/networks/prune", "/networks/prune")):
        op = spec.operation("GET" if "prune" not in path else "POST", path)
        assert op is not None and op.template == template, (path, op)


def test_corrections_name_their_evidence() -> None:
    for c in (*swagger.CORRECTIONS, *swagger.SCHEMA_FIXES, *swagger.UNDOCUMENTED_KEYS):
        assert c.evidence and c.versions, c
