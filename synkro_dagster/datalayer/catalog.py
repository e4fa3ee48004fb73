"""What the catalog shows of a landed table: its columns as PostgreSQL has them, and its row count.

Read from the database right after a load rather than from the records, so the UI's asset page
shows the table a reader really sees: columns added by earlier loads, widened types, NOT NULL
keys and the column comments a SQL source carried over.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
import sqlalchemy as sa
from psycopg import sql

from synkro_dagster.datalayer.identifiers import column_name, qualified, table_name
from synkro_dagster.datalayer.load import TableTarget
from synkro_dagster.datalayer.schema import primary_key_columns, table_columns

# Why each column Synkro adds is there; shown beside the stream's own columns.
SYSTEM_DESCRIPTIONS = {
    "tenant_id": "Synkro: the integration's tenant (row-level security filters on it)",
    "integration_id": "Synkro: the integration that landed the row (first part of the key)",
    "_synkro_synced_at": "Synkro: when the row was last written",
    "_synkro_run_id": "Synkro: the Dagster run that last wrote the row",
    "_synkro_deleted_at": "Synkro: when the source deleted the row (soft delete), else null",
    "_synkro_valid_from": "Synkro history: when this version became current",
    "_synkro_valid_to": "Synkro history: when a newer version replaced this one, else null",
    "_synkro_is_current": "Synkro history: whether this is the key's current version",
}


@dataclass(frozen=True)
class TableCatalog:
    """A landed table as the catalog reports it: `dagster/column_schema` and `dagster/row_count`."""

    schema: dg.TableSchema
    row_count: int  # the integration's rows (every version in history mode)

    def as_metadata(self) -> dict[str, object]:
        return {"dagster/column_schema": self.schema, "dagster/row_count": self.row_count}


def column_descriptions(target: TableTarget) -> dict[str, str]:
    """{column: what the spec says of it}: key, cursor, type hints, and Synkro's own columns."""
    described: dict[str, list[str]] = {}
    for field in target.primary_key:
        described.setdefault(column_name(field), []).append("primary key")
    if target.cursor_field:
        described.setdefault(column_name(target.cursor_field), []).append("cursor")
    for field, kind in target.column_hints.items():
        described.setdefault(column_name(field), []).append(f"type {kind} from the spec")
    if target.marker is not None:
        described.setdefault(column_name(target.marker.field), []).append("deletion marker")
    text = {name: "; ".join(parts) for name, parts in described.items()}
    return {**text, **SYSTEM_DESCRIPTIONS}


def read_table_catalog(engine: sa.Engine, target: TableTarget, integration_id: str) -> TableCatalog:
    """The columns of `target`'s table (name, type, nullability, description) and the
    integration's row count. Descriptions are the column's comment if it has one (a SQL source's
    own), else what the spec says of the column."""
    schema, table = table_name(target.schema), table_name(target.table)
    with engine.connect() as conn:
        rows = table_columns(conn, schema, table)
        if not rows:
            raise LookupError(f"table {schema}.{table} does not exist")
        unique = set(primary_key_columns(conn, schema, table))
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cur:
            cur.execute(
                sql.SQL("select count(*) from {} where integration_id = %s").format(
                    qualified(target.schema, target.table)
                ),
                (integration_id,),
            )
            found = cur.fetchone()
        conn.rollback()
    from_spec = column_descriptions(target)
    columns = [
        dg.TableColumn(
            name=column.name,
            type=column.type,
            description=column.comment or from_spec.get(column.name),
            constraints=dg.TableColumnConstraints(
                nullable=not column.not_null,
                # Unique alone only where the key is this one column (never: integration_id leads).
                unique=unique == {column.name},
            ),
        )
        for column in rows
    ]
    return TableCatalog(dg.TableSchema(columns=columns), int(found[0]) if found else 0)
