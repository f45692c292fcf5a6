"""A Dockerfile as the classic builder sees it: meta ARGs before the first FROM, then stages of
instructions. The grammar (line continuations, the escape directive, JSON forms) is the official
Go parser's, through the `dockerfile` package; the checks here are moby's instructions.Parse."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import dockerfile  # type: ignore[import-not-found]

from ..base.errors import InvalidParameter

INSTRUCTIONS = frozenset({
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"})
# what ONBUILD may not carry (moby: "%s isn't allowed as an ONBUILD trigger")
_NOT_TRIGGERS = frozenset({"ONBUILD", "FROM", "MAINTAINER"})
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")
_ESCAPE = re.compile(r"^\s*#\s*escape\s*=\s*(\S)", re.IGNORECASE | re.MULTILINE)
_ONBUILD = re.compile(r"^\s*onbuild\s+", re.IGNORECASE)


class DockerfileError(InvalidParameter):
    pass


@dataclass
class Instruction:
    cmd: str  # upper case
    args: list[str]
    flags: dict[str, str]
    json: bool
    original: str
    line: int
    raw_flags: tuple[str, ...] = ()
    sub_cmd: str = ""  # ONBUILD's trigger instruction
    expression: str = ""  # ONBUILD's trigger text
    no_expand: bool = False  # the `labels` parameter's LABELs (moby's NewLabelCommand(k, v, true))


@dataclass
class Stage:
    base: str
    name: str
    platform: str
    original: str
    line: int
    commands: list[Instruction] = field(default_factory=list)


@dataclass
class Parsed:
    meta_args: list[Instruction]
    stages: list[Stage]
    escape: str


def _fail(line: int, msg: str) -> DockerfileError:
    return DockerfileError(f"dockerfile parse error on line {line}: {msg}")


def _flags(raw: tuple[str, ...], allowed: tuple[str, ...], cmd: str, line: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for f in raw:
        name, eq, value = f[2:].partition("=")
        if name not in allowed:
            raise _fail(line, f"unknown flag: {name}")
        out[name] = value if eq else "true"
    return out


_ALLOWED_FLAGS: dict[str, tuple[str, ...]] = {
    "FROM": ("platform",), "COPY": ("from", "chown", "chmod"), "ADD": ("chown", "chmod"),
    "HEALTHCHECK": ("interval", "timeout", "start-period", "start-interval", "retries"),
}


def escape_token(text: str) -> str:
    """The escape directive (only in the leading comment block; the parser honours it too)."""
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if not s.startswith("#"):
            break
        m = _ESCAPE.match(s)
        if m:
            return m.group(1)
    return "\\"


def instruction_of(c: dockerfile.Command) -> Instruction:
    cmd = c.cmd.upper()
    line = c.start_line
    if cmd not in INSTRUCTIONS:
        raise _fail(line, f"unknown instruction: {cmd}")
    if c.heredocs:
        raise _fail(line, f"{cmd} with a heredoc (<<{c.heredocs[0].name}) needs BuildKit: the classic builder "
                          "has no heredocs")
    if cmd == "RUN" and c.flags:
        raise _fail(line, f"the --{c.flags[0][2:].partition('=')[0]} flag of RUN needs BuildKit")
    flags = _flags(c.flags, _ALLOWED_FLAGS.get(cmd, ()), cmd, line)
    inst = Instruction(cmd, list(c.value), flags, c.json, c.original, line, raw_flags=tuple(c.flags))
    if cmd == "ONBUILD":
        sub = (c.sub_cmd or "").upper()
        if not sub:
            raise _fail(line, "ONBUILD requires at least one argument")
        if sub in _NOT_TRIGGERS:
            raise _fail(line, f"{sub} isn't allowed as an ONBUILD trigger")
        if sub not in INSTRUCTIONS:
            raise _fail(line, f"unknown instruction: {sub}")
        inst.sub_cmd = sub
        inst.expression = _ONBUILD.sub("", c.original, count=1).strip()
    _check_args(inst)
    return inst


def _check_args(i: Instruction) -> None:
    n = len([a for a in i.args if a != ""])
    if i.cmd in ("ENV", "LABEL", "ARG", "EXPOSE", "VOLUME", "USER", "WORKDIR", "STOPSIGNAL", "MAINTAINER") and n == 0:
        raise _fail(i.line, f"{i.cmd} requires at least one argument")
    if i.cmd in ("COPY", "ADD") and len(i.args) < 2:
        raise _fail(i.line, f"{i.cmd} requires at least two arguments, but only {len(i.args)} provided")
    if i.cmd == "RUN" and n == 0 and not i.json:
        raise _fail(i.line, "RUN requires at least one argument")
    if i.cmd == "SHELL" and not i.json:
        raise _fail(i.line, "SHELL requires the arguments to be in JSON form")
    if i.cmd in ("USER", "WORKDIR", "STOPSIGNAL") and len(i.args) > 1:
        raise _fail(i.line, f"{i.cmd} requires exactly one argument")
    if i.cmd == "ENV" and len(i.args) % 2:
        raise _fail(i.line, "ENV must have two arguments")


def parse(text: str | bytes) -> Parsed:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        commands = dockerfile.parse_string(text)
    except dockerfile.GoParseError as e:
        raise DockerfileError(f"dockerfile parse error: {e}") from None
    if not commands:
        raise DockerfileError("the Dockerfile cannot be empty")
    meta: list[Instruction] = []
    stages: list[Stage] = []
    for c in commands:
        inst = instruction_of(c)
        if inst.cmd == "FROM":
            stages.append(_stage(inst, len(stages)))
        elif not stages:
            if inst.cmd != "ARG":
                raise _fail(inst.line, "no build stage in current context")
            meta.append(inst)
        else:
            stages[-1].commands.append(inst)
    if not stages:
        raise DockerfileError("no build stage in current context")
    return Parsed(meta, stages, escape_token(text))


def _stage(inst: Instruction, index: int) -> Stage:
    args = inst.args
    if len(args) not in (1, 3) or (len(args) == 3 and args[1].lower() != "as"):
        raise _fail(inst.line, "FROM requires either one or three arguments")
    name = ""
    if len(args) == 3:
        name = args[2].lower()
        if not _STAGE_NAME.match(name):
            raise _fail(inst.line, f'invalid name for build stage: "{args[2]}", name can\'t start with a '
                                   "number or contain symbols")
    return Stage(args[0], name, inst.flags.get("platform", ""), inst.original, inst.line)


def parse_trigger(expression: str) -> Instruction:
    """One ONBUILD trigger (as stored in an image's OnBuild) as an instruction."""
    try:
        cs = dockerfile.parse_string(expression + "\n")
    except dockerfile.GoParseError as e:
        raise DockerfileError(f"dockerfile parse error: {e}") from None
    if len(cs) != 1:
        raise DockerfileError(f"invalid ONBUILD trigger: {expression}")
    return instruction_of(cs[0])
