"""Docker's Dockerfile word expansion (moby builder/dockerfile/shell, lex.go): quotes, the escape
token, $VAR, ${VAR}, ${VAR:-word}, ${VAR-word}, ${VAR:+word}, ${VAR+word}, ${VAR:?msg},
${VAR?msg}, ${VAR#pat} / ${VAR%pat} (shortest prefix / suffix). No command substitution, no
globbing: what the classic builder does to ENV, LABEL, COPY, WORKDIR, ... arguments before use."""
from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence

from ..base.errors import InvalidParameter

_SPECIAL = set("@*#?-$!0")


class ShellWordError(InvalidParameter):
    pass


def env_map(env: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    if isinstance(env, Mapping):
        return dict(env)
    out: dict[str, str] = {}
    for kv in env:
        k, _, v = kv.partition("=")
        out[k] = v  # a later one wins, as in a process environment
    return out


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch


class _Words:
    """The words of a result, split on unquoted blanks (also inside expanded values)."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.cur: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch.isspace() and self.in_word:
            self.blank()
        elif not ch.isspace():
            self.add_raw(ch)

    def add_raw(self, ch: str) -> None:
        self.cur.append(ch)
        self.in_word = True

    def add_str(self, s: str) -> None:
        for ch in s:
            self.add_char(ch)

    def blank(self) -> None:
        if self.in_word:
            self.words.append("".join(self.cur))
            self.cur = []
            self.in_word = False

    def result(self) -> list[str]:
        self.blank()
        return self.words


class Lex:
    def __init__(self, escape: str = "\\") -> None:
        self.escape = escape

    def process_word(self, word: str, env: Sequence[str] | Mapping[str, str]) -> str:
        return _Shell(word, env_map(env), self.escape).run()[0]

    def process_words(self, word: str, env: Sequence[str] | Mapping[str, str]) -> list[str]:
        return _Shell(word, env_map(env), self.escape).run()[1]


class _Shell:
    def __init__(self, text: str, env: dict[str, str], escape: str) -> None:
        self.s = _Scanner(text)
        self.env = env
        self.escape = escape
        self.matched: set[str] = set()

    def run(self) -> tuple[str, list[str]]:
        out, words = self.stop_on("")
        return out, words.result()

    def stop_on(self, stop: str) -> tuple[str, _Words]:
        result: list[str] = []
        words = _Words()
        s = self.s
        while s.peek():
            ch = s.peek()
            if stop and ch == stop:
                s.next()
                return "".join(result), words
            if ch == "'":
                tmp = self.single_quote()
                result.append(tmp)
                for c in tmp:
                    words.add_raw(c)
                if not tmp:
                    words.in_word = True
            elif ch == '"':
                tmp = self.double_quote()
                result.append(tmp)
                for c in tmp:
                    words.add_raw(c)
                if not tmp:
                    words.in_word = True
            elif ch == "$":
                tmp = self.dollar()
                result.append(tmp)
                words.add_str(tmp)
            else:
                s.next()
                if ch == self.escape:
                    ch = s.next()
                    if not ch:
                        break
                    words.add_raw(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
        if stop:
            raise ShellWordError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words

    def single_quote(self) -> str:
        s = self.s
        s.next()
        out: list[str] = []
        while True:
            ch = s.next()
            if not ch:
                raise ShellWordError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                return "".join(out)
            out.append(ch)

    def double_quote(self) -> str:
        s = self.s
        s.next()
        out: list[str] = []
        while True:
            if not s.peek():
                raise ShellWordError("unexpected end of statement while looking for matching double-quote")
            ch = s.peek()
            if ch == '"':
                s.next()
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            ch = s.next()
            if ch == self.escape and s.peek() in ('"', "$", self.escape):
                ch = s.next()
            out.append(ch)

    def name(self) -> str:
        s = self.s
        out: list[str] = []
        while s.peek():
            ch = s.peek()
            if not out and ch.isdigit():
                while s.peek().isdigit():
                    out.append(s.next())
                return "".join(out)
            if not out and ch in _SPECIAL:
                return s.next()
            if not (ch.isalnum() or ch == "_"):
                break
            out.append(s.next())
        return "".join(out)

    def dollar(self) -> str:
        s = self.s
        s.next()  # the $
        if s.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            return self.env.get(name, "")
        s.next()  # the {
        if s.peek() == "}":
            raise ShellWordError("bad substitution: ${}")
        name = self.name()
        ch = s.next()
        if not ch:
            raise ShellWordError("syntax error: missing '}'")
        if ch == "}":
            return self.env.get(name, "")
        if ch == ":":
            mod = s.next()
            word, _ = self.stop_on("}")
            value = self.env.get(name)
            set_nonempty = bool(value)
            if mod == "-":
                return word if not set_nonempty else value or ""
            if mod == "+":
                return word if set_nonempty else ""
            if mod == "?":
                if not set_nonempty:
                    raise ShellWordError(f"{name}: {word or 'is not allowed to be unset'}")
                return value or ""
            raise ShellWordError(f"unsupported modifier ({mod}) in substitution")
        if ch in ("-", "+", "?"):
            word, _ = self.stop_on("}")
            value = self.env.get(name)
            if ch == "-":
                return word if value is None else value
            if ch == "+":
                return word if value is not None else ""
            if value is None:
                raise ShellWordError(f"{name}: {word or 'is not allowed to be unset'}")
            return value
        if ch in ("#", "%"):
            longest = s.peek() == ch
            if longest:
                s.next()
            pattern, _ = self.stop_on("}")
            value = self.env.get(name, "")
            return _trim(value, pattern, prefix=ch == "#", longest=longest)
        raise ShellWordError(f"unsupported modifier ({ch}) in substitution")


def _trim(value: str, pattern: str, *, prefix: bool, longest: bool) -> str:
    ends = range(len(value), -1, -1) if longest else range(0, len(value) + 1)
    for n in ends:
        part = value[:n] if prefix else value[len(value) - n:]
        if fnmatch.fnmatchcase(part, pattern):
            return value[n:] if prefix else value[:len(value) - n]
    return value
