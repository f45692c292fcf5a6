"""A ContainerManager on the fake runtime and a fake clock, for lifecycle tests that run in
milliseconds: no image store, no snapshots, no networks, no mounts, no processes.

`container_manager()` is the one place that builds the manager from stand-ins for its
dependencies (just what create, start, exit, restart, stop and remove reach): when
the manager's dependencies change shape, this function is what changes. The rootfs is the
bundle's own directory (nothing is mounted): the stand-in snapshotter puts the executable
the spec builder looks for there, which is all a fake container's "image" needs.

`fake_engine()` adds what a lifecycle test looks at (FakeEngine): the container events in
the order the bus got them, every run state the manager saved, and at the end a shutdown
after which the runtime must hold nothing. The shutdown stops what still runs with the
container's stop timeout on the fake clock, which nobody advances then: a test leaves
nothing running that ignores SIGTERM, or gives it `stop_timeout=0`.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from asyncdock.containers import render
from asyncdock.containers.deps import ContainerDeps, ContainerSettings
from asyncdock.containers.manager import ContainerManager
from asyncdock.containers.models import ContainerRecord, CreateRequest
from asyncdock.events import EventBus
from asyncdock.events.bus import Subscription
from asyncdock.events.models import Event
from asyncdock.leftovers import Leftovers
from asyncdock.plugins import InitContext
from asyncdock_logdriver_none import plugin as none_logdriver
from tests.support.fakeclock import FakeClock
from tests.support.fakeruntime import Behaviour, BehaviourFn, FakeRuntime, run_until_killed

__all__ = ["APP", "FakeEngine", "container_manager", "create", "fake_engine", "in_turn",
           "inspect_state", "until_action"]

APP = "/bin/app"  # the one executable of every fake container's rootfs
IMAGE_ID = "sha256:" + "f" * 64


class _Images:
    def resolve(self, ref: str) -> Any:
        return SimpleNamespace(id=IMAGE_ID)

    def config(self, image: Any) -> Any:
        return None  # no image config: the request's Cmd is all there is

    def top_chain_id(self, image: Any) -> str | None:
        return None

    async def ensure_layers(self, image: Any) -> str | None:
        return None


class _Snapshots:
    def __init__(self, bundles: Path) -> None:
        self.bundles = bundles

    async def prepare(self, key: str, parent: str | None) -> None:
        pass

    async def mounts(self, key: str) -> list[Any]:
        app = self.bundles / key / "rootfs" / APP.lstrip("/")
        app.parent.mkdir(parents=True, exist_ok=True)
        app.touch(mode=0o755)
        return []

    async def remove(self, key: str) -> None:
        pass

    async def usage(self, key: str, *, apparent: bool = False) -> int:
        return 0


class _Networks:
    def validate_mode(self, mode: str, endpoints: Any) -> None:
        pass

    async def container_created(self, cid: str, name: str, mode: str, endpoints: Any, extra_hosts: Any) -> None:
        pass

    async def container_start(self, cid: str) -> Any:
        return SimpleNamespace(netns="none")

    async def publish(self, cid: str, bindings: Any, exposed: Any, publish_all: bool) -> None:
        pass

    def hosts_entries(self, cid: str, hostname: str) -> list[str]:
        return []

    def dns_servers(self, cid: str) -> list[str] | None:
        return None

    def bridge_address(self, cid: str) -> str | None:
        return None

    async def release(self, cid: str, events: bool = True) -> None:
        pass

    async def container_removed(self, cid: str) -> None:
        pass


class _Volumes:
    async def prepare_mounts(self, cid: str, **kwargs: Any) -> list[Any]:
        return []

    async def spec_binds(self, cid: str, mounts: Any, *, ref: str | None = None) -> list[Any]:
        return []

    async def release_staging(self, cid: str) -> None:
        pass

    async def release_mounts(self, cid: str, mounts: Any, *, ref: str | None = None) -> None:
        pass

    async def container_removed(self, cid: str, mounts: Any, *, remove_anonymous: bool) -> None:
        pass


def container_manager(root: Path, runtime: FakeRuntime, clock: FakeClock) -> ContainerManager:
    data_root, exec_root = root / "data", root / "exec"
    settings = ContainerSettings(data_root=data_root, exec_root=exec_root, default_runtime=runtime.name,
                                 storage_driver="fake", log_driver="none", log_opts={})
    return ContainerManager(ContainerDeps(
        settings=settings, bus=EventBus(clock=clock.time_ns), images=_Images(),  # type: ignore[arg-type]
        runtimes={runtime.name: runtime}, snapshotter=_Snapshots(exec_root / "bundles"),  # type: ignore[arg-type]
        networks=_Networks(), volumes=_Volumes(),  # type: ignore[arg-type]
        logdrivers={"none": none_logdriver.factory(InitContext(data_root / "containers"))},
        # the fake's pids are no processes: their exits come from the runtime itself
        exits=SimpleNamespace(watch=runtime.watch, send_signal=lambda pid, sig: False),  # type: ignore[arg-type]
        leftovers=Leftovers(clock.monotonic), clock=clock))


async def create(mgr: ContainerManager, name: str | None = None, **request: Any) -> ContainerRecord:
    """A container of the fake image running APP; `request` as CreateRequest's fields."""
    return await mgr.create(CreateRequest(image="fake", cmd=[APP], **request), name)


