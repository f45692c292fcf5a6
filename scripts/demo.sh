#!/usr/bin/env bash
# The README's first command: set up, start a local registry holding a busybox image built by
# the project's own builder, start the daemon with that registry as its Docker Hub mirror, and
# run `docker run --rm busybox echo hi` through it. Safe to run again: whatever already runs
# is reused. `scripts/stop.sh` stops the daemon and the registry.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

say "setting up (scripts/setup.sh)"
bash "$ROOT/scripts/setup.sh"

# -- the registry ---------------------------------------------------------------------------
if registry_up; then
    say "registry already answering on $REG_ADDR"
else
    if ss -Hltn "sport = :5000" | grep -q .; then
        die "port 5000 is taken by something that is not a registry (ss -ltnp 'sport = :5000')"
    fi
    say "starting a registry on $REG_ADDR (data $REG_DIR, log $REG_LOG)"
    mkdir -p "$REG_DIR/data" "$(dirname "$REG_LOG")"
    # JSON is YAML; bind loopback only (Debian's default config listens on every address).
    cat >"$REG_CONFIG" <<JSON
{
  "version": 0.1,
  "log": {"level": "info", "fields": {"service": "asyncdock-demo-registry"}},
  "storage": {"filesystem": {"rootdirectory": "$REG_DIR/data"}, "delete": {"enabled": true}},
  "http": {"addr": "$REG_ADDR"}
}
JSON
    # setsid: the registry outlives this script and the terminal it ran in.
    setsid docker-registry serve "$REG_CONFIG" >>"$REG_LOG" 2>&1 </dev/null &
    echo $! >"$REG_PID"
    if ! wait_for 30 "the registry" registry_up; then
        tail -n 20 "$REG_LOG" >&2
        die "the registry did not start (log: $REG_LOG)"
    fi
fi

say "building the busybox test image and pushing it as $REG_ADDR/library/busybox:latest"
(cd "$ROOT" && "$ROOT/.venv/bin/python" -m tests.support.imagebuild push busybox "$REG_ADDR" >/dev/null)

# -- the daemon -----------------------------------------------------------------------------
say "writing $DAEMON_CONFIG (registry-mirrors: http://$REG_ADDR)"
mkdir -p "$(dirname "$DAEMON_CONFIG")"
# Merge rather than overwrite: keep whatever else an earlier edit put there.
"$ROOT/.venv/bin/python" - "$DAEMON_CONFIG" "http://$REG_ADDR" "$REG_ADDR" <<'PY'
import json, os, sys
path, mirror, host = sys.argv[1:]
try:
    with open(path) as f:
        cfg = json.load(f)
except FileNotFoundError:
    cfg = {}
mirrors = cfg.setdefault("registry-mirrors", [])
if mirror not in mirrors:
    mirrors.insert(0, mirror)
insecure = cfg.setdefault("insecure-registries", [])
if host not in insecure:
    insecure.append(host)
tmp = f"{path}.tmp"
with open(tmp, "w") as f:
    json.dump(cfg, f, indent=2)
    f.write("\n")
os.replace(tmp, path)
PY

if daemon_up; then
    say "asyncdock already answering on $DAEMON_SOCK"
else
    if pid_alive "$DAEMON_PID" asyncdock; then
        die "asyncdock (pid $(cat "$DAEMON_PID")) runs but does not answer on $DAEMON_SOCK; see $DAEMON_LOG or run scripts/stop.sh"
    fi
    say "starting asyncdock daemon (log $DAEMON_LOG)"
    mkdir -p "$(dirname "$DAEMON_LOG")"
    setsid "$ROOT/.venv/bin/asyncdock" daemon --host "unix://$DAEMON_SOCK" --config "$DAEMON_CONFIG" \
        >>"$DAEMON_LOG" 2>&1 </dev/null &
    echo $! >"$DAEMON_PID"
    daemon_up_or_dead() { daemon_up || ! pid_alive "$DAEMON_PID" asyncdock; }
    wait_for 60 "asyncdock to answer /_ping" daemon_up_or_dead || true
    if ! daemon_up; then
        tail -n 30 "$DAEMON_LOG" >&2
        die "asyncdock did not start (log: $DAEMON_LOG)"
    fi
fi

say "DOCKER_HOST=unix://$DAEMON_SOCK docker run --rm busybox echo hi"
DOCKER_HOST="unix://$DAEMON_SOCK" "$DOCKER_CLI" run --rm busybox echo hi

cat <<EOT

asyncdock is running (pid $(cat "$DAEMON_PID" 2>/dev/null || echo '?'), log $DAEMON_LOG).
Use it with the docker CLI or docker-py:

    export DOCKER_HOST=unix://$DAEMON_SOCK
    docker run --rm -it busybox sh

Images come from the local registry $REG_ADDR (a Docker Hub mirror in $DAEMON_CONFIG).
Stop both with: make stop   (scripts/stop.sh)
EOT
