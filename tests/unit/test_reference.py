"""Docker's reference normalisation (distribution/reference as dockerd 20.10 uses it)."""
from __future__ import annotations

import pytest

from asyncdock.registry.reference import (ReferenceError_, familiar_match, parse_any, parse_normalized,
                                          parse_pull_reference, path_match)

D = "sha256:" + "a" * 64

NORMALISED = [
    # given, full string, familiar string, domain, path
    ("busybox", "docker.io/library/busybox", "busybox", "docker.io", "library/busybox"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36", "docker.io", "library/busybox"),
    ("library/busybox", "docker.io/library/busybox", "busybox", "docker.io", "library/busybox"),
    ("docker.io/busybox", "docker.io/library/busybox", "busybox", "docker.io", "library/busybox"),
    ("index.docker.io/busybox", "docker.io/library/busybox", "busybox", "docker.io", "library/busybox"),
    ("docker.io/library/busybox:latest", "docker.io/library/busybox:latest", "busybox:latest", "docker.io",
     "library/busybox"),
    ("user/repo", "docker.io/user/repo", "user/repo", "docker.io", "user/repo"),
    ("user/repo/sub", "docker.io/user/repo/sub", "user/repo/sub", "docker.io", "user/repo/sub"),
    ("docker.io/library/a/b", "docker.io/library/a/b", "library/a/b", "docker.io", "library/a/b"),
    ("localhost/x", "localhost/x", "localhost/x", "localhost", "x"),
    ("localhost:5000/x:1", "localhost:5000/x:1", "localhost:5000/x:1", "localhost:5000", "x"),
    ("127.0.0.1:5000/library/busybox", "127.0.0.1:5000/library/busybox", "127.0.0.1:5000/library/busybox",
     "127.0.0.1:5000", "library/busybox"),
    ("example.com/a/b:v1", "example.com/a/b:v1", "example.com/a/b:v1", "example.com", "a/b"),
    ("Example.COM/a", "Example.COM/a", "Example.COM/a", "Example.COM", "a"),
    ("[::1]:5000/x", "[::1]:5000/x", "[::1]:5000/x", "[::1]:5000", "x"),
    (f"busybox@{D}", f"docker.io/library/busybox@{D}", f"busybox@{D}", "docker.io", "library/busybox"),
    (f"busybox:1@{D}", f"docker.io/library/busybox:1@{D}", f"busybox:1@{D}", "docker.io", "library/busybox"),
    ("a_b/c.d-e__f/g--h", "docker.io/a_b/c.d-e__f/g--h", "a_b/c.d-e__f/g--h", "docker.io", "a_b/c.d-e__f/g--h"),
    # "." makes the first component a domain, but "_" is no host character: Go's grammar then
    # takes the whole string as a path with no domain.
    ("a_b.c/d", "a_b.c/d", "a_b.c/d", "", "a_b.c/d"),
    ("foo:Tag_1.x-y", "docker.io/library/foo:Tag_1.x-y", "foo:Tag_1.x-y", "docker.io", "library/foo"),
]


@pytest.mark.parametrize("given,full,familiar,domain,path", NORMALISED)
def test_normalisation(given: str, full: str, familiar: str, domain: str, path: str) -> None:
    ref = parse_normalized(given)
    assert str(ref) == full
    assert ref.familiar == familiar
    assert ref.domain == domain
    assert ref.path == path


INVALID = [
    ("", "invalid reference format"),
    ("NoSuch", "invalid reference format: repository name must be lowercase"),
    ("user/Repo", "invalid reference format: repository name must be lowercase"),
    ("Foo/bar", "invalid reference format: repository name must be lowercase"),
    ("busybox:", "invalid reference format"),
    ("busybox:a/b", "invalid reference format"),
    ("-busybox", "invalid reference format"),
    ("busy__-box", "invalid reference format"),
    ("a//b", "invalid reference format"),
    ("busybox@sha256:abc", "invalid reference format"),
    ("busybox@sha256:" + "A" * 64, "invalid checksum digest format"),
    ("busybox@md5:" + "a" * 32, "unsupported digest algorithm"),
    ("busybox:" + "t" * 129, "invalid reference format"),
    ("a" * 64, f"invalid repository name ({'a' * 64}), cannot specify 64-byte hexadecimal strings"),
    ("example.com:port/x", "invalid reference format"),
    ("x/" + "a" * 260, "repository name must not be more than 255 characters"),
]


@pytest.mark.parametrize("given,message", INVALID)
def test_invalid(given: str, message: str) -> None:
    with pytest.raises(ReferenceError_) as exc:
        parse_normalized(given)
    assert str(exc.value) == message
    assert exc.value.status == 400


def test_default_tag_and_forms() -> None:
    ref = parse_normalized("busybox")
    assert ref.tag is None and ref.digest is None
    tagged = ref.with_default_tag()
    assert tagged.familiar == "busybox:latest" and tagged.tag_or_digest == "latest"
    assert ref.familiar_name == "busybox" and ref.name == "docker.io/library/busybox"
    digested = parse_normalized(f"busybox@{D}")
    assert digested.with_default_tag() is digested
    assert digested.tag_or_digest == D


def test_parse_any() -> None:
    assert parse_any("a" * 64) == "sha256:" + "a" * 64
    assert parse_any(D) == D
    ref = parse_any("8e8cf97282af")  # a short ID is also a valid name; callers try both
    assert not isinstance(ref, str) and ref.path == "library/8e8cf97282af"


def test_pull_reference() -> None:
    # POST /images/create?fromImage=X&tag=Y: the tag may be a digest; a bare name gets latest.
    assert str(parse_pull_reference("127.0.0.1:5000/library/busybox", "latest")) == \
        "127.0.0.1:5000/library/busybox:latest"
    assert parse_pull_reference("busybox", "").familiar == "busybox:latest"
    assert parse_pull_reference("busybox:1", "").familiar == "busybox:1"
    assert parse_pull_reference("busybox", D).familiar == f"busybox@{D}"
    assert parse_pull_reference("busybox:", "").familiar == "busybox:latest"  # `pull -a` leftovers
    with pytest.raises(ReferenceError_):
        parse_pull_reference("busybox", "bad/tag")


def test_familiar_match() -> None:
    ref = parse_normalized("busybox:latest")
    assert familiar_match("busybox", ref)
    assert familiar_match("busy*", ref)
    assert familiar_match("busybox:lat*", ref)
    assert not familiar_match("alpine", ref)
    other = parse_normalized("127.0.0.1:5000/library/busybox:1")
    assert familiar_match("127.0.0.1:5000/library/*", other)
    assert not familiar_match("*", other)  # Go's path.Match: * does not cross "/"
    assert path_match("a[bc]d", "abd") and path_match("a[^x]d", "abd") and not path_match("a?c", "a/c")
