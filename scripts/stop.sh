#!/usr/bin/env bash
# Stop what scripts/demo.sh started: the asyncdock daemon, then the local registry.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

stop_pidfile "$DAEMON_PID" asyncdock "asyncdock daemon"
stop_pidfile "$REG_PID" docker-registry "registry ($REG_ADDR)"
