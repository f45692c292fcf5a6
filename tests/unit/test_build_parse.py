"""The classic builder's view of a Dockerfile: meta args, stages, targets' names, moby's checks,
heredocs and unknown instructions refused with the line, ONBUILD triggers, the escape directive;
Go's %q texts of the history comments and the build-args rules."""
from __future__ import annotations

import pytest

from asyncdock.base.healthcheck import HealthConfig
from asyncdock.build import gotext
from asyncdock.build.buildargs import BuildArgs
from asyncdock.build.parse import DockerfileError, parse, parse_trigger


def test_stages_and_meta_args() -> None:
    p = parse("ARG V=1\nFROM busybox AS Base\nRUN a\nFROM --platform=linux/amd64 base\nCOPY --from=base /a /b\n")
    assert [m.original for m in p.meta_args] == ["ARG V=1"]
    assert [(s.base, s.name, s.platform) for s in p.stages] == [("busybox", "base", ""), ("base", "", "linux/amd64")]
    copy = p.stages[1].commands[0]
    assert copy.cmd == "COPY" and copy.flags == {"from": "base"} and copy.args == ["/a", "/b"]


@pytest.mark.parametrize("text,message", [
    ("FROM busybox\nFOO bar\n", "dockerfile parse error on line 2: unknown instruction: FOO"),
    ("FROM busybox\nRUN <<EOF\necho\nEOF\n", "dockerfile parse error on line 2: RUN with a heredoc"),
    ("FROM busybox\nCOPY <<EOF /x\nhi\nEOF\n", "line 2: COPY with a heredoc"),
    ("RUN x\n", "no build stage in current context"),
    ("FROM a b\n", "FROM requires either one or three arguments"),
    ("FROM a AS 1x\n", "invalid name for build stage"),
    ("FROM a\nONBUILD FROM b\n", "FROM isn't allowed as an ONBUILD trigger"),
    ("FROM a\nCOPY --bad=1 a b\n", "unknown flag: bad"),
    ("FROM a\nRUN --mount=type=cache,target=/x true\n", "needs BuildKit"),
    ("FROM a\nSHELL sh -c\n", "SHELL requires the arguments to be in JSON form"),
    ("", "file with no instructions"),
])
def test_refusals(text: str, message: str) -> None:
    with pytest.raises(DockerfileError) as e:
        parse(text)
    assert message in str(e.value)


def test_escape_directive_and_continuations() -> None:
    p = parse("# escape=`\nFROM busybox\nRUN echo a `\n  b\n")
    assert p.escape == "`"
    assert p.stages[0].commands[0].args == ["echo a   b"]


def test_onbuild_trigger() -> None:
    p = parse("FROM a\nONBUILD COPY --chown=1 x /y\n")
    inst = p.stages[0].commands[0]
    assert inst.sub_cmd == "COPY" and inst.expression == "COPY --chown=1 x /y"
    trig = parse_trigger(inst.expression)
    assert trig.cmd == "COPY" and trig.flags == {"chown": "1"}


def test_go_texts() -> None:
    assert gotext.quote_list(["nginx", "-g", "daemon off;"]) == '["nginx" "-g" "daemon off;"]'
    assert gotext.quote_list(["a\"b"]) == '["a\\"b"]'
    assert gotext.list_v(["/data", "/x"]) == "[/data /x]"
    assert gotext.duration(5_000_000_000) == "5s"
    assert gotext.duration(90_000_000_000) == "1m30s"
    assert gotext.duration(1_500_000) == "1.5ms"
    hc = HealthConfig(test=["CMD-SHELL", "true"], interval=5_000_000_000, retries=3)
    assert gotext.healthcheck(hc) == '&{["CMD-SHELL" "true"] "5s" "0s" "0s" "0s" \'\\x03\'}'


def test_build_args_rules() -> None:
    args = BuildArgs({"V": "2", "UNUSED": "x", "HTTP_PROXY": "http://p"})
    args.add_meta("M", "m")
    st = args.clone_for_stage()
    st.add("V", "1")
    st.add("M", None)
    assert st.all_allowed() == {"V": "2", "M": "m", "HTTP_PROXY": "http://p"}
    assert sorted(st.filter_allowed(["V=9"])) == ["HTTP_PROXY=http://p", "M=m"]
    assert not st.is_referenced_or_not_builtin("HTTP_PROXY")
    args.merge_referenced(st)
    assert args.unused() == ["UNUSED"]
