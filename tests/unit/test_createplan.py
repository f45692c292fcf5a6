"""The create plan (containers/createplan.py) and the resource checks create and update share
(containers/resources.py): pure functions, no root, no daemon, no event loop.

What `docker create` makes of a request and an image config, pinned as it is: Docker's merge of
the image's config under the request's, the HostConfig defaults, and every error a create gives
from the request alone, with its text."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import msgspec
import pytest

from asyncdock.base import errors, oci
from asyncdock.base.healthcheck import HealthConfig
from asyncdock.base.timefmt import rfc3339nano
from asyncdock.containers.createplan import DaemonFacts, plan_create
from asyncdock.containers.health import effective
from asyncdock.containers.models import ContainerRecord, CreateRequest, HostConfig, LogConfig, RestartPolicy
from asyncdock.containers.resources import check_resources, check_update, spec_resources, update_resources
from asyncdock.containers.spec import DEFAULT_SHM_SIZE, MASKED_PATHS, READONLY_PATHS
from asyncdock_logdriver_jsonfile import JSONFileDriver
from asyncdock_logdriver_none import NoneDriver

CID = "0123456789ab" + "c" * 52
IMAGE_ID = "sha256:" + "e" * 64
NOW = 1_700_000_000_123_456_789
DIR = Path("/data/containers") / CID
MIB = 1024 * 1024

FACTS = DaemonFacts(
    default_runtime="runc", runtimes=frozenset({"runc", "crun"}),
    log_drivers={"json-file": JSONFileDriver(), "none": NoneDriver()}, log_driver="json-file",
    log_opts={"max-size": "10m"}, storage_driver="overlay2", cpu_count=4, cgroup_v2=True, swap_limit=True)


def plan(image: oci.ContainerConfig | None = None, facts: DaemonFacts = FACTS, host: HostConfig | None = None,
         **config: Any) -> ContainerRecord:
    req = CreateRequest(image="example:1", host_config=host, **config)
    return plan_create(req, image, image_id=IMAGE_ID, cid=CID, name="/web", now_ns=NOW, facts=facts,
                       container_dir=DIR)


def refused(text: str, image: oci.ContainerConfig | None = None, facts: DaemonFacts = FACTS,
            host: HostConfig | None = None, **config: Any) -> None:
    with pytest.raises(errors.InvalidParameter) as e:
        plan(image, facts, host, **config)
    assert e.value.message == text


# --------------------------------------------------------------------------- the record

def test_the_record_of_a_plain_request() -> None:
    rec = plan(cmd=["/bin/app", "-v"])
    assert (rec.id, rec.name, rec.image, rec.image_id) == (CID, "/web", "example:1", IMAGE_ID)
    assert (rec.created_ns, rec.created) == (NOW, rfc3339nano(NOW))
    assert (rec.path, rec.args) == ("/bin/app", ["-v"])
    assert (rec.runtime, rec.host_config.runtime, rec.driver) == ("runc", "runc", "overlay2")
    assert rec.log_path == str(DIR / f"{CID}-json.log")
    assert rec.config.hostname == CID[:12]  # Docker's: the short id
    assert rec.state.status == "created" and rec.mounts == [] and not rec.has_been_started


def test_the_request_is_left_as_it_was() -> None:
    req = CreateRequest(image="example:1", cmd=["/bin/app"], env=["A=1"],
                        host_config=HostConfig(memory=64 * MIB, log_config=LogConfig()))
    before = msgspec.json.encode(req)
    plan_create(req, oci.ContainerConfig(env=["PATH=/bin"], labels={"a": "b"}), image_id=IMAGE_ID, cid=CID,
                name="/web", now_ns=NOW, facts=FACTS, container_dir=DIR)
    assert msgspec.json.encode(req) == before


def test_no_command_anywhere() -> None:
    refused("No command specified")
    refused("No command specified", oci.ContainerConfig(env=["PATH=/bin"]))


# --------------------------------------------------------------------------- Cmd and Entrypoint

IMG = oci.ContainerConfig(entrypoint=["/entry.sh"], cmd=["serve", "--port=80"])


def test_the_image_command_when_the_request_has_none() -> None:
    rec = plan(IMG)
    assert (rec.config.entrypoint, rec.config.cmd) == (["/entry.sh"], ["serve", "--port=80"])
    assert (rec.path, rec.args) == ("/entry.sh", ["serve", "--port=80"])


def test_a_request_cmd_replaces_the_image_cmd_and_keeps_its_entrypoint() -> None:
    rec = plan(IMG, cmd=["migrate"])
    assert (rec.config.entrypoint, rec.config.cmd) == (["/entry.sh"], ["migrate"])
    assert (rec.path, rec.args) == ("/entry.sh", ["migrate"])


def test_a_request_entrypoint_resets_the_image_cmd() -> None:
    rec = plan(IMG, entrypoint=["/bin/sh"])
    assert (rec.config.entrypoint, rec.config.cmd) == (["/bin/sh"], None)
    assert (rec.path, rec.args) == ("/bin/sh", [])
    rec = plan(IMG, entrypoint=["/bin/sh"], cmd=["-c", "true"])
    assert (rec.path, rec.args) == ("/bin/sh", ["-c", "true"])


def test_an_empty_entrypoint_list_takes_the_image_cmd_but_not_its_entrypoint() -> None:
    rec = plan(IMG, entrypoint=[])
    assert (rec.config.entrypoint, rec.config.cmd) == ([], ["serve", "--port=80"])
    assert (rec.path, rec.args) == ("serve", ["--port=80"])


def test_an_empty_string_entrypoint_clears_the_entrypoint() -> None:
    # `docker run --entrypoint ""`: the CLI sends [""]; the image's Cmd is not taken either
    rec = plan(IMG, entrypoint=[""], cmd=["/bin/true"])
    assert (rec.config.entrypoint, rec.config.cmd) == (None, ["/bin/true"])
    assert (rec.path, rec.args) == ("/bin/true", [])
    refused("No command specified", IMG, entrypoint=[""])


# --------------------------------------------------------------------------- the rest of Config

def test_env_request_first_then_the_image_entries_it_does_not_name() -> None:
    image = oci.ContainerConfig(env=["PATH=/usr/bin", "LANG=C", "EMPTY="], cmd=["x"])
    rec = plan(image, env=["LANG=en_US.UTF-8", "DEBUG=1", "EMPTY"])
    # moby's merge (daemon/commit.go): the user's Env, then each image entry whose name it lacks
    assert rec.config.env == ["LANG=en_US.UTF-8", "DEBUG=1", "EMPTY", "PATH=/usr/bin"]
    assert plan(image).config.env == ["PATH=/usr/bin", "LANG=C", "EMPTY="]
    assert plan(cmd=["x"], env=None).config.env is None


def test_user_and_working_dir_come_from_the_image_unless_given() -> None:
    image = oci.ContainerConfig(user="app:app", working_dir="/srv", cmd=["x"])
    rec = plan(image)
    assert (rec.config.user, rec.config.working_dir) == ("app:app", "/srv")
    rec = plan(image, user="0", working_dir="/tmp")
    assert (rec.config.user, rec.config.working_dir) == ("0", "/tmp")
    rec = plan(cmd=["x"])
    assert (rec.config.user, rec.config.working_dir) == ("", "")


def test_labels_merge_and_the_request_wins() -> None:
    image = oci.ContainerConfig(labels={"maintainer": "me", "tier": "base"}, cmd=["x"])
    assert plan(image, labels={"tier": "web", "team": "a"}).config.labels == {
        "maintainer": "me", "tier": "web", "team": "a"}
    assert plan(cmd=["x"]).config.labels == {}  # never null, as Docker


def test_exposed_ports_and_volumes_are_unions() -> None:
    image = oci.ContainerConfig(exposed_ports={"80/tcp": {}}, volumes={"/data": {}}, cmd=["x"])
    rec = plan(image, exposed_ports={"443/tcp": {}, "80/tcp": {}}, volumes={"/cache": {}})
    assert rec.config.exposed_ports == {"80/tcp": {}, "443/tcp": {}}
    assert rec.config.volumes == {"/data": {}, "/cache": {}}
    rec = plan(cmd=["x"], exposed_ports={}, volumes={})
    assert (rec.config.exposed_ports, rec.config.volumes) == (None, None)


def test_the_image_healthcheck_is_inherited() -> None:
    hc = oci.HealthConfig(test=["CMD", "true"], interval=5_000_000_000, timeout=1_000_000_000,
                          start_period=2_000_000_000, retries=3, start_interval=1_000_000_000)
    rec = plan(oci.ContainerConfig(healthcheck=hc, cmd=["x"]))
    # as the request's type, StartInterval (API 1.44) with the rest
    assert rec.config.healthcheck == HealthConfig(test=["CMD", "true"], interval=5_000_000_000,
                                                  timeout=1_000_000_000, start_period=2_000_000_000, retries=3,
                                                  start_interval=1_000_000_000)
    assert type(rec.config.healthcheck) is HealthConfig


@pytest.mark.parametrize(("field", "value", "text"), [
    ("interval", 999_999, "Interval in Healthcheck cannot be less than 1ms"),
    ("timeout", -1, "Timeout in Healthcheck cannot be less than 1ms"),
    ("retries", -1, "Retries in Healthcheck cannot be negative"),
    ("start_period", 1, "StartPeriod in Healthcheck cannot be less than 1ms"),
    ("start_interval", 500_000, "StartInterval in Healthcheck cannot be less than 1ms"),
])
def test_a_healthcheck_duration_under_a_millisecond_is_refused_with_dockers_text(
        field: str, value: int, text: str) -> None:
    with pytest.raises(errors.InvalidParameter, match=f"^{text}$"):
        plan(cmd=["x"], healthcheck=HealthConfig(test=["CMD", "true"], **{field: value}))
    # 0 is "unset", and exactly 1 ms is allowed
    ok = 0 if field == "retries" else 1_000_000
    plan(cmd=["x"], healthcheck=HealthConfig(test=["CMD", "true"], **{field: ok}))


def test_a_request_healthcheck_replaces_the_image_one_and_none_disables_it() -> None:
    image = oci.ContainerConfig(healthcheck=oci.HealthConfig(test=["CMD", "true"], retries=3), cmd=["x"])
    rec = plan(image, healthcheck=HealthConfig(test=["NONE"]))
    assert rec.config.healthcheck == HealthConfig(test=["NONE"])
    assert effective(rec.config.healthcheck) is None
    # replaced whole: a request giving only an interval does not take the image's test
    rec = plan(image, healthcheck=HealthConfig(interval=1_000_000_000))
    assert rec.config.healthcheck == HealthConfig(interval=1_000_000_000)


def test_stop_signal_and_onbuild_from_the_image() -> None:
    image = oci.ContainerConfig(stop_signal="SIGQUIT", on_build=["RUN true"], cmd=["x"])
    rec = plan(image)
    assert (rec.config.stop_signal, rec.config.on_build) == ("SIGQUIT", ["RUN true"])
    assert plan(image, stop_signal="SIGINT").config.stop_signal == "SIGINT"
    assert plan(cmd=["x"]).config.stop_signal is None


def test_a_given_hostname_is_kept() -> None:
    assert plan(cmd=["x"], hostname="db").config.hostname == "db"


# --------------------------------------------------------------------------- HostConfig defaults

def test_host_config_defaults() -> None:
    hc = plan(cmd=["x"]).host_config
    assert hc.shm_size == DEFAULT_SHM_SIZE == 64 * MIB
    assert (hc.cgroupns_mode, hc.ipc_mode, hc.network_mode) == ("private", "private", "default")
    assert (hc.masked_paths, hc.readonly_paths) == (list(MASKED_PATHS), list(READONLY_PATHS))
    assert hc.restart_policy == RestartPolicy("no", 0)
    v1 = dataclasses.replace(FACTS, cgroup_v2=False)
    assert plan(facts=v1, cmd=["x"]).host_config.cgroupns_mode == "host"
    given = HostConfig(network_mode="", port_bindings=None, dns=None, devices=None, ulimits=None,
                       shm_size=MIB, ipc_mode="shareable", cgroupns_mode="host")
    hc = plan(cmd=["x"], host=given).host_config
    assert (hc.network_mode, hc.port_bindings, hc.dns, hc.devices, hc.ulimits) == ("default", {}, [], [], [])
    assert (hc.shm_size, hc.ipc_mode, hc.cgroupns_mode) == (MIB, "shareable", "host")


def test_privileged_has_no_masked_or_readonly_paths() -> None:
    hc = plan(cmd=["x"], host=HostConfig(privileged=True, masked_paths=["/x"], readonly_paths=["/y"])).host_config
    assert (hc.masked_paths, hc.readonly_paths) == (None, None)
    hc = plan(cmd=["x"], host=HostConfig(masked_paths=[], readonly_paths=["/y"])).host_config
    assert (hc.masked_paths, hc.readonly_paths) == ([], ["/y"])


def test_swap_defaults_to_twice_memory_where_the_kernel_limits_swap() -> None:
    assert plan(cmd=["x"], host=HostConfig(memory=64 * MIB)).host_config.memory_swap == 128 * MIB
    assert plan(cmd=["x"], host=HostConfig(memory=64 * MIB, memory_swap=-1)).host_config.memory_swap == -1
    no_swap = dataclasses.replace(FACTS, swap_limit=False)
    assert plan(cmd=["x"], facts=no_swap, host=HostConfig(memory=64 * MIB)).host_config.memory_swap == 0


def test_runtime_default_given_and_unknown() -> None:
    assert plan(cmd=["x"], host=HostConfig(runtime="crun")).runtime == "crun"
    refused("Unknown runtime specified kata", cmd=["x"], host=HostConfig(runtime="kata"))


# --------------------------------------------------------------------------- log config

def test_the_daemon_log_driver_and_options_by_default() -> None:
    lc = plan(cmd=["x"]).host_config.log_config
    assert (lc.type, lc.config) == ("json-file", {"max-size": "10m"})
    # options without a driver: the daemon's driver with the request's options
    lc = plan(cmd=["x"], host=HostConfig(log_config=LogConfig(config={"max-file": "2"}))).host_config.log_config
    assert (lc.type, lc.config) == ("json-file", {"max-file": "2"})
    # a driver without options: none of the daemon's
    rec = plan(cmd=["x"], host=HostConfig(log_config=LogConfig(type="none")))
    assert (rec.host_config.log_config.type, rec.host_config.log_config.config) == ("none", {})
    assert rec.log_path == ""


def test_log_driver_errors() -> None:
    refused("logger: no log driver named 'syslog' is registered", cmd=["x"],
            host=HostConfig(log_config=LogConfig(type="syslog")))
    refused("unknown log opt 'colour' for json-file log driver", cmd=["x"],
            host=HostConfig(log_config=LogConfig(type="json-file", config={"colour": "yes"})))


# --------------------------------------------------------------------------- restart policy

def test_restart_policy_errors() -> None:
    refused("invalid restart policy 'sometimes'", cmd=["x"],
            host=HostConfig(restart_policy=RestartPolicy("sometimes")))
    for name in ("always", "on-failure", "unless-stopped"):
        refused("can't create 'AutoRemove' container with restart policy", cmd=["x"],
                host=HostConfig(auto_remove=True, restart_policy=RestartPolicy(name)))
    for name in ("", "no"):
        assert plan(cmd=["x"], host=HostConfig(auto_remove=True, restart_policy=RestartPolicy(name))).host_config


# --------------------------------------------------------------------------- resources

@pytest.mark.parametrize("host, text", [
    (HostConfig(nano_cpus=1_000_000_000, cpu_period=100_000),
     "Conflicting options: Nano CPUs and CPU Period cannot both be set"),
    # moby has its own text for the quota; ours has always given the period's
    (HostConfig(nano_cpus=1_000_000_000, cpu_quota=50_000),
     "Conflicting options: Nano CPUs and CPU Period cannot both be set"),
    (HostConfig(nano_cpus=5_000_000_000), "Range of CPUs is from 0.01 to 4.00, as there are only 4 CPUs available"),
    (HostConfig(nano_cpus=9_999_999), "Range of CPUs is from 0.01 to 4.00, as there are only 4 CPUs available"),
    (HostConfig(memory=6 * MIB - 1), "Minimum memory limit allowed is 6MB"),
    (HostConfig(memory=64 * MIB, memory_swap=32 * MIB),
     "Minimum memoryswap limit should be larger than memory limit, see usage"),
    (HostConfig(memory_swap=64 * MIB), "You should always set the Memory limit when using Memoryswap limit, see usage"),
], ids=["nano+period", "nano+quota", "cpus>host", "cpus<0.01", "memory<6MB", "swap<memory", "swap-only"])
def test_resource_errors(host: HostConfig, text: str) -> None:
    refused(text, cmd=["x"], host=host)
    with pytest.raises(errors.InvalidParameter) as e:
        check_resources(host, 4)  # what `docker update` checks too
    assert e.value.message == text


def test_resources_at_the_bounds() -> None:
    hc = plan(cmd=["x"], host=HostConfig(nano_cpus=4_000_000_000, memory=6 * MIB, memory_swap=6 * MIB)).host_config
    assert (hc.nano_cpus, hc.memory, hc.memory_swap) == (4_000_000_000, 6 * MIB, 6 * MIB)
    assert plan(cmd=["x"], host=HostConfig(nano_cpus=10_000_000)).host_config.nano_cpus == 10_000_000
    one_cpu = dataclasses.replace(FACTS, cpu_count=1)
    refused("Range of CPUs is from 0.01 to 1.00, as there are only 1 CPUs available", facts=one_cpu, cmd=["x"],
            host=HostConfig(nano_cpus=1_500_000_000))


def test_update_checks_against_what_is_set() -> None:
    hc = HostConfig(memory=64 * MIB, memory_swap=128 * MIB, cpu_quota=50_000)
    with pytest.raises(errors.InvalidParameter, match="^Memory limit should be smaller than already set "
                       "memoryswap limit, update the memoryswap at the same time$"):
        check_update(hc, {"memory": 256 * MIB})
    check_update(hc, {"memory": 256 * MIB, "memory_swap": 512 * MIB})
    with pytest.raises(errors.InvalidParameter, match="^Conflicting options: CPU Quota cannot be updated as "
                       "NanoCPUs has already been set$"):
        check_update(hc, {"nano_cpus": 1_000_000_000})
    check_update(hc, {"cpu_shares": 512})


def test_start_and_update_resources_come_from_one_place() -> None:
    hc = HostConfig(memory=64 * MIB, memory_swap=128 * MIB, memory_swappiness=10, oom_kill_disable=True,
                    nano_cpus=1_500_000_000, pids_limit=50, blkio_weight=300, cpuset_cpus="0")
    r = spec_resources(hc)
    assert (r.memory, r.memory_swap, r.memory_swappiness, r.oom_kill_disable) == (64 * MIB, 128 * MIB, 10, True)
    assert (r.nano_cpus, r.pids_limit, r.blkio_weight, r.cpuset_cpus) == (1_500_000_000, 50, 300, "0")
    # what update hands the runtime: no device rules, nor what update does not change
    assert update_resources(hc) == {
        "memory": {"limit": 64 * MIB, "swap": 128 * MIB},
        "cpu": {"period": 100_000, "quota": 150_000, "cpus": "0"},
        "pids": {"limit": 50}, "blockIO": {"weight": 300}}
