"""images/configedit.py: Dockerfile config instructions on a ContainerConfig, as moby's
dispatchers apply them, and commit's `changes` lines."""
from __future__ import annotations

import pytest

from asyncdock.base.errors import InvalidParameter
from asyncdock.base.oci import ContainerConfig
from asyncdock.images.configedit import apply_change, expand_word, parse_changes


def base() -> ContainerConfig:
    return ContainerConfig(env=["PATH=/bin", "HOME=/root"], cmd=["sh"], working_dir="/srv")


def test_cmd_and_entrypoint_forms() -> None:
    cfg = base()
    assert apply_change(cfg, "CMD", ["echo hi"], json_form=False, flags=[]).cmd == ["/bin/sh", "-c", "echo hi"]
    assert apply_change(cfg, "cmd", ["a", "b"], json_form=True, flags=[]).cmd == ["a", "b"]
    shelled = apply_change(cfg, "SHELL", ["/bin/bash", "-xc"], json_form=True, flags=[])
    assert apply_change(shelled, "ENTRYPOINT", ["run it"], json_form=False, flags=[]).entrypoint == \
        ["/bin/bash", "-xc", "run it"]
    # moby's builder drops Cmd at ENTRYPOINT unless a CMD came before it in the stage
    assert apply_change(cfg, "ENTRYPOINT", ["x"], json_form=True, flags=[], reset_cmd=True).cmd is None
    assert apply_change(cfg, "ENTRYPOINT", ["x"], json_form=True, flags=[]).cmd == ["sh"]
    assert cfg.cmd == ["sh"] and cfg.entrypoint is None  # the input is never changed
    with pytest.raises(InvalidParameter, match="SHELL requires the arguments to be in JSON form"):
        apply_change(cfg, "SHELL", ["bash"], json_form=False, flags=[])


def test_env_label_expose_volume_user_workdir_stopsignal() -> None:
    cfg = apply_change(base(), "ENV", ["HOME", "/home/x", "A", "1 2"], json_form=False, flags=[])
    assert cfg.env == ["PATH=/bin", "HOME=/home/x", "A=1 2"]
    cfg = apply_change(cfg, "LABEL", ["a", "b", "c d", "e"], json_form=False, flags=[])
    assert cfg.labels == {"a": "b", "c d": "e"}
    cfg = apply_change(cfg, "EXPOSE", ["80", "53/udp", "8000-8002"], json_form=False, flags=[])
    assert set(cfg.exposed_ports or {}) == {"80/tcp", "53/udp", "8000/tcp", "8001/tcp", "8002/tcp"}
    cfg = apply_change(cfg, "VOLUME", ["/data", "/logs"], json_form=False, flags=[])
    assert cfg.volumes == {"/data": {}, "/logs": {}}
    cfg = apply_change(cfg, "USER", ["1000:1000"], json_form=False, flags=[])
    assert cfg.user == "1000:1000"
    cfg = apply_change(cfg, "WORKDIR", ["app/../web"], json_form=False, flags=[])
    assert cfg.working_dir == "/srv/web"
    cfg = apply_change(cfg, "WORKDIR", ["/abs"], json_form=False, flags=[])
    assert cfg.working_dir == "/abs"
    cfg = apply_change(cfg, "STOPSIGNAL", ["SIGUSR1"], json_form=False, flags=[])
    assert cfg.stop_signal == "SIGUSR1"
    assert apply_change(cfg, "STOPSIGNAL", ["9"], json_form=False, flags=[]).stop_signal == "9"
    with pytest.raises(InvalidParameter, match="Invalid signal: NOPE"):
        apply_change(cfg, "STOPSIGNAL", ["NOPE"], json_form=False, flags=[])
    with pytest.raises(InvalidParameter, match="USER requires exactly one argument"):
        apply_change(cfg, "USER", [], json_form=False, flags=[])
    with pytest.raises(InvalidParameter, match="invalid containerPort: x"):
        apply_change(cfg, "EXPOSE", ["x"], json_form=False, flags=[])
    with pytest.raises(InvalidParameter, match="unknown flag: chown"):
        apply_change(cfg, "ENV", ["a", "b"], json_form=False, flags=["--chown=1"])


