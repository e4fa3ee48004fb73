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
    content_hash: str,
    stream: str,
    file_name: str,
    run_id: str,
) -> bool:
    """Record a part's content hash; False if it is already recorded (loaded before: skip it).

    A concurrent load of the same part waits here until the other transaction ends, then sees
    its row if it committed, so a part is loaded exactly once.
    """
    claimed = conn.execute(
        sa.text(
            "insert into synkro.processed_files"
            " (integration_id, content_hash, stream, file_name, run_id)"
            " values (:integration, :hash, :stream, :file, :run)"
            " on conflict (integration_id, content_hash) do nothing returning 1"
        ),
        {
            "integration": integration_id,
            "hash": content_hash,
            "stream": stream,
            "file": file_name,
            "run": run_id,
        },
    ).first()
    return claimed is not None


def set_part_rows(conn: sa.Connection, integration_id: str, content_hash: str, rows: int) -> None:
    conn.execute(
        sa.text(
            "update synkro.processed_files set rows_loaded = :rows"
            " where integration_id = :integration and content_hash = :hash"
        ),
        {"rows": rows, "integration": integration_id, "hash": content_hash},
    )
