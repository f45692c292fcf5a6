"""`kill -9` of the daemon in the middle of concurrent work, then a restart, for a number of
rounds: what the client was told survives, nothing is left in the kernel or on disk that the
engine does not know, and the daemon runs containers again.

Every round draws a few operations from a seeded generator (create+start, `run -d` on a user
network with a volume, pulls of images that are not there, never pulled or removed by an
earlier round, removals of containers and images, network and volume create/remove), runs
them at once from threads over the raw API and kills the daemon with SIGKILL once a drawn
number of them have answered plus a drawn delay of at most 100 ms. The client's ledger (what
it was told succeeded or failed; what was in flight is either) is then checked against the
restarted daemon.

ASYNCDOCK_CRASH_SEED and ASYNCDOCK_CRASH_ROUNDS change the seed and the number of rounds; a
failure names both and the round's plan.
"""
from __future__ import annotations

import http.client
import json
import os
import random
import subprocess
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

from tests.support.daemon import Daemon, mounts_under
from tests.support.leaks import EngineView, chain_ids, snapshot_leftovers, unknown_to_engine
from tests.support.process import WaitTimeout, wait_until

SEED = int(os.environ.get("ASYNCDOCK_CRASH_SEED", "1207"))
ROUNDS = int(os.environ.get("ASYNCDOCK_CRASH_ROUNDS", "20"))
API = "/v1.41"
LABEL = "asyncdock.test.crash"
# Small test images (tests/support/imagebuild.py) that each pull really downloads and unpacks.
PULLABLE = ("layers", "hardlinks", "zstd", "configured")
BUSYBOX = "busybox"
# The kill comes once a drawn number of a round's operations answered, plus a drawn delay of
# at most this (the delay is the kill moment itself, not a wait for a result). Operations take
# tens to hundreds of ms: short delays catch most of them in flight.
MAX_KILL_DELAY = 0.1


class Gone(Exception):
    """The daemon went away in the middle of a request: its outcome is unknown."""


def call(d: Daemon, method: str, path: str, body: dict[str, Any] | None = None,
         timeout: float = 60) -> tuple[int, Any]:
    try:
        status, raw = d.request(method, API + path, body, timeout=timeout)
    except (OSError, http.client.HTTPException) as e:
        raise Gone(f"{method} {path}: {e!r}") from None
    if not raw.strip():
        return status, None
    try:
        return status, json.loads(raw)
    except ValueError:
        # a streamed answer (pull progress): one JSON object per line
        return status, [json.loads(line) for line in raw.splitlines() if line.strip()]


# -- the client's ledger ------------------------------------------------------------------------

YES, NO, MAYBE = "yes", "no", "maybe"  # exists, does not, either (the answer never came)
# started: a container killed by a removal the crash cut short. The kill marks it stopped by
# hand (Docker's HasBeenManuallyStopped, set by rm -f's kill too), so its policy no longer
# restarts it: it stays exited, with whatever code the kill gave.
STOPPED = "stopped"


@dataclass
class ContainerFacts:
    always: bool = False  # restart policy
    started: str = NO  # YES: told started; MAYBE: start sent, no answer
    exists: str = YES


@dataclass
class Ledger:
    containers: dict[str, ContainerFacts] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=lambda: {BUSYBOX: YES})
    networks: dict[str, str] = field(default_factory=dict)
    volumes: dict[str, str] = field(default_factory=dict)
    pulled_now: set[str] = field(default_factory=set)  # pulls told done this round
    lock: threading.Lock = field(default_factory=threading.Lock)

    def present(self, kind: dict[str, str]) -> list[str]:
        return sorted(k for k, v in kind.items() if v == YES)


def _outcome(status: int, ok: tuple[int, ...]) -> str:
    return YES if status in ok else NO


# -- operations --------------------------------------------------------------------------------

Op = Callable[[], None]


