"""Typed staging: Arrow record batches and PostgreSQL COPY bytes staged by binary COPY.

Besides Python records, a part's batches may be

- a `pyarrow.RecordBatch` (a connector that reads columnar data, e.g. connectorx): each column
  is staged in a staging column of its own type by binary COPY, encoded by `pgpq` (Rust, no
  Python per value), or
- a `contracts.CopyBatch`: a PostgreSQL source's `COPY (query) TO STDOUT (FORMAT binary)` bytes,
  streamed unchanged into a staging table whose columns have the source's exact types, or
- a `contracts.CsvCopyBatch`: a clean CSV file's bytes, parsed by PostgreSQL's own `COPY (FORMAT
  csv)` into staging columns of the types the connector names (text where COPY cannot convert:
  decimal comma, dd.mm.yyyy; those conversions are SQL expressions the merge applies before its
  casts, `stage_expression`).

Staging columns start as `text` (the records path); a typed batch turns an empty staging column
into its type, and the merge casts from whatever the staging column holds to the target type
(no cast when they match). A records batch that meets a typed staging column turns it back into
text first, so parts of different kinds can share one load. The target's type still comes from
the spec's hints, the source's declared types, then the data (`column.seen`), exactly as for
records, so every path lands the same table.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from psycopg import sql
from psycopg.abc import Query

from synkro_dagster import jsonnumbers
from synkro_dagster.contracts import CopyBatch, CsvCopyBatch, SourceDataError
from synkro_dagster.datalayer import schema as types

if TYPE_CHECKING:
    import pyarrow as pa

# The binary COPY file header (signature, flags, no extension area) and trailer.
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
COPY_TRAILER = b"\xff\xff"

STAGE_TABLE = "synkro_stage"
_ISO_DATE_PREFIX = re.compile(r"^\d{4}-\d{2}-\d{2}")


def is_arrow_batch(batch: Any) -> bool:
    """A pyarrow RecordBatch (checked without importing pyarrow for record batches)."""
    return type(batch).__module__.startswith("pyarrow") and hasattr(batch, "schema")


def staged_value(expression: sql.Composable, stage_type: str, target_type: str) -> sql.Composable:
    """A staged value as the target type: no cast when the staging column already has it.

    A double goes to numeric through its shortest exact text (PostgreSQL's own double -> numeric
    cast keeps only 15 digits), spelled as Python's repr spells it ("2.0", not "2"), so the
    numeric is the one the records path stages.
    """
    have = types.canonical_type(stage_type)
    if have == target_type:
        return expression
    if have == types.DOUBLE and target_type == types.NUMERIC:
        return sql.SQL(
            "(case when {0}::text ~ '^-?[0-9]+$' then {0}::text || '.0' else {0}::text end)::numeric"
        ).format(expression)
    if have == types.TEXT:
        return types.cast(expression, target_type)
    if target_type == types.TEXT:
        return sql.SQL("{}::text").format(expression)
    return sql.SQL("{}::{}").format(expression, types.type_sql(target_type))


# --- Arrow columns -----------------------------------------------------------------------------


def _json_text(value: Any) -> Any:
    if value is None:
        return None
    return jsonnumbers.dumps(value)


def _str_text(value: Any) -> Any:
    return None if value is None else str(value)


def arrow_column(array: pa.Array) -> tuple[pa.Array | None, str, str | None]:
    """(array to stage, staging type, inferred type) for one Arrow column.

    The array comes back cast to a type pgpq encodes as the staging type; None when the column is
    all null (nothing to stage, nothing learned). The inferred type follows the records path's
    inference (`schema.infer_column`), so an Arrow batch and the same rows as records land alike.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_dictionary(kind):
        array = array.dictionary_decode()
        kind = array.type
    if array.null_count == len(array) or pa.types.is_null(kind):
        return None, types.TEXT, None
    if pa.types.is_boolean(kind):
        return array, types.BOOLEAN, types.BOOLEAN
    if pa.types.is_integer(kind):
        if pa.types.is_uint64(kind):
            array = array.cast(pa.decimal128(20, 0))
            low, high = pc.min_max(array).values()
            found = _int_seen(int(low.as_py()), int(high.as_py()))
            return array, types.NUMERIC, found
        wide = pa.types.is_int64(kind) or pa.types.is_uint32(kind)
        array = array.cast(pa.int64() if wide else pa.int32())
        low, high = pc.min_max(array).values()
        return array, types.BIGINT if wide else types.INTEGER, _int_seen(low.as_py(), high.as_py())
    if pa.types.is_floating(kind):
        return array.cast(pa.float64()), types.DOUBLE, types.NUMERIC
    if pa.types.is_decimal128(kind):
        return array, types.NUMERIC, types.NUMERIC
    if pa.types.is_decimal(kind):
        return array.cast(pa.string()), types.TEXT, types.NUMERIC
    if pa.types.is_timestamp(kind):
        aware = kind.tz is not None
        if kind.unit != "us":
            array = array.cast(pa.timestamp("us", tz=kind.tz), safe=False)
        return (
            array,
            types.TIMESTAMPTZ if aware else types.TIMESTAMP,
            types.TIMESTAMPTZ if aware else types.TIMESTAMP,
        )
    if pa.types.is_date(kind):
        return array.cast(pa.date32()), types.DATE, types.DATE
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return array, types.TEXT, _string_seen(array)
    if pa.types.is_string_view(kind):
        array = array.cast(pa.large_string())
        return array, types.TEXT, _string_seen(array)
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return array, "bytea", types.TEXT
    if pa.types.is_nested(kind):
        # Lists, structs and maps land as jsonb; rare enough for a Python pass per value.
        return (
            pa.array(map(_json_text, array.to_pylist()), pa.large_string()),
            types.TEXT,
            types.JSONB,
        )
    # Times, durations and anything else: their text form, as the records path stages them.
    return pa.array(map(_str_text, array.to_pylist()), pa.large_string()), types.TEXT, types.TEXT


