"""One line a person can act on, for an exception that reaches a client.

Python's own texts are for programmers: `[Errno 22] Invalid argument: 17`, aiohttp's
`Cannot connect to host h:1 ssl:<ssl.SSLContext object at 0x...> [...]`. A client sees
`<operation> <path>: <strerror>` for an OSError and Go's wording for a connection failure
(`dial tcp 127.0.0.1:1: connect: connection refused`), as Docker's messages read.
"""
from __future__ import annotations

import asyncio
import os
import re
import socket
import ssl

from ..base.errors import EngineError

_ERRNO_PREFIX = re.compile(r"^\[Errno -?\d+\]\s*")
_ADDR = re.compile(r"\('([^']+)', (\d+)")


def one_line(text: str) -> str:
    return " ".join(text.split())


def os_error_text(e: OSError, operation: str = "") -> str:
    """`<operation> <path>: <strerror>`. A strerror that is already a sentence of ours (the
    engine raises OSError(errno, "mount X on Y: Invalid argument")) is kept as it is."""
    plain = os.strerror(e.errno) if isinstance(e.errno, int) and e.errno > 0 else ""
    strerror = e.strerror if isinstance(e.strerror, str) and e.strerror else plain
    if not strerror:
        return one_line(_ERRNO_PREFIX.sub("", str(e)) or type(e).__name__)
    if plain and strerror != plain:
        return one_line(f"{operation}: {strerror}" if operation else strerror)
    where = [str(x) for x in (e.filename, e.filename2) if x is not None]
    subject = " ".join(p for p in (operation, " -> ".join(where)) if p)
    return one_line(f"{subject}: {strerror}" if subject else strerror)


def _go_errno_text(err: OSError | None) -> str:
    """Go's syscall error strings are strerror in lower case ("connection refused")."""
    if err is None:
        return ""
    if isinstance(err.errno, int) and err.errno > 0:
        return os.strerror(err.errno).lower()
    text = _ERRNO_PREFIX.sub("", str(err))
    # asyncio's happy eyeballs: "Multiple exceptions: [Errno 111] Connect call failed (...), ..."
    m = re.search(r"\[Errno (\d+)\]", str(err))
    if m:
        return os.strerror(int(m.group(1))).lower()
    return one_line(text)


def connection_error_text(e: BaseException) -> str:
    """A failed connection or transfer to a registry, as Go's net/http words it (after the
    caller's `Get "<url>": `)."""
    import aiohttp

    if isinstance(e, (asyncio.TimeoutError, TimeoutError, aiohttp.ServerTimeoutError)):
        return "i/o timeout"
    if isinstance(e, aiohttp.ClientConnectorCertificateError):
        return one_line(f"tls: failed to verify certificate: {e.certificate_error}")
    if isinstance(e, aiohttp.ClientSSLError | ssl.SSLError):
        err = e.os_error if isinstance(e, aiohttp.ClientConnectorError) else e
        reason = getattr(err, "reason", None) or getattr(err, "strerror", None) or str(err)
        return one_line(f"tls: {reason}")
    if isinstance(e, aiohttp.ClientConnectorError):
        os_err = e.os_error
        if isinstance(e, getattr(aiohttp, "ClientConnectorDNSError", ())) or \
                isinstance(os_err, socket.gaierror):
            return f"dial tcp: lookup {e.host}: no such host"
        m = _ADDR.search(str(os_err))
        addr = f"{m.group(1)}:{m.group(2)}" if m else f"{e.host}:{e.port}"
        if ":" in addr.rsplit(":", 1)[0]:
            host, port = addr.rsplit(":", 1)
            addr = f"[{host}]:{port}"
        return f"dial tcp {addr}: connect: {_go_errno_text(os_err) or 'connection failed'}"
    if isinstance(e, aiohttp.ServerDisconnectedError):
        return "EOF"
    if isinstance(e, aiohttp.ClientPayloadError):
        return "unexpected EOF"
    if isinstance(e, aiohttp.ClientOSError):
        return f"read: {_go_errno_text(e) or 'connection failed'}"
    if isinstance(e, OSError):
        return os_error_text(e)
    return one_line(str(e) or type(e).__name__)


def client_text(e: BaseException, operation: str = "") -> str:
    """What a client is told about any exception: one line, no repr, no errno number."""
    if isinstance(e, EngineError):
        return one_line(e.message)
    import aiohttp

    if isinstance(e, aiohttp.ClientError):
        return connection_error_text(e)
    if isinstance(e, OSError):
        return os_error_text(e, operation)
    text = one_line(str(e))
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
