"""asyncdock/cli/gotemplate.py: the Go text/template subset of `--format`."""

from __future__ import annotations

import pytest

from asyncdock.cli.format import render
from asyncdock.cli.gotemplate import TemplateError, TemplateParseError, render_one

DOC = {"State": {"Running": True, "Pid": 0, "Error": ""}, "Name": "/web",
       "Mounts": [{"Source": "/a"}, {"Source": "/b"}], "Config": {"Labels": {"b": "2", "a": "1"}, "Env": ["A=1", "B=2"],
                                                                 "Cmd": None},
       "Sizes": [1.0, 2.5]}


@pytest.mark.parametrize(("template", "out"), [
    ("{{.State.Running}}", "true"),
    ("{{.State.Pid}} {{.Config.Cmd}} {{.Sizes}}", "0 <nil> [1 2.5]"),
    ("{{.Config.Labels}}", "map[a:1 b:2]"),
    ("{{json .Config.Labels}}", '{"b":"2","a":"1"}'),
    ("{{range .Mounts}}{{.Source}};{{end}}", "/a;/b;"),
    ("{{range .Config.Cmd}}x{{else}}empty{{end}}", "empty"),
    ("{{if .State.Pid}}p{{else if .State.Running}}r{{else}}n{{end}}", "r"),
    ("{{with .State}}{{.Running}}{{end}}{{with .State.Error}}e{{else}}-{{end}}", "true-"),
    ("{{range .Mounts}}{{$.Name}}{{end}}", "/web/web"),
    ('{{index .Config.Labels "a"}} {{index .Mounts 1}}', "1 map[Source:/b]"),
    ('{{join .Config.Env ","}} {{.Name | upper}} {{len .Mounts}}', "A=1,B=2 /WEB 2"),
    ("a  {{- .Name -}}  b{{/* comment */}}", "a/webb"),
    ('{{printf "%s=%d %q" .Name 3 .Name}}', '/web=3 "/web"'),
    ("{{if not .State.Pid}}idle{{end}}{{if and .State.Running .Name}} named{{end}}", "idle named"),
])
def test_renders_like_go(template: str, out: str) -> None:
    assert render_one(template, DOC) == out


@pytest.mark.parametrize(("template", "error", "parse_error"), [
    ("{{nosuchfunc .Name}}", 'template: :1: function "nosuchfunc" not defined', True),
    ("{{if .Name}}open", "template: :1: unexpected EOF", True),
    ("{{end}}", "template: :1: unexpected {{end}}", True),
    ("{{.Nope}}", 'template: :1: executing "" at <.Nope>: map has no entry for key "Nope"', False),
])
def test_errors_say_what_the_docker_cli_says(template: str, error: str, parse_error: bool) -> None:
    with pytest.raises(TemplateError) as exc:
        render_one(template, DOC)
    assert str(exc.value) == error
    assert isinstance(exc.value, TemplateParseError) is parse_error


def test_table_names_columns_from_headers() -> None:
    items = [{"ID": "abc", "Names": "web"}, {"ID": "defghijklmnop", "Names": "db"}]
    out = render("table {{.ID}}\t{{.Names | upper}}", items, {"ID": "CONTAINER ID", "Names": "NAMES"})
    assert out.splitlines() == ["CONTAINER ID    NAMES", "abc             WEB", "defghijklmnop   DB"]
