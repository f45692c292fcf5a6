"""The asyncdock command. Imports are lazy so that short commands start fast."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "daemon":
        from ..daemon import main as daemon_main

        return daemon_main(args[1:])
    if not args or args[0] in ("-h", "--help"):
        print("usage: asyncdock daemon [options]\n\nCommands:\n  daemon   run the engine (see asyncdock daemon --help)")
        return 0 if args else 2
    print(f"asyncdock: unknown command {args[0]!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
