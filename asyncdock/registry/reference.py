"""Docker's image reference grammar and normalisation (distribution/reference, as dockerd uses it).

    busybox                 -> docker.io/library/busybox:latest   (familiar: busybox:latest)
    user/repo               -> docker.io/user/repo:latest
    localhost:5000/x:1      -> localhost:5000/x:1
    repo@sha256:<64 hex>    -> docker.io/library/repo@sha256:...

The first path component is a registry domain only if it contains "." or ":" or is "localhost"
(the rule of the distribution/reference that dockerd 20.10 vendors). Error texts are the daemon's,
since clients print them verbatim.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..base.errors import InvalidParameter

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

# The grammar, transcribed from distribution/reference/regexp.go.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_HOST = rf"(?:{_DOMAIN_NAME}|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
_REMOTE_NAME = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_NAME = rf"(?:{_DOMAIN}/)?{_REMOTE_NAME}"

_REFERENCE_RE = re.compile(rf"^({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?$")
_ANCHORED_NAME_RE = re.compile(rf"^(?:({_DOMAIN})/)?({_REMOTE_NAME})$")
_TAG_RE = re.compile(rf"^{_TAG}$")
_HEX64_RE = re.compile(r"^[a-f0-9]{64}$")

_DIGEST_HEX_LEN = {"sha256": 64, "sha384": 96, "sha512": 128}

ERR_INVALID_FORMAT = "invalid reference format"
ERR_UPPERCASE = "invalid reference format: repository name must be lowercase"


class ReferenceError_(InvalidParameter):
    """A reference that does not parse (HTTP 400, the daemon's wording)."""


def validate_digest(value: str) -> str:
    """go-digest's Parse/Validate rules; returns the digest unchanged."""
    algo, sep, hexpart = value.partition(":")
    if not sep or not algo or not hexpart:
        raise ReferenceError_("invalid checksum digest format")
    want = _DIGEST_HEX_LEN.get(algo)
    if want is None:
        raise ReferenceError_("unsupported digest algorithm")
    if len(hexpart) != want:
        raise ReferenceError_("invalid checksum digest length")
    if not re.fullmatch(r"[a-f0-9]+", hexpart):
        raise ReferenceError_("invalid checksum digest format")
    return value


def is_digest(value: str) -> bool:
    try:
        validate_digest(value)
    except ReferenceError_:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Reference:
    """A normalised reference: domain and path always filled; tag and/or digest optional."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    # ---- forms
    @property
    def name(self) -> str:
        """Full repository name: docker.io/library/busybox (just the path when the grammar
        found no domain, as for "a_b.c/x", whose first component is not a valid host)."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    @property
    def familiar_name(self) -> str:
        """What Docker shows: busybox, user/x, 127.0.0.1:5000/library/busybox."""
        if self.domain == DEFAULT_DOMAIN:
            rest = self.path
            if rest.startswith(OFFICIAL_REPO_PREFIX) and "/" not in rest[len(OFFICIAL_REPO_PREFIX):]:
                rest = rest[len(OFFICIAL_REPO_PREFIX):]
            return rest
        return self.name

    def _suffix(self) -> str:
        s = ""
        if self.tag is not None:
            s += ":" + self.tag
        if self.digest is not None:
            s += "@" + self.digest
        return s

    def __str__(self) -> str:
        return self.name + self._suffix()

    @property
    def familiar(self) -> str:
        """FamiliarString: busybox:latest, busybox@sha256:..."""
        return self.familiar_name + self._suffix()

    # ---- derived references
    def with_default_tag(self) -> Reference:
        """TagNameOnly: a name without tag or digest gets :latest."""
        if self.tag is None and self.digest is None:
            return Reference(self.domain, self.path, DEFAULT_TAG, None)
        return self

    def with_tag(self, tag: str) -> Reference:
        if not _TAG_RE.match(tag):
            raise ReferenceError_(ERR_INVALID_FORMAT)
        return Reference(self.domain, self.path, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, None, validate_digest(digest))

    def trimmed(self) -> Reference:
        return Reference(self.domain, self.path)

    @property
    def tag_or_digest(self) -> str:
        """What `Pulling from` is keyed by: the digest when there is one, else the tag."""
        if self.digest is not None:
            return self.digest
        return self.tag or DEFAULT_TAG


def _split_docker_domain(name: str) -> tuple[str, str]:
    i = name.find("/")
    first = name[:i] if i >= 0 else ""
    if i == -1 or (not any(c in first for c in ".:") and first != "localhost"):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, name[i + 1:]
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def _parse_full(s: str) -> Reference:
    """reference.Parse on an already-qualified string."""
    m = _REFERENCE_RE.match(s)
    if m is None:
        if s == "":
            raise ReferenceError_("repository name must have at least one component")
        if _REFERENCE_RE.match(s.lower()) is not None:
            raise ReferenceError_("repository name must be lowercase")
        raise ReferenceError_(ERR_INVALID_FORMAT)
    name, tag, digest = m.group(1), m.group(2), m.group(3)
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise ReferenceError_(f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
    nm = _ANCHORED_NAME_RE.match(name)
    if nm is None:  # pragma: no cover - _REFERENCE_RE already matched the same grammar
        raise ReferenceError_(ERR_INVALID_FORMAT)
    domain = nm.group(1) or ""
    path = nm.group(2)
    if digest is not None:
        validate_digest(digest)
    return Reference(domain, path, tag, digest)


def parse_normalized(s: str) -> Reference:
    """ParseNormalizedNamed: the daemon's entry point for names given by users."""
    if _HEX64_RE.match(s):
        raise ReferenceError_(f"invalid repository name ({s}), cannot specify 64-byte hexadecimal strings")
    domain, remainder = _split_docker_domain(s)
    # The name (up to the first ":") must be lower case; checked before the grammar so the error
    # names the real problem rather than "invalid reference format".
    remote = remainder.split(":", 1)[0]
    if remote.lower() != remote:
        raise ReferenceError_(ERR_UPPERCASE)
    ref = _parse_full(f"{domain}/{remainder}")
    return ref


def parse_any(s: str) -> Reference | str:
    """ParseAnyReference: a 64-hex ID or a "sha256:..." digest is returned as the digest string,
    anything else as a normalised Reference."""
    if _HEX64_RE.match(s):
        return "sha256:" + s
    if is_digest(s):
        return s
    return parse_normalized(s)


def parse_pull_reference(from_image: str, tag: str = "") -> Reference:
    """How `POST /images/create?fromImage=&tag=` builds its reference (daemon's PullImage):
    `tag` may be a tag or a digest; a bare name means :latest."""
    # "pull -a" may send a trailing ":"; the daemon strips it for API compatibility.
    ref = parse_normalized(from_image.removesuffix(":"))
    if tag:
        if is_digest(tag):
            ref = ref.trimmed().with_digest(tag)
        else:
            ref = ref.with_tag(tag)
    return ref.with_default_tag()


def path_match(pattern: str, value: str) -> bool:
    """Go's path.Match: `*` and `?` never cross "/"; character classes as in Go."""
    return _compile_path_pattern(pattern).fullmatch(value) is not None


def _compile_path_pattern(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            j = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("^", "]") else i + 1)
            if j == -1:
                raise InvalidParameter("syntax error in pattern")
            body = pattern[i + 1:j]
            neg = body.startswith("^")
            if neg:
                body = body[1:]
            body = body.replace("\\", "\\\\")
            out.append(f"[{'^/' if neg else ''}{body}]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def familiar_match(pattern: str, ref: Reference) -> bool:
    """reference.FamiliarMatch, used by the `reference` filter of `docker images`."""
    if path_match(pattern, ref.familiar):
        return True
    return path_match(pattern, ref.familiar_name)
