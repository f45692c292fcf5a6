"""Container names: Docker's validation text and the random adjective_surname generator."""
from __future__ import annotations

import random
from typing import Any

import pytest

from asyncdock.containers.names import (
    ADJECTIVES,
    SURNAMES,
    generate_name,
    is_valid_name,
    random_name,
    validate_name,
)
from asyncdock.base.errors import InvalidParameter


@pytest.mark.parametrize(("name", "canonical"), [
    ("tx-logs", "/tx-logs"), ("/tx-logs", "/tx-logs"), ("a1", "/a1"), ("9lives", "/9lives"),
    ("web.1_db-2", "/web.1_db-2"), ("A_B", "/A_B"),
    ("//x1", "//x1"),  # Docker's quirk: one slash trimmed, then the pattern allows another
])
def test_valid_names(name: str, canonical: str) -> None:
    assert is_valid_name(name)
    assert validate_name(name) == canonical


@pytest.mark.parametrize("name", [
    "", "a", "/a", "-abc", "_abc", ".abc", "ab c", "ab/c", "ab:c", "héllo", "abc\n", "ab$",
    "///x1",
])
def test_invalid_names_give_dockers_message(name: str) -> None:
    assert not is_valid_name(name)
    with pytest.raises(InvalidParameter) as e:
        validate_name(name)
    assert str(e.value) == (f"Invalid container name ({name}), only "
                            "[a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    assert e.value.status == 400


def test_word_lists() -> None:
    assert len(ADJECTIVES) >= 100 and len(SURNAMES) >= 200
    for word in (*ADJECTIVES, *SURNAMES):
        assert word.isascii() and word.isalpha() and word.islower(), word
    assert len(set(ADJECTIVES)) == len(ADJECTIVES)
    assert len(set(SURNAMES)) == len(SURNAMES)
    assert "boring" in ADJECTIVES and "wozniak" in SURNAMES  # so the rule below means something


def test_random_names_are_valid_and_varied() -> None:
    rng = random.Random(7)
    names = {random_name(0, rng) for _ in range(2000)}
    assert len(names) > 1900
    for n in names:
        adjective, surname = n.split("_")
        assert adjective in ADJECTIVES and surname in SURNAMES
        assert is_valid_name(n)


def test_retry_appends_a_digit() -> None:
    rng = random.Random(1)
    for retry in range(1, 6):
        n = random_name(retry, rng)
        assert n[-1].isdigit() and n[:-1].count("_") == 1


class _WozniakRng(random.Random):
    """Always offers boring + wozniak first, then something else."""

    def __init__(self) -> None:
        super().__init__(3)
        self.calls = 0

    def choice(self, seq: Any) -> Any:
        self.calls += 1
        if self.calls <= 2:
            return "boring" if "boring" in seq else "wozniak"
        return super().choice(seq)


def test_never_boring_wozniak() -> None:
    rng = _WozniakRng()
    assert random_name(0, rng) != "boring_wozniak"
    assert rng.calls >= 4  # it drew again
    many = random.Random(11)
    assert all(random_name(0, many) != "boring_wozniak" for _ in range(50_000))


def test_generate_name_retries_then_falls_back_to_short_id() -> None:
    cid = "4f1c9e2d7a0b" + "c" * 52
    asked: list[str] = []

    def taken(name: str) -> bool:
        asked.append(name)
        return True

    assert generate_name(taken, cid, random.Random(5)) == "/4f1c9e2d7a0b"
    assert len(asked) == 6 and all(n.startswith("/") for n in asked)
    assert not asked[0][-1].isdigit() and all(n[-1].isdigit() for n in asked[1:])

    free = generate_name(lambda n: False, cid, random.Random(5))
    assert free.startswith("/") and is_valid_name(free)
