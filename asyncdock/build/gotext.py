"""Go's %q and %v of the values moby puts in a build step's comment (its history CreatedBy):
`CMD ["sh" "-c"]`, `VOLUME [/data]`, `HEALTHCHECK &{["CMD-SHELL" "true"] "5s" ...}`."""
from __future__ import annotations

from collections.abc import Sequence

from ..base.healthcheck import HealthConfig


def quote(s: str) -> str:
    """strconv.Quote."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\a":
            out.append("\\a")
        elif ch == "\b":
            out.append("\\b")
        elif ch == "\f":
            out.append("\\f")
        elif ch == "\v":
            out.append("\\v")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif not ch.isprintable():
            out.append(f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def quote_list(items: Sequence[str] | None) -> str:
    """%q of a []string."""
    return "[" + " ".join(quote(s) for s in items or ()) + "]"


def list_v(items: Sequence[str] | None) -> str:
    """%v of a []string."""
    return "[" + " ".join(items or ()) + "]"


def duration(ns: int) -> str:
    """time.Duration.String()."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_trim(ns / 1000)}µs"
    if ns < 1_000_000_000:
        return f"{sign}{_trim(ns / 1_000_000)}ms"
    secs = ns / 1e9
    h, rem = divmod(ns, 3600 * 10**9)
    m, rem = divmod(rem, 60 * 10**9)
    s = _trim(rem / 1e9)
    if h:
        return f"{sign}{h}h{m}m{s}s"
    if m:
        return f"{sign}{m}m{s}s"
    del secs
    return f"{sign}{s}s"


def _trim(x: float) -> str:
    text = f"{x:.9f}".rstrip("0").rstrip(".")
    return text or "0"


def _rune(n: int) -> str:
    """%q of an int: a Go rune literal."""
    if n == ord("'"):
        return "'\\''"
    if 0x20 <= n < 0x7F:
        return f"'{chr(n)}'"
    if n < 0x100:
        return f"'\\x{n:02x}'"
    return f"'\\u{n:04x}'"


def healthcheck(hc: HealthConfig) -> str:
    """%q of a *container.HealthConfig (Test, Interval, Timeout, StartPeriod, StartInterval, Retries)."""
    parts = [quote_list(hc.test), quote(duration(hc.interval or 0)), quote(duration(hc.timeout or 0)),
             quote(duration(hc.start_period or 0)), quote(duration(getattr(hc, "start_interval", 0) or 0)),
             _rune(hc.retries or 0)]
    return "&{" + " ".join(parts) + "}"