class Work:
    """Builds one round's operations from the ledger; each records what the client was told."""

    def __init__(self, d: Daemon, ledger: Ledger, rng: random.Random, rnd: int) -> None:
        self.d, self.ledger, self.rng, self.rnd = d, ledger, rng, rnd
        self.n = 0
        self.used: set[str] = set()  # objects an operation of this round works on

    def _name(self, kind: str) -> str:
        self.n += 1
        return f"crash{self.rnd}{kind}{self.n}"

    def _create_start(self, body: dict[str, Any], start: bool, always: bool) -> None:
        body = {"Image": BUSYBOX, "Cmd": ["sleep", "600"], "Labels": {LABEL: "1"}, **body}
        hc = body.setdefault("HostConfig", {})
        if always:
            hc["RestartPolicy"] = {"Name": "always"}
        status, out = call(self.d, "POST", "/containers/create", body)
        if status != 201:
            raise AssertionError(f"create answered {status}: {out}")
        cid = out["Id"]
        facts = ContainerFacts(always=always)
        with self.ledger.lock:
            self.ledger.containers[cid] = facts
        if not start:
            return
        facts.started = MAYBE
        status, out = call(self.d, "POST", f"/containers/{cid}/start")
        if status != 204:
            raise AssertionError(f"start answered {status}: {out}")
        facts.started = YES

    def run(self, always: bool) -> Op:
        return lambda: self._create_start({}, True, always)

    def create(self) -> Op:
        return lambda: self._create_start({}, False, False)

    def net_run(self) -> Op:
        """`docker run -d --network NET -v VOL:/data`: on a network that exists (or a new one)."""
        nets = self.ledger.present(self.ledger.networks)
        nets = [n for n in nets if n not in self.used]
        net = self.rng.choice(nets) if nets and self.rng.random() < 0.7 else None
        if net is not None:
            self.used.add(net)  # not removed by another operation of the round
        vol = self._name("v")
        new_net = self._name("n") if net is None else None
        always = self.rng.random() < 0.25

        def op() -> None:
            if new_net is not None:
                self._net_create(new_net)
            self._vol_create(vol)
            self._create_start({"HostConfig": {"NetworkMode": net or new_net, "Binds": [f"{vol}:/data"]}},
                               True, always)
        return op

    def _net_create(self, name: str) -> None:
        self.ledger.networks[name] = MAYBE
        status, out = call(self.d, "POST", "/networks/create", {"Name": name, "Driver": "bridge"})
        self.ledger.networks[name] = _outcome(status, (201,))
        if status != 201:
            raise AssertionError(f"network create answered {status}: {out}")

    def _vol_create(self, name: str) -> None:
        self.ledger.volumes[name] = MAYBE
        status, out = call(self.d, "POST", "/volumes/create", {"Name": name})
        self.ledger.volumes[name] = _outcome(status, (201,))
        if status != 201:
            raise AssertionError(f"volume create answered {status}: {out}")

    def net_create(self) -> Op:
        name = self._name("n")
        return lambda: self._net_create(name)

    def vol_create(self) -> Op:
        name = self._name("v")
        return lambda: self._vol_create(name)

    def _remove(self, kind: dict[str, str], path: str, ok: tuple[int, ...], refused: tuple[int, ...]) -> Op:
        name = path.rsplit("/", 1)[-1].split("?")[0]

        def op() -> None:
            kind[name] = MAYBE
            status, out = call(self.d, "DELETE", path)
            if status in ok:
                kind[name] = NO
            elif status in refused:  # in use: told it stays
                kind[name] = YES
            else:
                raise AssertionError(f"DELETE {path} answered {status}: {out}")
        return op

    def net_rm(self, name: str) -> Op:
        return self._remove(self.ledger.networks, f"/networks/{name}", (204,), (403, 409))

    def vol_rm(self, name: str) -> Op:
        return self._remove(self.ledger.volumes, f"/volumes/{name}", (204,), (409,))

    def rmi(self, name: str) -> Op:
        return self._remove(self.ledger.images, f"/images/{name}", (200,), (409,))

    def rm(self, cid: str) -> Op:
        facts = self.ledger.containers[cid]

        def op() -> None:
            facts.exists = MAYBE
            status, out = call(self.d, "DELETE", f"/containers/{cid}?force=1&v=1")
            if status != 204:
                raise AssertionError(f"rm -f answered {status}: {out}")
            facts.exists = NO
        return op

    def pull(self, image: str) -> Op:
        def op() -> None:
            self.ledger.images[image] = MAYBE
            status, out = call(self.d, "POST", f"/images/create?fromImage={image}&tag=latest", timeout=120)
            errors = [m for m in out or [] if isinstance(m, dict) and m.get("error")]
            if status != 200 or errors:
                raise AssertionError(f"pull of {image} answered {status}: {errors or out}")
            self.ledger.images[image] = YES
            self.ledger.pulled_now.add(image)
        return op

    def plan(self) -> list[tuple[str, Op]]:
        """3 to 5 operations, no two on one object."""
        rng, led = self.rng, self.ledger
        alive = [c for c, f in sorted(led.containers.items()) if f.exists != NO]
        ops: list[tuple[str, Op]] = []
        used = self.used
        # keep the number of containers (each one recovered at every restart) small
        for cid in rng.sample(alive, k=min(len(alive), max(0, len(alive) - 5) + rng.randint(0, 1))):
            ops.append((f"rm {cid[:12]}", self.rm(cid)))
            used.add(cid)
        menu = ["run", "run", "create", "net_run", "net_run", "pull", "pull", "rmi", "net_create",
                "net_rm", "vol_create", "vol_rm"]
        while len(ops) < rng.randint(3, 5):
            what = rng.choice(menu)
            if what == "run":
                always = rng.random() < 0.25
                ops.append((f"run always={always}", self.run(always)))
            elif what == "create":
                ops.append(("create", self.create()))
            elif what == "net_run":
                ops.append(("net_run", self.net_run()))
            elif what == "pull":
                todo = [i for i in PULLABLE if led.images.get(i, NO) != YES and i not in used]
                if todo:
                    img = rng.choice(todo)
                    used.add(img)
                    ops.append((f"pull {img}", self.pull(img)))
            elif what == "rmi":
                todo = [i for i in led.present(led.images) if i != BUSYBOX and i not in used]
                if todo:
                    img = rng.choice(todo)
                    used.add(img)
                    ops.append((f"rmi {img}", self.rmi(img)))
            elif what == "net_create":
                ops.append(("network create", self.net_create()))
            elif what == "vol_create":
                ops.append(("volume create", self.vol_create()))
            elif what == "net_rm":
                todo = [n for n in led.present(led.networks) if n not in used]
                if todo:
                    n = rng.choice(todo)
                    used.add(n)
                    ops.append((f"network rm {n}", self.net_rm(n)))
            elif what == "vol_rm":
                todo = [v for v in led.present(led.volumes) if v not in used]
                if todo:
                    v = rng.choice(todo)
                    used.add(v)
                    ops.append((f"volume rm {v}", self.vol_rm(v)))
        return ops


