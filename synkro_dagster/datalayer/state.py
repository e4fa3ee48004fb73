"""Per-stream sync state (cursor, last sync) and the processed-files ledger, in schema synkro."""

from __future__ import annotations

import sqlalchemy as sa


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
