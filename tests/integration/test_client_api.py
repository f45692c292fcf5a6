"""The Python API examples in docs/python-api.md run as written, and the client's behaviour
against a real daemon; bench/events.py runs."""
from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import asyncdock
from tests.support.daemon import Daemon

ROOT = Path(__file__).resolve().parents[2]


def _examples(doc: str = "docs/python-api.md") -> list[str]:
    text = (ROOT / doc).read_text()
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.mark.parametrize("doc", ["docs/python-api.md", "README.md"])
def test_readme_client_example_runs_as_written(shared_daemon: Daemon, doc: str) -> None:
    code = _examples(doc)[0]
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **shared_daemon.env},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "WaitResult(status_code=0, error=None) b'hi\\n'"
    assert re.match(r"^\S+ \d+-\d+$", lines[1])


def test_client_errors_and_resources(shared_daemon: Daemon) -> None:
    async def go() -> None:
        async with asyncdock.Client(shared_daemon.host) as client:
            with pytest.raises(asyncdock.NotFound) as e:
                await client.containers.get("no-such-thing")
            assert isinstance(e.value, asyncdock.APIError) and e.value.status == 404
            c = await client.containers.create("busybox", ["sh", "-c", "echo out; echo err >&2; exit 3"],
                                               name=f"cl{os.getpid()}")
            with pytest.raises(asyncdock.Conflict):
                await client.containers.create("busybox", ["true"], name=f"cl{os.getpid()}")
            await c.start()
            assert (await c.wait()).status_code == 3
            assert b"out\n" in await c.logs() and b"err\n" in await c.logs()
            assert c.id in [s.id for s in await client.containers.list(all=True)]
            await c.remove()
            assert [p async for p in client.images.pull("busybox")][-1].status.startswith("Status:")
    asyncio.run(go())


def test_bench_events_runs(shared_daemon: Daemon) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "events.py"), "--host", str(shared_daemon.socket),
                          "--rounds", "10"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "median" in out.stdout
    print(out.stdout)
