"""Dockerfile config instructions applied to an image's ContainerConfig (moby's dispatchers in
builder/dockerfile/dispatchers.go). Pure: no I/O, nothing mutated, a new config returned.

Two callers:
  - the builder: it parses the Dockerfile, expands variables itself (with its build args), then
    calls `apply_change(cfg, "ENV", ["A", "1", "B", "2"], json_form=False, flags=[])`.
  - commit and import (`changes`): `parse_changes(lines, cfg)` parses the lines with the
    `dockerfile` package (Docker's own parser), allows only moby's commit commands, expands
    variables from the config's Env as moby does for them, and applies each.

`apply_change(cfg, cmd, args, *, json_form, flags, reset_cmd=False)`, by `cmd` (any case):
  CMD / ENTRYPOINT  args: the exec-form words (json_form) or one shell-form command line, which
                    is wrapped in the config's Shell (default ["/bin/sh", "-c"]). ENTRYPOINT
                    with `reset_cmd` also drops Cmd (moby does unless a CMD came earlier in the
                    stage: the builder passes `not cmd_set`).
  ENV / LABEL       args: key, value, key, value ... (already unquoted and expanded)
  EXPOSE            args: port specs ("80", "53/udp", "8000-8002/tcp")
  VOLUME            args: paths
  USER / WORKDIR / STOPSIGNAL   args: exactly one word (WORKDIR relative to the current one)
  ONBUILD           args: [the trigger instruction's text, "RUN echo hi"]
  HEALTHCHECK       args: ["NONE"] or ["CMD", <shell line>] / ["CMD", *words] (json_form);
                    flags: --interval --timeout --start-period --start-interval --retries
  SHELL             args: the JSON-form words (json_form must be true)
Bad input raises InvalidParameter with moby's text.
"""
from __future__ import annotations

import posixpath
import re
import signal
from collections.abc import Mapping, Sequence

import msgspec

from ..base.errors import InvalidParameter
from ..base.healthcheck import MINIMUM_DURATION_NS
from ..base.oci import ContainerConfig, HealthConfig

__all__ = ["COMMIT_COMMANDS", "DEFAULT_SHELL", "apply_change", "expand_word", "parse_changes"]

DEFAULT_SHELL = ("/bin/sh", "-c")
# moby's validCommitCommands (builder/dockerfile/builder.go)
COMMIT_COMMANDS = frozenset({"cmd", "entrypoint", "env", "expose", "healthcheck", "label", "onbuild",
                             "stopsignal", "user", "volume", "workdir"})
# Instructions whose words moby expands with the environment (SupportsSingleWordExpansion).
_EXPANDED = frozenset({"env", "label", "expose", "user", "workdir", "volume", "stopsignal"})


def _copy(cfg: ContainerConfig) -> ContainerConfig:
    # One level deep is enough: every change below replaces a list or dict, never edits it.
    return msgspec.structs.replace(cfg)


def _exactly_one(cmd: str, args: Sequence[str]) -> str:
    if len(args) != 1:
        raise InvalidParameter(f"{cmd} requires exactly one argument")
    return args[0]


def _at_least_one(cmd: str, args: Sequence[str]) -> None:
    if not args:
        raise InvalidParameter(f"{cmd} requires at least one argument")


def _pairs(cmd: str, args: Sequence[str]) -> list[tuple[str, str]]:
    _at_least_one(cmd, args)
    if len(args) % 2:
        raise InvalidParameter(f"{cmd} requires an even number of arguments (key and value)")
    out = [(args[i], args[i + 1]) for i in range(0, len(args), 2)]
    for k, _ in out:
        if not k:
            raise InvalidParameter(f"{cmd} names can not be blank")
    return out


def _command_line(cfg: ContainerConfig, args: Sequence[str], json_form: bool) -> list[str]:
    if json_form:
        return list(args)
    shell = list(cfg.shell) if cfg.shell else list(DEFAULT_SHELL)
    return shell + [" ".join(args)] if args else shell


_PORT = re.compile(r"^(\d+)(?:-(\d+))?(?:/([A-Za-z]+))?$")