def _int_seen(low: int, high: int) -> str:
    return types._int_type([low, high])


def _string_seen(array: pa.Array) -> str:
    first = next((v for v in array.slice(0, 64).to_pylist() if v is not None), None)
    if first is None or not _ISO_DATE_PREFIX.match(first):
        return types.TEXT  # most text columns stop here, with no per-value pass
    present = [v for v in array.to_pylist() if v is not None]
    return types._string_type(present)


def arrow_null_row(batch: pa.RecordBatch, name: str) -> dict[str, Any] | None:
    """The first record of `batch` whose `name` is null (for a null-primary-key error)."""
    import pyarrow.compute as pc

    column = batch.column(batch.schema.get_field_index(name))
    if column.null_count == 0:
        return None
    position = pc.index(pc.is_null(column), True).as_py()
    return batch.slice(position, 1).to_pylist()[0]


def encode_arrow(arrays: list[pa.Array], names: list[str]) -> bytes:
    """The rows of `arrays` as binary COPY tuples (no header or trailer), encoded by pgpq."""
    import pyarrow as pa
    from pgpq import ArrowToPostgresBinaryEncoder

    batch = pa.RecordBatch.from_arrays(arrays, names=names)
    encoder = ArrowToPostgresBinaryEncoder(batch.schema)
    encoder.write_header()
    # pgpq buffers rows until finish(), which appends the stream trailer; the COPY writes its own.
    data = bytes(encoder.write_batch(batch)) + bytes(encoder.finish())
    return data[: -len(COPY_TRAILER)]


# PostgreSQL staging type -> the Arrow type pgpq encodes as it (to fit a batch to a staging column).
def _arrow_type_of(stage_type: str) -> pa.DataType | None:
    import pyarrow as pa

    return {
        types.INTEGER: pa.int32(),
        types.BIGINT: pa.int64(),
        types.DOUBLE: pa.float64(),
        types.BOOLEAN: pa.bool_(),
        types.DATE: pa.date32(),
        types.TIMESTAMP: pa.timestamp("us"),
        types.TIMESTAMPTZ: pa.timestamp("us", tz="UTC"),
        types.TEXT: pa.large_string(),
    }.get(stage_type)


def _fit(array: pa.Array, stage_type: str) -> pa.Array | None:
    """`array` cast (losslessly) to the Arrow type of `stage_type`, or None if it does not fit."""
    import pyarrow as pa

    wanted = _arrow_type_of(stage_type)
    if wanted is None:
        return None
    if wanted == pa.large_string() and pa.types.is_floating(array.type):
        return pa.array(map(_float_text, array.to_pylist()), pa.large_string())
    try:
        return array.cast(wanted)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if wanted == pa.large_string():
            return pa.array(map(_str_text, array.to_pylist()), pa.large_string())
        return None


def _float_text(value: Any) -> Any:
    return None if value is None else repr(value)