async def until_action(sub: Subscription, action: str) -> Event:
    """The next event of `action` on `sub` (those before it are consumed)."""
    while True:
        ev: Event = (await sub.get()).message
        if ev.action == action:
            return ev


def in_turn(*behaviours: Behaviour) -> BehaviourFn:
    """Each runtime create (a start, a policy's restart) gets the next behaviour; the last
    one stays."""
    it = iter(behaviours)
    last = behaviours[-1]

    def behaviour(cid: str, spec: dict[str, object]) -> Behaviour:
        return next(it, last)
    return behaviour


def inspect_state(rec: ContainerRecord) -> dict[str, Any]:
    """`State` as container inspect answers it for `rec`."""
    state: dict[str, Any] = render.inspect(rec, files_dir="", network_settings={})["State"]
    return state


@dataclass
class FakeEngine:
    """A manager on the fake runtime and clock, and what its lifecycle tests look at."""

    mgr: ContainerManager
    rt: FakeRuntime
    clock: FakeClock
    events: Subscription  # the container events since the engine was made, for took()
    waits: Subscription  # the same events, for until()
    saved: list[tuple[str, str]] = field(default_factory=list)  # (id, State.Status) per save

    async def create(self, name: str | None = None, **request: Any) -> ContainerRecord:
        return await create(self.mgr, name, **request)

    def took(self) -> list[tuple[str, dict[str, str]]]:
        """The container events since the last call, in order: (action, attributes but the
        image and name every one of them carries). until() looks only at later ones."""
        out = []
        while (env := self.events.get_nowait()) is not None:
            ev: Event = env.message
            out.append((ev.action, {k: v for k, v in ev.actor.attributes.items()
                                    if k not in ("image", "name")}))
        while self.waits.get_nowait() is not None:
            pass
        return out

    async def until(self, action: str) -> Event:
        """The next container event of `action` since the last until() or took() (took() still
        gets every event)."""
        return await until_action(self.waits, action)

    def statuses(self, rec: ContainerRecord) -> list[str]:
        """State.Status at each save of `rec`'s record (the transitions clients can see)."""
        return [status for cid, status in self.saved if cid == rec.id]

    def runtime_calls(self, rec: ContainerRecord) -> list[str]:
        """What the runtime was asked to do with `rec`'s container, in order."""
        return [call for call, cid in self.rt.calls if cid == rec.id]


@asynccontextmanager
async def fake_engine(root: Path, behaviour: BehaviourFn = run_until_killed, *,
                      runtime: FakeRuntime | None = None) -> AsyncIterator[FakeEngine]:
    """A FakeEngine whose containers behave as `behaviour` says (per runtime create), on
    `runtime` if given (a FakeRuntime with a step of its own changed); shut down at the end,
    and then the runtime must hold no container."""
    clock = FakeClock()
    rt = runtime if runtime is not None else FakeRuntime(behaviour=behaviour)
    mgr = container_manager(root, rt, clock)

    def containers(m: Any) -> bool:
        return isinstance(m, Event) and m.type == "container"

    engine = FakeEngine(mgr, rt, clock, mgr.bus.subscribe(containers), mgr.bus.subscribe(containers))
    store_save = mgr.store.save

    def save(rec: ContainerRecord, *args: Any, **kwargs: Any) -> None:
        store_save(rec, *args, **kwargs)
        engine.saved.append((rec.id, rec.state.status))

    mgr.store.save = save  # type: ignore[method-assign]
    try:
        yield engine
    finally:
        await mgr.shutdown()
        engine.events.close()
        engine.waits.close()
    assert await rt.list() == []  # nothing the engine started outlives it in the runtime
