"""The part of Go's text/template that `--format` users write, over decoded JSON values.

Actions: `{{.A.B}}` field chains (on maps, as Go templates see the decoded JSON), `{{.}}`,
`{{$}}`, pipelines (`{{.Name | upper}}`), the docker CLI's functions (json, join, split, lower,
upper, title, pad, truncate) and Go's (index, len, print, printf, println, not, and, or, eq, ne),
`{{if}}`/`{{else}}`/`{{end}}`, `{{range}}`, `{{with}}`, `{{- ... -}}` trimming and comments.
Values print as Go's `%v` does: `true`, `map[a:1 b:2]`, `[x y]`, `<nil>`; a missing key is an
error, as the docker CLI's `missingkey=error` makes it.
Stdlib only: `asyncdock ps` imports it.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r"""\s*(?:("(?:[^"\\]|\\.)*")|(`[^`]*`)|(\|)|(\()|(\))|([^\s|()]+))""")


class TemplateError(ValueError):
    """A template that failed while it ran (the docker CLI exits 1)."""

    def __str__(self) -> str:
        return f"template: :1: {self.args[0]}"


class TemplateParseError(TemplateError):
    """A template that does not parse (the docker CLI exits 64, its usage-error status)."""


class _Missing:
    def __str__(self) -> str:
        return "<no value>"


MISSING = _Missing()


def go_str(v: Any) -> str:
    """fmt's %v of a decoded JSON value."""
    if v is None:
        return "<nil>"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e21 else repr(v)
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{go_str(v[k])}" for k in sorted(v)) + "]"
    if isinstance(v, list):
        return "[" + " ".join(go_str(x) for x in v) + "]"
    return str(v)


def _truthy(v: Any) -> bool:
    return v not in (None, False, 0, "", MISSING) and not (isinstance(v, (list, dict)) and not v)


def _printf(fmt: str, *args: Any) -> str:
    it = iter(args)

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "%%":
            return "%"
        v = next(it, MISSING)
        verb = m.group(2)
        if verb == "q":
            return json.dumps(go_str(v), ensure_ascii=False)
        if verb == "d" and isinstance(v, (int, float)):
            return f"%{m.group(1)}d" % int(v)
        return f"%{m.group(1)}s" % go_str(v)

    return re.sub(r"%([-+ #0]*\d*(?:\.\d+)?)([svdq])|%%", sub, fmt)


FUNCS: dict[str, Callable[..., Any]] = {
    "json": lambda v: json.dumps(None if v is MISSING else v, separators=(",", ":"), ensure_ascii=False),
    "join": lambda v, sep: sep.join(go_str(x) for x in (v or [])),
    "split": lambda s, sep: go_str(s).split(sep),
    "lower": lambda s: go_str(s).lower(),
    "upper": lambda s: go_str(s).upper(),
    "title": lambda s: go_str(s).title(),
    "pad": lambda s, left, right: " " * int(left) + go_str(s) + " " * int(right),
    "truncate": lambda s, n: go_str(s)[:int(n)],
    "len": lambda v: len(v) if isinstance(v, (list, dict, str)) else 0,
    "index": lambda v, *keys: _index(v, keys),
    "print": lambda *a: "".join(go_str(x) for x in a),
    "println": lambda *a: " ".join(go_str(x) for x in a) + "\n",
    "printf": _printf,
    "not": lambda v: not _truthy(v),
    "and": lambda *a: next((x for x in a if not _truthy(x)), a[-1] if a else None),
    "or": lambda *a: next((x for x in a if _truthy(x)), a[-1] if a else None),
    "eq": lambda a, *b: any(a == x for x in b),
    "ne": lambda a, b: a != b,
}


def _index(v: Any, keys: tuple[Any, ...]) -> Any:
    for k in keys:
        if isinstance(v, dict):
            v = v.get(k, MISSING)
        elif isinstance(v, list) and isinstance(k, int) and 0 <= k < len(v):
            v = v[k]
        else:
            raise TemplateError(f"error calling index: cannot index {go_str(v)} with {k!r}")
    return v


def _field(v: Any, path: str) -> Any:
    for name in path.split(".")[1:]:
        if not name:
            continue
        if isinstance(v, dict):
            if name not in v:  # the docker CLI executes with missingkey=error
                raise TemplateError(f'executing "" at <{path}>: map has no entry for key "{name}"')
            v = v[name]
        elif v is None:
            return None
        else:
            raise TemplateError(f"can't evaluate field {name} in type {type(v).__name__}")
    return v


# -- parsing: a list of nodes; a node is a literal str or a tuple --------------------------------
Node = Any


def _lex(src: str) -> Iterator[tuple[str, str]]:
    pos = 0
    for m in _ACTION.finditer(src):
        text = src[pos:m.start()]
        if m.group(1):
            text = text.rstrip()
        yield "text", text
        yield "action", m.group(2).strip()
        pos = m.end()
        if m.group(3):
            rest = src[pos:]
            pos += len(rest) - len(rest.lstrip())
    yield "text", src[pos:]


