"""/events against a real daemon: Docker's semantics through the docker CLI and docker-py, the
journal across restarts and crashes, and asyncdock's CLI beside the docker CLI."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.support.daemon import DOCKER_CLI, Daemon


def _asyncdock(d: Daemon, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "asyncdock"
    return subprocess.run([str(exe), *args], env={**os.environ, **d.env}, capture_output=True, text=True,
                          timeout=120, check=check)


# The docker CLI's human ages: "Less than a second ago", "3 seconds ago", "About a minute ago", ...
_AGO = re.compile(r"(Less than a second|About an? \w+|\d+ \w+) ago")


def _events(d: Daemon, *args: str) -> list[dict]:
    out = d.docker("events", *args, "--format", "{{json .}}").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_docker_events_window_filters_and_docker_py(shared_daemon: Daemon) -> None:
    d = shared_daemon
    t0 = int(time.time()) - 1
    name = f"evw{os.getpid()}"
    cid = d.docker("create", "--name", name, "--label", "tier=web", "busybox", "true").stdout.strip()
    d.docker("rm", name)
    until = str(int(time.time()) + 1)
    time.sleep(1.1)  # until must be in the past for the window to end by itself
    evs = _events(d, "--since", str(t0), "--until", until, "--filter", f"container={name}")
    assert [e["Action"] for e in evs] == ["create", "destroy"]
    e = evs[0]
    assert e["status"] == "create" and e["id"] == cid and e["from"] == "busybox" and e["scope"] == "local"
    assert e["Actor"]["Attributes"]["name"] == name and e["Actor"]["Attributes"]["tier"] == "web"
    assert isinstance(e["timeNano"], int) and e["time"] == e["timeNano"] // 10**9
    assert _events(d, "--since", str(t0), "--until", until, "--filter", "label=tier=web",
                   "--filter", "event=destroy")[0]["id"] == cid
    assert _events(d, "--since", str(t0), "--until", until, "--filter", f"container={name}",
                   "--filter", "type=image") == []
    assert all(ev["Type"] == "daemon" for ev in _events(d, "--since", "0", "--until", until, "--filter", "type=daemon"))
    # docker-py: list-form filters, decode=True
    client = d.client()
    got = list(client.events(since=t0, until=int(until), decode=True, filters={"container": [cid[:12]]}))
    assert [g["Action"] for g in got] == ["create", "destroy"]
    assert [g["timeNano"] for g in got] == [ev["timeNano"] for ev in evs]
    assert all(g["x-asyncdock-seq"] for g in got)  # the raw API carries the cursor


def test_until_in_future_streams_live_then_ends(shared_daemon: Daemon) -> None:
    d = shared_daemon
    name = f"evf{os.getpid()}"
    until = time.time() + 4
    proc = subprocess.Popen([DOCKER_CLI, "events",
                             "--since", str(int(time.time()) - 1), "--until", f"{until:.3f}",
                             "--filter", f"container={name}", "--format", "{{.Action}}"],
                            env={**os.environ, **d.env}, stdout=subprocess.PIPE, text=True)
    d.docker("create", "--name", name, "busybox", "true")
    d.docker("rm", name)
    out, _ = proc.communicate(timeout=30)
    assert time.time() >= until - 0.5
    assert out.split() == ["create", "destroy"]


def test_replay_across_restart_and_resume_across_kill9(daemon: Daemon) -> None:
    d = daemon
    t0 = int(time.time()) - 1
    d.docker("create", "--name", "before", "busybox", "true")
    d.restart()
    d.docker("create", "--name", "after", "busybox", "true")
    until = str(int(time.time()) + 1)
    time.sleep(1.1)
    evs = _events(d, "--since", str(t0), "--until", until, "--filter", "type=container")
    assert [(e["Action"], e["Actor"]["Attributes"]["name"]) for e in evs] == [("create", "before"), ("create", "after")]
    _, body = d.request("GET", f"/v1.41/events?since=0&until={until}")
    seqs = [json.loads(x)["x-asyncdock-seq"] for x in body.splitlines() if x.strip()]
    assert len(seqs) == len(set(seqs))
    # A cursor client saw everything up to here; the daemon crashes; more happens after.
    cursor = seqs[-1]
    d.kill9()
    d.start()
    d.docker("rm", "before")
    status, body = d.request("GET", f"/v1.41/events?x-asyncdock-after={cursor}&until={int(time.time()) + 1}")
    got = [json.loads(x) for x in body.splitlines() if x.strip()]
    epochs = {int(g["x-asyncdock-seq"].split("-")[0]) for g in got}
    assert status == 200 and epochs == {int(cursor.split("-")[0]) + 1}  # new epoch after the crash
    assert [g["Action"] for g in got if g["Type"] == "container"] == ["destroy"]
    assert not {g["x-asyncdock-seq"] for g in got} & set(seqs)  # nothing repeated


def test_torn_record_is_dropped_after_restart(daemon: Daemon) -> None:
    d = daemon
    d.docker("create", "--name", "torn", "busybox", "true")
    d.kill9()
    seg = sorted((d.data_root / "events").glob("*.seg"))
    last = seg[-1]
    os.truncate(last, last.stat().st_size - 5)
    d.start()
    until = str(int(time.time()) + 1)
    time.sleep(1.1)
    evs = _events(d, "--since", "0", "--until", until)
    assert ("container", "create") not in [(e["Type"], e["Action"]) for e in evs]  # the torn one
    assert evs[-1]["Type"] == "daemon" and evs[-1]["Action"] == "start"


def test_cli_templates_match_docker_cli(shared_daemon: Daemon) -> None:
    """`--format` is Go's text/template for more than `{{.Field}}`: field chains, functions,
    if/range, Go's printing of maps, nil and booleans, as the docker CLI renders them."""
    d = shared_daemon
    name = f"tplcli{os.getpid()}"
    d.docker("create", "--name", name, "--label", "a=b", "--label", "c=d", "-e", "X=1", "busybox", "true")
    try:
        for tpl in ("{{.State.Running}}", "{{.State.Status}} {{.Name}} {{.State.Pid}}",
                    "{{json .Config.Labels}}", "{{.Config.Labels}}", "{{index .Config.Labels \"a\"}}",
                    "{{range .Config.Env}}[{{.}}]{{end}}", "{{join .Config.Cmd \",\"}}",
                    "{{if .State.Running}}up{{else}}down{{end}}", "{{.Name | upper}}",
                    "{{with .HostConfig}}{{.NetworkMode}}{{end}}", "{{len .Config.Labels}}",
                    "{{- .Id -}}  {{printf \"%.5s|%s\" .Id .Path}}"):
            assert _asyncdock(d, "inspect", "-f", tpl, name).stdout == d.docker("inspect", "-f", tpl, name).stdout, tpl
        tpl = "{{.Server.Version}} {{.Server.Os}}/{{.Server.Arch}}"
        assert _asyncdock(d, "version", "-f", tpl).stdout == d.docker("version", "-f", tpl).stdout
        for tpl, status in (("{{nosuchfunc .Id}}", 64), ("{{if .Id}}unclosed", 64), ("{{.NoSuchField}}", 1)):
            mine = _asyncdock(d, "inspect", "-f", tpl, name, check=False)
            theirs = d.docker("inspect", "-f", tpl, name, check=False)
            assert (mine.returncode, mine.stdout.strip()) == (theirs.returncode, theirs.stdout.strip()) == (status, ""), tpl
            assert mine.stderr.startswith("template parsing error: template: :1"), mine.stderr
            if status == 64:  # parse errors: the same words (run-time ones carry Go's column and type)
                assert mine.stderr == theirs.stderr
    finally:
        d.docker("rm", "-f", name)


