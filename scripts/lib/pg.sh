# shellcheck shell=bash
# PostgreSQL for the test run (sourced by scripts/test).
#
#   pg_setup            find a server (127.0.0.1:5432, trust auth, user postgres) or start
#                       a throwaway cluster under .test-data/; sets PG_HOST, PG_PORT, PG_USER
#                       and PG_MAINT_DB. Returns non-zero with a message when neither works.
#   pg_create_db NAME VAR  create a fresh database; stores its URL in variable VAR
#                       (not via $(...): the list of databases to drop must survive)
#   pg_cleanup          drop the databases created and stop the throwaway cluster (trap it)
#
# Needs: ROOT (repository root). Honours LATCHKEY_TEST_PG_HOST / _PORT / _USER to point
# at another existing server, and LATCHKEY_TEST_PG_THROWAWAY=1 to force a private cluster.

PG_HOST=""
PG_PORT=""
PG_USER="postgres"
PG_MAINT_DB=""
PG_BIN=""
PG_CLUSTER_DIR=""
PG_CLUSTER_OWNER=""
PG_CREATED_DBS=()

_pg_log() { printf '[pg] %s\n' "$*" >&2; }

_pg_find_bin() {
    local d
    if [[ -n "${PG_BIN}" ]]; then return 0; fi
    if command -v pg_config >/dev/null 2>&1; then
        d="$(pg_config --bindir 2>/dev/null || true)"
        if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then PG_BIN="$d"; return 0; fi
    fi
    # Newest version first.
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -V -r); do
        if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then PG_BIN="$d"; return 0; fi
    done
    for d in /usr/local/pgsql/bin /usr/pgsql-*/bin; do
        if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then PG_BIN="$d"; return 0; fi
    done
    return 1
}

_pg_psql() {
    # _pg_psql DB SQL... (as PG_USER over TCP)
    local db="$1"; shift
    local psql_cmd
    psql_cmd="$(command -v psql 2>/dev/null || true)"
    if [[ -z "$psql_cmd" ]] && _pg_find_bin; then psql_cmd="$PG_BIN/psql"; fi
    if [[ -z "$psql_cmd" ]]; then _pg_log "psql not found"; return 127; fi
    PGCONNECT_TIMEOUT=5 "$psql_cmd" -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$db" -At "$@"
}

_pg_try_existing() {
    local host="$1" port="$2" user="$3" db
    PG_HOST="$host"; PG_PORT="$port"; PG_USER="$user"
    if command -v pg_isready >/dev/null 2>&1 || _pg_find_bin; then
        local isready
        isready="$(command -v pg_isready 2>/dev/null || echo "$PG_BIN/pg_isready")"
        "$isready" -q -h "$host" -p "$port" -t 3 >/dev/null 2>&1 || return 1
    fi
    for db in test postgres; do
        if [[ "$(_pg_psql "$db" -c 'select 1' 2>/dev/null)" == "1" ]]; then
            # It must also let us create databases.
            if [[ "$(_pg_psql "$db" -c "select rolcreatedb or rolsuper from pg_roles where rolname = current_user" 2>/dev/null)" == "t" ]]; then
                PG_MAINT_DB="$db"
                return 0
            fi
        fi
    done
    return 1
}

