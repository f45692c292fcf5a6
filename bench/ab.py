#!/usr/bin/env python3
"""Two checkouts of asyncdock side by side: the same benchmarks against a daemon of each, in the
same run (--host the new one, --vs the old one), so a change is judged by the ratio, which the
VM's drift does not move.

    .venv/bin/python bench/ab.py --old /path/to/old-checkout [--runs 15] [--only api_run,burst]

Each checkout needs its own `make setup` (its .venv runs its daemon). A local registry holding
the test busybox (built by tests/support/imagebuild, pushed with skopeo) is both daemons' Docker
Hub mirror; both daemons and the registry are stopped at the end, whatever happens.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import imagebuild  # noqa: E402
from tests.support.daemon import Daemon  # noqa: E402
from tests.support.registry import Registry  # noqa: E402

# (script, extra arguments): the figures of bench/README.md that need only a socket
BENCHES: dict[str, list[str]] = {
    "api_run": ["--network", "none"],
    "burst": ["--network", "none"],
    "list": [],
    "ping": [],
    "events": [],
    "memory": [],  # the daemons' pids are added below
}


class TreeDaemon(Daemon):
    """A daemon run by another checkout's interpreter and code."""

    def __init__(self, tree: Path, config: dict[str, object]) -> None:
        super().__init__(config)
        self.tree = tree

    def command(self) -> list[str]:
        cmd = super().command()
        return [str(self.tree / ".venv" / "bin" / "asyncdock"), *cmd[1:]]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", required=True, type=Path, help="the checkout to compare with (its .venv set up)")
    p.add_argument("--new", type=Path, default=ROOT, help="the checkout measured (default: this one)")
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    a = p.parse_args()
    names = [n for n in (a.only.split(",") if a.only else BENCHES) if n]
    busybox = imagebuild.build_all()["busybox"]
    with Registry(name="bench-ab") as reg:
        imagebuild.push_image(busybox, reg.host, repo="library/busybox")
        config = {"registry-mirrors": [reg.url], "insecure-registries": [reg.host]}
        daemons = [TreeDaemon(a.new.resolve(), config), TreeDaemon(a.old.resolve(), config)]
        try:
            for d in daemons:
                d.start()
            new, old = daemons
            for name in names:
                print(f"== {name} (A = new {a.new}, B = old {a.old})", flush=True)
                cmd = [sys.executable, str(ROOT / "bench" / f"{name}.py"), "--host", str(new.socket),
                       "--vs", str(old.socket), *BENCHES[name]]
                if name == "memory":
                    assert new.proc is not None and old.proc is not None
                    cmd += ["--pid", str(new.proc.pid), "--vs-pids", str(old.proc.pid)]
                elif name not in ("events",):
                    cmd += ["--runs", str(a.runs)]
                subprocess.run(cmd, check=False)
        finally:
            for d in daemons:
                problems = d.close()
                if problems:
                    print(f"daemon {d.tree}: {problems}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
