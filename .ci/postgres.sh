#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback, for the tests of workers sharing one study.
#   source .ci/postgres.sh    → starts it and exports HCMBENCH_TEST_PG_URL; the server is stopped and its
#                               folder deleted when the sourcing shell exits. Returns non-zero on failure.
# Uses Debian's `postgresql` package (installed with apt-get when missing). initdb refuses to run as root,
# so as root the cluster belongs to the package's `postgres` user.

_pg_as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

_pg_start() {
  local bin port
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [ -z "$bin" ]; then
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null 2>&1 \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }; } \
      || return 1
    bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  fi
  PG_TEST_DIR="$(mktemp -d)" || return 1
  PG_TEST_BIN="$bin"
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')" \
    || return 1
  if [ "$(id -u)" = 0 ]; then chown postgres "$PG_TEST_DIR" || return 1; fi
  _pg_as_owner "$bin/initdb" -D "$PG_TEST_DIR/data" -A trust -U hcm --no-sync >/dev/null || return 1
  _pg_as_owner "$bin/pg_ctl" -D "$PG_TEST_DIR/data" -l "$PG_TEST_DIR/log" -w start \
    -o "-k $PG_TEST_DIR -p $port -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" >/dev/null \
    || { cat "$PG_TEST_DIR/log" >&2; return 1; }
  export HCMBENCH_TEST_PG_URL="postgresql://hcm@127.0.0.1:$port/postgres"
  echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') for the tests at $HCMBENCH_TEST_PG_URL"
}

_pg_stop() {
  [ -n "${PG_TEST_DIR:-}" ] || return 0
  _pg_as_owner "$PG_TEST_BIN/pg_ctl" -D "$PG_TEST_DIR/data" -m immediate stop >/dev/null 2>&1
  rm -rf "$PG_TEST_DIR"
}

trap _pg_stop EXIT
if ! _pg_start; then
  _pg_stop
  unset HCMBENCH_TEST_PG_URL
  echo "could not start PostgreSQL" >&2
  false
fi
