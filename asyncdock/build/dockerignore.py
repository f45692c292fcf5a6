""".dockerignore rules, as the docker CLI and the classic builder apply them.

Three Go pieces are followed to the letter, since a user's file is written against them:
- moby/patternmatcher/ignorefile.ReadAll: a UTF-8 BOM is dropped from the first line, a line
  starting with `#` is a comment (only there: `#` elsewhere is a character), lines are trimmed,
  `!` makes an exception, each pattern is `filepath.Clean`ed and a leading `/` stripped;
- moby/patternmatcher: a pattern becomes an exact, prefix (`dir/**`), suffix (`**/x`) or regexp
  match (`*` and `?` never cross `/`, `**` crosses any number of directories); a path is
  excluded when the last pattern that matches it, or one of its parent directories
  (MatchesOrParentMatches), is not an exception;
- Go's path/filepath.Match (COPY's wildcard sources, and the syntax check of every pattern).
"""
from __future__ import annotations

import re
from collections.abc import Iterable


class BadPattern(ValueError):
    """A pattern Go's filepath.Match rejects (an unclosed `[`, a trailing `\\`)."""

    def __init__(self, pattern: str) -> None:
        super().__init__(f"syntax error in pattern: {pattern}")


# -- Go's path/filepath -------------------------------------------------------------------------


def go_clean(path: str) -> str:
    """Go's filepath.Clean on Linux: `.` for nothing, one leading `/` at most, no `.`
    components, `..` folded where it can be (never above `/`)."""
    if not path:
        return "."
    rooted = path.startswith("/")
    out: list[str] = []
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(comp)
    body = "/".join(out)
    if rooted:
        return "/" + body
    return body or "."


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    star = False
    while pattern.startswith("*"):
        pattern = pattern[1:]
        star = True
    inrange = False
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 < n:
                i += 1
        elif c == "[":
            inrange = True
        elif c == "]":
            inrange = False
        elif c == "*" and not inrange:
            break
        i += 1
    return star, pattern[:i], pattern[i:]


def _get_esc(chunk: str, pattern: str) -> tuple[str, str]:
    if not chunk or chunk[0] in "-]":
        raise BadPattern(pattern)
    if chunk[0] == "\\":
        chunk = chunk[1:]
        if not chunk:
            raise BadPattern(pattern)
    r, rest = chunk[0], chunk[1:]
    if not rest:
        raise BadPattern(pattern)
    return r, rest


def _match_chunk(chunk: str, s: str, pattern: str) -> str | None:
    """The rest of `s` after `chunk` matched its start, or None; BadPattern for bad syntax
    (checked through the whole chunk even after a mismatch, as Go does)."""
    failed = False
    while chunk:
        if not failed and not s:
            failed = True
        c = chunk[0]
        if c == "[":
            r = ""
            if not failed:
                r, s = s[0], s[1:]
            chunk = chunk[1:]
            negated = False
            if chunk.startswith("^"):
                negated = True
                chunk = chunk[1:]
            matched = False
            nrange = 0
            while True:
                if chunk.startswith("]") and nrange > 0:
                    chunk = chunk[1:]
                    break
                lo, chunk = _get_esc(chunk, pattern)
                hi = lo
                if chunk[0] == "-":
                    hi, chunk = _get_esc(chunk[1:], pattern)
                if not failed and lo <= r <= hi:
                    matched = True
                nrange += 1
            if matched == negated:
                failed = True
        elif c == "?":
            if not failed:
                if s[0] == "/":
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
        else:
            if c == "\\":
                chunk = chunk[1:]
                if not chunk:
                    raise BadPattern(pattern)
            if not failed:
                if chunk[0] != s[0]:
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
    return None if failed else s


def go_match(pattern: str, name: str) -> bool:
    """Go's filepath.Match(pattern, name) on Linux; BadPattern where Go returns ErrBadPattern."""
    whole = pattern
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and not chunk:
            return "/" not in name  # a trailing * matches the rest unless it holds a /
        t = _match_chunk(chunk, name, whole)
        if t is not None and (not t or pattern):
            name = t
            continue
        if star:
            found = False
            i = 0
            while i < len(name) and name[i] != "/":
                t = _match_chunk(chunk, name[i + 1:], whole)
                if t is not None:
                    if not pattern and t:
                        i += 1
                        continue
                    name = t
                    found = True
                    break
                i += 1
            if found:
                continue
        while pattern:  # the rest must still be valid syntax
            _, chunk, pattern = _scan_chunk(pattern)
            _match_chunk(chunk, "", whole)
        return False
    return not name


def has_wildcards(name: str) -> bool:
    """moby's containsWildcards: an unescaped `*`, `?` or `[`."""
    i = 0
    while i < len(name):
        c = name[i]
        if c == "\\":
            i += 1
        elif c in "*?[":
            return True
        i += 1
    return False