def parse(src: str) -> list[Node]:
    items = list(_lex(src))
    nodes, i, end = _parse_list(items, 0)
    if end is not None:
        raise TemplateParseError(f"unexpected {{{{{end}}}}}")
    return nodes


def _parse_list(items: list[tuple[str, str]], i: int) -> tuple[list[Node], int, str | None]:
    out: list[Node] = []
    while i < len(items):
        kind, text = items[i]
        i += 1
        if kind == "text":
            if text:
                out.append(text)
            continue
        if text.startswith("/*"):
            continue
        word = text.split(None, 1)[0] if text else ""
        if word in ("end", "else"):
            return out, i, text
        if word in ("if", "range", "with"):
            node, i = _parse_block(word, text[len(word):], items, i)
            out.append(node)
            continue
        out.append(("print", _pipeline(text)))
    return out, i, None


def _parse_block(word: str, cond: str, items: list[tuple[str, str]], i: int) -> tuple[Node, int]:
    """`{{if c}}body{{else}}alt{{end}}`; `{{else if d}}` is an if in the alt sharing our end."""
    body, i, stop = _parse_list(items, i)
    alt: list[Node] = []
    if stop is not None and stop.startswith("else"):
        rest = stop[4:].strip()
        if rest.startswith("if ") and word == "if":
            inner, i = _parse_block("if", rest[2:], items, i)
            return (word, _pipeline(cond), body, [inner]), i
        alt, i, stop = _parse_list(items, i)
    if stop != "end":
        raise TemplateParseError("unexpected EOF")
    return (word, _pipeline(cond), body, alt), i


def _pipeline(text: str) -> list[list[Any]]:
    cmds: list[list[Any]] = [[]]
    for m in _TOKEN.finditer(text):
        dq, bq, pipe, lp, rp, word = m.groups()
        if pipe:
            cmds.append([])
        elif dq is not None:
            cmds[-1].append(("lit", json.loads(dq)))
        elif bq is not None:
            cmds[-1].append(("lit", bq[1:-1]))
        elif lp or rp:
            raise TemplateParseError("parenthesised pipelines are not supported")
        elif word is not None:
            cmds[-1].append(_arg(word))
    if not cmds[0]:
        raise TemplateParseError("missing value for command")
    return cmds


def _arg(word: str) -> tuple[str, Any]:
    if word.startswith(".") or word == "$" or word.startswith("$."):
        return ("field", word)
    if word in ("true", "false"):
        return ("lit", word == "true")
    if word == "nil":
        return ("lit", None)
    if re.fullmatch(r"-?\d+", word):
        return ("lit", int(word))
    if word in FUNCS:
        return ("func", word)
    raise TemplateParseError(f'function "{word}" not defined')


# -- execution ------------------------------------------------------------------------------------
def _eval(arg: tuple[str, Any], dot: Any, root: Any) -> Any:
    kind, v = arg
    if kind == "lit":
        return v
    if kind == "field":
        if v == "$":
            return root
        if v.startswith("$."):
            return _field(root, v[1:])
        return _field(dot, v) if v != "." else dot
    return FUNCS[v]()


def _run_pipeline(cmds: list[list[Any]], dot: Any, root: Any) -> Any:
    value: Any = MISSING
    for n, cmd in enumerate(cmds):
        head, args = cmd[0], [_eval(a, dot, root) for a in cmd[1:]]
        if n:
            args.append(value)
        if head[0] == "func":
            try:
                value = FUNCS[head[1]](*args)
            except TypeError:
                raise TemplateError(f"wrong number of args for {head[1]}") from None
        elif args:
            raise TemplateError(f"{head[1]} is not a function: it can't take arguments")
        else:
            value = _eval(head, dot, root)
    return value


def execute(nodes: list[Node], dot: Any, root: Any | None = None) -> str:
    root = dot if root is None else root
    out: list[str] = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
            continue
        kind = node[0]
        if kind == "print":
            out.append(go_str(_run_pipeline(node[1], dot, root)))
            continue
        value = _run_pipeline(node[1], dot, root)
        body, alt = node[2], node[3]
        if kind == "if":
            out.append(execute(body if _truthy(value) else alt, dot, root))
        elif kind == "with":
            out.append(execute(body, value, root) if _truthy(value) else execute(alt, dot, root))
        elif kind == "range":
            seq = [value[k] for k in sorted(value)] if isinstance(value, dict) else (value or [])
            if not isinstance(seq, list) or not seq:
                out.append(execute(alt, dot, root))
            else:
                out.extend(execute(body, x, root) for x in seq)
    return "".join(out)


def render_one(template: str, dot: Any) -> str:
    return execute(parse(template), dot)
