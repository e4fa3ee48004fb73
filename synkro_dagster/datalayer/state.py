"""Per-stream sync state (cursor, last sync, the one-writer lock) and the processed-files ledger."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import sqlalchemy as sa

from synkro_dagster.errors import TransientError

log = logging.getLogger(__name__)


def read_cursor(conn: sa.Connection, integration_id: str, stream: str) -> str | None:
    """The committed cursor of a stream, or None before its first sync."""
    return conn.execute(
        sa.text(
            "select cursor from synkro.sync_state where integration_id = :integration and stream = :stream"
        ),
        {"integration": integration_id, "stream": stream},
    ).scalar()


def write_state(
    conn: sa.Connection,
    *,
    integration_id: str,
    stream: str,
    tenant_id: str,
    cursor: str | None,
    rows: int,
    run_id: str,
) -> None:
    """Record the stream's new cursor; runs in the load transaction, so it commits with the data."""
    conn.execute(
        sa.text(
            "insert into synkro.sync_state"
            " (integration_id, stream, tenant_id, cursor, rows_last_sync, last_synced_at, last_run_id)"
            " values (:integration, :stream, :tenant, :cursor, :rows, now(), :run)"
            " on conflict (integration_id, stream) do update set"
            "  tenant_id = excluded.tenant_id, cursor = excluded.cursor,"
            "  rows_last_sync = excluded.rows_last_sync, last_synced_at = excluded.last_synced_at,"
            "  last_run_id = excluded.last_run_id"
        ),
        {
            "integration": integration_id,
            "stream": stream,
            "tenant": tenant_id,
            "cursor": cursor,
            "rows": rows,
            "run": run_id,
        },
    )


def claim_part(
    conn: sa.Connection,
    *,
    integration_id: str,
    stream: str,
    file_name: str,
    content_hash: str,
    run_id: str,
    export_id: str | None = None,
    dedupe: str = "upload",
) -> str | None:
    """Record an upload; its key, or None if it is already recorded (loaded before: skip it).

    The key (a generated column, see the migration) is the stream, the file name, the manifest's
    export id and the content hash: a new name with old content is a new export and loads.

    A concurrent load of the same upload waits here until the other transaction ends, then sees
    its row if it committed, so an upload is loaded exactly once. With `content` dedupe, the same
    content recorded for the stream under any name counts as loaded.
    """
    params = {
        "integration": integration_id,
        "dedupe": dedupe,
        "hash": content_hash,
        "stream": stream,
        "file": file_name,
        "export": export_id,
        "run": run_id,
    }
    if (
        dedupe == "content"
        and conn.execute(
            sa.text(
                "select 1 from synkro.processed_files where integration_id = :integration"
                " and stream = :stream and content_hash = :hash limit 1"
            ),
            params,
        ).first()
    ):
        return None
    claimed = conn.execute(
        sa.text(
            "insert into synkro.processed_files"
            " (integration_id, dedupe, content_hash, stream, file_name, export_id, run_id)"
            " values (:integration, :dedupe, :hash, :stream, :file, :export, :run)"
            " on conflict (integration_id, upload_key) do nothing returning upload_key"
        ),
        params,
    ).scalar()
    return claimed


def set_part_rows(conn: sa.Connection, integration_id: str, key: str, rows: int) -> None:
    conn.execute(
        sa.text(
            "update synkro.processed_files set rows_loaded = :rows"
            " where integration_id = :integration and upload_key = :key"
        ),
        {"rows": rows, "integration": integration_id, "key": key},
    )


class StreamBusy(TransientError, RuntimeError):
    """Another run held the stream's lock for longer than the data layer's lock timeout."""


def stream_lock_key(integration_id: str, stream: str) -> str:
    return f"synkro.stream:{integration_id}/{stream}"


def lock_stream(cursor: psycopg.Cursor, context: Any, *, timeout_s: float) -> None:
    """Take the transaction-scoped advisory lock of (integration, stream), waiting for a run that
    holds it up to `timeout_s`, then failing with StreamBusy.

    The holder is named through `application_name` (set for this transaction only), so a waiting
    run can say which run it waits for. A crashed holder's connection ends and frees the lock.
    """
    key = stream_lock_key(context.integration_id, context.stream)
    name = f"synkro run {context.run_id}"[:63]
    cursor.execute("select set_config('application_name', %s, true)", (name,))
    cursor.execute("select pg_try_advisory_xact_lock(hashtextextended(%s, 0))", (key,))
    row = cursor.fetchone()
    if row is not None and row[0]:
        return
    holder = lock_holder(cursor, key)
    what = f"stream '{context.stream}' of integration '{context.integration_id}'"
    message = (
        f"{what} is being synced by {holder}; run {context.run_id} waits for it "
        f"(up to {timeout_s:g} s)"
    )
    _say(context, message)
    cursor.execute(f"set local lock_timeout = '{max(1, int(timeout_s * 1000))}ms'")
    try:
        cursor.execute("select pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))
    except psycopg.errors.LockNotAvailable:
        raise StreamBusy(
            f"{what}: run {context.run_id} waited {timeout_s:g} s for {holder} to finish and "
            "gave up; nothing was read or written. Run it again when the other run is done "
            "(or raise DataLayer.stream_lock_timeout_s)."
        ) from None
    cursor.execute("set local lock_timeout to default")
    _say(context, f"{what}: the other run finished; run {context.run_id} goes on")


def lock_holder(cursor: psycopg.Cursor, key: str) -> str:
    """Who holds the advisory lock `key`: 'run <id> (pid N, since T)', or 'another session'."""
    cursor.execute(
        "select a.application_name, a.pid, to_char(a.xact_start at time zone 'UTC',"
        " 'YYYY-MM-DD HH24:MI:SS') from pg_locks l join pg_stat_activity a on a.pid = l.pid"
        " where l.locktype = 'advisory' and l.granted and l.objsubid = 1"
        " and l.database = (select oid from pg_database where datname = current_database())"
        " and ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(%s, 0)",
        (key,),
    )
    row = cursor.fetchone()
    if row is None:
        return "another session"
    application, pid, since = row
    who = application[len("synkro ") :] if application.startswith("synkro run ") else "a session"
    return f"{who} (pid {pid}, since {since} UTC)"


def _say(context: Any, message: str) -> None:
    run_log = getattr(context, "log", None)
    (run_log or log).warning(message)
