"""asyncdock subcommands (each `cmd_<name>(argv) -> exit status`)."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import Any

from .fast import CallError, call


def _parser(name: str, **kw: Any) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"asyncdock {name}", **kw)


def _filters(items: list[str] | None) -> str | None:
    if not items:
        return None
    out: dict[str, dict[str, bool]] = {}
    for f in items:
        k, _, v = f.partition("=")
        out.setdefault(k, {})[v] = True
    return json.dumps(out)


# ---- containers (fast path)
def cmd_ps(argv: list[str]) -> int:
    from .format import PS_DEFAULT, PS_HEADERS, ps_item, render

    p = _parser("ps")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("-s", "--size", action="store_true")
    p.add_argument("-n", "--last", type=int, default=-1)
    p.add_argument("-l", "--latest", action="store_true")
    p.add_argument("-f", "--filter", action="append")
    p.add_argument("--format")
    a = p.parse_args(argv)
    limit = 1 if a.latest else (a.last if a.last > 0 else None)
    # Like the docker CLI: a template that shows sizes makes it ask for them.
    size = a.size or bool(a.format and (".Size" in a.format or "json ." in a.format.replace("{{json .}}", "json .")))
    cs = call("GET", "/containers/json", {"all": a.all or limit is not None, "size": size, "limit": limit,
                                          "filters": _filters(a.filter)})
    items = [ps_item(c, trunc=not a.no_trunc) for c in cs]
    if a.quiet:
        sys.stdout.write("".join(i["ID"] + "\n" for i in items))
        return 0
    fmt = a.format or PS_DEFAULT
    if fmt == "table":
        fmt = PS_DEFAULT
    if a.size and not a.format:
        fmt += "\t{{.Size}}"
    sys.stdout.write(render(fmt, items, PS_HEADERS))
    return 0


def _each(argv: list[str], name: str, fn: Any, flags: tuple[str, ...] = ()) -> int:
    rc = 0
    for target in argv:
        try:
            fn(target)
            print(target)
        except CallError as e:
            print(f"Error response from daemon: {e.message}", file=sys.stderr)
            rc = 1
    return rc


def cmd_start(argv: list[str]) -> int:
    return _each([a for a in argv if not a.startswith("-")], "start", lambda t: call("POST", f"/containers/{t}/start"))


def cmd_stop(argv: list[str]) -> int:
    p = _parser("stop")
    p.add_argument("-t", "--time", "--timeout", type=int)
    p.add_argument("-s", "--signal")
    p.add_argument("names", nargs="+")
    a = p.parse_args(argv)
    return _each(a.names, "stop", lambda t: call("POST", f"/containers/{t}/stop", {"t": a.time, "signal": a.signal}))


def cmd_kill(argv: list[str]) -> int:
    p = _parser("kill")
    p.add_argument("-s", "--signal")
    p.add_argument("names", nargs="+")
    a = p.parse_args(argv)
    return _each(a.names, "kill", lambda t: call("POST", f"/containers/{t}/kill", {"signal": a.signal}))


def cmd_rm(argv: list[str]) -> int:
    p = _parser("rm")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("-v", "--volumes", action="store_true")
    p.add_argument("names", nargs="+")
    a = p.parse_args(argv)
    return _each(a.names, "rm", lambda t: call("DELETE", f"/containers/{t}", {"force": a.force, "v": a.volumes}))


def cmd_rename(argv: list[str]) -> int:
    p = _parser("rename")
    p.add_argument("old")
    p.add_argument("new")
    a = p.parse_args(argv)
    call("POST", f"/containers/{a.old}/rename", {"name": a.new})
    return 0


def cmd_inspect(argv: list[str]) -> int:
    p = _parser("inspect")
    p.add_argument("-f", "--format")
    p.add_argument("--type")
    p.add_argument("names", nargs="+")
    a = p.parse_args(argv)
    out, rc = [], 0
    for n in a.names:
        obj = None
        for kind in ("containers", "images") if a.type is None else (a.type + "s",):
            try:
                obj = call("GET", f"/{kind}/{n}/json")
                break
            except CallError as e:
                if e.status != 404:
                    raise
        if obj is None:
            print(f"Error: No such object: {n}", file=sys.stderr)
            rc = 1
        else:
            out.append(obj)
    if a.format:
        from .format import render

        sys.stdout.write(render(a.format, out, {}))
    else:
        print(json.dumps(out, indent=4))
    return rc


def cmd_version(argv: list[str]) -> int:
    from ..base.version import __version__

    p = _parser("version")
    p.add_argument("-f", "--format")
    a = p.parse_args(argv)
    v = call("GET", "/version")
    if a.format:
        from .format import render

        sys.stdout.write(render(a.format, [{"Client": {"Version": __version__}, "Server": v}], {}))
        return 0
    print(f"Client:\n Version:           {__version__}\n API version:       1.41\n OS/Arch:           linux/amd64\n")
    print(f"Server:\n Engine:\n  Version:          {v.get('Version')}\n  API version:      {v.get('ApiVersion')} "
          f"(minimum version {v.get('MinAPIVersion')})\n  OS/Arch:          {v.get('Os')}/{v.get('Arch')}\n"
          f"  Kernel Version:   {v.get('KernelVersion')}")
    for c in v.get("Components") or []:
        if c.get("Name") != "Engine":
            print(f" {c.get('Name')}:\n  Version:          {c.get('Version')}")
    return 0


# ---- images (fast path)
def cmd_images(argv: list[str]) -> int:
    from .format import IMAGES_DEFAULT, IMAGES_HEADERS, image_items, render

    p = _parser("images")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-f", "--filter", action="append")
    p.add_argument("--format")
    p.add_argument("repo", nargs="?")
    a = p.parse_args(argv)
    flt = list(a.filter or []) + ([f"reference={a.repo}"] if a.repo else [])
    items = image_items(call("GET", "/images/json", {"all": a.all, "filters": _filters(flt)}))
    if a.quiet:
        seen: list[str] = []
        for i in items:
            if i["ID"] not in seen:
                seen.append(i["ID"])
        sys.stdout.write("".join(s + "\n" for s in seen))
        return 0
    fmt = a.format or IMAGES_DEFAULT
    sys.stdout.write(render(IMAGES_DEFAULT if fmt == "table" else fmt, items, IMAGES_HEADERS))
    return 0


def cmd_rmi(argv: list[str]) -> int:
    p = _parser("rmi")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("--no-prune", action="store_true")
    p.add_argument("names", nargs="+")
    a = p.parse_args(argv)
    rc = 0
    for n in a.names:
        try:
            for item in call("DELETE", f"/images/{n}", {"force": a.force, "noprune": a.no_prune}) or []:
                for k, label in (("Untagged", "Untagged"), ("Deleted", "Deleted")):
                    if k in item:
                        print(f"{label}: {item[k]}")
        except CallError as e:
            print(f"Error response from daemon: {e.message}", file=sys.stderr)
            rc = 1
    return rc


def cmd_tag(argv: list[str]) -> int:
    p = _parser("tag")
    p.add_argument("source")
    p.add_argument("target")
    a = p.parse_args(argv)
    repo, tag = a.target, "latest"
    if ":" in a.target.rsplit("/", 1)[-1]:
        repo, _, tag = a.target.rpartition(":")
    call("POST", f"/images/{a.source}/tag", {"repo": repo, "tag": tag})
    return 0


def cmd_system(argv: list[str]) -> int:
    if not argv or argv[0] != "prune":
        print("usage: asyncdock system prune [-f] [-a]", file=sys.stderr)
        return 2
    p = _parser("system prune")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("-a", "--all", action="store_true")
    a = p.parse_args(argv[1:])
    if not a.force:
        print("WARNING! This will remove:\n  - all stopped containers\n  - all dangling images\n\n"
              "Are you sure you want to continue? [y/N] ", end="", flush=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    from .format import human_size

    total = 0
    c = call("POST", "/containers/prune") or {}
    if c.get("ContainersDeleted"):
        print("Deleted Containers:\n" + "".join(i + "\n" for i in c["ContainersDeleted"]))
    total += c.get("SpaceReclaimed", 0) or 0
    flt = None if a.all else json.dumps({"dangling": {"true": True}})
    im = call("POST", "/images/prune", {"filters": flt}) or {}
    if im.get("ImagesDeleted"):
        print("Deleted Images:\n" + "".join(f"{k.lower()}: {v}\n" for d in im["ImagesDeleted"] for k, v in d.items()))
    total += im.get("SpaceReclaimed", 0) or 0
    print(f"Total reclaimed space: {human_size(total)}")
    return 0


# ---- streaming commands (async client)
def _run(coro: Any) -> Any:
    import asyncio

    return asyncio.run(coro)


def _create_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name")
    p.add_argument("-e", "--env", action="append")
    p.add_argument("-l", "--label", action="append")
    p.add_argument("-w", "--workdir")
    p.add_argument("-u", "--user")
    p.add_argument("--entrypoint")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("--rm", action="store_true")
    p.add_argument("image")
    p.add_argument("command", nargs=argparse.REMAINDER)


async def _create(client: Any, a: argparse.Namespace) -> Any:
    labels = dict(x.split("=", 1) if "=" in x else (x, "") for x in a.label or [])
    return await client.containers.create(
        a.image, a.command or None, name=a.name, environment=a.env, labels=labels, working_dir=a.workdir,
        user=a.user, entrypoint=[a.entrypoint] if a.entrypoint else None, tty=a.tty, stdin_open=a.interactive,
        auto_remove=a.rm)


def cmd_create(argv: list[str]) -> int:
    from ..client import Client

    p = _parser("create")
    _create_args(p)
    a = p.parse_args(argv)

    async def go() -> None:
        async with Client() as client:
            c = await _create(client, a)
            print(c.id)
    _run(go())
    return 0


def cmd_run(argv: list[str]) -> int:
    from ..client import Client

    p = _parser("run")
    p.add_argument("-d", "--detach", action="store_true")
    _create_args(p)
    a = p.parse_args(argv)

    async def go() -> int:
        import asyncio

        async with Client() as client:
            c = await _create(client, a)
            if a.detach:
                await c.start()
                print(c.id)
                return 0
            async with c.attach(stdin=a.interactive, logs=False) as s:
                waiter = asyncio.create_task(c.wait("removed" if a.rm else "next-exit"))
                await c.start()
                if a.interactive:
                    asyncio.create_task(_pump_stdin(s))
                async for stream, data in s:
                    (sys.stderr.buffer if stream == 2 else sys.stdout.buffer).write(data)
                    (sys.stderr.buffer if stream == 2 else sys.stdout.buffer).flush()
                res = await waiter
                return res.status_code
    return _run(go())


async def _pump_stdin(s: Any) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    while True:
        data = await loop.run_in_executor(None, os.read, 0, 65536)
        if not data:
            s.close_write()
            return
        await s.write(data)


def cmd_logs(argv: list[str]) -> int:
    from ..client import Client

    p = _parser("logs")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-t", "--timestamps", action="store_true")
    p.add_argument("-n", "--tail", default="all")
    p.add_argument("name")
    a = p.parse_args(argv)

    async def go() -> None:
        async with Client() as client:
            c = await client.containers.get(a.name)
            async for stream, data in c.stream_logs(follow=a.follow, timestamps=a.timestamps, tail=a.tail):
                out = sys.stderr.buffer if stream == 2 else sys.stdout.buffer
                out.write(data)
                out.flush()
    _run(go())
    return 0


def cmd_exec(argv: list[str]) -> int:
    from ..base import errors
    from ..client import Client

    p = _parser("exec")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-e", "--env", action="append")
    p.add_argument("-w", "--workdir")
    p.add_argument("-u", "--user")
    p.add_argument("name")
    p.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)

    async def go() -> int:
        import asyncio

        async with Client() as client:
            c = await client.containers.get(a.name)
            try:
                async with c.exec(a.command, stdin=a.interactive, tty=a.tty, env=a.env, workdir=a.workdir,
                                  user=a.user) as s:
                    if a.interactive:
                        asyncio.create_task(_pump_stdin(s))
                    async for stream, data in s:
                        (sys.stderr.buffer if stream == 2 else sys.stdout.buffer).write(data)
                        sys.stdout.buffer.flush()
            except (errors.NotImplementedYet, errors.NotFound) as e:
                if "exec" in e.message.lower() or isinstance(e, errors.NotImplementedYet) or "page not found" in e.message:
                    print(f"asyncdock exec: this daemon does not implement exec yet ({e.message})", file=sys.stderr)
                    return 1
                raise
            return s.exit_code or 0
    return _run(go())


def cmd_pull(argv: list[str]) -> int:
    from ..client import Client

    p = _parser("pull")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--platform")
    p.add_argument("image")
    a = p.parse_args(argv)
    tty = sys.stdout.isatty() and not a.quiet

    async def go() -> None:
        async with Client() as client:
            order: list[str] = []
            lines: dict[str, str] = {}
            last = ""
            async for m in client.images.pull(a.image, platform=a.platform):
                if a.quiet:
                    last = m.status
                    continue
                if not m.id or m.status.startswith(("Pulling from", "Digest:", "Status:")):
                    text = f"{m.id}: {m.status}" if m.id else m.status
                    if tty:
                        sys.stdout.write(text + "\n")
                    else:
                        print(text)
                    continue
                line = f"{m.id}: {m.status} {m.progress}".rstrip()
                if m.id not in lines:
                    order.append(m.id)
                    lines[m.id] = line
                    sys.stdout.write(line + "\n")
                    continue
                if tty:  # redraw that layer's line in place
                    up = len(order) - order.index(m.id)
                    sys.stdout.write(f"\x1b[{up}A\r\x1b[2K{line}\x1b[{up}B\r")
                elif lines[m.id].split(" ", 2)[:2] != line.split(" ", 2)[:2] and not m.progress:
                    sys.stdout.write(line + "\n")
                lines[m.id] = line
                sys.stdout.flush()
            if a.quiet:
                print(a.image if "/" in a.image or ":" in a.image else f"docker.io/library/{a.image}:latest")
            elif last:
                pass
    _run(go())
    return 0


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h))+$")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def to_unix(value: str, now: float | None = None) -> str:
    """The docker CLI's GetTimestamp: a Go duration (10m, 1h30m) is `now - d`; RFC 3339 or
    shorter date forms are parsed (local time when no zone); anything else (Unix seconds) is
    passed as is."""
    now = time.time() if now is None else now
    if _DURATION.match(value):
        secs = sum(float(n) * _UNIT[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", value))
        return str(int(now - secs))  # the docker CLI sends whole seconds for durations
    if re.match(r"^\d+(\.\d+)?$", value) or "-" not in value:
        return value
    from datetime import datetime

    v = value.replace("Z", "+00:00")
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z", "%Y-%m-%dT%H:%M:%S.%f",
                "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H", "%Y-%m-%d"):
        try:
            dt = datetime.strptime(v, fmt)
        except ValueError:
            continue
        t = dt.timestamp()
        return f"{int(t)}.{int(round((t - int(t)) * 1e9)):09d}"
    raise SystemExit(f"asyncdock events: invalid time {value!r}")


def format_event(ev: dict[str, Any]) -> str:
    """docker events' default line: RFC3339NanoFixed time, type, action, actor id, (attrs)."""
    from datetime import datetime, timezone

    ns = ev.get("timeNano") or ev.get("time", 0) * 1_000_000_000
    dt = datetime.fromtimestamp(ns // 1_000_000_000, timezone.utc)
    ts = dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 1_000_000_000:09d}Z"
    actor = ev.get("Actor") or {}
    line = f"{ts} {ev.get('Type')} {ev.get('Action')} {actor.get('ID', '')}"
    attrs = actor.get("Attributes") or {}
    if attrs:
        line += " (" + ", ".join(f"{k}={attrs[k]}" for k in sorted(attrs)) + ")"
    return line


def cmd_events(argv: list[str]) -> int:
    from .fast import socket_path

    p = _parser("events")
    p.add_argument("--since")
    p.add_argument("--until")
    p.add_argument("-f", "--filter", action="append")
    p.add_argument("--format")
    p.add_argument("--after", help="asyncdock: resume strictly after this x-asyncdock-seq")
    a = p.parse_args(argv)
    query = {"since": to_unix(a.since) if a.since else None, "until": to_unix(a.until) if a.until else None,
             "filters": _filters(a.filter), "x-asyncdock-after": a.after}

    async def go() -> None:
        from ..client.transport import UnixTransport, request
        from .format import render

        resp = await request(UnixTransport(socket_path()), "GET", "/v1.41/events", query=query)
        if resp.status >= 400:
            body = await resp.read()
            raise CallError(resp.status, json.loads(body).get("message", ""))
        async for line in resp.iter_lines():
            ev = json.loads(line)
            if a.format:
                sys.stdout.write(render(a.format, [ev], {}))
            else:
                sys.stdout.write(format_event(ev) + "\n")
            sys.stdout.flush()
    _run(go())
    return 0
