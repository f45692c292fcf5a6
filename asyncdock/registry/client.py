"""A distribution-API (OCI registry) client on aiohttp: endpoints, auth, manifests, blobs.

Endpoint choice follows dockerd: for docker.io the `registry-mirrors` first, then
registry-1.docker.io; for another registry https, and when the registry is insecure (listed in
`insecure-registries`, or a loopback address, Docker's default) https without verification and
then plain http. The scheme that worked is remembered per host. CAs for a registry come from
`<config_dir>/certs.d/<host[:port]>/*.crt` (client certificates from `*.cert` + `*.key`).

Blob transfers resume with `Range` and survive stalls: no byte for `stall_timeout` seconds means
reconnect at the current offset; three stalls in a row fail the transfer naming the layer.
"""
from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import msgspec

from ..config import DaemonConfig
from ..base.errors import EngineError, InvalidParameter, NotFound, Unauthorized
from ..util.errtext import connection_error_text
from ..base.oci import (DOCKER_SCHEMA1, INDEX_TYPES, MANIFEST_ACCEPT, MANIFEST_TYPES, Descriptor, Index, Manifest,
                        ManifestError, Platform, classify_manifest, decode_index, decode_manifest)
from .auth import (AuthConfig, AuthError, Challenge, TokenCache, basic_header, fetch_token, fetch_token_offline,
                   parse_challenges, repository_scope)
from .platforms import host_platform, select_manifest
from .reference import DEFAULT_DOMAIN, Reference


class PullUnauthorized(Unauthorized):
    """The registry refused a pull for want of (valid) credentials. dockerd answers these with a
    plain error (500): a 401 from the pull endpoint makes the docker CLI prompt for a login and
    retry, which hangs where there is no terminal. `docker login` (POST /auth) keeps its 401."""

    status = 500

log = logging.getLogger(__name__)

HUB_ENDPOINT = "https://registry-1.docker.io"
HUB_LOGIN_ADDRESSES = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io",
                       "https://registry-1.docker.io", "https://index.docker.io")
MAX_MANIFEST = 4 << 20
DEFAULT_STALL_TIMEOUT = 30.0
MAX_STALLS = 3
MAX_RECONNECTS = 5  # connection drops in a row without a byte between them
USER_AGENT = "asyncdock/0.1 (linux)"


class RegistryError(EngineError):
    """The registry refused or failed a request; `status` is the HTTP status the API answers."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.status = status


class TransferStalled(RegistryError):
    pass


class _ErrorBody(msgspec.Struct):
    errors: list[dict[str, Any]] = msgspec.field(default_factory=list)


def _first_error(body: bytes) -> tuple[str, str]:
    """(code, message) of the first error in a distribution error body, or ("", "")."""
    try:
        errs = msgspec.json.decode(body, type=_ErrorBody).errors
    except (msgspec.DecodeError, msgspec.ValidationError):
        return "", ""
    if not errs:
        return "", ""
    return str(errs[0].get("code", "")), str(errs[0].get("message", ""))


def _errcode_text(code: str, message: str) -> str:
    """errcode.Error.Error(): "manifest unknown: manifest unknown"."""
    return f"{code.lower().replace('_', ' ')}: {message}"


@dataclass(frozen=True)
class Endpoint:
    base: str  # scheme://host[:port][/prefix], no trailing slash
    ssl: Any  # ssl.SSLContext, False (no verification), or None (plain http)
    mirror: bool = False
    fallback_on_connect_error: bool = False  # the https leg of an insecure registry

    @property
    def host(self) -> str:
        return urlsplit(self.base).netloc


class BlobSink(Protocol):
    """Where a blob's bytes go. `offset` is how many bytes it already holds (a resumed ingest)."""

    offset: int

    async def write(self, chunk: bytes) -> None: ...


@dataclass
class ResolvedManifest:
    """The manifest to pull, after walking an index for the platform."""

    ref_digest: str  # digest of the top-level document (what RepoDigests record)
    manifest_digest: str  # digest of the platform manifest
    manifest: Manifest
    manifest_bytes: bytes
    manifest_media_type: str
    index_bytes: bytes | None = None
    index_media_type: str | None = None


