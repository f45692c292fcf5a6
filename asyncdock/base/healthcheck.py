"""Docker's HealthConfig (moby's container.HealthConfig), shared by container create requests and
image configs. Durations are nanoseconds, as Docker stores them; StartInterval is API 1.44's (the
create route drops it for older requests, as moby does)."""
from __future__ import annotations

import msgspec


class HealthConfig(msgspec.Struct, rename="pascal", omit_defaults=True):
    test: list[str] | None = None
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    retries: int = 0
    start_interval: int = 0

# moby's container.MinimumDuration: a duration set (not 0) must be at least this
MINIMUM_DURATION_NS = 1_000_000


def validate(hc: HealthConfig) -> str | None:
    """moby's validateHealthCheck (daemon/container.go): the text of the first invalid field,
    or None."""
    for name, ns in (("Interval", hc.interval), ("Timeout", hc.timeout)):
        if ns != 0 and ns < MINIMUM_DURATION_NS:
            return f"{name} in Healthcheck cannot be less than 1ms"
    if hc.retries < 0:
        return "Retries in Healthcheck cannot be negative"
    for name, ns in (("StartPeriod", hc.start_period), ("StartInterval", hc.start_interval)):
        if ns != 0 and ns < MINIMUM_DURATION_NS:
            return f"{name} in Healthcheck cannot be less than 1ms"
    return None
