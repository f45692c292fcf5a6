"""Fuzz every implemented route with schemathesis against moby's swagger document for API 1.54
(issue 12, item 7; 1.41 until issue 14, still run with ASYNCDOCK_FUZZ_VERSION=1.41): no 5xx (but
a 501 naming what is not built yet), no error that is not one line of JSON, no traceback, no
request left unanswered, the daemon alive at the end.

Safety: the daemon runs in a network namespace of its own with only `lo` in it, so whatever the
fuzzer sends (a pull or a login naming any registry host, a network with any subnet), nothing
can leave this machine and nothing on the host's networks is touched; a registry host that is
not loopback fails at once (no route). The schemathesis CLI speaks TCP, so it reaches the Unix
socket through a forwarder on 127.0.0.1 (tests/support/tcpforward.py).

The run in the suite is bounded (few examples per operation, a time budget, a fixed seed,
deterministic generation). A longer run by hand:
    ASYNCDOCK_FUZZ_EXAMPLES=100 ASYNCDOCK_FUZZ_TIME=1200 .venv/bin/python -m pytest \
        tests/integration/test_api_fuzz.py -q -s
"""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import swagger
from tests.support.daemon import Daemon
from tests.support.tcpforward import forward_tcp_to_unix

ROOT = Path(__file__).resolve().parents[2]
# The version whose document drives the fuzzer (the newest in the suite: it holds every route
# of the older ones and the newer ones besides; ASYNCDOCK_FUZZ_VERSION=1.41 for the old one).
VERSION = os.environ.get("ASYNCDOCK_FUZZ_VERSION", "1.54")
# moby's document of it from ../shared/ beside the checkout (as CI lays it), or ASYNCDOCK_FUZZ_SPEC
SPEC = Path(os.environ.get("ASYNCDOCK_FUZZ_SPEC", swagger.spec_path(VERSION)))
EXAMPLES = int(os.environ.get("ASYNCDOCK_FUZZ_EXAMPLES", "4"))
TIME_BUDGET = int(os.environ.get("ASYNCDOCK_FUZZ_TIME", "75"))
SEED = int(os.environ.get("ASYNCDOCK_FUZZ_SEED", "20261207"))

# Left out, and why: GET /events is an endless stream by design (until the client goes away)
# unless `until` is given, so every generated request without it would count as a hang.
EXCLUDED_PATHS = ("/events",)
# 500s judged truthful, "METHOD /path-template|regex of the message": a pull or a login whose
# registry cannot be reached is a 500 from dockerd too (`Get "https://host/v2/": dial tcp: ...`),
# and here no registry can be reached at all.
ALLOWED_500 = (
    'POST /images/create|^Get "https?://[^"]+/v2/": (dial tcp|i/o timeout)',
    'POST /auth|^Get "https?://[^"]+/v2/": (dial tcp|i/o timeout)',
)


class IsolatedDaemon(Daemon):
    """The daemon in a new network namespace holding only `lo`: it cannot reach anything but
    itself. Its API socket is a file, so the test still reaches it."""

    def command(self) -> list[str]:
        return ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *super().command()]


def _routes_in_netns(pid: int) -> list[str]:
    """Destinations of the IPv4 routes in the daemon's namespace, as hex (00000000 = default)."""
    lines = Path(f"/proc/{pid}/net/route").read_text().splitlines()[1:]
    return [line.split()[1] for line in lines if line.strip()]


def _links_in_netns(pid: int) -> list[str]:
    lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
    return [line.split(":")[0].strip() for line in lines]


