"""Error categories, mapped to HTTP status codes once, at the API edge (moby's httpstatus)."""
from __future__ import annotations

import errno
import os


class EngineError(Exception):
    """Base of every error the engine reports to a client. `str(e)` is the message clients show."""

    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class APIError(EngineError):
    """Raised by the client for any non-2xx answer; `status` is the HTTP status."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.status = status


class InvalidParameter(EngineError):
    status = 400


class Unauthorized(EngineError):
    status = 401


class Forbidden(EngineError):
    status = 403


class NotFound(EngineError):
    status = 404


class Conflict(EngineError):
    status = 409


class NotImplementedYet(EngineError):
    status = 501


class Unavailable(EngineError):
    status = 503


class SystemError_(EngineError):
    status = 500


class NoSpace(SystemError_):
    """The data root's file system is full (ENOSPC/EDQUOT). 500, as Docker answers."""


def no_space(e: BaseException, data_root: str | os.PathLike[str] | None = None) -> NoSpace | None:
    """A full disk met anywhere while serving a request, as one line in Go's shape ("write
    PATH: no space left on device", else naming the data root); None for any other error."""
    if not isinstance(e, OSError) or e.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    if e.filename:
        return NoSpace(f"write {os.fsdecode(e.filename)}: no space left on device")
    if data_root is not None:
        return NoSpace(f"no space left on device (data root {os.fsdecode(data_root)})")
    return NoSpace("no space left on device")


class NotModified(EngineError):
    """304: start of a running container, stop of a stopped one. Sent with an empty body."""

    status = 304

    def __init__(self, message: str = "") -> None:
        super().__init__(message)


def status_error(message: str, status: int) -> EngineError:
    """Build the error class that matches an HTTP status (used by the client side)."""
    cls = {400: InvalidParameter, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
           501: NotImplementedYet, 503: Unavailable}.get(status)
    if cls is None:
        return APIError(message, status)
    return cls(message)