def _table_cells(table: str) -> list[list[str]]:
    """The rows of a CLI table as cells (split at runs of 2+ spaces), ages masked."""
    return [re.split(r" {2,}", _AGO.sub("<age>", line).rstrip()) for line in table.splitlines()]


def _aligned(table: str) -> bool:
    """Every cell of every row starts where a column of the header starts (tabwriter's
    padding), empty cells aside."""
    lines = table.splitlines()
    starts = {m.start() for m in re.finditer(r"\S+(?: \S+)*", lines[0])}
    return all({m.start() for m in re.finditer(r"\S+(?: \S+)*", line)} <= starts for line in lines[1:])


def test_cli_matches_docker_cli(shared_daemon: Daemon) -> None:
    d = shared_daemon
    name = f"evcli{os.getpid()}"
    d.docker("create", "--name", name, "--label", "a=b", "busybox", "echo", "hello world from a long command")
    try:
        for args in (["ps", "-a"], ["ps", "-a", "-q"], ["ps", "-a", "--format", "{{.Names}}"],
                     ["ps", "-a", "--format", "table {{.ID}}\t{{.Names}}\t{{.Command}}"],
                     ["ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Command}}"], ["images"]):
            # CREATED ("2 seconds ago") ticks between the two commands, more often than not on a
            # loaded machine: compare with the ages masked, after checking ours is one. The
            # padding of a table follows its longest cell, so a tick from "Less than a second
            # ago" to "1 second ago" also moves every column after it: cells are compared.
            mine, theirs = _asyncdock(d, *args).stdout, d.docker(*args).stdout
            if "CREATED" in mine.partition("\n")[0]:
                assert _AGO.search(mine), mine
                assert _table_cells(mine) == _table_cells(theirs), args
                assert _aligned(mine), mine
            else:
                assert mine == theirs, args
        mine = json.loads(_asyncdock(d, "ps", "-a", "--filter", f"name={name}", "--format", "{{json .}}").stdout)
        theirs = json.loads(d.docker("ps", "-a", "--filter", f"name={name}", "--format", "{{json .}}").stdout)
        # the age ticks between the two commands, as in the tables above
        assert _AGO.fullmatch(mine.pop("RunningFor")) and _AGO.fullmatch(theirs.pop("RunningFor"))
        assert mine == theirs
        until = str(int(time.time()) + 1)
        time.sleep(1.1)
        assert (_asyncdock(d, "events", "--since", "0", "--until", until, "--filter", f"container={name}").stdout
                == d.docker("events", "--since", "0", "--until", until, "--filter", f"container={name}").stdout)
    finally:
        d.docker("rm", "-f", name)
