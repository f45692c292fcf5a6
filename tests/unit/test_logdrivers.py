"""Log drivers: what the file drivers (json-file, local) share beyond the LogDriver protocol
(batched writes, on-disk names and rotation, the backward tail, follow across rotations and
without inotify), then what is specific to each (json-file's bytes on disk, the local format,
none's refusal). The protocol itself is checked for every registered driver by
tests/conformance/test_logdriver.py."""
from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import tomllib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest

from asyncdock.base.timefmt import parse_docker_time
from asyncdock.base.errors import InvalidParameter
from asyncdock.logs import files as log_files_mod
from asyncdock.logs.base import (
    LogDriver,
    LogNotReadable,
    LogRecord,
    ReadOptions,
    Stream,
)
from asyncdock.logs.files import FileLogDriver, parse_size
from asyncdock.plugins import InitContext, Registration

ROOT = Path(__file__).resolve().parents[2]
if importlib.util.find_spec("asyncdock_logdriver_jsonfile") is None:
    # Not installed into the venv (no `pip install -e .` yet): import from the source tree.
    sys.path.insert(0, str(ROOT / "plugins"))

import asyncdock_logdriver_jsonfile as jsonfile_plugin  # noqa: E402
import asyncdock_logdriver_local as local_plugin  # noqa: E402
import asyncdock_logdriver_none as none_plugin  # noqa: E402
from asyncdock_logdriver_jsonfile import codec as jsonfile_codec  # noqa: E402
from asyncdock_logdriver_jsonfile.codec import JSONLineCodec  # noqa: E402
from asyncdock_logdriver_local.codec import LocalCodec  # noqa: E402
from tests.support.logs import CID, DEADLINE, T0, read_all, stopped, write_all  # noqa: E402

pytestmark = pytest.mark.anyio



@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


PLUGINS = {"json-file": jsonfile_plugin.plugin, "local": local_plugin.plugin}


@pytest.fixture(params=sorted(PLUGINS))
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> FileLogDriver:
    reg: Registration = PLUGINS[request.param]
    d = reg.factory(InitContext(root=tmp_path / "plugin-root"))
    assert isinstance(d, FileLogDriver) and d.name == request.param
    return d


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    d = tmp_path / "containers" / CID
    d.mkdir(parents=True)
    return d


def rec(i: int, stream: Stream = "stdout", data: bytes | None = None) -> LogRecord:
    return LogRecord(stream=stream, data=data if data is not None else f"line {i}\n".encode(),
                     time_ns=T0 + i * 1_000_000)


def log_files(driver: FileLogDriver, log_dir: Path) -> list[str]:
    path = driver.file_path(log_dir, CID)
    return sorted(n for n in os.listdir(path.parent) if n.startswith(path.name))


class Running:
    """The is_running callable the engine passes, flipped by the test."""

    def __init__(self) -> None:
        self.value = True
        self.polled = asyncio.Event()  # set once the reader is in its follow loop

    def __call__(self) -> bool:
        self.polled.set()
        return self.value


async def next_record(it: AsyncIterator[LogRecord]) -> LogRecord:
    with anyio.fail_after(DEADLINE):
        return await it.__anext__()


async def rest(it: AsyncIterator[LogRecord]) -> list[LogRecord]:
    with anyio.fail_after(DEADLINE):
        return [r async for r in it]


# ============================================================ registration

def test_entry_points_match_plugins() -> None:
    with open(ROOT / "pyproject.toml", "rb") as f:
        declared = tomllib.load(f)["project"]["entry-points"]["asyncdock.logdrivers"]
    assert set(declared) == {"json-file", "local", "none"}
    for name, target in declared.items():
        module, attr = target.split(":")
        reg = getattr(importlib.import_module(module), attr)
        assert isinstance(reg, Registration)
        assert (reg.kind, reg.id) == ("logdriver", name)
        d = reg.factory(InitContext(root=Path("/nonexistent")))
        assert isinstance(d, LogDriver)
        assert d.name == name


# ============================================================ the file drivers' shared machinery