_pg_free_port() {
    python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

_pg_as_owner() {
    if [[ -n "$PG_CLUSTER_OWNER" ]]; then
        if command -v runuser >/dev/null 2>&1; then
            runuser -u "$PG_CLUSTER_OWNER" -- "$@"
        else
            su -s /bin/sh "$PG_CLUSTER_OWNER" -c "$(printf '%q ' "$@")"
        fi
    else
        "$@"
    fi
}

_pg_start_throwaway() {
    if ! _pg_find_bin; then
        _pg_log "no PostgreSQL server binaries (initdb, pg_ctl) found under /usr/lib/postgresql/*/bin"
        return 1
    fi
    local base
    mkdir -p "$ROOT/.test-data"
    base="$(mktemp -d "$ROOT/.test-data/pg.XXXXXX")"
    if [[ "$(id -u)" == "0" ]]; then
        # initdb refuses to run as root: use the postgres system user, or make one.
        if id -u postgres >/dev/null 2>&1; then
            PG_CLUSTER_OWNER=postgres
        else
            if ! id -u latchkey-pg >/dev/null 2>&1; then
                _pg_log "creating system user latchkey-pg to own the throwaway cluster"
                useradd --system --no-create-home --shell /usr/sbin/nologin latchkey-pg || return 1
            fi
            PG_CLUSTER_OWNER=latchkey-pg
        fi
        chown "$PG_CLUSTER_OWNER" "$base"
        if ! _pg_as_owner test -w "$base"; then
            # The repository path is not traversable by that user: use a private temp dir.
            rm -rf "$base"
            base="$(mktemp -d "${TMPDIR:-/tmp}/latchkey-pg.XXXXXX")"
            chown "$PG_CLUSTER_OWNER" "$base"
        fi
    fi
    PG_CLUSTER_DIR="$base"
    PG_PORT="$(_pg_free_port)"
    PG_HOST=127.0.0.1
    PG_USER=postgres
    _pg_log "starting a throwaway PostgreSQL ($PG_BIN) in $base on 127.0.0.1:$PG_PORT"
    if ! _pg_as_owner "$PG_BIN/initdb" -D "$base/data" -U postgres --auth=trust -E UTF8 --no-sync >"$base/initdb.log" 2>&1; then
        _pg_log "initdb failed:"; cat "$base/initdb.log" >&2
        return 1
    fi
    if ! _pg_as_owner "$PG_BIN/pg_ctl" -D "$base/data" -l "$base/server.log" -w -t 60 \
        -o "-k $base -p $PG_PORT -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >"$base/pg_ctl.log" 2>&1; then
        _pg_log "pg_ctl start failed:"; cat "$base/pg_ctl.log" "$base/server.log" >&2 2>/dev/null
        return 1
    fi
    PG_MAINT_DB=postgres
    [[ "$(_pg_psql postgres -c 'select 1')" == "1" ]]
}

pg_setup() {
    if [[ "${LATCHKEY_TEST_PG_THROWAWAY:-0}" != "1" ]]; then
        local host="${LATCHKEY_TEST_PG_HOST:-127.0.0.1}" port="${LATCHKEY_TEST_PG_PORT:-5432}" user="${LATCHKEY_TEST_PG_USER:-postgres}"
        if _pg_try_existing "$host" "$port" "$user"; then
            _pg_log "using PostgreSQL at $host:$port (user $user)"
            return 0
        fi
        _pg_log "no usable PostgreSQL at $host:$port; starting a throwaway cluster"
    fi
    if _pg_start_throwaway; then
        return 0
    fi
    _pg_log "ERROR: no PostgreSQL available: nothing answers at 127.0.0.1:5432 as user postgres, and a throwaway cluster could not be started"
    return 1
}

pg_create_db() {
    local name="$1" var="$2"
    _pg_psql "$PG_MAINT_DB" -c "CREATE DATABASE \"$name\"" >/dev/null || return 1
    PG_CREATED_DBS+=("$name")
    printf -v "$var" 'postgres://%s@%s:%s/%s' "$PG_USER" "$PG_HOST" "$PG_PORT" "$name"
}

pg_cleanup() {
    local db
    if [[ -n "$PG_CLUSTER_DIR" ]]; then
        _pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_CLUSTER_DIR/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
        rm -rf "$PG_CLUSTER_DIR"
        PG_CLUSTER_DIR=""
    elif [[ -n "$PG_HOST" ]]; then
        for db in "${PG_CREATED_DBS[@]}"; do
            _pg_psql "$PG_MAINT_DB" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 ||
                _pg_log "warning: could not drop database $db"
        done
    fi
    PG_CREATED_DBS=()
}
