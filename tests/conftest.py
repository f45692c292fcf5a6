"""Shared fixtures: real registries (plain, htpasswd, token), a fault-injecting proxy, and
asyncdock daemons driven by the real docker CLI and docker-py.

Session fixtures
    test_images      {name: imagebuild.BuiltImage} for every image builder (cached on disk)
    registry         support.registry.Registry with every test image pushed as
                     library/<name>:<tag> (see REGISTRY_IMAGES below); .images = test_images
    auth_registry    htpasswd (basic) auth; user .username/.password (.creds "user:pass");
                     library/busybox:latest pushed
    token_registry   bearer-token auth via .token_server (support.token_server.TokenServer);
                     anonymous pull allowed except on private/busybox; library/busybox and
                     private/busybox pushed
    shared_daemon    one support.daemon.Daemon for the whole session, mirror = `registry`
Function fixtures
    faulty_registry  factory(fault=None, *, digests=None, times=None, upstream=None) -> started
                     support.faultproxy.FaultProxy in front of `registry` (or `upstream`)
    daemon_factory   factory(config=None, *, mirror=True, insecure_registries=(), start=True,
                     debug=None, extra_args=(), check_leaks=True) -> support.daemon.Daemon
    daemon           daemon_factory() with defaults: a fresh daemon whose registry-mirrors and
                     insecure-registries point at `registry`, so `docker run busybox` works
    scratch          a fresh directory under ASYNCDOCK_TEST_TMP, unmounted and removed after
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

# `tests.support` is imported by its full name from the tests, the demo and the bench alike.
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support import astlock  # noqa: E402

astlock.install()

from tests.support import imagebuild  # noqa: E402
from tests.support.daemon import DOCKER_CLI, TEST_TMP, Daemon, mounts_under  # noqa: E402
from tests.support.faultproxy import Fault, FaultProxy  # noqa: E402
from tests.support.registry import Registry  # noqa: E402
from tests.support.registry import token_registry as _start_token_registry  # noqa: E402

AUTH_USER, AUTH_PASSWORD = "testuser", "testpass"
TOKEN_USER, TOKEN_PASSWORD = "alice", "wonderland"
PRIVATE_REPO = "private/busybox"


# -- reports for teardown diagnostics ---------------------------------------------------------

@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Lets fixtures know at teardown whether their test failed (to print the daemon's log).
    report: pytest.TestReport = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _test_failed(request: pytest.FixtureRequest) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return bool(rep is not None and rep.failed)


# -- images and registries --------------------------------------------------------------------

@pytest.fixture(scope="session")
def test_images() -> dict[str, imagebuild.BuiltImage]:
    return imagebuild.build_all()


def _push_all(reg: Registry, images: dict[str, imagebuild.BuiltImage]) -> None:
    jobs: list[Callable[[], object]] = [functools.partial(imagebuild.push_image, img, reg.host) for img in images.values()]
    # The same busybox with Docker's schema 2 media types, for the v2s2 code paths.
    jobs.append(lambda: imagebuild.push(images["busybox"].layout, "library/busybox:v2s2", reg.host,
                                        src_tag="latest", format="v2s2"))
    # skopeo is mostly waiting on the registry: a few at once halve the session start-up.
    with ThreadPoolExecutor(max_workers=4) as pool:
        for fut in [pool.submit(job) for job in jobs]:
            fut.result()


@pytest.fixture(scope="session")
def registry(test_images: dict[str, imagebuild.BuiltImage]) -> Iterator[Registry]:
    with Registry(name="registry") as reg:
        _push_all(reg, test_images)
        reg.images = dict(test_images)
        yield reg


@pytest.fixture(scope="session")
def auth_registry(test_images: dict[str, imagebuild.BuiltImage]) -> Iterator[Registry]:
    with Registry(htpasswd={AUTH_USER: AUTH_PASSWORD}, name="auth-registry") as reg:
        imagebuild.push_image(test_images["busybox"], reg.host, creds=reg.creds)
        reg.images = {"busybox": test_images["busybox"]}
        yield reg


@pytest.fixture(scope="session")
def token_registry(test_images: dict[str, imagebuild.BuiltImage]) -> Iterator[Registry]:
    reg = _start_token_registry(users={TOKEN_USER: TOKEN_PASSWORD}, private_repos=(PRIVATE_REPO,))
    try:
        busybox = test_images["busybox"]
        imagebuild.push_image(busybox, reg.host, creds=reg.creds)
        imagebuild.push_image(busybox, reg.host, repo=PRIVATE_REPO, creds=reg.creds)
        reg.images = {"busybox": busybox}
        assert reg.token_server is not None
        reg.token_server.reset_counters()  # tests count their own token requests
        yield reg
    finally:
        reg.close()


FaultyRegistryFactory = Callable[..., FaultProxy]


@pytest.fixture
def faulty_registry(request: pytest.FixtureRequest) -> Iterator[FaultyRegistryFactory]:
    proxies: list[FaultProxy] = []

    def make(fault: str | Fault | None = None, *, digests: set[str] | list[str] | None = None,
             times: int | None = None, upstream: Registry | None = None) -> FaultProxy:
        up = upstream if upstream is not None else request.getfixturevalue("registry")
        proxy = FaultProxy(up.host).start()
        proxies.append(proxy)
        if fault is not None:
            proxy.set_fault(fault, digests=digests, times=times)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


# -- daemons ----------------------------------------------------------------------------------

def _daemon_config(reg: Registry | None, config: dict[str, Any] | None, insecure: tuple[str, ...]) -> dict[str, Any]:
    cfg: dict[str, Any] = dict(config or {})
    if reg is not None:
        cfg.setdefault("registry-mirrors", [reg.url])
        cfg.setdefault("insecure-registries", [])
        cfg["insecure-registries"] = [*cfg["insecure-registries"], reg.host]
    if insecure:
        cfg["insecure-registries"] = [*cfg.get("insecure-registries", []), *insecure]
    return cfg


def _require_docker_cli() -> None:
    if not (shutil.which(DOCKER_CLI) or os.access(DOCKER_CLI, os.X_OK)):
        pytest.fail(f"docker CLI not found at {DOCKER_CLI} (set ASYNCDOCK_DOCKER_CLI; see scripts/setup.sh)")


def _finish(daemons: list[Daemon], show_logs: bool) -> None:
    problems: list[str] = []
    for d in daemons:
        log = d.log_tail(40)  # before close(), which removes the daemon's directory
        if show_logs:
            print(d.log_tail())
        found = d.close()
        if found:
            problems.append(f"{d.root}:\n  " + "\n  ".join(found) + "\n" + log)
    if problems:
        pytest.fail("daemon teardown found problems:\n" + "\n".join(problems), pytrace=False)


DaemonFactory = Callable[..., Daemon]


@pytest.fixture
def daemon_factory(request: pytest.FixtureRequest) -> Iterator[DaemonFactory]:
    daemons: list[Daemon] = []

    def make(config: dict[str, Any] | None = None, *, mirror: bool = True, insecure_registries: tuple[str, ...] = (),
             start: bool = True, debug: bool | None = None, extra_args: tuple[str, ...] = (),
             check_leaks: bool = True) -> Daemon:
        _require_docker_cli()
        reg = request.getfixturevalue("registry") if mirror else None
        d = Daemon(_daemon_config(reg, config, tuple(insecure_registries)), debug=debug, extra_args=extra_args,
                   check_leaks=check_leaks)
        daemons.append(d)
        return d.start() if start else d

    yield make
    _finish(daemons, show_logs=_test_failed(request))


@pytest.fixture
def daemon(daemon_factory: DaemonFactory) -> Daemon:
    return daemon_factory()


@pytest.fixture(scope="session")
def shared_daemon(registry: Registry) -> Iterator[Daemon]:
    """One daemon for tests that only read or clean up after themselves: state accumulates."""
    _require_docker_cli()
    d = Daemon(_daemon_config(registry, None, ())).start()
    yield d
    _finish([d], show_logs=False)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A fresh directory for a test that runs engine parts in process (their data and exec
    roots, a web root), removed after it: what the parts mounted there (netns pins, volume
    mounts) is unmounted first, and a mount that will not go fails the test instead of being
    deleted through."""
    d = Path(tempfile.mkdtemp(prefix="adt-scratch-", dir=TEST_TMP))
    yield d
    for point in mounts_under([d]):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)
    remaining = mounts_under([d])
    if remaining:
        pytest.fail(f"mounts still present, {d} kept: {remaining}", pytrace=False)
    shutil.rmtree(d)