async def test_batch_reaches_disk_at_end_of_loop_iteration(driver: FileLogDriver,
                                                           log_dir: Path) -> None:
    w = driver.open_writer(log_dir, CID, {})
    path = driver.file_path(log_dir, CID)
    for i in range(3):
        w.write(rec(i))
    assert path.stat().st_size == 0  # buffered: one write(2) per batch, not per record
    await asyncio.sleep(0)  # one loop iteration
    assert path.stat().st_size == sum(len(driver.codec.encode(rec(i))) for i in range(3))
    w.close()


async def test_rotation_keeps_max_file_and_reads_across(driver: FileLogDriver,
                                                        log_dir: Path) -> None:
    records = [rec(i) for i in range(400)]
    write_all(driver, log_dir, records, {"max-size": "1k", "max-file": "3"})
    path = driver.file_path(log_dir, CID)
    assert log_files(driver, log_dir) == sorted([path.name, path.name + ".1", path.name + ".2"])
    for p in [path, path.with_name(path.name + ".1")]:
        # Rotation happens once a file reaches max-size, so a file overshoots by < 1 record.
        assert p.stat().st_size < 1000 + len(driver.codec.encode(records[-1]))
    got = await read_all(driver, log_dir)
    assert got == records[-len(got):]  # oldest surviving file first, nothing lost in between
    assert 20 < len(got) < 400
    assert await read_all(driver, log_dir, tail=len(got) - 2) == got[2:]  # tail spans files


async def test_rotation_with_one_file(driver: FileLogDriver, log_dir: Path) -> None:
    opts = {"max-size": "1k", "max-file": "1"}
    if driver.name == "local":
        opts["compress"] = "false"  # local compresses by default, which needs 2+ files
    records = [rec(i) for i in range(200)]
    write_all(driver, log_dir, records, opts)
    assert log_files(driver, log_dir) == [driver.file_path(log_dir, CID).name]
    got = await read_all(driver, log_dir)
    assert got and got == records[-len(got):]


async def test_rotation_drops_files_beyond_a_lowered_max_file(driver: FileLogDriver,
                                                              log_dir: Path) -> None:
    write_all(driver, log_dir, [rec(i) for i in range(400)], {"max-size": "1k", "max-file": "5"})
    assert len(log_files(driver, log_dir)) == 5
    write_all(driver, log_dir, [rec(i) for i in range(400, 800)],
              {"max-size": "1k", "max-file": "2"})
    assert len(log_files(driver, log_dir)) == 2


async def test_remove(driver: FileLogDriver, log_dir: Path) -> None:
    w = driver.open_writer(log_dir, CID, {"max-size": "1k", "max-file": "3"})
    for i in range(300):
        w.write(rec(i))
    driver.remove(log_dir, CID)
    assert log_files(driver, log_dir) == []
    assert await read_all(driver, log_dir) == []


async def test_follow_across_rotations(driver: FileLogDriver, log_dir: Path) -> None:
    running = Running()
    w = driver.open_writer(log_dir, CID, {"max-size": "1k", "max-file": "3"})
    it = driver.read(log_dir, CID, ReadOptions(follow=True), running)
    # One record at a time: every rotation happens while the follower waits.
    for i in range(150):
        w.write(rec(i))
        assert await next_record(it) == rec(i)
    assert len(log_files(driver, log_dir)) == 3
    # A burst spanning several rotations in one iteration (max-file large enough to keep it
    # all): the follower must read the rotated files in between, in order.
    w.close()
    w = driver.open_writer(log_dir, CID, {"max-size": "1k", "max-file": "10"})
    burst = [rec(i) for i in range(150, 250)]
    for r in burst:
        w.write(r)
    running.value = False
    assert await rest(it) == burst
    w.close()