# -- a round -----------------------------------------------------------------------------------

def _run_round(d: Daemon, ledger: Ledger, rng: random.Random, rnd: int) -> tuple[list[str], str, int]:
    ledger.pulled_now.clear()
    ops = Work(d, ledger, rng, rnd).plan()
    kill_after = rng.randrange(len(ops))  # answered operations before the kill
    delay = rng.uniform(0, MAX_KILL_DELAY)
    done = threading.Semaphore(0)
    failures: list[str] = []
    cut: list[str] = []

    def wrapped(label: str, op: Op) -> None:
        try:
            op()
        except Gone:
            cut.append(label)  # the kill came first: unknown outcome, recorded as MAYBE by the op
            return
        except AssertionError as e:
            failures.append(f"{label}: {e}")
        done.release()

    with ThreadPoolExecutor(len(ops)) as pool:
        futures = [pool.submit(wrapped, label, op) for label, op in ops]
        deadline = time.monotonic() + 60
        for _ in range(kill_after):
            if not done.acquire(timeout=max(0.0, deadline - time.monotonic())):
                break
        threading.Event().wait(delay)  # the kill moment (see MAX_KILL_DELAY)
        d.kill9()
        for f in futures:
            f.result(timeout=120)
    moment = f"kill after {kill_after} answered + {delay * 1000:.0f} ms"
    labels = [label for label, _ in ops]
    # what the daemon answered before the kill must be what a client expects
    assert not failures, f"{moment}; operations {labels}; refused: {failures}"
    return labels, moment + f" ({len(cut)} cut short)", len(cut)


