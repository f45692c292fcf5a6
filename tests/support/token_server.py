"""A token server speaking Docker Hub's registry token protocol, for tests of bearer auth.

    GET  /token?service=S&scope=repository:NAME:pull,push[&scope=...][&offline_token=true]
         (optional Authorization: Basic) -> {"token", "access_token", "expires_in", "issued_at"}
    POST /token  (OAuth2 form: grant_type=password|refresh_token, as containerd uses)
         -> {"access_token", "expires_in", "issued_at", "scope"[, "refresh_token"]}

Tokens are JWTs signed RS256 with a throw-away key; the header carries the certificate as an
`x5c` chain, which is how distribution v2.8 (Debian's docker-registry) finds the signing key: it
verifies the chain against `auth.token.rootcertbundle` (here the self-signed certificate itself).
Signing uses the `openssl` CLI so the tests need no crypto package.

Policy: a valid user gets every action asked for; anonymous clients get `anonymous_actions`
(default pull) except on `private_repos`; a wrong password is a 401.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .registry import TokenAuth

DEFAULT_SERVICE = "asyncdock-test-registry"
DEFAULT_ISSUER = "asyncdock-test-token-issuer"


class _AnyAccount:
    """Sentinel for TokenServer.count(): None already means "anonymous"."""


ANY_ACCOUNT = _AnyAccount()


@dataclass(frozen=True)
class TokenRequest:
    method: str
    account: str | None  # the authenticated user; None for anonymous
    scopes: tuple[str, ...]
    access: tuple[tuple[str, str, tuple[str, ...]], ...]  # (type, name, granted actions)
    status: int
    grant_type: str = ""  # POST only


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _State:
    requests: list[TokenRequest] = field(default_factory=list)
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # token -> account
    lock: threading.Lock = field(default_factory=threading.Lock)


class TokenServer:
    def __init__(
        self,
        workdir: Path,
        *,
        users: dict[str, str],
        service: str = DEFAULT_SERVICE,
        issuer: str = DEFAULT_ISSUER,
        anonymous_actions: tuple[str, ...] = ("pull",),
        private_repos: tuple[str, ...] = (),
        expires_in: int = 300,
    ) -> None:
        self.workdir = workdir
        self.users = dict(users)
        self.service = service
        self.issuer = issuer
        self.anonymous_actions = tuple(anonymous_actions)
        self.private_repos = frozenset(private_repos)
        self.expires_in = expires_in
        self.key_path = workdir / "signing-key.pem"
        self.cert_path = workdir / "signing-cert.pem"
        self._state = _State()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._x5c: list[str] = []

    # -- set-up ------------------------------------------------------------------------------
    def _make_key(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
             "-subj", "/CN=asyncdock test token signer", "-keyout", str(self.key_path), "-out", str(self.cert_path)],
            check=True, capture_output=True,
        )
        pem = self.cert_path.read_text()
        body = pem.split("-----BEGIN CERTIFICATE-----")[1].split("-----END CERTIFICATE-----")[0]
        # x5c holds standard (not URL-safe) base64 DER, which is exactly the PEM body.
        self._x5c = ["".join(body.split())]

    def start(self) -> TokenServer:
        self._make_key()
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="token-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def registry_auth(self) -> TokenAuth:
        from .registry import TokenAuth

        return TokenAuth(realm=self.realm, service=self.service, issuer=self.issuer, rootcertbundle=self.cert_path)

    # -- what tests look at ------------------------------------------------------------------
    @property
    def requests(self) -> list[TokenRequest]:
        with self._state.lock:
            return list(self._state.requests)

    def reset_counters(self) -> None:
        with self._state.lock:
            self._state.requests.clear()

    def count(self, *, account: str | None | _AnyAccount = ANY_ACCOUNT, status: int | None = None) -> int:
        """Requests so far, optionally only those of `account` (None = anonymous) / `status`."""
        return sum(
            1 for r in self.requests
            if (isinstance(account, _AnyAccount) or r.account == account) and (status is None or r.status == status)
        )

    # -- tokens ------------------------------------------------------------------------------
    def grant(self, account: str | None, scopes: list[str]) -> list[dict[str, Any]]:
        access: list[dict[str, Any]] = []
        for scope in scopes:
            typ, _, rest = scope.partition(":")
            name, _, actions_s = rest.rpartition(":")
            if not typ or not name:
                continue
            asked = [a for a in actions_s.split(",") if a]
            if typ == "repository":
                if account is not None:
                    allowed = set(asked)
                elif name in self.private_repos:
                    allowed = set()
                else:
                    allowed = set(self.anonymous_actions)
            else:  # registry:catalog:* and the like: users only
                allowed = set(asked) if account is not None else set()
            # Like Docker Hub, an entry is returned even when nothing is granted: the registry,
            # not the token server, then answers 401/403 with insufficient_scope.
            access.append({"type": typ, "name": name, "actions": [a for a in asked if a in allowed]})
        return access

    def issue(self, account: str | None, access: list[dict[str, Any]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": self._x5c}
        claims = {
            "iss": self.issuer,
            "sub": account or "",
            "aud": self.service,
            "exp": now + self.expires_in,
            # Backdated: `now` is truncated to whole seconds and distribution checks nbf against
            # its own sub-second clock, so a token must be valid the instant it is issued.
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key_path)],
            input=signing_input.encode(), check=True, capture_output=True,
        ).stdout
        return f"{signing_input}.{_b64url(sig)}"

    def _record(self, req: TokenRequest) -> None:
        with self._state.lock:
            self._state.requests.append(req)

    def _new_refresh_token(self, account: str) -> str:
        token = secrets.token_urlsafe(24)
        with self._state.lock:
            self._state.refresh_tokens[token] = account
        return token

    def _refresh_account(self, token: str) -> str | None:
        with self._state.lock:
            return self._state.refresh_tokens.get(token)


def _handler_for(ts: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "asyncdock-test-token-server"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass  # the tests read ts.requests instead

        def _reply(self, status: int, body: dict[str, Any], extra: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _basic(self) -> tuple[bool, str | None]:
            """(ok, account): no header is ok+anonymous; a wrong password is not ok."""
            auth = self.headers.get("Authorization", "")
            if not auth:
                return True, None
            kind, _, value = auth.partition(" ")
            if kind.lower() != "basic":
                return False, None
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False, None
            return (ts.users.get(user) == password and user in ts.users), user

        def _path_ok(self) -> bool:
            if urllib.parse.urlsplit(self.path).path.rstrip("/") != "/token":
                self._reply(404, {"details": "not found"})
                return False
            return True

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            if not self._path_ok():
                return
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
            ok, account = self._basic()
            if not ok:
                ts._record(TokenRequest("GET", account, tuple(scopes), (), 401))
                self._reply(401, {"details": "incorrect username or password"},
                            {"WWW-Authenticate": 'Basic realm="asyncdock-test"'})
                return
            access = ts.grant(account, scopes)
            token = ts.issue(account, access)
            body: dict[str, Any] = {"token": token, "access_token": token, "expires_in": ts.expires_in,
                                    "issued_at": _now_iso()}
            if account is not None and query.get("offline_token", [""])[0] == "true":
                body["refresh_token"] = ts._new_refresh_token(account)
            ts._record(TokenRequest("GET", account, tuple(scopes), _access_tuple(access), 200))
            self._reply(200, body)

        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            if not self._path_ok():
                return
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            get = lambda k: form.get(k, [""])[0]  # noqa: E731
            grant_type = get("grant_type")
            scopes = [s for s in get("scope").split(" ") if s]
            account: str | None
            if grant_type == "password":
                account = get("username")
                if ts.users.get(account) != get("password") or account not in ts.users:
                    ts._record(TokenRequest("POST", account, tuple(scopes), (), 401, grant_type))
                    self._reply(401, {"error": "invalid_grant", "details": "incorrect username or password"})
                    return
            elif grant_type == "refresh_token":
                account = ts._refresh_account(get("refresh_token"))
                if account is None:
                    ts._record(TokenRequest("POST", None, tuple(scopes), (), 401, grant_type))
                    self._reply(401, {"error": "invalid_grant", "details": "unknown refresh token"})
                    return
            else:
                ts._record(TokenRequest("POST", None, tuple(scopes), (), 400, grant_type))
                self._reply(400, {"error": "unsupported_grant_type"})
                return
            access = ts.grant(account, scopes)
            token = ts.issue(account, access)
            body: dict[str, Any] = {"access_token": token, "expires_in": ts.expires_in, "issued_at": _now_iso(),
                                    "scope": " ".join(scopes)}
            if get("access_type") == "offline":
                body["refresh_token"] = ts._new_refresh_token(account)
            ts._record(TokenRequest("POST", account, tuple(scopes), _access_tuple(access), 200, grant_type))
            self._reply(200, body)

    return Handler


def _access_tuple(access: list[dict[str, Any]]) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    return tuple((a["type"], a["name"], tuple(a["actions"])) for a in access)
