"""A real registry for the tests: Debian's distribution v2.8 (`docker-registry serve CONFIG`) on
a free loopback port, storage in a temporary directory, optionally behind htpasswd (basic) or
token authentication (see token_server.py)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .address import LoopbackRegistryAddress
from .process import WaitTimeout, free_port, spawn, tail, terminate, wait_until
from .token_server import TokenServer

REGISTRY_BIN = os.environ.get("ASYNCDOCK_REGISTRY_BIN", "docker-registry")
START_TIMEOUT = 30.0
PORT_ATTEMPTS = 5


class RegistryError(RuntimeError):
    pass


def htpasswd_line(user: str, password: str) -> str:
    # distribution's htpasswd auth accepts bcrypt only.
    out = subprocess.run(["htpasswd", "-Bbn", user, password], check=True, capture_output=True, text=True).stdout
    return out.strip()


@dataclass(frozen=True)
class TokenAuth:
    """Registry side of token auth: where clients get tokens and whose signatures to trust."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: Path


class Registry(LoopbackRegistryAddress):
    """One docker-registry process. Use as a context manager or call start()/stop().

    Attributes once started: `port`, `host` ("127.0.0.1:PORT", what goes in image refs and in
    insecure-registries), `url` ("http://127.0.0.1:PORT", what goes in registry-mirrors), `root`
    (the storage dir). For auth variants: `username`, `password`, `creds` ("user:pass").
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        htpasswd: dict[str, str] | None = None,
        token: TokenAuth | None = None,
        token_server: TokenServer | None = None,
        name: str = "registry",
    ) -> None:
        if htpasswd and token:
            raise ValueError("htpasswd and token auth are exclusive")
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"asyncdock-{name}-")) if workdir is None else workdir
        self.name = name
        self.users = dict(htpasswd or {})
        self.token = token
        self.token_server = token_server
        self.root = self.workdir / "storage"
        self.config_path = self.workdir / "config.yml"
        self.log_path = self.workdir / "registry.log"
        self.port = 0
        self.images: dict[str, Any] = {}  # filled by the conftest: name -> imagebuild.BuiltImage
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def username(self) -> str | None:
        if self.users:
            return next(iter(self.users))
        if self.token_server is not None and self.token_server.users:
            return next(iter(self.token_server.users))
        return None

    @property
    def password(self) -> str | None:
        user = self.username
        if user is None:
            return None
        users = self.users or (self.token_server.users if self.token_server else {})
        return users[user]

    @property
    def creds(self) -> str | None:
        return f"{self.username}:{self.password}" if self.username else None

    # -- lifecycle ---------------------------------------------------------------------------
    def _config(self) -> str:
        cfg: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}, "fields": {"service": self.name}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root)},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
                # No background upload purging racing with tests that inspect the storage.
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host, "secret": "asyncdock-test-secret", "headers": {"X-Content-Type-Options": ["nosniff"]}},
        }
        if self.users:
            htpasswd = self.workdir / "htpasswd"
            htpasswd.write_text("".join(htpasswd_line(u, p) + "\n" for u, p in self.users.items()))
            cfg["auth"] = {"htpasswd": {"realm": "asyncdock-test", "path": str(htpasswd)}}
        elif self.token:
            cfg["auth"] = {"token": {
                "realm": self.token.realm,
                "service": self.token.service,
                "issuer": self.token.issuer,
                "rootcertbundle": str(self.token.rootcertbundle),
            }}
        # YAML is a superset of JSON: no YAML library needed.
        return json.dumps(cfg, indent=2)

    def start(self) -> Registry:
        if self._proc is not None:
            raise RegistryError("already started")
        self.root.mkdir(parents=True, exist_ok=True)
        last_error = ""
        # The port is chosen before the registry binds it, so another process may take it first.
        for _ in range(PORT_ATTEMPTS):
            self.port = free_port()
            self.config_path.write_text(self._config())
            with self.log_path.open("ab") as log:
                proc = spawn([REGISTRY_BIN, "serve", str(self.config_path)], log=log)

            def answered_or_exited(p: subprocess.Popen[bytes] = proc) -> bool:
                return p.poll() is not None or self.status("/v2/") is not None

            try:
                wait_until(answered_or_exited, timeout=START_TIMEOUT, what=f"{self.name} on {self.host}",
                           on_timeout=lambda: tail(self.log_path))
            except WaitTimeout:
                terminate(proc)
                raise
            if proc.poll() is None:
                self._proc = proc
                return self
            terminate(proc)
            last_error = tail(self.log_path, 20)
            if "address already in use" not in last_error:
                break
        raise RegistryError(f"{self.name} did not start:\n{last_error}")

    def status(self, path: str, method: str = "GET") -> int | None:
        """HTTP status of `path`, or None if nothing answers (yet)."""
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request(method, path)
                return conn.getresponse().status
            finally:
                conn.close()
        except OSError:
            return None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        if self._proc is not None:
            terminate(self._proc)
            self._proc = None

    def close(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)

    def __repr__(self) -> str:
        auth = "htpasswd" if self.users else "token" if self.token else "none"
        return f"<Registry {self.name} {self.host} auth={auth}>"


def token_registry(workdir: Path | None = None, *, users: dict[str, str], name: str = "token-registry",
                   **token_server_kw: Any) -> Registry:
    """A registry behind a started TokenServer (stopped by Registry.close())."""
    own_workdir = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix=f"asyncdock-{name}-")) if workdir is None else workdir
    server = TokenServer(workdir / "token", users=users, **token_server_kw).start()
    try:
        reg = _TokenRegistry(workdir, token=server.registry_auth(), token_server=server, name=name)
        reg._own_workdir = own_workdir
        return reg.start()
    except BaseException:
        server.stop()
        raise


class _TokenRegistry(Registry):
    def close(self) -> None:
        super().close()
        if self.token_server is not None:
            self.token_server.stop()
