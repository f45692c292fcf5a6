"""`docker build` (the CLI 28 with DOCKER_BUILDKIT=0: the classic /build API) against asyncdock's
classic builder: the progress stream as dockerd writes it, every instruction's effect seen by
`docker inspect` / `docker run`, RUN failures, build args, stages, targets, heredoc and unknown
instruction refusals, `-q`, `docker build - < Dockerfile`, docker-py's images.build."""
from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Daemon

ENV = {"DOCKER_BUILDKIT": "0"}


def build(d: Daemon, ctx: Path, *args: str, check: bool = True, input: str | None = None) -> Any:  # noqa: A002
    if input is not None:
        return d.docker("build", *args, "-", input=input, check=check, env=ENV)
    return d.docker("build", *args, str(ctx), check=check, env=ENV)


def write(ctx: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = ctx / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return ctx


def inspect(d: Daemon, ref: str) -> dict[str, Any]:
    return json.loads(d.docker("image", "inspect", ref).stdout)[0]


def tag() -> str:
    return f"bt-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def names(d: Daemon) -> Any:
    made: list[str] = []
    yield made
    for ref in made:
        d.docker("rmi", "-f", ref, check=False)


def test_build_run_and_stream(d: Daemon, tmp_path: Path, names: list[str]) -> None:
    t = tag() + ":1"
    names.append(t)
    write(tmp_path, {"Dockerfile": "FROM busybox\nENV A=1\nRUN echo hello $A && echo oops >&2\nCMD [\"cat\", \"/x\"]\n"
                                   "RUN echo built > /x\n"})
    out = build(d, tmp_path, "-t", t).stdout
    lines = out.splitlines()
    assert "Step 1/5 : FROM busybox" in lines
    assert "Step 2/5 : ENV A=1" in lines
    assert "Step 3/5 : RUN echo hello $A && echo oops >&2" in lines
    assert "hello 1" in lines
    assert any(re.fullmatch(r" ---> Running in [0-9a-f]{12}", ln) for ln in lines)
    assert any(re.fullmatch(r" ---> Removed intermediate container [0-9a-f]{12}", ln) for ln in lines)
    m = re.search(r"^Successfully built ([0-9a-f]{12})$", out, re.M)
    assert m is not None
    assert f"Successfully tagged {t}" in lines
    info = inspect(d, t)
    assert info["Id"].startswith("sha256:" + m.group(1))
    assert info["Config"]["Cmd"] == ["cat", "/x"]
    assert "A=1" in info["Config"]["Env"]
    assert d.docker("run", "--rm", t).stdout == "built\n"
    hist = json.loads(d.docker("history", "--no-trunc", "--format", "{{json .}}", t).stdout.splitlines()[0])
    assert hist["CreatedBy"] == "/bin/sh -c echo built > /x"
    # no build container is left behind
    assert d.docker("ps", "-aq", "--filter", f"ancestor={t}").stdout == ""


def test_raw_stream_messages(d: Daemon, tmp_path: Path) -> None:
    """The wire: stream lines, the red stderr, aux with the ID, Docker's texts."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = b"FROM busybox\nRUN echo out; echo err >&2\n"
        ti = tarfile.TarInfo("Dockerfile")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    status, body = d.request("POST", "/v1.54/build?nocache=1&buildargs=%7B%22UNUSED%22%3A%22x%22%7D",
                             buf.getvalue(), {"Content-Type": "application/x-tar"}, timeout=120)
    assert status == 200
    msgs = [json.loads(x) for x in body.splitlines() if x.strip()]
    streams = [m.get("stream") for m in msgs]
    assert streams[0] == "Step 1/2 : FROM busybox\n"
    assert "out\n" in streams
    assert "\x1b[91merr\n\x1b[0m" in streams
    assert "\x1b[91m[Warning] One or more build-args [UNUSED] were not consumed\n\x1b[0m" in streams
    aux = [m["aux"]["ID"] for m in msgs if "aux" in m]
    assert len(aux) == 1 and aux[0].startswith("sha256:")
    d.docker("rmi", aux[0])


def test_run_failure(d: Daemon, tmp_path: Path) -> None:
    write(tmp_path, {"Dockerfile": "FROM busybox\nRUN exit 3\n"})
    p = build(d, tmp_path, "--force-rm", check=False)
    assert p.returncode == 3
    assert "The command '/bin/sh -c exit 3' returned a non-zero code: 3" in p.stderr


def test_heredoc_and_unknown_refused(d: Daemon, tmp_path: Path) -> None:
    write(tmp_path, {"Dockerfile": "FROM busybox\nRUN <<EOF\necho hi\nEOF\n"})
    p = build(d, tmp_path, check=False)
    assert p.returncode != 0
    assert "line 2" in p.stderr and "heredoc" in p.stderr
    write(tmp_path, {"Dockerfile": "FROM busybox\nFOO bar\n"})
    p = build(d, tmp_path, check=False)
    assert p.returncode != 0
    assert "unknown instruction: FOO" in p.stderr


def test_quiet_and_stdin(d: Daemon, tmp_path: Path) -> None:
    p = build(d, tmp_path, "-q", input="FROM busybox\nLABEL x=y\n")
    image_id = p.stdout.strip()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", image_id)
    assert inspect(d, image_id)["Config"]["Labels"] == {"x": "y"}
    d.docker("rmi", image_id)


def test_instructions_effects(d: Daemon, tmp_path: Path, names: list[str]) -> None:
    t = tag()
    names.append(t)
    df = (
        "ARG BASE=busybox\n"
        "FROM $BASE\n"
        "ARG V=def\n"
        "ENV GREETING=\"hello world\" OTHER=${V:-none}\n"
        "LABEL a=b \"c d\"=e\n"
        "WORKDIR /app\n"
        "WORKDIR sub\n"
        "USER 1000:1000\n"
        "EXPOSE 8080 53/udp\n"
        "VOLUME /data\n"
        "STOPSIGNAL SIGUSR1\n"
        "HEALTHCHECK --interval=5s --retries=2 CMD true\n"
        "SHELL [\"/bin/sh\", \"-ec\"]\n"
        "ONBUILD RUN echo triggered > /tmp/onbuild\n"
        "ENTRYPOINT [\"/bin/echo\"]\n"
        "CMD [\"$OTHER\"]\n"
        "RUN echo \"$V\" > /tmp/v\n"
    )
    write(tmp_path, {"Dockerfile": df})
    build(d, tmp_path, "-t", t, "--build-arg", "V=2")
    cfg = inspect(d, t)["Config"]
    assert "GREETING=hello world" in cfg["Env"] and "OTHER=2" in cfg["Env"]
    assert cfg["Labels"] == {"a": "b", "c d": "e"}
    assert cfg["WorkingDir"] == "/app/sub"
    assert cfg["User"] == "1000:1000"
    assert set(cfg["ExposedPorts"]) == {"8080/tcp", "53/udp"}
    assert set(cfg["Volumes"]) == {"/data"}
    assert cfg["StopSignal"] == "SIGUSR1"
    assert cfg["Healthcheck"]["Test"] == ["CMD-SHELL", "true"]
    assert cfg["Healthcheck"]["Interval"] == 5_000_000_000 and cfg["Healthcheck"]["Retries"] == 2
    assert cfg["Shell"] == ["/bin/sh", "-ec"]
    assert cfg["OnBuild"] == ["RUN echo triggered > /tmp/onbuild"]
    assert cfg["Entrypoint"] == ["/bin/echo"]
    assert cfg["Cmd"] == ["$OTHER"]
    assert d.docker("run", "--rm", "--user", "0", "--entrypoint", "cat", t, "/tmp/v").stdout == "2\n"
    hist = d.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", t).stdout.splitlines()
    assert hist[0] == '|1 V=2 /bin/sh -ec echo "$V" > /tmp/v'
    assert hist[1] == '/bin/sh -ec #(nop)  CMD ["$OTHER"]'
    assert "/bin/sh -c #(nop) WORKDIR /app/sub" in hist
    assert "/bin/sh -c #(nop)  EXPOSE 8080 53/udp" in hist
    # ONBUILD triggers run when the image is a FROM
    child = tag()
    names.append(child)
    write(tmp_path, {"Dockerfile": f"FROM {t}\n"})
    out = build(d, tmp_path, "-t", child).stdout
    assert "# Executing 1 build trigger" in out
    assert d.docker("run", "--rm", "--entrypoint", "cat", child, "/tmp/onbuild").stdout == "triggered\n"
    assert inspect(d, child)["Config"]["OnBuild"] is None


def test_multistage_target_label_and_args(d: Daemon, tmp_path: Path, names: list[str]) -> None:
    t = tag()
    names.append(t)
    write(tmp_path, {"sub/Dockerfile": (
        "FROM busybox AS base\nARG V=1\nRUN echo v$V > /v\n"
        "FROM busybox AS test\nCOPY --from=base /v /copied\nRUN cat /copied\n"
        "FROM busybox\nRUN echo never\n")})
    out = build(d, tmp_path, "-f", str(tmp_path / "sub/Dockerfile"), "--target", "test", "--build-arg", "V=2",
                "--label", "a=b", "-t", t).stdout
    assert "never" not in out
    assert "Step 7/7 : LABEL a=b" in out.splitlines()  # the `labels` parameter: a step of its own
    assert "v2" in out.splitlines()
    info = inspect(d, t)
    assert info["Config"]["Labels"] == {"a": "b"}
    assert d.docker("run", "--rm", t, "cat", "/copied").stdout == "v2\n"
    p = build(d, tmp_path, "-f", str(tmp_path / "sub/Dockerfile"), "--target", "nope", check=False)
    assert "failed to reach build target nope in Dockerfile" in p.stderr


def test_copy_and_no_cache_pull(d: Daemon, tmp_path: Path, names: list[str]) -> None:
    t = tag()
    names.append(t)
    write(tmp_path, {"Dockerfile": "FROM busybox\nCOPY --chown=app:users --chmod=640 a.txt /dst/\n"
                                   "ADD b.txt dir/ /y/\n",
                     "a.txt": "A\n", "b.txt": "B\n", "dir/c.txt": "C\n"})
    out = build(d, tmp_path, "--no-cache", "--pull", "-t", t).stdout
    assert "Using cache" not in out
    assert d.docker("run", "--rm", t, "stat", "-c", "%u %g %a", "/dst/a.txt").stdout == "1000 100 640\n"
    assert d.docker("run", "--rm", t, "cat", "/y/b.txt", "/y/c.txt").stdout == "B\nC\n"
    hist = d.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", t).stdout.splitlines()
    assert re.fullmatch(r"/bin/sh -c #\(nop\) ADD multi:[0-9a-f]{64} in /y/ ", hist[0]), hist[0]
    assert re.fullmatch(r"/bin/sh -c #\(nop\) COPY file:[0-9a-f]{64} in /dst/ ", hist[1]), hist[1]


def test_docker_py_build(d: Daemon, tmp_path: Path, names: list[str]) -> None:
    t = tag() + ":py"
    names.append(t)
    write(tmp_path, {"Dockerfile": "FROM busybox\nRUN echo py > /p\n"})
    client = d.client()
    image, logs = client.images.build(path=str(tmp_path), tag=t, rm=True)
    assert t in image.tags
    assert any("Successfully built" in (x.get("stream") or "") for x in logs)
    assert d.docker("run", "--rm", t, "cat", "/p").stdout == "py\n"


def test_bad_params(d: Daemon) -> None:
    status, body = d.request("POST", "/v1.54/build?squash=1", b"", {"Content-Type": "application/x-tar"})
    assert status == 400 and b"experimental" in body
    status, body = d.request("POST", "/v1.54/build?platform=windows/amd64", b"", {"Content-Type": "application/x-tar"})
    assert status == 400 and b"windows/amd64" in body


def test_asyncdock_client_build(d: Daemon, tmp_path: Path, names: list[str]) -> None:
    import asyncio

    import asyncdock
    from asyncdock.base.errors import EngineError

    t = tag() + ":client"
    names.append(t)
    write(tmp_path, {"Dockerfile": "FROM busybox\nARG X\nRUN echo $X > /x\n"})

    async def main() -> tuple[list[dict[str, Any]], BaseException | None]:
        async with asyncdock.Client(d.host) as client:
            msgs = [m async for m in client.images.build(tmp_path, tag=t, buildargs={"X": "viaclient"})]
            failure: BaseException | None = None
            try:
                async for _ in client.images.build(b"", tag=t):
                    pass
            except Exception as e:  # noqa: BLE001 - the assertion below looks at it
                failure = e
            bad = tmp_path / "bad"
            write(bad, {"Dockerfile": "FROM busybox\nRUN exit 7\n"})
            try:
                async for _ in client.images.build(bad, forcerm=True):
                    pass
            except EngineError as e:
                assert getattr(e, "code", None) == 7 and "returned a non-zero code: 7" in str(e)
            else:
                raise AssertionError("a failed RUN did not raise")
            return msgs, failure

    msgs, failure = asyncio.run(main())
    assert any(m.get("aux", {}).get("ID", "").startswith("sha256:") for m in msgs)
    assert any(m.get("stream") == f"Successfully tagged {t}\n" for m in msgs)
    assert failure is not None
    assert d.docker("run", "--rm", t, "cat", "/x").stdout == "viaclient\n"


def test_client_hangup_cancels_and_removes_containers(d: Daemon) -> None:
    """The client going away mid-RUN cancels the build: its container is killed and removed."""
    import io
    import socket
    import subprocess
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = b"FROM busybox\nRUN echo started && sleep 600\n"
        ti = tarfile.TarInfo("Dockerfile")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    body = buf.getvalue()
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(60)
    s.connect(str(d.socket))
    s.sendall(b"POST /v1.54/build?nocache=1 HTTP/1.1\r\nHost: d\r\nContent-Type: application/x-tar\r\n"
              b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
    got = b""
    while b'"stream":"started\\n"' not in got:
        chunk = s.recv(65536)
        assert chunk, got
        got += chunk
    m = re.search(rb"Running in ([0-9a-f]{12})", got)
    assert m is not None
    cid = m.group(1).decode()
    s.close()
    # the engine's destroy event of that container (--since 0: also if it came already)
    proc = subprocess.Popen(
        [d.docker_cli, "events", "--since", "0", "--filter", "event=destroy", "--filter", f"container={cid}",
         "--format", "{{.ID}}"], env=d.env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
    finally:
        proc.kill()
        proc.wait()
    assert line.startswith(cid)
    assert d.docker("ps", "-aq", "--filter", f"id={cid}").stdout == ""


def test_remote_dockerfile_url(d: Daemon, tmp_path: Path, names: list[str]) -> None:
    """`remote=` an http URL of a Dockerfile on loopback: fetched by the engine, built."""
    import functools
    import http.server
    import threading
    from urllib.parse import quote

    write(tmp_path, {"Dockerfile": "FROM busybox\nRUN echo remote > /r\n"})
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    t = tag()
    names.append(t)
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/Dockerfile"
        status, body = d.request("POST", f"/v1.54/build?remote={quote(url, safe='')}&t={t}", b"", timeout=120)
    finally:
        srv.shutdown()
        srv.server_close()
    assert status == 200, body
    assert b"Successfully tagged" in body, body
    assert d.docker("run", "--rm", t, "cat", "/r").stdout == "remote\n"