def _ports(specs: Sequence[str]) -> list[str]:
    """moby's nat.ParsePortSpecs for EXPOSE: "80", "80/udp", "8000-8002" -> "80/tcp", ..."""
    out: list[str] = []
    for spec in specs:
        m = _PORT.match(spec)
        if m is None:
            raise InvalidParameter(f"invalid containerPort: {spec.split('/')[0]}")
        lo, hi, proto = int(m[1]), int(m[2] or m[1]), (m[3] or "tcp").lower()
        if lo > 65535 or hi > 65535:
            raise InvalidParameter(f"invalid containerPort: {spec.split('/')[0]}")
        if hi < lo:
            raise InvalidParameter(f"invalid range specified for container port: {spec.split('/')[0]}")
        if proto not in ("tcp", "udp", "sctp"):
            raise InvalidParameter(f"invalid proto: {proto}")
        out.extend(f"{p}/{proto}" for p in range(lo, hi + 1))
    return out


def _check_signal(sig: str) -> None:
    s = sig.upper()
    if s.isdigit():
        if 0 < int(s) <= 64:
            return
    else:
        name = s if s.startswith("SIG") else "SIG" + s
        if name in signal.Signals.__members__ or re.fullmatch(r"SIGRTM(IN|AX)([+-]\d+)?", name):
            return
    raise InvalidParameter(f"Invalid signal: {sig}")


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                   "m": 60_000_000_000, "h": 3_600_000_000_000}


def _go_duration(flag: str, value: str) -> int:
    v = value.strip()
    if v == "0":
        return 0
    pos, total = 0, 0.0
    while pos < len(v):
        m = _DURATION_PART.match(v, pos)
        if m is None:
            raise InvalidParameter(f'time: invalid duration "{value}"')
        total += float(m[1]) * _DURATION_UNITS[m[2]]
        pos = m.end()
    if not v:
        raise InvalidParameter(f'time: invalid duration "{value}"')
    ns = int(total)
    if ns != 0 and ns < MINIMUM_DURATION_NS:
        raise InvalidParameter(f"Interval \"{flag}\" cannot be less than 1ms")
    return ns


_HEALTH_FLAGS = ("interval", "timeout", "start-period", "start-interval", "retries")