# -- checks after the restart ------------------------------------------------------------------

SANE = {"created", "exited", "running"}


def _check_containers(d: Daemon, ledger: Ledger) -> dict[str, dict[str, Any]]:
    status, listed = call(d, "GET", "/containers/json?all=1&filters="
                          + urllib.parse.quote(json.dumps({"label": [LABEL]})))
    assert status == 200
    by_id = {c["Id"]: c for c in listed}
    for cid, c in by_id.items():
        # a create whose answer never came may have been committed: sane, and known from now on
        ledger.containers.setdefault(cid, ContainerFacts(exists=YES, started=MAYBE, always=False))
    problems = []
    for cid, f in ledger.containers.items():
        c = by_id.get(cid)
        if f.exists == NO:
            if c is not None:
                problems.append(f"{cid[:12]}: told removed, still listed ({c['State']})")
            continue
        if c is None:
            if f.exists == YES:
                problems.append(f"{cid[:12]}: told created, not listed")
            else:
                f.exists = NO
            continue
        removal_cut_short = f.exists == MAYBE
        f.exists = YES
        st, ins = call(d, "GET", f"/containers/{cid}/json")
        if st != 200:
            problems.append(f"{cid[:12]}: inspect answered {st}: {ins}")
            continue
        state = ins["State"]
        s = state["Status"]
        if removal_cut_short and s == "exited" and f.started != NO:
            f.started = STOPPED  # the rm's kill got there; the removal did not
        if s not in SANE or c["State"] != s:
            problems.append(f"{cid[:12]}: state {s!r} (list: {c['State']!r})")
        elif f.started == STOPPED:
            if s != "exited":
                problems.append(f"{cid[:12]}: killed by a removal cut short, recovered as {s}")
        elif f.started == YES and f.always and s != "running":
            problems.append(f"{cid[:12]}: restart=always, started, recovered as {s}")
        elif f.started == YES and not f.always and (s, state["ExitCode"]) != ("exited", 255):
            problems.append(f"{cid[:12]}: was running, recovered as {s} {state['ExitCode']}")
        elif f.started == NO and s != "created":
            problems.append(f"{cid[:12]}: never started, recovered as {s}")
        elif s == "running" and not f.always:
            problems.append(f"{cid[:12]}: running after the crash without a restart policy")
        if s == "running" and not state["Pid"]:
            problems.append(f"{cid[:12]}: running without a pid")
        if f.started == MAYBE and s != "created":
            f.started = YES  # it did start: from now on it is a container that was running
    assert not problems, "containers after the restart:\n  " + "\n  ".join(problems)
    return {cid: c for cid, c in by_id.items()}


def _check_objects(d: Daemon, ledger: Ledger) -> None:
    problems = []
    for kind, path, table in (("image", "/images/{}/json", ledger.images),
                              ("network", "/networks/{}", ledger.networks),
                              ("volume", "/volumes/{}", ledger.volumes)):
        for name, told in sorted(table.items()):
            status, out = call(d, "GET", path.format(name))
            if status not in (200, 404):
                problems.append(f"{kind} {name}: inspect answered {status}: {out}")
            elif told == YES and status != 200:
                problems.append(f"{kind} {name}: told there, inspect answered {status}")
            elif told == NO and status != 404:
                problems.append(f"{kind} {name}: told gone, still there")
            table[name] = YES if status == 200 else NO
    assert not problems, "images, networks, volumes after the restart:\n  " + "\n  ".join(problems)
    for img in sorted(ledger.pulled_now):
        d.docker("run", "--rm", img, "true")


