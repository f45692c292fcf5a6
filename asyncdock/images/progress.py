"""Docker's JSON progress messages, byte for byte (pkg/jsonmessage, pkg/streamformatter).

Clients such as docker-java match the *last status string* of a pull, and the docker CLI renders
the `progress` bar the daemon pre-renders, so both the keys' order and the text must be Docker's:

    {"status":"Pulling fs layer","progressDetail":{},"id":"70484b5bb606"}
    {"status":"Downloading","progressDetail":{"current":36445,"total":1084326},
     "progress":"[=\\u003e    ...    ]  36.45kB/1.084MB","id":"70484b5bb606"}

Go's encoder escapes <, > and & as \\u003c, \\u003e, \\u0026, and each object ends with "\\r\\n".
"""
from __future__ import annotations

from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()
_DECIMAL_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
# The daemon has no terminal, so jsonmessage assumes a 200-column one and always draws the bar.
_BAR_WIDTH = 50

Message = dict[str, Any]


def human_size(size: float) -> str:
    """go-units HumanSize: 4 significant digits, decimal units ("36.45kB", "1.084MB")."""
    i = 0
    while size >= 1000.0 and i < len(_DECIMAL_UNITS) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.4g}{_DECIMAL_UNITS[i]}"


def progress_bar(current: int, total: int) -> str:
    """JSONProgress.String() at width 200, without the time-left part (the daemon sends no
    start time)."""
    if current <= 0 and total <= 0:
        return ""
    if total <= 0:
        return f"{human_size(current):>8}"
    pct = min(int(current / total * 100) // 2, _BAR_WIDTH)
    bar = f"[{'=' * pct}>{' ' * max(_BAR_WIDTH - pct, 0)}] "
    if current > total:
        return bar + f"{human_size(current):>8}"
    return bar + f"{human_size(current):>8}/{human_size(total)}"


def status(text: str, id_: str = "") -> Message:
    """progress.Message: no progressDetail key at all."""
    msg: Message = {"status": text}
    if id_:
        msg["id"] = id_
    return msg


def layer_status(text: str, id_: str) -> Message:
    """progress.Update: an empty progressDetail object."""
    return {"status": text, "progressDetail": {}, "id": id_}


def layer_progress(text: str, id_: str, current: int, total: int) -> Message:
    detail: dict[str, int] = {}
    if current:
        detail["current"] = current
    if total:
        detail["total"] = total
    msg: Message = {"status": text, "progressDetail": detail}
    bar = progress_bar(current, total)
    if bar:
        msg["progress"] = bar
    msg["id"] = id_
    return msg


def error(text: str) -> Message:
    return {"errorDetail": {"message": text}, "error": text}


def encode(msg: Message) -> bytes:
    """One stream object as the daemon writes it, "\\r\\n" included."""
    raw = _encoder.encode(msg)
    if b"<" in raw or b">" in raw or b"&" in raw or b"\xe2\x80\xa8" in raw or b"\xe2\x80\xa9" in raw:
        raw = (raw.replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")
               .replace("\u2028".encode(), b"\\u2028").replace("\u2029".encode(), b"\\u2029"))
    return raw + b"\r\n"