def _flags(cmd: str, flags: Sequence[str], allowed: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for f in flags:
        if not f.startswith("--"):
            raise InvalidParameter(f"{cmd}: invalid flag {f}")
        name, eq, value = f[2:].partition("=")
        if name not in allowed:
            raise InvalidParameter(f"unknown flag: {name}")
        if not eq:
            raise InvalidParameter(f"missing a value on flag: {name}")
        if name in out:
            raise InvalidParameter(f"Duplicate flag specified: {name}")
        out[name] = value
    return out


def _healthcheck(args: Sequence[str], json_form: bool, flags: Sequence[str]) -> HealthConfig:
    opts = _flags("HEALTHCHECK", flags, _HEALTH_FLAGS)
    if not args:
        raise InvalidParameter("HEALTHCHECK requires at least one argument")
    kind = args[0].upper()
    if kind == "NONE":
        if len(args) > 1 or opts:
            raise InvalidParameter("HEALTHCHECK NONE takes no arguments")
        return HealthConfig(test=["NONE"])
    if kind != "CMD":
        raise InvalidParameter(f'Unknown type "{args[0]}" in HEALTHCHECK (try CMD)')
    rest = list(args[1:])
    test = ["CMD", *rest] if json_form else ["CMD-SHELL", " ".join(rest)]
    hc = HealthConfig(test=test)
    hc.interval = _go_duration("interval", opts.get("interval", "0"))
    hc.timeout = _go_duration("timeout", opts.get("timeout", "0"))
    hc.start_period = _go_duration("start-period", opts.get("start-period", "0"))
    hc.start_interval = _go_duration("start-interval", opts.get("start-interval", "0"))
    if "retries" in opts:
        try:
            hc.retries = int(opts["retries"])
        except ValueError:
            raise InvalidParameter(
                f'strconv.ParseInt: parsing "{opts["retries"]}": invalid syntax') from None
        if hc.retries < 0:
            raise InvalidParameter(f"--retries cannot be negative ({hc.retries})")
    return hc


def apply_change(cfg: ContainerConfig, cmd: str, args: Sequence[str], *, json_form: bool,
                 flags: Sequence[str], reset_cmd: bool = False) -> ContainerConfig:
    """`cfg` with one config instruction applied (see the module text for each `args`)."""
    name = cmd.upper()
    if flags and name != "HEALTHCHECK":
        raise InvalidParameter(f"unknown flag: {flags[0].lstrip('-').partition('=')[0]}")
    out = _copy(cfg)
    if name == "CMD":
        out.cmd = _command_line(cfg, args, json_form)
    elif name == "ENTRYPOINT":
        out.entrypoint = _command_line(cfg, args, json_form)
        if reset_cmd:
            out.cmd = None
    elif name == "ENV":
        env = list(cfg.env or [])
        for k, v in _pairs(name, args):
            entry = f"{k}={v}"
            for i, e in enumerate(env):
                if e.partition("=")[0] == k:
                    env[i] = entry
                    break
            else:
                env.append(entry)
        out.env = env
    elif name == "LABEL":
        labels = dict(cfg.labels or {})
        for k, v in _pairs(name, args):
            labels[k] = v
        out.labels = labels
    elif name == "EXPOSE":
        _at_least_one(name, args)
        ports = dict(cfg.exposed_ports or {})
        for p in _ports(args):
            ports[p] = {}
        out.exposed_ports = ports
    elif name == "VOLUME":
        _at_least_one(name, args)
        vols = dict(cfg.volumes or {})
        for v in args:
            if not v.strip():
                raise InvalidParameter("VOLUME specified can not be an empty string")
            vols[v.strip()] = {}
        out.volumes = vols
    elif name == "USER":
        out.user = _exactly_one(name, args)
    elif name == "WORKDIR":
        path = _exactly_one(name, args)
        if not posixpath.isabs(path):
            path = posixpath.join(cfg.working_dir or "/", path)
        out.working_dir = posixpath.normpath(path)
        if out.working_dir.startswith("//"):
            out.working_dir = "/" + out.working_dir.lstrip("/")
    elif name == "STOPSIGNAL":
        sig = _exactly_one(name, args)
        _check_signal(sig)
        out.stop_signal = sig
    elif name == "ONBUILD":
        trigger = " ".join(args).strip()
        if not trigger:
            raise InvalidParameter("ONBUILD requires at least one argument")
        first = trigger.split(None, 1)[0].upper()
        if first == "ONBUILD":
            raise InvalidParameter("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if first in ("MAINTAINER", "FROM"):
            raise InvalidParameter(f"{first} isn't allowed as an ONBUILD trigger")
        out.on_build = [*(cfg.on_build or []), trigger]
    elif name == "HEALTHCHECK":
        out.healthcheck = _healthcheck(args, json_form, flags)
    elif name == "SHELL":
        if not json_form:
            raise InvalidParameter("SHELL requires the arguments to be in JSON form")
        _at_least_one(name, args)
        out.shell = list(args)
    else:
        raise InvalidParameter(f"{cmd.lower()} is not a config instruction")
    return out


# ---------------------------------------------------------------------------------------------
# Variable expansion (moby's shell.Lex.ProcessWord, escape token `\`)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]")


def expand_word(word: str, env: Mapping[str, str], *, escape: str = "\\") -> str:
    """One word as moby's ProcessWord makes it: quotes removed, escapes applied, $VAR, ${VAR},
    ${VAR:-word}, ${VAR-word}, ${VAR:+word}, ${VAR+word}, ${VAR:?msg}, ${VAR?msg} expanded."""
    out: list[str] = []
    i, n = 0, len(word)
    while i < n:
        c = word[i]
        if c == escape:
            if i + 1 < n:
                out.append(word[i + 1])
                i += 2
            else:
                i += 1
        elif c == "'":
            j = word.find("'", i + 1)
            if j < 0:
                raise InvalidParameter("unexpected end of statement while looking for matching single-quote")
            out.append(word[i + 1:j])
            i = j + 1
        elif c == '"':
            i += 1
            while True:
                if i >= n:
                    raise InvalidParameter("unexpected end of statement while looking for matching double-quote")
                c = word[i]
                if c == '"':
                    i += 1
                    break
                if c == "$":
                    s, i = _dollar(word, i, env, escape)
                    out.append(s)
                elif c == escape and i + 1 < n and word[i + 1] in ('"', "$", escape):
                    out.append(word[i + 1])
                    i += 2
                else:
                    out.append(c)
                    i += 1
        elif c == "$":
            s, i = _dollar(word, i, env, escape)
            out.append(s)
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _dollar(word: str, i: int, env: Mapping[str, str], escape: str) -> tuple[str, int]:
    """Expand the `$` at word[i]; (text, index after it)."""
    n = len(word)
    if i + 1 >= n:
        return "$", i + 1
    if word[i + 1] != "{":
        m = _NAME.match(word, i + 1)
        if m is None:
            return "$", i + 1
        return env.get(m[0], ""), m.end()
    m = _NAME.match(word, i + 2)
    if m is None:
        raise InvalidParameter(f"missing ':' in substitution: {word}")
    name, j = m[0], m.end()
    if j < n and word[j] == "}":
        return env.get(name, ""), j + 1
    colon = j < n and word[j] == ":"
    if colon:
        j += 1
    if j >= n or word[j] not in "-+?":
        raise InvalidParameter(f"unsupported modifier ({word[j:j + 1]}) in substitution: {word}")
    op = word[j]
    # the operand runs to the matching brace
    depth, k = 1, j + 1
    while k < n:
        if word[k] == escape:
            k += 2
            continue
        if word[k] == "{":
            depth += 1
        elif word[k] == "}":
            depth -= 1
            if depth == 0:
                break
        k += 1
    if k >= n:
        raise InvalidParameter(f"missing '}}' in substitution: {word}")
    operand = expand_word(word[j + 1:k], env, escape=escape)
    value = env.get(name)
    is_set = value is not None and (value != "" or not colon)
    if op == "-":
        return (value if is_set else operand) or "", k + 1
    if op == "+":
        return (operand if is_set else ""), k + 1
    if not is_set:
        raise InvalidParameter(f"{name}: {operand or 'is not allowed to be unset'}")
    return value or "", k + 1


def _env_map(cfg: ContainerConfig) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in cfg.env or []:
        k, _, v = e.partition("=")
        out[k] = v
    return out


_ONBUILD_PREFIX = re.compile(r"(?i)^\s*ONBUILD\s*")


def parse_changes(changes: Sequence[str], cfg: ContainerConfig) -> ContainerConfig:
    """`cfg` with the `changes` of a commit or import applied, as moby's BuildFromConfig does:
    the lines are one Dockerfile, only COMMIT_COMMANDS may appear, the words of ENV, LABEL,
    EXPOSE, USER, WORKDIR, VOLUME and STOPSIGNAL are expanded with the config's Env as it is at
    that instruction, and an ENTRYPOINT drops the Cmd unless a CMD came before it."""
    if not changes:
        return cfg
    import dockerfile  # type: ignore[import-not-found]  # the official Go parser (no stubs)

    try:
        commands = dockerfile.parse_string("\n".join(changes))
    except dockerfile.GoParseError as e:
        raise InvalidParameter(str(e)) from None
    for c in commands:
        if c.cmd.lower() not in COMMIT_COMMANDS:
            raise InvalidParameter(f"{c.cmd.lower()} is not a valid change command")
    cmd_set = False
    for c in commands:
        name = c.cmd.lower()
        args = list(c.value)
        if name in _EXPANDED:
            env = _env_map(cfg)
            args = [expand_word(a, env) for a in args]
        elif name == "onbuild":
            args = [_ONBUILD_PREFIX.sub("", c.original, count=1).strip()]
        cfg = apply_change(cfg, name, args, json_form=bool(c.json), flags=list(c.flags),
                           reset_cmd=not cmd_set)
        if name == "cmd":
            cmd_set = True
    return cfg
