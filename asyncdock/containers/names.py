"""Container names: Docker's validation rule and its `adjective_surname` random names.

The word lists are our own (not moby's file). Surnames honour scientists and engineers;
adjectives are friendly. The one rule kept from Docker: `boring_wozniak` is never generated,
because Steve Wozniak is not boring.
"""
from __future__ import annotations

import random
import re
from collections.abc import Callable

from asyncdock.base.errors import InvalidParameter

VALID_NAME_CHARS = "[a-zA-Z0-9][a-zA-Z0-9_.-]"
# Docker's pattern, including its quirks: at least two characters, and the optional leading
# slash is tested *after* one slash was already trimmed, so "//x1" passes as Docker's does.
_VALID_NAME = re.compile(r"/?" + VALID_NAME_CHARS + r"+", re.ASCII)

ADJECTIVES: tuple[str, ...] = (
    "able", "agile", "amber", "ample", "ardent", "artful", "astute", "blithe", "bold",
    "boring", "brave", "breezy", "bright", "brisk", "bubbly", "busy", "calm", "candid",
    "careful", "cheerful", "civil", "clever", "cosmic", "crisp", "curious", "dapper",
    "daring", "dazzling", "deft", "devoted", "diligent", "dreamy", "dynamic", "eager",
    "earnest", "electric", "elegant", "eloquent", "epic", "exact", "fearless", "festive",
    "fluent", "focused", "frank", "friendly", "frosty", "gallant", "gentle", "gifted", "glad",
    "golden", "graceful", "gracious", "hardy", "hearty", "helpful", "honest", "hopeful",
    "humble", "jolly", "jovial", "joyful", "keen", "kind", "lively", "loyal", "lucid",
    "lucky", "luminous", "mellow", "merry", "mighty", "modest", "nimble", "noble", "patient",
    "peaceful", "placid", "playful", "plucky", "polite", "proud", "quick", "quiet", "radiant",
    "rapid", "ready", "serene", "sharp", "shiny", "sincere", "sleepy", "snappy", "solid",
    "spry", "steady", "stoic", "sunny", "swift", "tender", "thrifty", "tidy", "tranquil",
    "trusty", "upbeat", "valiant", "vivid", "warm", "wise", "witty", "zealous", "zen",
)

SURNAMES: tuple[str, ...] = (
    # computing
    "aiken", "allen", "atanasoff", "babbage", "backus", "bartik", "cerf", "clarke", "conway",
    "dijkstra", "eckert", "engelbart", "floyd", "forrester", "goldwasser", "hamilton",
    "hellman", "hoare", "holberton", "hollerith", "hopcroft", "hopper", "kahn", "karp",
    "kernighan", "kilburn", "knuth", "lamport", "liskov", "lovelace", "mauchly", "mccarthy",
    "merkle", "metcalfe", "micali", "milner", "minsky", "perlman", "pnueli", "rabin",
    "ritchie", "rivest", "shamir", "shannon", "sutherland", "tarjan", "thompson", "torvalds",
    "turing", "wilkes", "wirth", "wozniak", "zuse", "diffie", "adleman", "sifakis", "nygaard",
    "dahl", "naur", "kleene", "church",
    # mathematics
    "abel", "archimedes", "banach", "cantor", "cauchy", "chebyshev", "dedekind", "erdos",
    "euclid", "euler", "fermat", "fibonacci", "fourier", "galois", "gauss", "germain",
    "godel", "hausdorff", "hilbert", "hypatia", "jacobi", "kolmogorov", "kovalevskaya",
    "lagrange", "laplace", "lebesgue", "leibniz", "lobachevsky", "lyapunov", "markov",
    "mirzakhani", "napier", "nash", "noether", "poincare", "ramanujan", "riemann",
    "weierstrass", "wiles", "brahmagupta", "aryabhata", "khwarizmi",
    # physics and astronomy
    "ampere", "bardeen", "bethe", "bohr", "boltzmann", "bose", "brahe", "chadwick",
    "chandrasekhar", "compton", "copernicus", "curie", "dirac", "einstein", "faraday",
    "fermi", "feynman", "galileo", "gamow", "gibbs", "heisenberg", "herschel", "hertz",
    "hubble", "joule", "kapitsa", "kelvin", "kepler", "landau", "leavitt", "lorentz",
    "maxwell", "meitner", "michelson", "millikan", "newton", "ohm", "pauli", "planck",
    "raman", "rubin", "rutherford", "saha", "sakharov", "schrodinger", "tesla", "volta",
    "wu", "yukawa", "payne", "ghez", "strickland", "penrose", "hawking", "sagan", "tereshkova",
    # chemistry, biology, medicine
    "avogadro", "banting", "blackburn", "boyle", "carson", "crick", "dalton", "darwin",
    "doudna", "elion", "fleming", "franklin", "goodall", "hodgkin", "jenner", "khorana",
    "krebs", "kwolek", "lavoisier", "lister", "mcclintock", "mendel", "mendeleev", "nobel",
    "ochoa", "pasteur", "pauling", "salk", "sanger", "yalow", "cori", "charpentier",
    "montalcini", "nightingale", "snow", "harvey", "vesalius", "semmelweis",
    # engineering, invention, spaceflight
    "arup", "bell", "benz", "brunel", "diesel", "edison", "eiffel", "goddard", "jemison",
    "johnson", "kilby", "korolev", "lamarr", "marconi", "morse", "noyce", "oberth", "ride",
    "roebling", "stephenson", "telford", "tsiolkovsky", "vaughan", "watt", "wright",
    "jackson", "khan", "moog", "kamen", "sarabhai", "kalam", "bhabha", "esaki", "akasaki",
    "nakamura", "amano", "hamming", "brattain", "moore", "faggin", "dennard", "kao",
)

_NEVER = "boring_wozniak"  # Steve Wozniak is not boring


def _unique(words: tuple[str, ...]) -> tuple[str, ...]:
    # A repeated word would only skew the odds; keep first occurrences in order.
    return tuple(dict.fromkeys(words))


_LEFT = _unique(ADJECTIVES)
_RIGHT = _unique(SURNAMES)


def random_name(retry: int = 0, rng: random.Random | None = None) -> str:
    """`adjective_surname`; from the second attempt on (retry > 0) a random digit is appended,
    as Docker does, so collisions become rare quickly. Never `boring_wozniak`."""
    r = rng if rng is not None else random
    while True:
        name = f"{r.choice(_LEFT)}_{r.choice(_RIGHT)}"
        if name != _NEVER:
            break
    if retry > 0:
        name += str(r.randrange(10))
    return name


def generate_name(is_taken: Callable[[str], bool], container_id: str,
                  rng: random.Random | None = None) -> str:
    """A free name for a new container, in Docker's canonical `/name` form.

    Six random attempts (retry 0..5, the later ones with a digit), then the 12-character short
    ID, which is unique by construction. `is_taken` gets the `/name` form. The caller still
    reserves the name atomically; this only picks a candidate that was free when asked.
    """
    for retry in range(6):
        name = "/" + random_name(retry, rng)
        if not is_taken(name):
            return name
    return "/" + container_id[:12]


def is_valid_name(name: str) -> bool:
    return _VALID_NAME.fullmatch(name.removeprefix("/")) is not None


def validate_name(name: str) -> str:
    """Check a user-supplied name and return it in canonical `/name` form.

    Raises InvalidParameter with Docker's exact text, which quotes the name as given.
    """
    if not is_valid_name(name):
        raise InvalidParameter(
            f"Invalid container name ({name}), only {VALID_NAME_CHARS} are allowed")
    return name if name.startswith("/") else "/" + name