# -- patternmatcher -----------------------------------------------------------------------------

_EXACT, _PREFIX, _SUFFIX, _REGEXP = range(4)
_ESCAPE = frozenset(".+()|{}$")


class _Pattern:
    __slots__ = ("text", "exception", "kind", "regexp")

    def __init__(self, text: str, exception: bool) -> None:
        self.text = text
        self.exception = exception
        self.regexp: re.Pattern[str] | None = None
        self.kind = self._compile()

    def _compile(self) -> int:
        p = self.text
        out = ["^"]
        kind = _EXACT
        i = 0
        n = len(p)
        first = True
        while i < n:
            c = p[i]
            i += 1
            if c == "*":
                if i < n and p[i] == "*":
                    i += 1
                    if i < n and p[i] == "/":  # **/ is **
                        i += 1
                    if i >= n:  # ** at the end: everything, as .gitignore
                        if kind == _EXACT:
                            kind = _PREFIX
                        else:
                            out.append(".*")
                            kind = _REGEXP
                    else:
                        out.append("(.*/)?")
                        kind = _REGEXP
                    if first:
                        kind = _SUFFIX
                else:
                    out.append("[^/]*")
                    kind = _REGEXP
            elif c == "?":
                out.append("[^/]")
                kind = _REGEXP
            elif c in _ESCAPE:
                out.append("\\" + c)
            elif c == "\\":
                if i < n:
                    out.append("\\" + p[i])  # as Go: the escaped character goes to the regexp
                    i += 1
                    kind = _REGEXP
                else:
                    out.append("\\\\")
            elif c in "[]":
                out.append(c)
                kind = _REGEXP
            else:
                out.append(c)  # raw, as Go passes it (`^` stays an anchor, classes stay classes)
            first = False
        if kind == _REGEXP:
            out.append(r"\Z")
            try:
                self.regexp = re.compile("".join(out))
            except re.error:
                raise BadPattern(self.text) from None
        return kind

    def match(self, path: str) -> bool:
        kind = self.kind
        if kind == _EXACT:
            return path == self.text
        if kind == _PREFIX:
            return path.startswith(self.text[:-2])
        if kind == _SUFFIX:
            suffix = self.text[2:]
            if path.endswith(suffix):
                return True
            return suffix.startswith("/") and path == suffix[1:]
        assert self.regexp is not None
        return self.regexp.match(path) is not None


def read_patterns(text: str) -> list[str]:
    """ignorefile.ReadAll: the patterns of a .dockerignore, `!` kept as their prefix."""
    out: list[str] = []
    for lineno, line in enumerate(text.splitlines()):
        if lineno == 0 and line.startswith("\ufeff"):
            line = line[1:]
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        out.append("!" + pattern if invert else pattern)
    return out


class IgnoreRules:
    """The rules of one .dockerignore (its text; "" for none). ValueError (BadPattern, or
    moby's `illegal exclusion pattern: "!"`) for a file Docker refuses as well."""

    def __init__(self, text: str = "") -> None:
        self.patterns: list[_Pattern] = []
        for raw in read_patterns(text):
            p = go_clean(raw.strip())
            exception = p.startswith("!")
            if exception:
                if len(p) == 1:
                    raise ValueError('illegal exclusion pattern: "!"')
                p = p[1:]
            go_match(p, ".")  # Go's syntax check: raises BadPattern
            self.patterns.append(_Pattern(p, exception))
        self.has_exceptions = any(p.exception for p in self.patterns)

    @classmethod
    def from_patterns(cls, patterns: Iterable[str]) -> IgnoreRules:
        return cls("\n".join(patterns))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def excluded(self, rel_path: str, is_dir: bool = False) -> bool:
        """Whether `rel_path` (slash-separated, relative to the context root) is left out:
        patternmatcher.MatchesOrParentMatches. The root itself never is. `is_dir` does not
        change the answer (Docker's patterns have no trailing-slash form: Clean removes it)."""
        if not self.patterns:
            return False
        path = go_clean(rel_path)
        if path.startswith("/"):
            path = path.lstrip("/") or "."
        if path == ".":
            return False
        parent = path.rpartition("/")[0]
        parents = parent.split("/") if parent else []
        matched = False
        for pat in self.patterns:
            if pat.exception != matched:
                continue
            hit = pat.match(path)
            if not hit and parents:
                for i in range(len(parents)):
                    if pat.match("/".join(parents[:i + 1])):
                        hit = True
                        break
            if hit:
                matched = not pat.exception
        return matched

    def may_include_below(self, rel_dir: str) -> bool:
        """For an excluded directory: whether an exception could bring back something inside
        it (the CLI's walk descends into it then, else it skips the whole tree)."""
        if not self.has_exceptions:
            return False
        prefix = go_clean(rel_dir) + "/"
        return any(p.exception and (p.text + "/").startswith(prefix) for p in self.patterns)
