"""The asyncdock command. Imports are lazy so that short commands start fast.

Short request/response commands (ps, images, inspect, version, rm, ...) use cli/fast.py (a
blocking socket and json); streaming ones (run, logs, exec, pull, events) use asyncdock.Client.
Output follows the docker CLI's for the same command.
"""
from __future__ import annotations

import sys
from typing import Any

USAGE = """usage: asyncdock COMMAND [ARGS]

Containers:  run create start stop kill rm rename ps logs exec inspect
Images:      pull images rmi tag
System:      events version system prune daemon

DOCKER_HOST=unix:///path selects the socket (default unix:///run/asyncdock.sock).
"""

COMMANDS = ("run", "create", "start", "stop", "kill", "rm", "rename", "ps", "logs", "exec", "inspect",
            "pull", "images", "rmi", "tag", "events", "version", "system")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "daemon":
        from ..daemon import main as daemon_main

        return daemon_main(args[1:])
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if args else 2
    if args[0] not in COMMANDS:
        print(f"asyncdock: unknown command {args[0]!r}\n\n{USAGE}", file=sys.stderr, end="")
        return 2
    from . import commands
    from .fast import CallError
    from .gotemplate import TemplateError, TemplateParseError

    try:
        return getattr(commands, "cmd_" + args[0])(args[1:]) or 0
    except CallError as e:
        print(f"Error response from daemon: {e.message}", file=sys.stderr)
        return 1
    except TemplateError as e:  # the docker CLI's words and statuses for a bad --format
        print(f"template parsing error: {e}", file=sys.stderr)
        return 64 if isinstance(e, TemplateParseError) else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # the async client's errors
        status: Any = getattr(e, "status", None)
        if status is not None and hasattr(e, "message"):
            print(f"Error response from daemon: {e.message}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
