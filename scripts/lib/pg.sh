# Throwaway PostgreSQL cluster for tests and benchmarks. Source this file,
# then call `pg_start` (exports DATABASE_URL, registers `pg_stop` on EXIT).
# Does nothing when DATABASE_URL is already set.

pg_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pg_start() {
  if [ -n "${DATABASE_URL:-}" ]; then
    echo "Using DATABASE_URL from the environment."
    return 0
  fi
  local bindir
  bindir=$(pg_config --bindir 2>/dev/null) || {
    echo "PostgreSQL not found: install it (Debian: apt-get install postgresql) or set DATABASE_URL." >&2
    return 1
  }
  PG_DIR=$(mktemp -d /tmp/eventcore-pg.XXXXXX)
  PG_PORT=$(pg_free_port)
  PG_AS=()
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$PG_DIR"
    PG_AS=(runuser -u postgres --)
  fi
  "${PG_AS[@]}" "$bindir/initdb" -D "$PG_DIR/data" -U postgres --auth=trust \
    --encoding=UTF8 --locale=C >"$PG_DIR/initdb.log" 2>&1 || {
    cat "$PG_DIR/initdb.log" >&2
    return 1
  }
  trap pg_stop EXIT
  "${PG_AS[@]}" "$bindir/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$PG_DIR -c max_connections=300 ${PG_EXTRA_OPTS:-}" \
    start >/dev/null || {
    cat "$PG_DIR/server.log" >&2
    return 1
  }
  PG_BINDIR=$bindir
  export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
  echo "Started a throwaway PostgreSQL on 127.0.0.1:$PG_PORT ($PG_DIR)."
}

pg_stop() {
  if [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR/data" ]; then
    "${PG_AS[@]}" "$PG_BINDIR/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
    PG_DIR=
  fi
}
