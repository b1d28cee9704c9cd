#!/usr/bin/env bash
# The servers the tests use: a redis-server and a PostgreSQL server on loopback ports, with
# their files under a temp dir. One script for CI (.ci/run) and for `make test` on a
# developer's machine.
#
#   scripts/services.sh install      install what is missing (Debian: apt-get; needs root)
#   scripts/services.sh start        start both (whichever is installed); print what started
#   scripts/services.sh env          the variables the tests read, as `export` lines
#   scripts/services.sh stop         stop both and remove their files
#   scripts/services.sh run CMD...   start servers of its own, run CMD with the variables set,
#                                    stop them; CMD's status
#
# The tests read TRIO_LANES_TEST_REDIS_URL and TRIO_LANES_TEST_POSTGRES_DSN; a test that needs
# a server whose variable is unset skips locally and fails under CI=true.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
# One state dir per clone, so two clones on one machine never share servers.
state="${TRIO_LANES_SERVICES_DIR:-${TMPDIR:-/tmp}/trio-lanes-services-$(printf %s "$repo" | cksum | cut -d' ' -f1)}"

log() { printf 'services: %s\n' "$*" >&2; }

find_pg_bin() {
    # Debian keeps the server binaries in /usr/lib/postgresql/<version>/bin (newest first).
    local dir
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return 0
    fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n -r); do
        if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

have_redis() { command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; }

install_hint() {
    cat >&2 <<'HINT'
services: to run the tests that need servers, install them, e.g. on Debian/Ubuntu:
    sudo apt-get install -y --no-install-recommends redis-server postgresql
  (macOS: brew install redis postgresql). Until then those tests are skipped.
HINT
}

cmd_install() {
    local packages=()
    have_redis || packages+=(redis-server)
    find_pg_bin >/dev/null || packages+=(postgresql)
    if ((${#packages[@]} == 0)); then
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        log "missing: ${packages[*]} and no apt-get here"
        install_hint
        return 1
    fi
    local sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo)
    log "installing ${packages[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${packages[@]}" >/dev/null
    # Debian starts the packaged servers on their default ports: ours use their own.
    if command -v service >/dev/null 2>&1; then
        "${sudo[@]}" service redis-server stop >/dev/null 2>&1 || true
        "${sudo[@]}" service postgresql stop >/dev/null 2>&1 || true
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Run a command as the user that owns the PostgreSQL files (postgres refuses to run as root).
as_pg_user() {
    if [[ $(id -u) == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start_redis() {
    have_redis || { log "redis-server not installed: Redis tests will skip"; return 0; }
    local port dir
    port="$(free_port)"
    dir="$state/redis"
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize yes \
        --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --save "" --appendonly no
    for _ in $(seq 100); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && break
        sleep 0.05
    done
    redis-cli -p "$port" ping >/dev/null || { log "redis-server did not start:"; cat "$dir/redis.log" >&2; return 1; }
    echo "export TRIO_LANES_TEST_REDIS_URL=redis://127.0.0.1:$port/0" >>"$state/env"
    log "redis-server on 127.0.0.1:$port"
}

start_postgres() {
    local bin port dir
    bin="$(find_pg_bin)" || { log "PostgreSQL not installed: PostgreSQL tests will skip"; return 0; }
    port="$(free_port)"
    dir="$state/postgres"
    mkdir -p "$dir"
    if [[ $(id -u) == 0 ]]; then
        # PostgreSQL refuses to run as root: it runs as `postgres` (Debian's package makes it).
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        chown postgres "$dir"
        chmod 755 "$state"
    fi
    as_pg_user "$bin/initdb" -D "$dir/data" -A trust -U postgres --no-sync -E UTF8 >"$state/initdb.log" 2>&1 \
        || { log "initdb failed:"; cat "$state/initdb.log" >&2; return 1; }
    as_pg_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -s \
        -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" start \
        || { log "PostgreSQL did not start:"; cat "$dir/postgres.log" >&2; return 1; }
    echo "$bin" >"$state/pg_bin"
    echo "export TRIO_LANES_TEST_POSTGRES_DSN=postgresql://postgres@127.0.0.1:$port/postgres" >>"$state/env"
    log "PostgreSQL on 127.0.0.1:$port"
}

cmd_start() {
    if [[ -e "$state/env" ]]; then
        log "already started (state in $state); stopping the old ones first"
        cmd_stop
    fi
    mkdir -p "$state"
    : >"$state/env"
    if ! have_redis || ! find_pg_bin >/dev/null; then
        install_hint
    fi
    start_redis
    start_postgres
}

cmd_env() {
    [[ -e "$state/env" ]] && cat "$state/env"
    return 0
}

cmd_stop() {
    [[ -d "$state" ]] || return 0
    if [[ -e "$state/redis/redis.pid" ]]; then
        kill "$(cat "$state/redis/redis.pid")" 2>/dev/null || true
    fi
    if [[ -e "$state/pg_bin" && -d "$state/postgres/data" ]]; then
        as_pg_user "$(cat "$state/pg_bin")/pg_ctl" -D "$state/postgres/data" -m immediate -s -w stop \
            >/dev/null 2>&1 || true
    fi
    rm -rf "$state"
}

cmd_run() {
    # A run gets servers of its own (unless TRIO_LANES_SERVICES_DIR names a dir): two runs at
    # once from one clone (a bench beside `make test`) must not stop each other's servers.
    if [[ -z "${TRIO_LANES_SERVICES_DIR:-}" ]]; then
        state="$(mktemp -d "${TMPDIR:-/tmp}/trio-lanes-services-run.XXXXXX")"
    fi
    cmd_start
    trap cmd_stop EXIT
    # shellcheck disable=SC1091
    source "$state/env"
    local status=0
    "$@" || status=$?
    return "$status"
}

case "${1:-}" in
install) cmd_install ;;
start) cmd_start ;;
env) cmd_env ;;
stop) cmd_stop ;;
run) shift; cmd_run "$@" ;;
*)
    echo "usage: $0 install|start|env|stop|run CMD..." >&2
    exit 2
    ;;
esac