class RegistryClient:
    """One per engine: it owns the HTTP connection pool, the token cache and the per-host
    scheme memory."""

    def __init__(self, config: DaemonConfig, *, stall_timeout: float = DEFAULT_STALL_TIMEOUT,
                 user_agent: str = USER_AGENT) -> None:
        self.config = config
        self.stall_timeout = stall_timeout
        self.user_agent = user_agent
        self.tokens = TokenCache()
        self._session: aiohttp.ClientSession | None = None
        self._ssl: dict[str, ssl.SSLContext] = {}
        self._scheme: dict[str, str] = {}  # host -> "https"/"http" that worked
        self._challenges: dict[str, Challenge] = {}  # endpoint base -> last challenge
        self._insecure_nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._insecure_hosts: set[str] = set()
        for item in config.insecure_registries:
            try:
                self._insecure_nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self._insecure_hosts.add(item.split("://", 1)[-1].rstrip("/"))

    # ---- session
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": self.user_agent},
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
                read_bufsize=1 << 20,
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---- TLS and insecurity
    def _ssl_context(self, host: str) -> ssl.SSLContext:
        ctx = self._ssl.get(host)
        if ctx is not None:
            return ctx
        ctx = ssl.create_default_context()
        certs = Path(self.config.config_dir) / "certs.d" / host
        if certs.is_dir():
            for f in sorted(certs.iterdir()):
                if f.suffix == ".crt":
                    ctx.load_verify_locations(cafile=str(f))
                elif f.suffix == ".cert":
                    key = f.with_suffix(".key")
                    if not key.exists():
                        raise InvalidParameter(f"missing key {key.name} for client certificate {f.name}")
                    ctx.load_cert_chain(str(f), str(key))
        self._ssl[host] = ctx
        return ctx

    async def is_insecure(self, host: str) -> bool:
        """Docker's isSecureIndex, inverted: listed by name, or one of the host's addresses is
        in an insecure network (loopback always is: Docker's default 127.0.0.0/8 and ::1)."""
        if host in self._insecure_hosts:
            return True
        name = host
        if name.startswith("["):
            name = name[1:name.index("]")]
        elif name.count(":") == 1:
            name = name.split(":", 1)[0]
        try:
            addrs = [ipaddress.ip_address(name)]
        except ValueError:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(name, None, type=socket.SOCK_STREAM)
            except OSError:
                return False
            addrs = [ipaddress.ip_address(i[4][0]) for i in infos]
        return any(a.is_loopback or any(a in net for net in self._insecure_nets) for a in addrs)

    async def endpoints(self, domain: str) -> list[Endpoint]:
        host = domain if domain.startswith("[") else domain.rsplit(":", 1)[0]
        if _DIGITS_AND_DOTS_RE.match(host):
            # "9" or "1.2" pass the reference grammar, but aiohttp refuses them as URLs
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise InvalidParameter(f"invalid registry address {domain!r}: {host} is not an IPv4 address") from None
        if domain == DEFAULT_DOMAIN:
            eps: list[Endpoint] = []
            for m in self.config.registry_mirrors:
                u = urlsplit(m if "://" in m else "https://" + m)
                base = f"{u.scheme}://{u.netloc}{u.path.rstrip('/')}"
                eps.append(Endpoint(base, self._ssl_context(u.netloc) if u.scheme == "https" else None, mirror=True))
            eps.append(Endpoint(HUB_ENDPOINT, self._ssl_context("registry-1.docker.io")))
            return eps
        if await self.is_insecure(domain):
            remembered = self._scheme.get(domain)
            https = Endpoint(f"https://{domain}", False, fallback_on_connect_error=True)
            http = Endpoint(f"http://{domain}", None)
            if remembered == "http":
                return [http]
            if remembered == "https":
                return [https]
            return [https, http]
        return [Endpoint(f"https://{domain}", self._ssl_context(domain))]

    # ---- repositories
    async def repository(self, ref: Reference, auth: AuthConfig | None, *, actions: str = "pull",
                         extra_scopes: tuple[str, ...] = ()) -> Repository:
        """A handle on `ref`'s repository at its first endpoint; `resolve` may move it along
        the endpoint list when an endpoint fails. `actions="push,pull"` asks tokens for push
        (and never uses a mirror: pushes go to the registry itself); `extra_scopes` are added
        to every token request (a blob mount needs pull on the source repository)."""
        eps = await self.endpoints(ref.domain)
        if "push" in actions:
            eps = [e for e in eps if not e.mirror] or eps
        return Repository(self, ref, eps, auth, actions=actions, extra_scopes=extra_scopes)

    def _remember(self, ep: Endpoint) -> None:
        if not ep.mirror and ep.host != "registry-1.docker.io":
            self._scheme[ep.host] = urlsplit(ep.base).scheme

    # ---- login
    async def login(self, auth: AuthConfig) -> tuple[str, str]:
        """`POST /auth`: check the credentials against the registry (dockerd's loginV2);
        returns (status text, identity token: the token server's refresh token, or "")."""
        server = auth.serveraddress or "https://index.docker.io/v1/"
        if server in HUB_LOGIN_ADDRESSES:
            domain = DEFAULT_DOMAIN
        else:
            try:
                u = urlsplit(server if "://" in server else "//" + server)
            except ValueError:
                u = None
            domain = (u.netloc if u is not None else "") or server
            if not _LOGIN_DOMAIN_RE.match(domain):
                raise InvalidParameter(f"invalid registry address {server!r}")
        eps = await self.endpoints(domain)
        if domain == DEFAULT_DOMAIN:
            eps = eps[-1:]  # log in to the Hub itself, not a mirror
        last: Exception | None = None
        for ep in eps:
            url = ep.base + "/v2/"
            try:
                async with self.session().get(url, ssl=ep.ssl) as resp:
                    await resp.read()
                    if resp.status == 200:
                        self._remember(ep)
                        return "Login Succeeded", ""
                    if resp.status != 401:
                        raise Unauthorized(f"login attempt to {url} failed with status: {resp.status} {resp.reason}")
                    challenges = parse_challenges(resp.headers.getall("WWW-Authenticate", []))
                self._remember(ep)
                return await self._login_challenged(ep, url, challenges, auth)
            except (aiohttp.ClientConnectionError, ssl.SSLError, asyncio.TimeoutError) as e:
                last = e
                continue
        raise RegistryError(f"Get \"{eps[-1].base}/v2/\": {_conn_error_text(last) if last else 'no endpoint'}", 500)

    async def _login_challenged(self, ep: Endpoint, url: str, challenges: list[Challenge],
                                auth: AuthConfig) -> tuple[str, str]:
        creds = auth.credentials()
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        if bearer is not None:
            if creds is None and not auth.identitytoken and not auth.registrytoken:
                raise Unauthorized(f"Get \"{url}\": no credentials to log in with")
            try:
                token, _, refresh = await fetch_token_offline(self.session(), bearer, [], auth, ssl=ep.ssl)
            except AuthError as e:
                # dockerd wraps the token server's refusal in the /v2/ request that needed it
                detail = str(e).split(": unauthorized: ", 1)[-1] if e.status == 401 else str(e)
                text = f"unauthorized: {detail}" if e.status == 401 else detail
                raise Unauthorized(f"Get \"{url}\": {text}") from None
            header = "Bearer " + token
            identity = refresh
        elif basic is not None:
            if creds is None:
                raise Unauthorized(f"Get \"{url}\": no basic auth credentials")
            header = basic_header(*creds)
            identity = ""
        else:
            raise Unauthorized(f"login attempt to {url} failed: unsupported authentication challenge")
        async with self.session().get(url, ssl=ep.ssl, headers={"Authorization": header}) as r2:
            await r2.read()
            if r2.status == 200:
                return "Login Succeeded", identity
            raise Unauthorized(f"login attempt to {url} failed with status: {r2.status} {r2.reason}")


