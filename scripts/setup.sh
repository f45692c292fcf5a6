#!/usr/bin/env bash
# Bring a machine to the state the project's tests, demo and bench need.
#
# Idempotent and fast when everything is already there: apt is touched only when a package is
# missing, and pip only when pyproject.toml changed since the last install (stamp in .venv).
# Nothing here is installed "by hand" elsewhere: a fresh Debian 12 machine must end up complete.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.asyncdock-setup-stamp"
DOCKER_CLI="${ASYNCDOCK_DOCKER_CLI:-/usr/local/bin/docker}"
MIN_DOCKER_MAJOR=28

# Runtimes, the registry and image tools the tests drive for real; apache2-utils for htpasswd
# (bcrypt, the only hash distribution's htpasswd auth accepts); util-linux for mount/umount/flock.
# gcc and libc6-dev build the crun plugin's small C helper (hide_cgroup2.c) and the seccomp
# tests' static keyring probe; libpython3-dev (Python.h) the json-file driver's escaper.
APT_PACKAGES=(runc crun tini busybox-static docker-registry skopeo umoci iptables nftables iproute2
              apache2-utils util-linux openssl curl make gcc libc6-dev libpython3-dev)

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (the engine mounts, creates cgroups and netns)"

missing_packages() {
    # dpkg-query prints nothing (and fails) for packages it has never heard of, so compare
    # against the list of those it reports as fully installed instead of parsing its errors.
    local installed
    installed="$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "$@" 2>/dev/null \
                 | awk '$2 == "installed" { print $1 }' || true)"
    local p
    for p in "$@"; do
        grep -qxF "$p" <<<"$installed" || printf '%s\n' "$p"
    done
}

venv_packages=()
# ensurepip is what `python3 -m venv` needs; Debian splits it into python3-venv.
if [[ ! -x "$VENV/bin/python" ]] && ! python3 -c 'import ensurepip' 2>/dev/null; then
    venv_packages+=(python3-venv)
fi

mapfile -t missing < <(missing_packages "${APT_PACKAGES[@]}" ${venv_packages[@]+"${venv_packages[@]}"})
if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# busybox-static is the base of every test image: a dynamic busybox would not run in them.
[[ -x /bin/busybox ]] || die "/bin/busybox missing after installing busybox-static"

# The docker CLI is the client we must be compatible with; Debian's docker.io is too old and
# would also pull in a dockerd, so it is never installed here.
[[ -x "$DOCKER_CLI" ]] || die "docker CLI not found at $DOCKER_CLI (need docker >= $MIN_DOCKER_MAJOR; set ASYNCDOCK_DOCKER_CLI to use another path; do not install Debian's docker.io)"
docker_version="$("$DOCKER_CLI" --version 2>/dev/null | sed -nE 's/^Docker version ([0-9]+)\..*/\1/p')"
[[ -n "$docker_version" ]] || die "cannot read the version of $DOCKER_CLI"
((docker_version >= MIN_DOCKER_MAJOR)) || die "$DOCKER_CLI is docker $docker_version, need >= $MIN_DOCKER_MAJOR"

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$VENV uses Python < 3.11; remove it and install python3 >= 3.11"

# The crun plugin hides a hybrid host's cgroup2 mount through this helper (one small exec per
# `crun create` instead of a fork of the whole engine); rebuilt when its source is newer.
HELPER_SRC="$ROOT/plugins/asyncdock_runtime_crun/hide_cgroup2.c"
HELPER="$VENV/bin/asyncdock-hide-cgroup2"
if [[ ! -x "$HELPER" || "$HELPER_SRC" -nt "$HELPER" ]]; then
    log "building $HELPER"
    cc -O2 -Wall -Wextra -o "$HELPER.tmp" "$HELPER_SRC"
    mv -f "$HELPER.tmp" "$HELPER"
fi

# json-file's escaping of binary output in C (codec.py falls back to Python without it); built
# next to its source, where the editable install imports it from; rebuilt when the source is newer.
ESC_SRC="$ROOT/plugins/asyncdock_logdriver_jsonfile/goescape.c"
ESC="$ROOT/plugins/asyncdock_logdriver_jsonfile/_goescape$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
if [[ ! -f "$ESC" || "$ESC_SRC" -nt "$ESC" ]]; then
    log "building $ESC"
    cc -O2 -Wall -Wextra -shared -fPIC -I"$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
        -o "$ESC.tmp" "$ESC_SRC"
    mv -f "$ESC.tmp" "$ESC"
fi

want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ "$want" != "$have" ]]; then
    log "installing the project into $VENV (pyproject.toml changed)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[test]"
    printf '%s\n' "$want" >"$STAMP"
fi