async def test_follow_without_inotify(driver: FileLogDriver, log_dir: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # No inotify (old libc, or the per-user instance limit used up): short polling instead.
    monkeypatch.setattr(log_files_mod, "_inotify_api", lambda: None)
    running = Running()
    w = driver.open_writer(log_dir, CID, {"max-size": "1k", "max-file": "3"})
    it = driver.read(log_dir, CID, ReadOptions(follow=True), running)
    for i in range(30):  # a couple of rotations for either format
        w.write(rec(i))
        assert await next_record(it) == rec(i)
    running.value = False
    assert await rest(it) == []
    w.close()


def test_tail_reads_backwards_not_the_whole_file(driver: FileLogDriver, log_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    records = [rec(i, data=b"y" * 100 + b"\n") for i in range(50_000)]
    write_all(driver, log_dir, records)
    path = driver.file_path(log_dir, CID)
    size = path.stat().st_size
    read_bytes = 0
    real_pread = os.pread

    def counting_pread(fd: int, n: int, offset: int) -> bytes:
        nonlocal read_bytes
        read_bytes += n
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", counting_pread)
    fd = os.open(path, os.O_RDONLY)
    try:
        offset, found = driver.codec.tail_start(fd, size, 10)
    finally:
        os.close(fd)
    assert found == 10
    assert size - offset == sum(len(driver.codec.encode(r)) for r in records[-10:])
    assert read_bytes <= 128 * 1024 < size


@pytest.mark.parametrize("opts", [
    {"max-size": "10m"}, {"max-size": "1g", "max-file": "3"},
    {"max-size": "10k", "max-file": "2", "compress": "true"},
    {"labels": "a", "env": "B", "tag": "{{.Name}}"},
])
def test_accepted_options(driver: FileLogDriver, opts: dict[str, str]) -> None:
    driver.validate_options(opts)


# ============================================================ json-file specifics

JSONFILE_OPTION_ERRORS = [
    ({"foo": "1"}, "unknown log opt 'foo' for json-file log driver"),
    ({"max-size": "ten"}, "invalid size: 'ten'"),
    ({"max-size": "0"}, "max-size must be a positive number"),
    ({"max-file": "x"}, 'strconv.Atoi: parsing "x": invalid syntax'),
    ({"max-file": "0"}, "max-file cannot be less than 1"),
    ({"compress": "yes"}, 'strconv.ParseBool: parsing "yes": invalid syntax'),
    ({"compress": "true"},
     "compress cannot be true when max-file is less than 2 or max-size is not set"),
    ({"compress": "true", "max-size": "1m"},
     "compress cannot be true when max-file is less than 2 or max-size is not set"),
]


@pytest.mark.parametrize(("opts", "message"), JSONFILE_OPTION_ERRORS)
def test_jsonfile_option_errors(opts: dict[str, str], message: str, tmp_path: Path) -> None:
    d = jsonfile_plugin.JSONFileDriver()
    with pytest.raises(InvalidParameter) as e:
        d.open_writer(tmp_path, CID, opts)
    assert str(e.value) == message
    assert e.value.status == 400


def test_jsonfile_log_path(tmp_path: Path) -> None:
    d = jsonfile_plugin.JSONFileDriver()
    assert d.log_path(tmp_path, CID) == str(tmp_path / f"{CID}-json.log")


def test_jsonfile_line_is_dockers_format_byte_for_byte(tmp_path: Path) -> None:
    d = jsonfile_plugin.JSONFileDriver()
    t = parse_docker_time("2026-11-28T10:48:13.123456789Z")
    w = d.open_writer(tmp_path, CID, {})
    w.write(LogRecord(stream="stdout", data=b"hi\n", time_ns=t))
    w.write(LogRecord(stream="stderr", data=b"oops\n", time_ns=t - 123456789 + 120000000))
    w.write(LogRecord(stream="stdout", data=b"whole second", time_ns=t - 123456789))
    w.close()
    assert (tmp_path / f"{CID}-json.log").read_bytes() == (
        b'{"log":"hi\\n","stream":"stdout","time":"2026-11-28T10:48:13.123456789Z"}\n'
        b'{"log":"oops\\n","stream":"stderr","time":"2026-11-28T10:48:13.12Z"}\n'
        b'{"log":"whole second","stream":"stdout","time":"2026-11-28T10:48:13Z"}\n'
    )


@pytest.mark.parametrize(("data", "literal"), [
    (b"plain\n", b'"plain\\n"'),
    (b'say "hi" \\o/', b'"say \\"hi\\" \\\\o/"'),
    (b"a\tb\r\n", b'"a\\u0009b\\r\\n"'),
    (b"<a href='x'>&amp;</a>", b"\"\\u003ca href='x'\\u003e\\u0026amp;\\u003c/a\\u003e\""),
    (b"\x00\x1b[31mred\x1b[0m\x7f", b'"\\u0000\\u001b[31mred\\u001b[0m\x7f"'),
    ("café ✓ 日本\n".encode(), '"café ✓ 日本\\n"'.encode()),
    ("line\u2028sep\u2029".encode(), b'"line\\u2028sep\\u2029"'),
    (b"bad \xff byte", b'"bad \\ufffd byte"'),
    (b"cut \xe2\x82", b'"cut \\ufffd\\ufffd"'),  # Go: one U+FFFD per invalid byte
    (b"\xed\xa0\x80", b'"\\ufffd\\ufffd\\ufffd"'),  # an encoded surrogate is invalid too
    (b"", b'""'),
])
@pytest.mark.parametrize("impl", ["c", "python"])
def test_jsonfile_escaping_matches_moby(data: bytes, literal: bytes, impl: str) -> None:
    assert _escaper(impl)(data) == literal


def _escaper(impl: str) -> Callable[[bytes | memoryview], bytes]:
    if impl == "python":
        return jsonfile_codec.py_go_json_string
    # set-up builds it (scripts/setup.sh): a missing build is a failure, not a skip
    assert jsonfile_codec.c_go_json_string is not None, "the json-file escaper (goescape.c) is not built"
    assert jsonfile_codec.go_json_string is jsonfile_codec.c_go_json_string
    return jsonfile_codec.c_go_json_string


def test_jsonfile_c_escaper_is_the_python_one() -> None:
    """goescape.c against the Python reference over random mixes of every byte, valid and cut
    multi-byte sequences, U+2028/9 and U+FFFD, and whole 16 KiB records of binary."""
    import random
    c, py = _escaper("c"), _escaper("python")
    rng = random.Random(20261208)
    pieces = [bytes([i]) for i in range(256)]
    for ch in "é€😀\u2028\u2029\ufffd\U0010ffff":
        enc = ch.encode()
        pieces += [enc[:k] for k in range(1, len(enc) + 1)]
    pieces += [b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe0\x80\xaf", b"\xc0\xaf"]  # surrogate, >U+10FFFF, overlongs
    for _ in range(5000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 48)))
        assert c(data) == py(data), data
    for data in (os.urandom(16384), bytes(16384), b"\xff" * 16384, "✓".encode() * 5000):
        assert c(data) == py(data)
    assert c(memoryview(b"<x>")) == b'"\\u003cx\\u003e"'  # any buffer, as the reader hands them


def test_jsonfile_empty_record_omits_log_key() -> None:
    line = JSONLineCodec().encode(LogRecord(stream="stdout", data=b"", time_ns=T0))
    assert line == b'{"stream":"stdout","time":"2026-11-28T09:13:44Z"}\n'


def test_jsonfile_lines_are_plain_json() -> None:
    codec = JSONLineCodec()
    for data in [b"x\n", "ü\n".encode(), b"<&>\t\"\\", b"\x01\x02"]:
        obj = json.loads(codec.encode(LogRecord(stream="stderr", data=data, time_ns=T0 + 5)))
        assert obj == {"log": data.decode(), "stream": "stderr",
                       "time": "2026-11-28T09:13:44.000000005Z"}


async def test_jsonfile_reads_files_written_by_docker(tmp_path: Path) -> None:
    # Lines as dockerd writes them, "attrs" included (from --log-opt labels=...).
    (tmp_path / f"{CID}-json.log").write_bytes(
        b'{"log":"out1\\n","stream":"stdout","time":"2026-11-28T09:16:15.84218Z"}\n'
        b'{"log":"err1\\n","stream":"stderr","attrs":{"app":"x"},'
        b'"time":"2026-11-28T09:16:15.842404117Z"}\n'
        b'{"log":"\\u003cb\\u003e \\ufffd\\n","stream":"stdout","time":"2026-11-28T09:16:16Z"}\n'
        b'not json at all\n'
        b'{"log":"tick1\\n","stream":"stdout","time":"2026-11-28T09:16:16.998Z"}\n'
    )
    got = await read_all(jsonfile_plugin.JSONFileDriver(), tmp_path)
    assert [(r.stream, r.data) for r in got] == [
        ("stdout", b"out1\n"), ("stderr", b"err1\n"), ("stdout", "<b> \ufffd\n".encode()),
        ("stdout", b"tick1\n")]
    assert got[0].time_ns == parse_docker_time("2026-11-28T09:16:15.842180000Z")


async def test_jsonfile_incomplete_last_line_is_not_a_record(tmp_path: Path) -> None:
    path = tmp_path / f"{CID}-json.log"
    whole = JSONLineCodec().encode(rec(0))
    path.write_bytes(whole + b'{"log":"half')
    d = jsonfile_plugin.JSONFileDriver()
    assert await read_all(d, tmp_path) == [rec(0)]
    assert await read_all(d, tmp_path, tail=1) == [rec(0)]


# ============================================================ local specifics

LOCAL_OPTION_ERRORS = [
    ({"foo": "1"}, "unknown log opt 'foo' for log driver local"),
    ({"max-size": "ten"}, "invalid value for max-size: ten: invalid size: 'ten'"),
    ({"max-file": "x"}, 'invalid value for max-file: x: strconv.Atoi: parsing "x": '
                        'invalid syntax'),
    ({"max-file": "-1", "compress": "false"}, "max-file must not be negative"),
    ({"compress": "nope"},
     'invalid boolean value for compress: strconv.ParseBool: parsing "nope": invalid syntax'),
    ({"max-file": "1"}, "compression cannot be enabled when max file count is 1"),
]


@pytest.mark.parametrize(("opts", "message"), LOCAL_OPTION_ERRORS)
def test_local_option_errors(opts: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidParameter) as e:
        local_plugin.LocalDriver().validate_options(opts)
    assert str(e.value) == message


def test_local_defaults_and_paths(tmp_path: Path) -> None:
    d = local_plugin.LocalDriver()
    o = d.parse_options({})
    assert (o.max_size, o.max_file, o.compress) == (20 * 1024 * 1024, 5, True)
    assert d.log_path(tmp_path, CID) == ""  # Docker keeps the local format private
    assert d.file_path(tmp_path, CID) == tmp_path / "local-logs" / "container.log"


def test_local_record_layout() -> None:
    record = LogRecord(stream="stderr", data=b"hi\n", time_ns=T0)
    raw = LocalCodec().encode(record)
    n = int.from_bytes(raw[:4], "big")
    assert len(raw) == n + 8 and raw[-4:] == raw[:4]
    # 8 bytes of lengths + msgpack [2, uint64, bin "hi\n"]: a third of the json-file line.
    assert len(raw) == 24 < len(JSONLineCodec().encode(record)) / 2


def test_local_damage_is_contained() -> None:
    codec = LocalCodec()
    good = codec.encode(rec(0)) + codec.encode(rec(1))
    damaged = good + b"\x00\x00\x00\x05garbage!!"
    out = codec.decode(damaged)
    assert out.records == [rec(0), rec(1)] and out.used == len(good) and out.corrupt
    partial = codec.decode(good + codec.encode(rec(2))[:-3])
    assert partial.records == [rec(0), rec(1)] and not partial.corrupt


# ============================================================ none

async def test_none_discards_and_refuses_reading(tmp_path: Path) -> None:
    d = none_plugin.plugin.factory(InitContext(root=tmp_path))
    assert isinstance(d, LogDriver)
    w = d.open_writer(tmp_path, CID, {"anything": "goes"})
    w.write(rec(0))
    w.close()
    assert os.listdir(tmp_path) == []
    assert d.log_path(tmp_path, CID) == ""
    with pytest.raises(LogNotReadable) as e:
        d.read(tmp_path, CID, ReadOptions(), stopped)  # at call time, before any streaming
    assert str(e.value) == "configured logging driver does not support reading"
    d.remove(tmp_path, CID)


# ============================================================ sizes

@pytest.mark.parametrize(("text", "size"), [
    ("10", 10), ("10b", 10), ("10k", 10_000), ("10K", 10_000), ("10kb", 10_000),
    ("10KiB", 10_000), ("10m", 10_000_000), ("1g", 1_000_000_000), ("1.5MB", 1_500_000),
    ("3 m", 3_000_000), ("2t", 2 * 10**12),
])
def test_parse_size_is_go_units_from_human_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(("text", "message"), [
    ("", "invalid size: ''"), ("m", "invalid size: 'm'"), ("-1k", "invalid size: '-1k'"),
    ("10x", "invalid size: '10x'"), ("1.2.3k", 'strconv.ParseFloat: parsing "1.2.3": '
                                               'invalid syntax'),
])
def test_parse_size_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_size(text)
    assert str(e.value) == message

