# Shared by demo.sh and stop.sh (sourced, not run).
# shellcheck shell=bash

REG_ADDR=127.0.0.1:5000
REG_DIR=/var/lib/asyncdock-registry
REG_CONFIG="$REG_DIR/config.yml"
REG_PID=/run/asyncdock-registry.pid
REG_LOG=/var/log/asyncdock-registry.log
DAEMON_CONFIG=/etc/asyncdock/daemon.json
DAEMON_PID=/run/asyncdock.pid
DAEMON_LOG=/var/log/asyncdock.log
DAEMON_SOCK=/run/asyncdock.sock
DOCKER_CLI="${ASYNCDOCK_DOCKER_CLI:-/usr/local/bin/docker}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds or the deadline passes.
wait_for() {
    local secs=$1 what=$2; shift 2
    local deadline=$((SECONDS + secs))
    until "$@"; do
        ((SECONDS < deadline)) || { printf 'timed out after %ss waiting for %s\n' "$secs" "$what" >&2; return 1; }
        sleep 0.1
    done
}

# pid_alive PIDFILE WORD: the pid in PIDFILE runs and its command line mentions WORD (a pid
# file surviving a reboot must not make us signal an unrelated process that reused the pid).
pid_alive() {
    local pid
    pid="$(cat "$1" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q -- "$2"
}

# stop_pidfile PIDFILE WORD NAME: SIGTERM, wait up to 30s, then SIGKILL; remove the pid file.
stop_pidfile() {
    local pidfile=$1 word=$2 name=$3 pid
    if ! pid_alive "$pidfile" "$word"; then
        rm -f "$pidfile"
        say "$name: not running"
        return 0
    fi
    pid="$(cat "$pidfile")"
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for 30 "$name to exit" bash -c "! kill -0 $pid 2>/dev/null"; then
        say "$name did not exit on SIGTERM: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

registry_up() { curl -fsS -o /dev/null --max-time 2 "http://$REG_ADDR/v2/"; }
daemon_up() { [[ "$(curl -fsS --max-time 2 --unix-socket "$DAEMON_SOCK" http://x/_ping 2>/dev/null)" == OK ]]; }
