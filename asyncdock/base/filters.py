"""Docker's `filters` query parameter: JSON, either {"key": {"value": true}} (the CLI) or
{"key": ["value"]} (docker-py)."""
from __future__ import annotations

from collections.abc import Iterable

import msgspec

from .errors import InvalidParameter


def parse_filters(raw: str | None, allowed: Iterable[str] | None = None) -> dict[str, list[str]]:
    if raw is None or raw.strip() in ("", "{}", "null"):
        return {}
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError as e:
        raise InvalidParameter(f"invalid filter: {e}") from None
    if not isinstance(data, dict):
        raise InvalidParameter("invalid filter: expected a JSON object")
    out: dict[str, list[str]] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out[key] = [str(k) for k, v in value.items() if v]
        elif isinstance(value, list):
            out[key] = [str(v) for v in value]
        elif isinstance(value, str):
            out[key] = [value]
        else:
            raise InvalidParameter(f"invalid filter '{key}'")
    if allowed is not None:
        ok = set(allowed)
        for key in out:
            if key not in ok:
                raise InvalidParameter(f"invalid filter '{key}'")
    return out


def match_label(labels: dict[str, str], wanted: list[str]) -> bool:
    """label=key or label=key=value, all must match (Docker's semantics)."""
    for item in wanted:
        if "=" in item:
            k, v = item.split("=", 1)
            if labels.get(k) != v:
                return False
        elif item not in labels:
            return False
    return True


def bool_filter(values: list[str], key: str) -> bool | None:
    """A filter like dangling=true|false|1|0; None when absent."""
    if not values:
        return None
    v = values[-1].lower()
    if v in ("true", "1"):
        return True
    if v in ("false", "0"):
        return False
    raise InvalidParameter(f"Invalid filter '{key}={values[-1]}'")


def bool_or_default(values: list[str] | None, key: str, default: bool) -> bool:
    """moby's Args.GetBoolOrDefault: absent means `default`; a truthy value (1, true) and no
    falsy one (0, false) means True and the reverse False; both, or neither, is an invalid
    filter naming the values (`docker image prune -a --filter dangling=true` sends both)."""
    if values is None:
        return default
    if not values:
        raise InvalidParameter(f"invalid filter '{key}'")
    is_false = "0" in values or "false" in values
    is_true = "1" in values or "true" in values
    if is_false == is_true:
        raise InvalidParameter(f"invalid filter '{key}=[{' '.join(sorted(values))}]'")
    return is_true