class Repository:
    """Requests against one repository, with auth handled per request."""

    def __init__(self, client: RegistryClient, ref: Reference, endpoints: list[Endpoint],
                 auth: AuthConfig | None, *, actions: str = "pull", extra_scopes: tuple[str, ...] = ()) -> None:
        self.client = client
        self.ref = ref
        self.auth = auth
        self._endpoints = endpoints
        self.endpoint = endpoints[0]
        self._scope = repository_scope(ref.path, actions)
        self._extra_scopes = list(extra_scopes)

    def _url(self, kind: str, ident: str) -> str:
        return f"{self.endpoint.base}/v2/{self.ref.path}/{kind}/{ident}"

    # ---- auth
    def _token_key(self, ch: Challenge, scopes: list[str]) -> tuple[str, str, str, str]:
        creds = self.auth.credentials() if self.auth else None
        user = creds[0] if creds else (self.auth.identitytoken[:16] if self.auth else "")
        return ch.params.get("realm", ""), ch.params.get("service", ""), " ".join(scopes), user

    def _scopes(self, ch: Challenge) -> list[str]:
        # Our own pull scope, not the challenge's: a remembered challenge may name another
        # repository of the same registry.
        return [self._scope, *self._extra_scopes]

    async def _auth_header(self, ch: Challenge | None, *, fresh: bool = False) -> str | None:
        if ch is None:
            return None
        if ch.scheme == "basic":
            creds = self.auth.credentials() if self.auth else None
            return basic_header(*creds) if creds else None
        if ch.scheme == "bearer":
            scopes = self._scopes(ch)
            key = self._token_key(ch, scopes)
            if fresh:
                self.client.tokens.drop(key)
            token = self.client.tokens.get(key)
            if token is None:
                try:
                    token, lifetime = await fetch_token(self.client.session(), ch, scopes, self.auth,
                                                        ssl=self.endpoint.ssl)
                except AuthError as e:
                    raise PullUnauthorized(str(e)) from None
                self.client.tokens.put(key, token, lifetime)
            return "Bearer " + token
        return None

    async def _request(self, method: str, url: str, headers: dict[str, str] | None = None, *,
                       body: Callable[[], Any] | None = None) -> aiohttp.ClientResponse:
        """Send with the credentials the endpoint's last challenge asked for; on a 401 answer
        the new challenge and retry once. The caller owns (and must release) the response.
        `body` makes the request body afresh for each attempt (a stream cannot be sent twice)."""
        hdrs = dict(headers or {})
        base = self.endpoint.base
        ch = self.client._challenges.get(base)
        for attempt in range(2):
            value = await self._auth_header(ch, fresh=attempt > 0)
            if value is not None:
                hdrs["Authorization"] = value
            resp = await self.client.session().request(method, url, headers=hdrs, ssl=self.endpoint.ssl,
                                                       allow_redirects=True,
                                                       data=body() if body is not None else None)
            if resp.status != 401 or attempt == 1:
                return resp
            challenges = parse_challenges(resp.headers.getall("WWW-Authenticate", []))
            chosen = next((c for c in challenges if c.scheme == "bearer"), None) or \
                next((c for c in challenges if c.scheme == "basic"), None)
            if chosen is None:
                return resp
            if chosen.scheme == "basic" and (self.auth is None or self.auth.credentials() is None):
                resp.release()
                raise PullUnauthorized(f"{method.capitalize()} \"{url}\": no basic auth credentials")
            resp.release()
            self.client._challenges[base] = chosen
            ch = chosen
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- manifests
    async def _get_manifest(self, ident: str) -> tuple[bytes, str, str]:
        """(body, media type, digest) of one manifest document, verified when `ident` is a
        digest."""
        url = self._url("manifests", ident)
        resp = await self._request("GET", url, {"Accept": MANIFEST_ACCEPT})
        try:
            if resp.status != 200:
                body = await resp.content.read(64 << 10)
                raise self._manifest_error(resp.status, body, url)
            if (resp.content_length or 0) > MAX_MANIFEST:
                raise RegistryError(f"manifest {ident} is larger than {MAX_MANIFEST} bytes")
            body = await resp.read()
            ctype = resp.headers.get("Content-Type", "")
        finally:
            resp.release()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if ident.startswith("sha256:") and digest != ident:
            raise RegistryError(f"manifest verification failed for digest {ident}")
        try:
            media_type = classify_manifest(body, ctype)
        except ManifestError as e:
            raise RegistryError(str(e)) from None
        return body, media_type, digest

    def _manifest_error(self, status: int, body: bytes, url: str) -> EngineError:
        code, message = _first_error(body)
        ref = self.ref
        if code == "MANIFEST_UNKNOWN" or (status == 404 and not code):
            detail = _errcode_text("MANIFEST_UNKNOWN", message or "manifest unknown")
            return NotFound(f"manifest for {ref.familiar} not found: {detail}")
        if code == "NAME_UNKNOWN":
            return NotFound(f"repository {ref.familiar_name} not found: {_errcode_text(code, message)}")
        if code == "DENIED" or (status == 401 and self.auth is None):
            msg = message or "requested access to the resource is denied"
            return NotFound(f"pull access denied for {ref.familiar_name}, repository does not exist or may "
                            f"require 'docker login': denied: {msg}")
        if status == 401:
            return PullUnauthorized(f"Get \"{url}\": unauthorized: {message or 'authentication required'}")
        if code:
            return RegistryError(_errcode_text(code, message), status if status < 500 else 500)
        return RegistryError(f"Get \"{url}\": unexpected status {status} from the registry", 500)

    async def resolve(self, want: Platform | None = None) -> ResolvedManifest:
        """Fetch the reference's manifest (walking an index for the platform), trying the next
        endpoint when one cannot be reached (or, for a mirror, fails in any way)."""
        errors: list[Exception] = []
        for i, ep in enumerate(self._endpoints):
            self.endpoint = ep
            try:
                resolved = await self._resolve_here(want)
            except (aiohttp.ClientConnectionError, ssl.SSLError, asyncio.TimeoutError) as e:
                errors.append(e)
                if i + 1 < len(self._endpoints):
                    log.debug("registry endpoint %s unreachable (%s), trying the next", ep.base, e)
                    continue
                raise RegistryError(f"Get \"{ep.base}/v2/\": {_conn_error_text(e)}", 500) from None
            except EngineError as e:
                if ep.mirror and i + 1 < len(self._endpoints):
                    log.info("mirror %s failed (%s), falling back", ep.base, e)
                    errors.append(e)
                    continue
                raise
            self.client._remember(ep)
            return resolved
        raise RegistryError(str(errors[-1]) if errors else "no registry endpoint", 500)  # pragma: no cover

    async def _resolve_here(self, want: Platform | None) -> ResolvedManifest:
        ident = self.ref.digest or self.ref.tag or "latest"
        body, mt, digest = await self._get_manifest(ident)
        if mt in DOCKER_SCHEMA1:
            raise RegistryError(f"unsupported manifest format: {mt} (schema 1 images are deprecated; "
                                "re-push the image with a current tool)", 400)
        if mt in INDEX_TYPES:
            index = decode_index_checked(body)
            platform_ = want or host_platform()
            desc = select_manifest(index.manifests, platform_)
            if desc is None:
                raise NotFound(f"no matching manifest for {platform_} in the manifest list entries")
            mbody, mmt, mdigest = await self._get_manifest(desc.digest)
            if mmt not in MANIFEST_TYPES:
                raise RegistryError(f"unsupported manifest media type {mmt} in the manifest list")
            return ResolvedManifest(digest, mdigest, decode_manifest_checked(mbody), mbody, mmt, body, mt)
        if mt in MANIFEST_TYPES:
            return ResolvedManifest(digest, digest, decode_manifest_checked(body), body, mt)
        raise RegistryError(f"unsupported manifest media type {mt}")

    # ---- blobs
    async def get_blob(self, desc: Descriptor, *, limit: int = 16 << 20) -> bytes:
        """A small blob (an image config) in memory, verified."""
        if desc.size > limit:
            raise RegistryError(f"blob {desc.digest} is too large ({desc.size} bytes) to read in memory")
        url = self._url("blobs", desc.digest)
        resp = await self._request("GET", url)
        try:
            if resp.status != 200:
                body = await resp.content.read(64 << 10)
                code, message = _first_error(body)
                raise RegistryError(f"fetching blob {desc.digest}: "
                                    f"{_errcode_text(code, message) if code else resp.status}",
                                    404 if resp.status == 404 else 500)
            data = await resp.read()
        finally:
            resp.release()
        got = "sha256:" + hashlib.sha256(data).hexdigest()
        if got != desc.digest:
            raise RegistryError(f"blob {desc.digest} failed verification: its data hashes to {got}")
        return data

    async def fetch_blob(self, desc: Descriptor, sink: BlobSink, *, label: str | None = None,
                         on_response: Callable[[int, int], Awaitable[None]] | None = None) -> None:
        """Stream a blob into `sink`, starting at `sink.offset`.

        Resumes with `Range: bytes=N-`; a server that ignores the range sends the whole blob and
        we skip the bytes the sink already has (the download restarts from 0 on the wire, the sink
        never sees a byte twice). Stalls and dropped connections reconnect at the offset.
        `on_response(offset, status)` is awaited once per connection before any byte is written.
        """
        label = label or desc.short_id
        url = self._url("blobs", desc.digest)
        stalls = 0
        drops = 0
        while True:
            start = sink.offset
            if desc.size and start >= desc.size:
                return
            headers = {"Range": f"bytes={start}-"} if start else {}
            try:
                resp = await self._request("GET", url, headers)
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as e:
                drops += 1
                if drops > MAX_RECONNECTS:
                    raise RegistryError(f"layer {label}: download failed: {_conn_error_text(e)}") from None
                await asyncio.sleep(min(0.2 * drops, 2.0))
                continue
            try:
                skip = self._check_blob_response(resp, start, desc, label)
                if on_response is not None:
                    await on_response(start, resp.status)
                got_bytes = False
                while True:
                    try:
                        async with asyncio.timeout(self.client.stall_timeout):
                            chunk = await resp.content.readany()
                    except TimeoutError:
                        if got_bytes:
                            stalls = 0
                        stalls += 1
                        if stalls >= MAX_STALLS:
                            raise TransferStalled(
                                f"layer {label}: download stalled: no data for {self.client.stall_timeout:g}s "
                                f"{MAX_STALLS} times in a row, giving up at {sink.offset} of {desc.size} bytes"
                            ) from None
                        log.info("layer %s stalled at %d bytes, reconnecting", label, sink.offset)
                        break
                    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as e:
                        drops = 0 if got_bytes else drops + 1
                        if drops > MAX_RECONNECTS:
                            raise RegistryError(f"layer {label}: download failed: {_conn_error_text(e)}") from None
                        log.info("layer %s: connection lost at %d bytes (%s), resuming", label, sink.offset, e)
                        break
                    if not chunk:
                        if desc.size and sink.offset < desc.size:
                            # Clean EOF before the end: a proxy cut us off; resume.
                            drops = 0 if got_bytes else drops + 1
                            if drops > MAX_RECONNECTS:
                                raise RegistryError(f"layer {label}: download failed: connection closed at "
                                                    f"{sink.offset} of {desc.size} bytes")
                            break
                        resp.release()  # complete: the connection can serve the next blob
                        return
                    if not got_bytes:
                        got_bytes = True
                        stalls = 0
                        drops = 0
                    if skip:
                        if len(chunk) <= skip:
                            skip -= len(chunk)
                            continue
                        chunk = chunk[skip:]
                        skip = 0
                    if desc.size and sink.offset + len(chunk) > desc.size:
                        raise RegistryError(f"layer {label}: the registry sent more than the {desc.size} "
                                            f"bytes the manifest declares")
                    await sink.write(chunk)
            finally:
                resp.close()

    def _check_blob_response(self, resp: aiohttp.ClientResponse, start: int, desc: Descriptor, label: str) -> int:
        """How many leading bytes of this response the sink already has."""
        if start and resp.status == 206:
            m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", ""))
            if m is None:
                raise RegistryError(f"layer {label}: the registry answered a range request without a valid "
                                    f"Content-Range")
            first = int(m.group(1))
            if first > start:
                raise RegistryError(f"layer {label}: the registry resumed at byte {first}, not {start}")
            return start - first
        if resp.status == 200:
            return start  # range ignored (or none asked): skip what we have
        if resp.status == 416:
            raise RegistryError(f"layer {label}: the registry cannot resume at byte {start} (416)", 500)
        status = resp.status
        raise RegistryError(f"layer {label}: fetching blob {desc.digest} failed with status {status}",
                            404 if status == 404 else 500)


def decode_index_checked(body: bytes) -> Index:
    try:
        return decode_index(body)
    except ManifestError as e:
        raise RegistryError(str(e)) from None


def decode_manifest_checked(body: bytes) -> Manifest:
    try:
        return decode_manifest(body)
    except ManifestError as e:
        raise RegistryError(str(e)) from None


_DIGITS_AND_DOTS_RE = re.compile(r"^[0-9.]+$")
# a registry's host[:port] as a reference may name it (ASCII host names, IPv4, [IPv6])
_LOGIN_DOMAIN_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                              r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")


def _conn_error_text(e: BaseException) -> str:
    # Go's wording, never aiohttp's (whose text holds the repr of our SSL context)
    return connection_error_text(e)

