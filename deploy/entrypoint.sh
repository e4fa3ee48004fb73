#!/bin/sh
# Entrypoint of the Synkro image, for every role (code server, webserver, daemon, run containers):
#   1. wait until the databases this container is configured for accept connections;
#   2. if SYNKRO_MIGRATE_ON_START=1 (set for the code server only), create the data layer database
#      if it is missing and run `synkro db migrate`;
#   3. exec the role's command, so it is PID 1's child (tini) and receives signals directly.
#
# Environment:
#   DAGSTER_PG_HOST/PORT/USER/PASSWORD/DB  Dagster's storage; waited for when DAGSTER_PG_HOST is set.
#   SYNKRO_DATABASE_URL                    the data layer; waited for when set.
#   SYNKRO_DB_WAIT_SECONDS                 how long to wait before giving up (default 60).
#   SYNKRO_MIGRATE_ON_START                1 to migrate before starting (default 0).
set -eu

wait_for_databases() {
  python - <<'PY'
import os
import sys
import time

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

deadline = time.monotonic() + float(os.environ.get("SYNKRO_DB_WAIT_SECONDS") or 60)
may_create = os.environ.get("SYNKRO_MIGRATE_ON_START", "0").lower() in ("1", "true", "yes")

targets = []
if os.environ.get("DAGSTER_PG_HOST"):
    targets.append(
        (
            "Dagster storage",
            psycopg.conninfo.make_conninfo(
                host=os.environ["DAGSTER_PG_HOST"],
                port=os.environ.get("DAGSTER_PG_PORT") or "5432",
                user=os.environ.get("DAGSTER_PG_USER") or "",
                password=os.environ.get("DAGSTER_PG_PASSWORD") or "",
                dbname=os.environ.get("DAGSTER_PG_DB") or "",
            ),
            None,
        )
    )
if os.environ.get("SYNKRO_DATABASE_URL"):
    url = make_url(os.environ["SYNKRO_DATABASE_URL"]).set(drivername="postgresql")
    targets.append(("data layer", url.render_as_string(hide_password=False), url))


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


def unreachable(conninfo: str) -> str | None:
    """None when a connection succeeds, else why it failed."""
    try:
        psycopg.connect(conninfo, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        return first_line(exc)
    return None


def ensure_database(url) -> bool:
    """The compose `db` service creates only Dagster's database; the data layer's is made here.

    Checked through the server's `postgres` database (the error for a missing database carries no
    SQLSTATE and its text depends on the server's locale). True when it was created now.
    """
    server = url.set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(server, autocommit=True, connect_timeout=3) as conn:
        found = conn.execute("select 1 from pg_database where datname = %s", (url.database,))
        if found.fetchone() is None:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(url.database)))
            print(f"entrypoint: created database {url.database}", flush=True)
            return True
    return False


for label, conninfo, url in targets:
    shown = url.render_as_string(hide_password=True) if url else os.environ["DAGSTER_PG_HOST"]
    while (error := unreachable(conninfo)) is not None:
        if url is not None and may_create:
            try:
                if ensure_database(url):
                    continue
            except psycopg.Error as exc:  # server not up yet, or another container created it first
                error = first_line(exc)
        if time.monotonic() >= deadline:
            print(
                f"entrypoint: gave up waiting for the {label} database ({shown}): {error}",
                file=sys.stderr,
            )
            sys.exit(1)
        print(f"entrypoint: waiting for the {label} database ({shown})...", flush=True)
        time.sleep(2)
PY
}

wait_for_databases

case "${SYNKRO_MIGRATE_ON_START:-0}" in
  1 | true | yes)
    if [ -z "${SYNKRO_DATABASE_URL:-}" ]; then
      # Without it the CLI would start an embedded PostgreSQL inside this container.
      echo "entrypoint: SYNKRO_MIGRATE_ON_START is set but SYNKRO_DATABASE_URL is not" >&2
      exit 1
    fi
    echo "entrypoint: applying data layer migrations"
    synkro db migrate
    ;;
esac

exec "$@"
