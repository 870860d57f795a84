#!/usr/bin/env bash
# Installs (if needed) and starts a local PostgreSQL, then creates the test
# role and database hone's store tests use. Idempotent. Prints the DSN as the
# last line of stdout, e.g.  export HONE_TEST_PG_DSN=$(scripts/postgres.sh | tail -1)
set -euo pipefail
user=${HONE_PG_USER:-hone}
pass=${HONE_PG_PASSWORD:-hone}
db=${HONE_PG_DB:-hone_test}
port=${HONE_PG_PORT:-5432}
SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
if [[ $(id -u) -eq 0 ]]; then as_pg() { runuser -u postgres -- "$@"; }; else as_pg() { sudo -u postgres "$@"; }; fi

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  # Another apt may hold the dpkg lock: retry for a while.
  for i in $(seq 1 60); do
    if $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null; then
      break
    fi
    echo "postgres.sh: apt busy, retrying ($i)" >&2; sleep 5
  done
fi
ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
bin=/usr/lib/postgresql/$ver/bin

if command -v pg_lsclusters >/dev/null; then
  if ! pg_lsclusters -h | awk '{print $2}' | grep -qx main; then
    $SUDO pg_createcluster "$ver" main -p "$port" >/dev/null
  fi
  if ! pg_lsclusters -h | awk '$2=="main"{print $4}' | grep -qx online; then
    $SUDO pg_ctlcluster "$ver" main start
  fi
  port=$(pg_lsclusters -h | awk '$2=="main"{print $3}')
else
  data=/var/lib/postgresql/hone-$ver
  if [[ ! -f $data/PG_VERSION ]]; then
    $SUDO mkdir -p "$data"; $SUDO chown postgres:postgres "$data"
    as_pg "$bin/initdb" -D "$data" >/dev/null
  fi
  as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1 ||
    as_pg "$bin/pg_ctl" -D "$data" -o "-p $port" -l "$data/log" -w start >/dev/null
fi

for i in $(seq 1 30); do
  as_pg psql -p "$port" -qAtc 'select 1' >/dev/null 2>&1 && break
  sleep 1
done
psql_su() { (cd / && as_pg psql -p "$port" -v ON_ERROR_STOP=1 -qAt "$@"); }
if [[ -z $(psql_su -c "select 1 from pg_roles where rolname='$user'") ]]; then
  psql_su -c "create role $user login password '$pass' createdb" >/dev/null
fi
if [[ -z $(psql_su -c "select 1 from pg_database where datname='$db'") ]]; then
  psql_su -c "create database $db owner $user" >/dev/null
fi
echo "postgres://$user:$pass@127.0.0.1:$port/$db?sslmode=disable"
