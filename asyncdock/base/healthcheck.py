"""Docker's HealthConfig (moby's container.HealthConfig), shared by container create requests and
image configs (asyncdock.base.oci adds the StartInterval those carry)."""
from __future__ import annotations

import msgspec


class HealthConfig(msgspec.Struct, rename="pascal", omit_defaults=True):
    test: list[str] | None = None
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    retries: int = 0
