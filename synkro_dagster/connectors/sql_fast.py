"""Fast reads for the SQL engine: typed batches instead of Python records where nothing is lost.

- PostgreSQL source, every result column a built-in type and no value fix needed: the rows go
  out as `COPY (query) TO STDOUT (FORMAT binary)` and reach the data layer unchanged as
  `CopyBatch` chunks, which it streams into its staging COPY (no Python per row or value).
- MySQL / MariaDB source with `connectorx` installed: the query is read by connectorx (Rust)
  as Arrow record batches of `batch_size` rows, staged by binary COPY. Decimals are selected as
  their exact text (connectorx would round them to a fixed 10-digit scale), times as text and
  binary values become lowercase hex, matching what the records path lands.

A stream with column control (`columns.select` / `exclude` / `rename`, `naming`) takes these paths
too: the source query selects only the landed fields, under their landed names. Anything else
(SQLite, SQL Server, enums, arrays, hashed fields, a failed connectorx start) keeps the records
path in `sql.py`. `SqlConnector.fast_paths=False` turns both off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from synkro_dagster.contracts import CopyBatch

# psycopg type name -> the type a pass-through COPY stages it as. Text-like types stage as text
# (same binary form; char(n) keeps its padding, as the records path does).
_PG_STAGE_TYPES = {
    "int2": "smallint",
    "int4": "integer",
    "int8": "bigint",
    "oid": "oid",
    "numeric": "numeric",
    "float4": "real",
    "float8": "double precision",
    "bool": "boolean",
    "text": "text",
    "varchar": "text",
    "bpchar": "text",
    "name": "text",
    "date": "date",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "json": "json",
    "jsonb": "jsonb",
    "uuid": "uuid",
}


def pg_copy_columns(description: Sequence[Any]) -> list[tuple[str, str]] | None:
    """(name, staging type) per result column, or None if any column cannot pass through."""
    import psycopg

    columns = []
    for column in description:
        info = psycopg.adapters.types.get(column.type_code)
        stage = _PG_STAGE_TYPES.get(info.name) if info is not None else None
        if stage is None or info.oid != column.type_code:
            return None
        columns.append((column.name, stage))
    return columns


def pg_copy_batches(
    connect: Callable[[], sa.Connection],
    statement: sa.Select,
    columns: list[tuple[str, str]],
    on_rows: Callable[[int], None],
    on_error: Callable[[BaseException], BaseException | None],
) -> Iterator[CopyBatch]:
    """One CopyBatch streaming the rows of `statement` as binary COPY from the source."""
    import psycopg

    def chunks() -> Iterator[bytes]:
        # The chunks own the source connection: it is open exactly while the COPY streams.
        conn = connect()
        try:
            driver_connection = conn.connection.driver_connection
            assert driver_connection is not None  # an open connection has its driver's
            compiled = statement.compile(dialect=conn.dialect)
            # COPY takes no bind parameters: psycopg renders the values as literals itself.
            query = psycopg.ClientCursor(driver_connection).mogrify(str(compiled), compiled.params)
            copy_sql = f"copy ({query}) to stdout (format binary)"
            with driver_connection.cursor() as cur, cur.copy(copy_sql) as copy:
                yield from copy
        except Exception as exc:
            translated = on_error(exc)
            if translated is None:
                raise
            raise translated from None
        finally:
            conn.close()

    batch = CopyBatch(columns=columns, chunks=chunks())
    yield batch
    on_rows(batch.rows)


def mysql_fast_statement(
    statement: sa.Select, column_types: dict[str, str], fixes: dict[str, str], cursor: str | None
) -> sa.Select:
    """`statement` wrapped so connectorx reads every value exactly (see the module docstring)."""
    inner = statement.order_by(None).subquery("synkro_src")
    selected = []
    for column in inner.c:
        # Binary values are turned into hex from the Arrow batch (a query's text column may hold
        # them too, which SQL cannot tell apart here).
        declared = column_types.get(column.name) or ""
        if fixes.get(column.name) == "str" or declared.startswith(("numeric", "decimal")):
            value = sa.cast(column, sa.CHAR)
        else:
            selected.append(column)
            continue
        selected.append(value.label(column.name))
    outer = sa.select(*selected)
    if cursor is not None:
        outer = outer.order_by(inner.c[cursor])
    return outer


def connectorx_batches(
    url: str,
    query: str,
    batch_size: int,
    pre_execution: list[str],
    on_rows: Callable[[int], None],
) -> Iterator[Any]:
    """Arrow record batches of `query` read by connectorx, `batch_size` rows at a time."""
    import connectorx

    reader = connectorx.read_sql(
        url,
        query,
        return_type="arrow_stream",
        batch_size=batch_size,
        pre_execution_query=pre_execution or None,
    )
    for batch in reader:
        on_rows(batch.num_rows)
        yield batch


def connectorx_available() -> bool:
    try:
        import connectorx  # noqa: F401
    except ImportError:
        return False
    return True