def test_onbuild() -> None:
    cfg = apply_change(base(), "ONBUILD", ["RUN echo hi"], json_form=False, flags=[])
    assert cfg.on_build == ["RUN echo hi"]
    with pytest.raises(InvalidParameter, match="ONBUILD ONBUILD"):
        apply_change(cfg, "ONBUILD", ["ONBUILD RUN x"], json_form=False, flags=[])
    with pytest.raises(InvalidParameter, match="FROM isn't allowed as an ONBUILD trigger"):
        apply_change(cfg, "ONBUILD", ["FROM x"], json_form=False, flags=[])


def test_healthcheck() -> None:
    cfg = apply_change(base(), "HEALTHCHECK", ["CMD", "curl -f http://x/"], json_form=False,
                       flags=["--interval=5s", "--timeout=1m30s", "--start-period=100ms",
                              "--start-interval=2s", "--retries=3"])
    hc = cfg.healthcheck
    assert hc is not None and hc.test == ["CMD-SHELL", "curl -f http://x/"]
    assert (hc.interval, hc.timeout, hc.start_period, hc.start_interval, hc.retries) == \
        (5_000_000_000, 90_000_000_000, 100_000_000, 2_000_000_000, 3)
    cfg = apply_change(cfg, "HEALTHCHECK", ["CMD", "a", "b"], json_form=True, flags=[])
    assert cfg.healthcheck is not None and cfg.healthcheck.test == ["CMD", "a", "b"]
    assert cfg.healthcheck.interval == 0  # replaced whole, as moby does
    assert apply_change(cfg, "HEALTHCHECK", ["NONE"], json_form=False, flags=[]).healthcheck.test == ["NONE"]  # type: ignore[union-attr]
    with pytest.raises(InvalidParameter, match="HEALTHCHECK NONE takes no arguments"):
        apply_change(cfg, "HEALTHCHECK", ["NONE"], json_form=False, flags=["--retries=1"])
    with pytest.raises(InvalidParameter, match="cannot be less than 1ms"):
        apply_change(cfg, "HEALTHCHECK", ["CMD", "x"], json_form=False, flags=["--interval=1us"])
    with pytest.raises(InvalidParameter, match="--retries cannot be negative"):
        apply_change(cfg, "HEALTHCHECK", ["CMD", "x"], json_form=False, flags=["--retries=-1"])
    with pytest.raises(InvalidParameter, match="Unknown type"):
        apply_change(cfg, "HEALTHCHECK", ["RUN", "x"], json_form=False, flags=[])
    with pytest.raises(InvalidParameter, match="unknown flag: bogus"):
        apply_change(cfg, "HEALTHCHECK", ["CMD", "x"], json_form=False, flags=["--bogus=1"])


def test_expand_word() -> None:
    env = {"A": "1", "E": "", "P": "/p"}
    assert expand_word("$A-${A}-'$A'-\"$A\"-\\$A", env) == "1-1-$A-1-$A"
    assert expand_word("${E:-d}${E-d}${U:-d}${A:+x}${U:+x}", env) == "ddx"  # E is set (empty): only the colon forms default it
    assert expand_word('"a b" c', env) == "a b c"
    assert expand_word("${P}/bin:${U}", env) == "/p/bin:"
    with pytest.raises(InvalidParameter):
        expand_word("'open", env)


def test_parse_changes() -> None:
    cfg = parse_changes(['CMD ["sh"]', "ENV X=$HOME/x Y=\"a b\"", "LABEL v=${X}", "WORKDIR $HOME",
                         "EXPOSE 8080", "ONBUILD RUN echo hi", "HEALTHCHECK --retries=2 CMD true"], base())
    assert cfg.cmd == ["sh"]
    assert cfg.env == ["PATH=/bin", "HOME=/root", "X=/root/x", "Y=a b"]
    assert cfg.labels == {"v": "/root/x"}
    assert cfg.working_dir == "/root"
    assert cfg.exposed_ports == {"8080/tcp": {}}
    assert cfg.on_build == ["RUN echo hi"]
    assert cfg.healthcheck is not None and cfg.healthcheck.retries == 2
    # ENTRYPOINT drops Cmd unless a CMD came first (moby's BuildFromConfig runs the dispatchers)
    assert parse_changes(["ENTRYPOINT top"], base()).cmd is None
    assert parse_changes(["CMD x", "ENTRYPOINT top"], base()).cmd == ["/bin/sh", "-c", "x"]
    assert parse_changes([], base()) == base()
    for line, text in (("RUN echo", "run is not a valid change command"),
                       ("FROM busybox", "from is not a valid change command"),
                       ("COPY a b", "copy is not a valid change command")):
        with pytest.raises(InvalidParameter, match=text):
            parse_changes(["CMD x", line], base())