def _image_layers(d: Daemon) -> set[str]:
    status, images = call(d, "GET", "/images/json")
    assert status == 200
    layers: set[str] = set()
    for img in images:
        status, ins = call(d, "GET", f"/images/{img['Id']}/json")
        assert status == 200, ins
        layers |= set(chain_ids(ins["RootFS"]["Layers"]))
    return layers


def _engine_view(d: Daemon, ledger: Ledger) -> EngineView:
    status, listed = call(d, "GET", "/containers/json?all=1")
    assert status == 200
    status, nets = call(d, "GET", "/networks")
    assert status == 200
    running = {c["Id"] for c in listed if c["State"] == "running"}
    keys = set()
    for cid in running:
        status, ins = call(d, "GET", f"/containers/{cid}/json")
        if status == 200 and ins["NetworkSettings"]["SandboxKey"]:
            keys.add(str(Path(ins["NetworkSettings"]["SandboxKey"]).resolve()))
    return EngineView(running=running, known=set(ledger.containers) | {c["Id"] for c in listed},
                      listed={c["Id"] for c in listed}, networks={n["Id"] for n in nets}, netns=keys)


def _check_no_leftovers(d: Daemon, ledger: Ledger) -> None:
    # The engine's background cleanups (after an exit, after rm) may still be running: wait.
    found: list[str] = []

    def clean() -> bool:
        view = _engine_view(d, ledger)
        found[:] = unknown_to_engine(d, view) + snapshot_leftovers(d, _image_layers(d), view.listed)
        return not found

    try:
        wait_until(clean, timeout=30, what="no leftovers the engine does not know")
    except WaitTimeout:
        raise AssertionError("left behind, unknown to the engine:\n  " + "\n  ".join(found)) from None


def test_kill9_during_concurrent_work(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory()
    d.docker("pull", "-q", BUSYBOX)
    rng = random.Random(SEED)
    ledger = Ledger()
    t0 = time.monotonic()
    plan: list[str] = []
    moment = ""
    rnd = cut = 0
    try:
        for rnd in range(ROUNDS):
            plan, moment, n = _run_round(d, ledger, rng, rnd)
            cut += n
            d.start()
            _check_containers(d, ledger)
            _check_objects(d, ledger)
            _check_no_leftovers(d, ledger)
            d.docker("run", "--rm", BUSYBOX, "true")
    except BaseException as e:
        raise AssertionError(
            f"seed {SEED} (ASYNCDOCK_CRASH_SEED), round {rnd} of {ROUNDS}, {moment}; "
            f"operations: {plan}\n{e}\n{d.log_tail(60)}") from e
    # the containers without a stop signal handler would hold the daemon's stop for 10 s each
    ids = d.docker("ps", "-aq", "--no-trunc").stdout.split()
    if ids:
        d.docker("rm", "-f", *ids)
    print(f"{ROUNDS} rounds of kill -9 survived in {time.monotonic() - t0:.0f}s (seed {SEED}), "
          f"{cut} operations cut short by the kill")


# -- focused: states a crash leaves, made on purpose -------------------------------------------

def _mount_tmpfs(point: Path) -> None:
    point.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(point)], check=True, timeout=30)


def test_start_unmounts_what_a_crashed_create_and_volumes_left(daemon: Daemon) -> None:
    """A crash in the middle of a create's copy-up into a new volume leaves the container's
    snapshot mounted under <exec-root>/volume-copyup/<id>; a crash while a container used a
    volume with a file system of its own (`--opt type=tmpfs`) leaves that mounted. Nothing
    runs at the next start, so the start unmounts both."""
    d = daemon
    d.docker("volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs", "--opt", "o=size=1m", "tv")
    d.kill9()
    copyup = d.exec_root / "volume-copyup" / ("c" * 64)
    data = d.data_root / "volumes" / "tv" / "_data"
    _mount_tmpfs(copyup)
    _mount_tmpfs(data)
    assert len(mounts_under([copyup, data])) == 2
    d.start()
    assert mounts_under([copyup, data]) == []
    assert not copyup.exists()
    assert d.docker("volume", "ls", "-q").stdout.split() == ["tv"]


