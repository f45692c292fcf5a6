""".dockerignore rules and Go's filepath.Match, against the answers of the Go code they follow
(moby/patternmatcher's own test table, docker/cli's ignorefile tests, Go's match_test.go)."""
from __future__ import annotations

import pytest

from asyncdock.build.dockerignore import BadPattern, IgnoreRules, go_clean, go_match, has_wildcards, read_patterns


def test_read_patterns_comments_bom_bang_clean_and_leading_slash() -> None:
    text = "\ufeff# comment\n\n  *.md  \n!README.md\n/abs/../x//y/\n ! keep \n  # not a comment\n./a\n"
    assert read_patterns(text) == ["*.md", "!README.md", "x/y", "!keep", "# not a comment", "a"]


def test_single_slash_pattern_is_kept_as_is() -> None:
    # Go: Clean("/") is "/", and only a longer pattern loses its leading slash
    assert read_patterns("/\n") == ["/"]


@pytest.mark.parametrize(("pattern", "path", "want"), [
    # from patternmatcher_test.go TestMatches
    ("**", "file", True), ("**", "file/", True), ("**/", "file", True), ("**/", "file/", True),
    ("**", "dir/file", True), ("**/", "dir/file", True),
    ("**", "dir/file/", True), ("dir/**", "dir/file", True), ("dir/**", "dir/file/", True),
    ("dir/**", "dir/dir2/file", True), ("dir/**", "dir/dir2/file/", True),
    ("**/dir", "dir", True), ("**/dir", "dir/file", True), ("**/dir2/*", "dir/dir2/file", True),
    ("**/dir2/*", "dir/dir2/file/", True), ("**/dir2/**", "dir/dir2/dir3/file", True),
    ("**/dir2/**", "dir/dir2/dir3/file/", True), ("**file", "file", True), ("**file", "dir/file", True),
    ("**/file", "dir/file", True), ("**file", "dir/dir/file", True), ("**/file", "dir/dir/file", True),
    ("**/file*", "dir/dir/file", True), ("**/file*", "dir/dir/file.txt", True),
    ("**/file*txt", "dir/dir/file.txt", True), ("**/file*.txt", "dir/dir/file.txt", True),
    ("**/file*.txt*", "dir/dir/file.txt", True), ("**/**/*.txt", "dir/dir/file.txt", True),
    ("**/**/*.txt2", "dir/dir/file.txt", False), ("**/*.txt", "file.txt", True),
    ("**/**/*.txt", "file.txt", True), ("a**/*.txt", "a/file.txt", True),
    ("a**/*.txt", "a/dir/file.txt", True), ("a**/*.txt", "a/dir/dir/file.txt", True),
    ("a/*.txt", "a/dir/file.txt", False), ("a/*.txt", "a/file.txt", True),
    ("a/*.txt**", "a/file.txt", True), ("a[b-d]e", "ae", False), ("a[b-d]e", "ace", True),
    ("a[b-d]e", "aae", False), ("a[^b-d]e", "aze", True), (".*", ".foo", True), (".*", "foo", False),
    ("abc.def", "abcdef", False), ("abc.def", "abc.def", True), ("abc.def", "abcZdef", False),
    ("abc?def", "abcZdef", True), ("abc?def", "abcdef", False), ("a\\\\", "a\\", True),
    ("**/foo/bar", "foo/bar", True), ("**/foo/bar", "dir/foo/bar", True),
    ("**/foo/bar", "dir/dir2/foo/bar", True), ("abc/**", "abc", False), ("abc/**", "abc/def", True),
    ("abc/**", "abc/def/ghi", True), ("**/.foo", ".foo", True), ("**/.foo", "bar.foo", False),
    ("a(b)c/def", "a(b)c/def", True), ("a(b)c/def", "a(b)c/xyz", False), ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
    ("dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
])
def test_patternmatcher_table(pattern: str, path: str, want: bool) -> None:
    # MatchesOrParentMatches with one pattern, the path cleaned as patternmatcher.Matches does
    rules = IgnoreRules.from_patterns([pattern])
    assert rules.excluded(path) is want


def test_suffix_match_quirk_is_kept() -> None:
    # patternmatcher's suffixMatch: "**foo" is a plain suffix test, so it takes "barfoo" too
    assert IgnoreRules("**foo").excluded("barfoo")
    assert not IgnoreRules("**/foo").excluded("barfoo")


def test_exceptions_and_order() -> None:
    rules = IgnoreRules("*.md\n!README.md\n")
    assert rules.excluded("CHANGES.md")
    assert not rules.excluded("README.md")
    assert not rules.excluded("docs/x.md")  # * does not cross directories
    later = IgnoreRules("!README.md\n*.md\n")  # the last matching pattern wins
    assert later.excluded("README.md")


def test_parent_directory_semantics() -> None:
    rules = IgnoreRules("node_modules\n")
    assert rules.excluded("node_modules", is_dir=True)
    assert rules.excluded("node_modules/a/b.js")
    assert not rules.excluded("src/node_modules/x")  # anchored at the context root
    deep = IgnoreRules("**/node_modules\n")
    assert deep.excluded("src/node_modules/x/y")
    # an exception re-includes a file inside an excluded directory
    back = IgnoreRules("vendor\n!vendor/keep.txt\n")
    assert back.excluded("vendor/other")
    assert not back.excluded("vendor/keep.txt")
    assert back.may_include_below("vendor")
    assert not IgnoreRules("vendor\n").may_include_below("vendor")
    assert not back.may_include_below("src")


def test_root_is_never_excluded_and_paths_are_cleaned() -> None:
    rules = IgnoreRules("*\n")
    assert not rules.excluded(".")
    assert not rules.excluded("")
    assert rules.excluded("./a")
    assert rules.excluded("/a")
    assert IgnoreRules("a/b\n").excluded("a//b/")


def test_everything_but_exceptions() -> None:
    rules = IgnoreRules("*\n!src\n!Dockerfile\n")
    assert rules.excluded("README")
    assert not rules.excluded("src/main.py")
    assert not rules.excluded("Dockerfile")


def test_bad_patterns_are_refused() -> None:
    with pytest.raises(BadPattern, match=r"syntax error in pattern: \[a"):
        IgnoreRules("[a\n")
    with pytest.raises(ValueError, match='illegal exclusion pattern: "!"'):
        IgnoreRules("!\n")
    assert not IgnoreRules("# only a comment\n\n")


@pytest.mark.parametrize(("pattern", "name", "want"), [
    # Go's path/filepath match_test.go
    ("abc", "abc", True), ("*", "abc", True), ("*c", "abc", True), ("a*", "a", True),
    ("a*", "abc", True), ("a*", "ab/c", False), ("a*/b", "abc/b", True), ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True), ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False), ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True), ("a*b?c*x", "abxbbxdbxebxczzy", False),
    ("ab[c]", "abc", True), ("ab[b-d]", "abc", True), ("ab[e-g]", "abc", False),
    ("ab[^c]", "abc", False), ("ab[^b-d]", "abc", False), ("ab[^e-g]", "abc", True),
    ("a\\*b", "a*b", True), ("a\\*b", "ab", False), ("a?b", "a☺b", True), ("a[^a]b", "a☺b", True),
    ("a???b", "a☺b", False), ("a[^a][^a][^a]b", "a☺b", False), ("[a-ζ]*", "α", True),
    ("*[a-ζ]", "A", False), ("a?b", "a/b", False), ("a*b", "a/b", False),
    ("[\\]a]", "]", True), ("[\\-]", "-", True), ("[x\\-]", "x", True), ("[x\\-]", "-", True),
    ("[x\\-]", "z", False), ("[\\-x]", "x", True), ("[\\-x]", "-", True), ("[\\-x]", "a", False),
    ("*x", "xxx", True),
])
def test_go_filepath_match(pattern: str, name: str, want: bool) -> None:
    assert go_match(pattern, name) is want


@pytest.mark.parametrize(("pattern", "name"), [
    ("[]a]", "]"), ("[-]", "-"), ("[x-]", "x"), ("[-x]", "x"), ("\\", "a"), ("[a-b-c]", "a"),
    ("[", "a"), ("[^", "a"), ("[^bc", "a"), ("a[", "a"), ("a[", "ab"), ("a[", "x"), ("a/b[", "x"),
    ("*x[", "xxx"),
])
def test_go_filepath_match_bad_patterns(pattern: str, name: str) -> None:
    with pytest.raises(BadPattern):
        go_match(pattern, name)


def test_go_clean_and_wildcards() -> None:
    assert go_clean("") == "."
    assert go_clean("//a/../../b/./c/") == "/b/c"
    assert go_clean("../a/..") == ".."
    assert go_clean("a/../..") == ".."
    assert has_wildcards("*.txt") and has_wildcards("a?") and has_wildcards("[ab]")
    assert not has_wildcards("a\\*b") and not has_wildcards("plain")
