"""Registry credentials and the distribution auth flows.

* `AuthConfig`: what clients send base64url-encoded in `X-Registry-Auth` (and as the body of
  `POST /auth`).
* Challenges: a registry answers 401 with `WWW-Authenticate: Bearer realm=..,service=..,scope=..`
  or `Basic realm=..`. Bearer means: get a token from `realm` (with basic credentials when we
  have them, or the identity token as an OAuth refresh token) and send it as `Authorization:
  Bearer`. Tokens are cached per (realm, service, scope, user) until they expire.
"""
from __future__ import annotations

import base64
import binascii
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

log = logging.getLogger(__name__)

# Docker treats a token without expires_in, or with less, as valid for 60 s.
MIN_TOKEN_LIFETIME = 60.0
# Renew a little before the registry would reject the token.
_EXPIRY_MARGIN = 5.0


class AuthConfig(msgspec.Struct, omit_defaults=True):
    username: str = ""
    password: str = ""
    auth: str = ""  # base64("user:password"), as config.json stores it
    email: str = ""
    serveraddress: str = ""
    identitytoken: str = ""
    registrytoken: str = ""

    def credentials(self) -> tuple[str, str] | None:
        """(user, password), decoding `auth` when only that is given."""
        if self.username or self.password:
            return self.username, self.password
        if self.auth:
            try:
                user, _, pw = base64.b64decode(self.auth).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            return user, pw
        return None

    @property
    def empty(self) -> bool:
        return not (self.credentials() or self.identitytoken or self.registrytoken)


_auth_decoder = msgspec.json.Decoder(AuthConfig)


def decode_registry_auth(header: str | None) -> AuthConfig | None:
    """Decode `X-Registry-Auth`. Like dockerd, a header that does not decode means "no
    credentials" rather than an error (old clients send odd values)."""
    if not header:
        return None
    raw = header.strip()
    padded = raw + "=" * (-len(raw) % 4)
    for decode in (base64.urlsafe_b64decode, base64.standard_b64decode):
        try:
            data = decode(padded)
            cfg = _auth_decoder.decode(data)
        except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
            continue
        return None if cfg.empty else cfg
    return None


def encode_registry_auth(cfg: AuthConfig) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(cfg)).decode()


# ---------------------------------------------------------------------------------------------
# WWW-Authenticate

@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "bearer", "basic"
    params: dict[str, str] = field(default_factory=dict)


_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM = re.compile(rf"\s*({_TOKEN})\s*=\s*(?:\"((?:[^\"\\]|\\.)*)\"|({_TOKEN}))\s*,?")


def parse_challenges(headers: list[str]) -> list[Challenge]:
    out: list[Challenge] = []
    for value in headers:
        rest = value.strip()
        while rest:
            m = re.match(rf"({_TOKEN})\s*", rest)
            if m is None:
                break
            scheme = m.group(1).lower()
            rest = rest[m.end():]
            params: dict[str, str] = {}
            while True:
                pm = _PARAM.match(rest)
                # A bare token after a comma starts the next challenge.
                if pm is None:
                    break
                params[pm.group(1).lower()] = (pm.group(2).replace('\\"', '"') if pm.group(2) is not None
                                               else pm.group(3))
                rest = rest[pm.end():]
            out.append(Challenge(scheme, params))
            rest = rest.lstrip(", ")
    return out


# ---------------------------------------------------------------------------------------------
# Tokens

class _TokenResponse(msgspec.Struct):
    token: str = ""
    access_token: str = ""
    expires_in: int = 0
    refresh_token: str = ""


class AuthError(Exception):
    """Authentication with the registry failed; `status` is what the registry said."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Cached:
    value: str
    expires: float


class TokenCache:
    """Bearer tokens by (realm, service, scope, user). Owned by the registry client."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._tokens: dict[tuple[str, str, str, str], _Cached] = {}
        self._clock = clock

    def get(self, key: tuple[str, str, str, str]) -> str | None:
        c = self._tokens.get(key)
        if c is None or c.expires <= self._clock():
            return None
        return c.value

    def put(self, key: tuple[str, str, str, str], token: str, lifetime: float) -> None:
        lifetime = max(float(lifetime), MIN_TOKEN_LIFETIME)
        self._tokens[key] = _Cached(token, self._clock() + lifetime - _EXPIRY_MARGIN)

    def drop(self, key: tuple[str, str, str, str]) -> None:
        self._tokens.pop(key, None)


def basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def fetch_token(session: aiohttp.ClientSession, challenge: Challenge, scopes: list[str],
                      auth: AuthConfig | None, ssl: Any = None) -> tuple[str, float]:
    """Run the token flow for one bearer challenge; returns (token, lifetime seconds)."""
    token, lifetime, _ = await fetch_token_offline(session, challenge, scopes, auth, ssl=ssl, offline=False)
    return token, lifetime


async def fetch_token_offline(session: aiohttp.ClientSession, challenge: Challenge, scopes: list[str],
                              auth: AuthConfig | None, ssl: Any = None, *,
                              offline: bool = True) -> tuple[str, float, str]:
    """The token flow, asking (`offline`) for a refresh token as `docker login` does
    (`offline_token=true&client_id=docker`); returns (token, lifetime, refresh token or "")."""
    realm = challenge.params.get("realm")
    if not realm:
        raise AuthError("bearer challenge without realm")
    service = challenge.params.get("service", "")
    creds = auth.credentials() if auth else None
    if auth is not None and auth.registrytoken:
        return auth.registrytoken, MIN_TOKEN_LIFETIME, ""
    if auth is not None and auth.identitytoken:
        # OAuth2 refresh-token grant, as dockerd does for identity tokens.
        form = {"grant_type": "refresh_token", "refresh_token": auth.identitytoken,
                "service": service, "client_id": "docker", "access_type": "offline"}
        if scopes:
            form["scope"] = " ".join(scopes)
        async with session.post(realm, data=form, ssl=ssl) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise AuthError(_token_error(realm, resp.status, body), resp.status)
    else:
        params: list[tuple[str, str]] = []
        if service:
            params.append(("service", service))
        params.extend(("scope", s) for s in scopes)
        headers = {}
        if creds is not None:
            params.append(("account", creds[0]))
            headers["Authorization"] = basic_header(*creds)
            if offline:
                params.extend((("client_id", "docker"), ("offline_token", "true")))
        async with session.get(realm, params=params, headers=headers, ssl=ssl) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise AuthError(_token_error(realm, resp.status, body), resp.status)
    try:
        tr = msgspec.json.decode(body, type=_TokenResponse)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise AuthError(f"malformed token response from {realm}", 500) from None
    token = tr.token or tr.access_token
    if not token:
        raise AuthError(f"token server {realm} returned no token", 500)
    return token, float(tr.expires_in or MIN_TOKEN_LIFETIME), tr.refresh_token


def _token_error(realm: str, status: int, body: bytes) -> str:
    detail = ""
    try:
        data = msgspec.json.decode(body)
        if isinstance(data, dict):
            detail = str(data.get("details") or data.get("detail") or data.get("message") or "")
            errs = data.get("errors")
            if not detail and isinstance(errs, list) and errs and isinstance(errs[0], dict):
                detail = str(errs[0].get("message", ""))
    except msgspec.DecodeError:
        detail = body[:200].decode(errors="replace").strip()
    if status == 401:
        return f"Get \"{realm}\": unauthorized: {detail or 'authentication required'}"
    return f"Get \"{realm}\": token server answered {status}{': ' + detail if detail else ''}"


def repository_scope(path: str, actions: str = "pull") -> str:
    return f"repository:{path}:{actions}"