def test_fuzz_every_route(tmp_path: Path) -> None:
    if not SPEC.exists():
        pytest.fail(f"moby's swagger document not found at {SPEC} (set ASYNCDOCK_FUZZ_SPEC)")
    d = IsolatedDaemon({})  # no registry mirror: there is no registry to reach
    problems: list[str] = []
    try:
        d.start()
        assert d.proc is not None
        pid = d.proc.pid
        assert _links_in_netns(pid) == ["lo"], _links_in_netns(pid)
        assert "00000000" not in _routes_in_netns(pid)
        # a registry host that is not loopback fails at once, with dockerd's truthful 500
        for ref in ("registry.example.com/x", "192.0.2.1:5000/x", "busybox"):
            start = time.monotonic()
            status, body = d.request("POST", f"/v{VERSION}/images/create?fromImage={ref}&tag=1", timeout=20)
            assert time.monotonic() - start < 5, f"a pull of {ref} from no reachable registry must fail at once"
            assert status == 500 and b'/v2/\\": dial tcp' in body, (ref, status, body)

        ndjson = tmp_path / "events.ndjson"
        env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.support.fuzz_checks",
               "ASYNCDOCK_FUZZ_ALLOWED_500": json.dumps(ALLOWED_500), "PYTHONPATH": str(ROOT)}
        with forward_tcp_to_unix(str(d.socket)) as port:
            cmd = [str(Path(sys.executable).parent / "st"), "run", str(SPEC),
                   "--url", f"http://127.0.0.1:{port}/v{VERSION}",
                   "--checks", "engine_error_shape",
                   "--phases", "examples,coverage,fuzzing",
                   "--max-examples", str(EXAMPLES), "--seed", str(SEED), "--generation-deterministic",
                   "--no-shrink",
                   "--max-time", str(TIME_BUDGET), "--request-timeout", "20", "--workers", "1",
                   "--suppress-health-check", "all", "--continue-on-failure", "--no-color",
                   "--report", "ndjson", "--report-ndjson-path", str(ndjson)]
            for path in EXCLUDED_PATHS:
                cmd += ["--exclude-path", path]
            # run where its cache (.schemathesis/) lands in the test's own directory
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIME_BUDGET + 240, env=env,
                                  cwd=tmp_path)
        summary = _summarize(ndjson)
        print(f"\nfuzz: {summary}")
        out = proc.stdout[-6000:] + proc.stderr[-2000:]
        assert summary["requests"] > 0, out
        assert d.running and d.ping(), "daemon died or stopped answering during the fuzz run\n" + d.log_tail()
        assert not summary["timeouts"], f"requests left unanswered: {summary['timeouts']}\n{out}"
        assert proc.returncode == 0, out
        # nothing could reach out: whatever networks the fuzzer created, still no way out
        assert "00000000" not in _routes_in_netns(pid)
        log = d.log_path.read_text(errors="replace")
        assert "Traceback" not in log, "a traceback in the daemon log (not at debug level)\n" + d.log_tail()
    finally:
        problems = d.close()
    assert not problems, problems


def _summarize(ndjson: Path) -> dict[str, object]:
    """Counts from schemathesis's ndjson events: requests, status classes, statuses, requests
    that got no answer, and the 5xx other than 501 by operation (each judged by the checks)."""
    classes: collections.Counter[str] = collections.Counter()
    statuses: collections.Counter[int] = collections.Counter()
    timeouts: list[str] = []
    other_5xx: collections.Counter[str] = collections.Counter()
    if ndjson.exists():
        for line in ndjson.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            _walk(event, classes, statuses, timeouts, other_5xx)
    return {"requests": sum(classes.values()) + len(timeouts), "classes": dict(sorted(classes.items())),
            "statuses": dict(sorted(statuses.items())), "timeouts": timeouts[:20],
            "5xx_other_than_501": dict(other_5xx)}


def _walk(node: object, classes: collections.Counter[str], statuses: collections.Counter[int],
          timeouts: list[str], other_5xx: collections.Counter[str]) -> None:
    if isinstance(node, dict):
        resp = node.get("response")
        req = node.get("request")
        if isinstance(req, dict) and "uri" in req and "response" in node:
            if isinstance(resp, dict) and isinstance(resp.get("status_code"), int):
                code = resp["status_code"]
                classes[f"{code // 100}xx"] += 1
                statuses[code] += 1
                if code >= 500 and code != 501:
                    path = str(req["uri"]).split("?", 1)[0].split(f"/v{VERSION}", 1)[-1]
                    other_5xx[f"{code} {req.get('method')} {path}"] += 1
            else:
                timeouts.append(f"{req.get('method')} {req.get('uri')}")
            return
        for v in node.values():
            _walk(v, classes, statuses, timeouts, other_5xx)
    elif isinstance(node, list):
        for v in node:
            _walk(v, classes, statuses, timeouts, other_5xx)