class TypedStaging:
    """The typed-batch half of a load (mixed into `load._Load`, which provides the attributes).

    Tracks each staging column's type (`stage_types`, default text) and which staging columns
    hold values (`stage_filled`): an empty one can take any type, a filled one only widens.
    """

    columns: dict[Any, Any]
    stage_types: dict[str, str]
    stage_filled: set[str]
    stage_convert: dict[str, Any]
    pk_keys: list[str]
    stager: Any

    def add_columns(self, keys: list[Any]) -> None: ...
    def execute(self, statement: Query) -> None: ...
    def null_key_error(self, part: Any, key: Any, record: Any) -> SourceDataError:
        raise NotImplementedError

    def fetch_one(self, statement: Query) -> tuple[Any, ...] | None:
        raise NotImplementedError

    def retype_stage(self, changes: dict[str, str]) -> None:
        """ALTER staging columns to new types (each value cast by PostgreSQL)."""
        changes = {s: t for s, t in changes.items() if self.stage_types.get(s, types.TEXT) != t}
        if not changes:
            return
        for stage_type in changes.values():
            # Type names come from Arrow (fixed) or a source's catalog: they must look like one.
            if not types._TYPE_NAME.match(stage_type):
                raise SourceDataError(f"unsupported column type {stage_type!r} for typed staging")
        self.stager.close()
        self.execute(
            types.alter_table(
                sql.Identifier(STAGE_TABLE),
                (
                    sql.SQL("alter column {0} type {1} using {0}::{1}").format(
                        sql.Identifier(stage), sql.SQL(stage_type)
                    )
                    for stage, stage_type in changes.items()
                ),
            )
        )
        self.stage_types.update(changes)

    def text_staging(self) -> None:
        """Before a records batch: every typed staging column back to text."""
        self.retype_stage({s: types.TEXT for s, t in self.stage_types.items() if t != types.TEXT})

    def arrow_arrays(self, part: Any, batch: pa.RecordBatch) -> list[tuple[Any, pa.Array, str]]:
        """(column, array, its staging type) per column of `batch` that holds a value; checks the
        batch (names, primary key), adds new columns and learns each column's type (`seen`)."""
        names = list(batch.schema.names)
        if len(set(names)) != len(names):
            raise SourceDataError(f"part '{part.name}': a batch has repeated column names {names}")
        if batch.num_rows == 0:
            return []
        for key in self.pk_keys:
            if key not in names:
                raise self.null_key_error(part, key, batch.slice(0, 1).to_pylist()[0])
            example = arrow_null_row(batch, key)
            if example is not None:
                raise self.null_key_error(part, key, example)
        new = [name for name in names if name not in self.columns]
        if new:
            self.add_columns(new)
        arrays = []
        for name, array in zip(names, batch.columns, strict=True):
            column = self.columns[name]
            values, stage_type, seen = arrow_column(array)
            if values is None:
                continue
            column.seen = types.join_types(column.seen, seen)
            arrays.append((column, values, stage_type))
        return arrays

    def stage_arrow(self, part: Any, batch: pa.RecordBatch) -> int:
        arrays = self.arrow_arrays(part, batch)
        if batch.num_rows == 0:
            return 0
        staged: list[tuple[str, pa.Array]] = []
        retype: dict[str, str] = {}
        for column, values, stage_type in arrays:
            have = self.stage_types.get(column.stage, types.TEXT)
            if have != stage_type and column.stage in self.stage_filled:
                wider = types.join_types(have, stage_type)
                fitted = _fit(values, have) if wider == have else None
                if fitted is not None:
                    values = fitted
                elif wider == stage_type and wider != types.TEXT:
                    retype[column.stage] = stage_type
                else:
                    retype[column.stage] = types.TEXT
                    values = _fit(values, types.TEXT)
            elif have != stage_type:
                retype[column.stage] = stage_type
            staged.append((column.stage, values))
        self.retype_stage(retype)
        if not staged:
            return batch.num_rows
        stages = tuple(stage for stage, _ in staged)
        payload = encode_arrow([values for _, values in staged], list(stages))
        self.stager.write_binary(stages, payload)
        self.stage_filled.update(stages)
        return batch.num_rows

    def stage_copy(self, part: Any, batch: CopyBatch) -> int:
        names = [name for name, _ in batch.columns]
        new = [name for name in names if name not in self.columns]
        if new:
            self.add_columns(new)
        stages = tuple(self.columns[name].stage for name in names)
        for stage, (name, source_type) in zip(stages, batch.columns, strict=True):
            if stage in self.stage_filled and self.stage_types.get(stage) != source_type:
                raise RuntimeError(
                    f"part '{part.name}': pass-through COPY of column '{name}' needs an empty"
                    " staging column"
                )
        self.retype_stage(
            {
                stage: source_type
                for stage, (_, source_type) in zip(stages, batch.columns, strict=True)
            }
        )
        rows = self.stager.copy_raw(stages, batch.chunks)
        batch.rows = rows
        self.stage_filled.update(stages)
        for name, source_type in batch.columns:
            column = self.columns[name]
            column.seen = types.join_types(column.seen, types.canonical_type(source_type))
        self.check_copied_keys(part, sql.Identifier(STAGE_TABLE), staged=True)
        return rows

    def check_copied_keys(self, part: Any, table: sql.Composable, staged: bool) -> None:
        """After a pass-through COPY into `table` (staging, or the target by name): a missing or
        null primary key fails the load, naming the stream and a record."""
        for key in self.pk_keys:
            if key not in self.columns:
                raise SourceDataError(
                    f"part '{part.name}': the rows have no primary key column '{key}'"
                )
            column = self.columns[key]
            row = self.fetch_one(
                sql.SQL("select to_jsonb(s) from {} s where {} is null limit 1").format(
                    table, sql.Identifier(column.stage if staged else column.name)
                )
            )
            if row is not None:
                record = {
                    c.key: row[0].get(c.stage if staged else c.name) for c in self.columns.values()
                }
                raise self.null_key_error(part, key, record)

    def stage_expression(self, column: Any) -> sql.Composable:
        """A staged value as the merge reads it: CSV text converted where the part said so."""
        staged = sql.Identifier("s", column.stage)
        convert = self.stage_convert.get(column.stage)
        return staged if convert is None else convert(staged)

    def stage_csv(self, part: Any, batch: CsvCopyBatch) -> int:
        """COPY a clean CSV file into staging; PostgreSQL parses it.

        The connector has checked every row (field shapes, non-empty keys), so what COPY reads
        is what the records path would have read."""
        if not part.isolated or self.stage_filled:
            raise RuntimeError(f"part '{part.name}': a CSV pass-through needs empty staging")
        names = [column.name for column in batch.columns]
        new = [name for name in names if name not in self.columns]
        if new:
            self.add_columns(new)
        stages = tuple(self.columns[name].stage for name in names)
        wanted = dict(zip(stages, (column.stage_type for column in batch.columns), strict=True))
        self.retype_stage(
            {stage: wanted.get(stage, types.TEXT) for stage in {*self.stage_types, *stages}}
        )
        rows = self.stager.copy_raw(stages, batch.chunks, self.csv_options(batch, staged=True))
        batch.rows = rows
        self.stager.part_rows += rows
        self.stage_filled.update(stages)
        for column, stage in zip(batch.columns, stages, strict=True):
            if column.convert is not None:
                self.stage_convert[stage] = column.convert
        self.check_csv(batch, rows, sql.Identifier(STAGE_TABLE), staged=True)
        return rows

    def csv_options(self, batch: CsvCopyBatch, staged: bool) -> sql.Composable:
        """The COPY options of a CSV pass-through into staging (`staged`) or the target."""
        options = sql.SQL("format csv, delimiter {}, quote {}, encoding {}").format(
            sql.Literal(batch.delimiter), sql.Literal(batch.quote), sql.Literal(batch.encoding)
        )
        if batch.force_null:
            columns = [self.columns[n] for n in batch.force_null]
            options = sql.SQL("{}, force_null ({})").format(
                options,
                sql.SQL(", ").join(sql.Identifier(c.stage if staged else c.name) for c in columns),
            )
        return options

    def check_csv(
        self, batch: CsvCopyBatch, rows: int, table: sql.Composable, staged: bool
    ) -> None:
        """What the records path learns from the values of a column without a declared type:
        whether it holds any (the connector has checked that none reads as a date). `table`:
        staging (`staged`) or the target the rows were COPYed into."""
        undeclared = [self.columns[c.name] for c in batch.columns if c.declared is None]
        if not rows or not undeclared:
            return
        row = self.fetch_one(
            sql.SQL("select {} from {}").format(
                sql.SQL(", ").join(
                    sql.SQL("bool_or({} is not null)").format(
                        sql.Identifier(column.stage if staged else column.name)
                    )
                    for column in undeclared
                ),
                table,
            )
        )
        assert row is not None
        for column, found in zip(undeclared, row, strict=True):
            column.seen = types.join_types(column.seen, types.TEXT if found else None)
