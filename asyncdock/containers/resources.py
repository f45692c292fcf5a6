"""A container's resource limits (HostConfig's cgroup fields): Docker's checks of them, the same
at create and at `docker update`, and the spec's Resources built from them, the same at start and
at update."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from ..base import errors
from .models import HostConfig
from .spec import Resources, linux_resources

MIN_MEMORY = 6 * 1024 * 1024  # moby's linuxMinMemory


def check_resources(hc: HostConfig, cpu_count: int) -> None:
    """Docker's range and consistency checks (daemon_unix.go verifyPlatformContainerResources),
    with its texts; `cpu_count` is the host's (the upper bound of --cpus)."""
    # One text for a Period and a Quota conflict: moby has a second one for the quota
    # ("Nano CPUs and CPU Quota cannot both be set"); ours has always said Period.
    if hc.nano_cpus and (hc.cpu_quota or hc.cpu_period):
        raise errors.InvalidParameter("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if hc.nano_cpus and (hc.nano_cpus < 10_000_000 or hc.nano_cpus > cpu_count * 1_000_000_000):
        raise errors.InvalidParameter(f"Range of CPUs is from 0.01 to {float(cpu_count):.2f}, "
                                      f"as there are only {cpu_count} CPUs available")
    if hc.memory and hc.memory < MIN_MEMORY:
        raise errors.InvalidParameter("Minimum memory limit allowed is 6MB")
    if hc.memory_swap and hc.memory_swap > 0 and hc.memory and hc.memory_swap < hc.memory:
        raise errors.InvalidParameter("Minimum memoryswap limit should be larger than memory limit, see usage")
    if hc.memory_swap and hc.memory_swap > 0 and not hc.memory:
        raise errors.InvalidParameter("You should always set the Memory limit when using Memoryswap limit, "
                                      "see usage")


def check_update(hc: HostConfig, new: Mapping[str, Any]) -> None:
    """`docker update`'s own checks of the values it changes (`new`, by HostConfig attribute)
    against those the container has; check_resources then checks the result."""
    mem = new.get("memory", 0)
    if mem and hc.memory_swap > 0 and mem > hc.memory_swap and not new.get("memory_swap"):
        raise errors.InvalidParameter("Memory limit should be smaller than already set memoryswap limit, "
                                      "update the memoryswap at the same time")
    # moby gives this text to a new CPU Quota over a set NanoCPUs; here it goes to a new NanoCPUs
    # with a quota set or given with it, and a new quota over NanoCPUs gets check_resources'
    # text: both kept as they were.
    if new.get("nano_cpus") and (hc.cpu_quota or new.get("cpu_quota")):
        raise errors.InvalidParameter("Conflicting options: CPU Quota cannot be updated as NanoCPUs has already "
                                      "been set")


def spec_resources(hc: HostConfig) -> Resources:
    """What the container's cgroups get at start."""
    return Resources(
        memory=hc.memory, memory_swap=hc.memory_swap, memory_reservation=hc.memory_reservation,
        memory_swappiness=hc.memory_swappiness, cpu_shares=hc.cpu_shares, cpu_period=hc.cpu_period,
        cpu_quota=hc.cpu_quota, nano_cpus=hc.nano_cpus, cpuset_cpus=hc.cpuset_cpus, cpuset_mems=hc.cpuset_mems,
        pids_limit=hc.pids_limit, oom_kill_disable=bool(hc.oom_kill_disable), blkio_weight=hc.blkio_weight)


def update_resources(hc: HostConfig) -> dict[str, object]:
    """What `docker update` asks the runtime to apply to a running container (its `update
    --resources` JSON): the start's resources without the device rules and without what update
    cannot change (swappiness, the OOM killer), which the runtime is then not asked to rewrite."""
    r = msgspec.structs.replace(spec_resources(hc), memory_swappiness=None, oom_kill_disable=False)
    res = linux_resources(r, [])
    res.pop("devices", None)
    return res
