"""Dockerfile word expansion with moby's shell/lex rules (its lex tests' cases)."""
from __future__ import annotations

import pytest

from asyncdock.build.shellwords import Lex, ShellWordError

ENV = ["PWD=/home", "SHELL=bash", "KOREAN=한국어", "EMPTY=", "A=a b"]


@pytest.mark.parametrize("word,expected", [
    ("hello", "hello"),
    ("he'll'o", "hello"),
    ('he"ll"o', "hello"),
    ("'$PWD'", "$PWD"),
    ('"$PWD"', "/home"),
    ("$PWD", "/home"),
    ("${PWD}", "/home"),
    ("${PWD}x", "/homex"),
    ("$PWDx", ""),
    ("\\$PWD", "$PWD"),
    ('"\\$PWD"', "$PWD"),
    ('"\\a"', "\\a"),
    ("he\\$PWD", "he$PWD"),
    ("${NOPE:-def}", "def"),
    ("${EMPTY:-def}", "def"),
    ("${EMPTY-def}", ""),
    ("${NOPE-def}", "def"),
    ("${PWD:+set}", "set"),
    ("${EMPTY:+set}", ""),
    ("${EMPTY+set}", "set"),
    ("${NOPE:-${PWD}}", "/home"),
    ("$", "$"),
    ("a$", "a$"),
    ("${KOREAN}", "한국어"),
    ("${PWD#/ho}", "me"),
    ("${PWD%me}", "/ho"),
    ("trailing\\", "trailing"),
])
def test_process_word(word: str, expected: str) -> None:
    assert Lex().process_word(word, ENV) == expected


def test_words_split_on_unquoted_blanks_and_values() -> None:
    lex = Lex()
    assert lex.process_words("a  b 'c d'", ENV) == ["a", "b", "c d"]
    assert lex.process_words("$A x", ENV) == ["a", "b", "x"]
    assert lex.process_words('"$A" x', ENV) == ["a b", "x"]


def test_escape_token_backtick() -> None:
    assert Lex("`").process_word("c:`$PWD\\x", ENV) == "c:$PWD\\x"


@pytest.mark.parametrize("word,message", [
    ("${NOPE:?must be set}", "NOPE: must be set"),
    ("${NOPE?}", "NOPE: is not allowed to be unset"),
    ("'open", "matching single-quote"),
    ('"open', "matching double-quote"),
    ("${PWD", "missing '}'"),
    ("${PWD:=x}", "unsupported modifier (=)"),
])
def test_errors(word: str, message: str) -> None:
    with pytest.raises(ShellWordError) as e:
        Lex().process_word(word, ENV)
    assert message in str(e.value)