def _corrupt(path: Path, data: bytes) -> None:
    assert path.is_file(), path
    path.write_bytes(data)


def test_start_moves_aside_corrupt_or_empty_state_files(daemon: Daemon) -> None:
    """Atomic writes make a torn state file impossible after a crash, but a disk or a person can
    still leave one empty or garbled. The daemon logs it, moves it aside (kept for a person to
    look at) and starts with everything else."""
    d = daemon
    d.docker("pull", "-q", BUSYBOX)
    d.docker("pull", "-q", "layers")
    keep = d.docker("create", "--name", "keep", BUSYBOX, "true").stdout.strip()
    bad = d.docker("create", "--name", "bad", BUSYBOX, "true").stdout.strip()
    net = d.docker("network", "create", "badnet").stdout.strip()
    d.docker("volume", "create", "badvol")
    layers_id = d.docker("image", "inspect", "-f", "{{.Id}}", "layers").stdout.strip()
    d.stop()
    files = [d.data_root / "containers" / bad / "record.json",
             d.data_root / "images" / (layers_id.split(":", 1)[1] + ".json"),
             d.data_root / "network" / "networks" / f"{net}.json",
             d.data_root / "volumes" / ".meta" / "badvol.json"]
    _corrupt(files[0], b"")
    _corrupt(files[1], b'{"Id": "sha256:')
    _corrupt(files[2], b"\0\0\0\0")
    _corrupt(files[3], b"")
    _corrupt(d.data_root / "engine-id", b"")
    d.start()
    assert d.docker("info", "-f", "{{.ID}}").stdout.strip()
    for f in files:
        assert not f.exists(), f"{f} is still in place"
        aside = [p for p in f.parent.iterdir() if p.name.startswith(f.name + ".corrupt")]
        assert len(aside) == 1, f"{f} not moved aside: {sorted(p.name for p in f.parent.iterdir())}"
    assert d.docker("ps", "-aq", "--no-trunc").stdout.split() == [keep]
    assert d.docker("network", "ls", "-q", "--filter", "name=badnet").stdout.strip() == ""
    assert d.docker("volume", "ls", "-q").stdout.split() == []
    d.docker("run", "--rm", BUSYBOX, "true")
    log = d.log_path.read_text()
    assert log.count("moved aside") == 4, log
    # the next start keeps what was moved aside (and the container's files with it)
    d.restart()
    assert [p.name for p in files[0].parent.iterdir() if p.name.startswith("record.json.corrupt")]
    assert d.docker("ps", "-aq", "--no-trunc").stdout.split() == [keep]


def test_start_survives_corrupt_snapshot_metadata(daemon: Daemon) -> None:
    d = daemon
    d.docker("pull", "-q", BUSYBOX)
    d.stop()
    (meta,) = Path(d.data_root, "snapshots").glob("*/metadata.json")
    _corrupt(meta, b"")
    d.start()
    aside = [p for p in meta.parent.iterdir() if p.name.startswith("metadata.json.corrupt")]
    assert len(aside) == 1
    d.docker("pull", "-q", BUSYBOX)
    d.docker("run", "--rm", BUSYBOX, "true")


def test_start_removes_layers_no_image_uses(daemon: Daemon) -> None:
    """A crash after an image's record went and before its layers did (`rmi`), or after a
    pull committed some layers and before it wrote the image: the layer snapshots of no image
    go at the next start, those other images share stay, and a pull again works."""
    d = daemon
    d.docker("pull", "-q", BUSYBOX)
    d.docker("pull", "-q", "layers")
    layers_id = d.docker("image", "inspect", "-f", "{{.Id}}", "layers").stdout.strip()
    d.stop()
    (d.data_root / "images" / (layers_id.split(":", 1)[1] + ".json")).unlink()
    d.start()
    assert snapshot_leftovers(d, _image_layers(d), set()) == []
    d.docker("run", "--rm", BUSYBOX, "true")
    d.docker("pull", "-q", "layers")
    d.docker("run", "--rm", "layers", "true")
