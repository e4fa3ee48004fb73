"""Direct loading: a first load into an empty target is COPYed straight into it, with no merge.

When the target table is new, or this integration has no rows in it yet, the merge of a `merge`
stream is a plain insert of the staged rows. The direct path COPYs those rows into the target as
they arrive instead (same transaction, same lock, same cursor), which saves the staging table's
second full write and its casts. It lands exactly what staging and merge land, because it runs
only where the two provably agree, and goes back to staging everywhere else:

- `merge` streams without delete markers or report periods; parts that are not isolated files.
  A sweep after a direct load is not run: the integration had no rows before (checked under the
  table's lock, held to the commit), so every row it has is one this read brought and the sweep
  would remove none (`_Load.finish_deletes` records it as staging does: 0 rows); no sized declared type (`numeric(10,2)`, `varchar(40)`: whether the values fit is known
  only once the whole load is staged); a shared table only when its other NOT NULL columns are
  the system ones;
- a column's type is chosen from the batches seen so far exactly as staging chooses it from all
  of them. A later batch that would choose another type, a column new to a table this load
  created (staging would have put it before the system columns), a repeated primary key (the
  merge keeps the latest record of a key), a NULL a NOT NULL refuses or a value PostgreSQL rejects
  all roll the direct writes back to a savepoint, and the stream is read again from the same
  cursor onto staging. So the read must be restartable (a function of the start cursor, as a sync
  passes);
- records are COPYed as the text staging would hold (PostgreSQL's input function is the merge's
  cast); Arrow and binary COPY batches only where their binary type is the target type (the merge
  would not cast them either);
- the new cursor comes from the same SQL as always, over the cursor and key columns staged alone
  (records: the source's own text; typed batches: the landed values, their type unchanged).

The table's advisory lock is taken at the first batch and held to the commit (staging takes it for
the merge only), so another integration's load into the same table waits for a first load's COPY.

Files (isolated parts, one savepoint each) never take the path above. Only a file drop's first
file with rows, a clean CSV pass-through needing no SQL conversion, into a table that does not
exist yet, is COPYed straight into the table it creates (`csv_file`, `finish_file`), all inside
the file's savepoint: a repeated key or a value PostgreSQL refuses rolls that file back, and it is
staged and merged like any other file (`load_part`), landing exactly what staging lands. The
files after it are staged and merged one by one as always (the table then has their
integration's rows).

A new table carries tenant, integration and run id as column defaults while the rows arrive
(dropped before the commit), gets its primary key after the rows, and NOT NULL where the source
declares it and the load brought no NULL: the table staging would have created.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from synkro_dagster.contracts import CopyBatch, CsvCopyBatch, Part
from synkro_dagster.datalayer import schema as types
from synkro_dagster.datalayer.copy_binary import STAGE_TABLE, _fit, encode_arrow
from synkro_dagster.errors import SynkroError
from synkro_dagster.specs.cursors import EPOCH_FORMATS, parse_duration

if TYPE_CHECKING:
    import pyarrow as pa

    from synkro_dagster.datalayer.load import _Load

# Errors of a direct write that staging handles its own way (dedupe, relax NOT NULL, a widened
# type, or the load's own error message): the stream is loaded again through staging.
_UNDO = (psycopg.IntegrityError, psycopg.DataError)
_CONSTANTS = ("tenant_id", "integration_id", "_synkro_run_id")
_INTEGERS = (types.INTEGER, types.BIGINT)
# (Python type of every cursor value, target type) where Python orders values as PostgreSQL does.
_ORDERED = {
    (int, types.INTEGER),
    (int, types.BIGINT),
    (int, types.NUMERIC),
    (Decimal, types.NUMERIC),
    (date, types.DATE),
    (datetime, types.TIMESTAMP),
    (datetime, types.TIMESTAMPTZ),
}


def _as_utc(value: date) -> datetime:
    """A date or datetime as PostgreSQL compares it with a timestamptz in a UTC session."""
    if not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


PENDING_ROWS = 50_000


class DirectRestart(SynkroError):
    """The direct writes were rolled back: the stream is read again, onto staging (never leaves
    the data layer)."""


class FileRestart(SynkroError):
    """A file COPYed straight into the target was rolled back to its savepoint: it is staged
    instead (never leaves the data layer)."""


class DirectLoad:
    """The direct path of one load (see the module docstring); `load` is the `_Load` it serves."""

    def __init__(self, load: _Load) -> None:
        self.load = load
        self.kind: str | None = None  # "records", "arrow" or "copy" once started
        self.allowed = self.eligible()
        self.fresh = False  # the target was created by this load
        self.landed = False  # the whole load went direct (finish() ran)
        self.existing: dict[str, str] = {}  # the target's columns before this load
        self.types: dict[Any, str] = {}  # column key -> the type its target column has
        self.rows = 0
        # Records' cursor and key values waiting to be staged, and their staging columns.
        self.pending: list[Sequence[Any]] = []
        self.pending_stages: tuple[str, ...] = ()
        self._now: datetime | None = None  # the transaction's now(), for max_future
        self.savepoint: Any = None
        self.writer: Any = None
        self.file_rows: int | None = None  # rows of a file COPYed by csv_file, not yet finished
        self.file_declined = False  # a file went back to staging: the others of the load too
        self.stats_before = replace(
            load.stats,
            columns_added=list(load.stats.columns_added),
            types_widened=list(load.stats.types_widened),
        )

    def eligible(self) -> bool:
        load, target = self.load, self.load.target
        if not load.direct_allowed or not callable(load.reader) or target.write_mode != "merge":
            return False
        if target.marker is not None or load.partitioned:
            return False
        declared = [*target.column_hints.values(), *load.read.column_types.values()]
        return not any(types.exact_type(name) for name in declared)

    @property
    def active(self) -> bool:
        return self.kind is not None

    # --- start --------------------------------------------------------------------------------

    def start(self, part: Part, kind: str) -> bool:
        """At the first batch with rows: whether this load goes direct (decided once)."""
        if not self.allowed:
            return False
        self.allowed = False
        load = self.load
        if part.isolated or part.identity is not None:
            return False
        existing = types.existing_columns(load.conn, load.schema, load.table)
        if existing is not None and (kind == "copy" or load.integration_has_rows()):
            return False
        self.savepoint = load.conn.begin_nested()
        load.lock_target()
        existing = types.existing_columns(load.conn, load.schema, load.table)
        if existing is not None:
            keep = {"tenant_id", "integration_id", "_synkro_synced_at", *load.pk_names}
            required = types.not_null_columns(load.conn, load.schema, load.table) - keep
            if kind == "copy" or required or load.integration_has_rows():
                self.savepoint.rollback()  # releases the table's lock taken inside it
                self.savepoint = None
                return False
        load.stager.close()
        now = load.fetch_one(sql.SQL("select now()"))
        assert now is not None
        self._now = now[0]
        self.writer = load.new_stager(load.target_sql)
        self.kind = kind
        self.fresh = existing is None
        self.existing = existing or {}
        if self.fresh:
            load.create_table(direct=True)
        else:
            load.evolve_table(existing or {})
        self.types = {key: column.type for key, column in load.columns.items()}
        return True

    def begin(self, part: Part, kind: str) -> bool:
        """Whether this batch goes direct: the first batch starts the path (or not); a batch that
        does not fit the path's start goes back to staging."""
        if not self.active:
            return self.start(part, kind)
        if self.kind != kind or part.isolated or part.identity is not None:
            raise self.undo(f"a {kind} batch of part '{part.name}' after {self.kind} batches")
        return True

    def decline(self) -> None:
        """The first batch is staged: so is every other of this load."""
        self.allowed = False

    def expected_type(self, column: Any) -> str:
        """The type staging would give the column's target column, from what was seen so far."""
        load = self.load
        have = self.existing.get(column.name)
        declared = load.target.column_hints.get(column.key) or load.read.column_types.get(
            column.key
        )
        if have is not None and column.seen is None and not declared:
            return have
        wanted = load.wanted_type(column)
        return wanted if have is None else (types.join_types(have, wanted) or have)

    def keep_types(self) -> None:
        """Before a batch is written: new columns are added; a changed type restarts."""
        load = self.load
        new = []
        for key, column in load.columns.items():
            expected = self.expected_type(column)
            if key not in self.types:
                new.append(column)
            elif expected != self.types[key]:
                raise self.undo(f"column '{column.name}' would become {expected}")
        if not new:
            return
        if self.fresh:
            # Staging creates it before the system columns; a new table cannot add it there.
            raise self.undo(f"column '{new[0].name}' appeared after the table was created")
        self.pause()
        load.evolve_table(types.existing_columns(load.conn, load.schema, load.table) or {})
        self.types.update({c.key: c.type for c in new})

    # --- writes -------------------------------------------------------------------------------

    def constants(self) -> tuple[str, str, str]:
        context = self.load.context
        return (context.tenant_id, context.integration_id, context.run_id)

    def records(self, part: Part, rows: Iterable[Sequence[Any]], count: int) -> bool:
        """Write a records batch (rows in `load.columns` order) to the target; False: stage it."""
        load = self.load
        if not self.begin(part, "records"):
            return False
        self.keep_types()
        rows = rows if isinstance(rows, list) else list(rows)
        names = tuple(c.name for c in load.columns.values())
        written: Iterable[Sequence[Any]] = rows
        if not self.fresh:
            names += _CONSTANTS
            written = map(tuple.__add__, rows, repeat(self.constants()))
        try:
            self.writer.write(names, written)  # the COPY stays open across batches
        except _UNDO as error:
            raise self.undo(error) from None
        self.rows += count
        # The cursor (and the keys that name a record) in the source's own text, staged for the
        # cursor in bounded rounds (one COPY at a time: the target's pauses meanwhile).
        picked = self.cursor_columns()
        if picked:
            positions = [list(load.columns.values()).index(c) for c in picked]
            rows = self.cursor_candidates(rows, positions[0], picked[0])
            if len(positions) > 1:
                self.pending.extend(map(itemgetter(*positions), rows))
            else:
                self.pending.extend(zip(map(itemgetter(positions[0]), rows), strict=True))
            self.pending_stages = tuple(c.stage for c in picked)
            if len(self.pending) >= PENDING_ROWS:
                self.stage_pending()
        return True

    def pause(self) -> None:
        """End the open COPY into the target (one statement at a time on the connection)."""
        if self.writer is None:
            return
        try:
            self.writer.close()
        except _UNDO as error:
            raise self.undo(error) from None

    def cursor_candidates(
        self, rows: list[Sequence[Any]], position: int, column: Any
    ) -> list[Sequence[Any]]:
        """The rows of a batch the cursor's SQL can depend on: where Python orders the cursor's
        values exactly as PostgreSQL orders the column (ints and Decimals in a number column,
        dates, datetimes of one kind), the rows at the batch's newest value that is surely not
        beyond now + max_future, and every row above it (the ones counted as future); else all.
        """
        values = list(map(itemgetter(position), rows))
        present = [v for v in values if v is not None]
        kinds = set(map(type, present))
        if len(kinds) != 1:
            return rows
        (kind,) = kinds
        if (kind, column.type) not in _ORDERED:
            return rows
        if kind is datetime and len({v.tzinfo is None for v in present}) != 1:
            return rows
        spec = self.load.target.cursor_spec
        floor = max(present)
        if spec is not None and spec.max_future is not None:
            if kind not in (date, datetime) or spec.format in EPOCH_FORMATS:
                return rows
            # A second short of the server's limit: what is above may be future, and is kept.
            limit = self.server_now() + parse_duration(spec.max_future) - timedelta(seconds=1)
            below = [v for v in present if _as_utc(v) <= limit]
            if not below:
                return rows
            floor = max(below)
        return [
            row
            for row, value in zip(rows, values, strict=True)
            if value is not None and value >= floor
        ]

    def server_now(self) -> datetime:
        assert self._now is not None  # read in start(), before any COPY opened
        return self._now

    def stage_pending(self) -> None:
        load = self.load
        self.pause()
        if self.pending:
            load.stager.write(self.pending_stages, self.pending)
            load.stager.close()
            self.pending = []

    def arrow(self, part: Part, batch: pa.RecordBatch) -> int | None:
        """Write an Arrow batch to the target; None: stage it."""
        load = self.load
        if not self.active and not self.allowed:
            return None
        arrays = load.arrow_arrays(part, batch)
        if batch.num_rows == 0:
            return 0
        if not self.active and self.fit(arrays) is None:
            self.decline()
            return None
        if not self.begin(part, "arrow"):
            return None
        self.keep_types()
        fitted = self.fit(arrays)  # the types as the target has them now
        if fitted is None:
            raise self.undo("an Arrow column whose type is not the target's")
        names = [column.name for column, _ in fitted]
        values = [array for _, array in fitted]
        if not self.fresh:
            import pyarrow as pa

            names += _CONSTANTS
            values += [
                pa.array(repeat(v, batch.num_rows), pa.large_string()) for v in self.constants()
            ]
        if names:
            try:
                self.writer.write_binary(tuple(names), encode_arrow(values, names))
            except _UNDO as error:
                raise self.undo(error) from None
        self.rows += batch.num_rows
        return batch.num_rows

    def fit(self, arrays: list[tuple[Any, pa.Array, str]]) -> list[tuple[Any, pa.Array]] | None:
        """Each array as the binary type of its target column, or None if one is not it."""
        fitted = []
        for column, values, stage_type in arrays:
            expected = self.expected_type(column)
            if stage_type != expected:
                if stage_type not in _INTEGERS or expected not in _INTEGERS:
                    return None
                values = _fit(values, expected)  # an int64 array of integer values
                if values is None:
                    return None
            fitted.append((column, values))
        return fitted

    # --- a CSV file into a new table --------------------------------------------------------

    def file_eligible(self, part: Part, batch: CsvCopyBatch) -> bool:
        """Whether a file's CSV pass-through can be COPYed straight into the target: a `merge`
        stream without markers, sweeps, periods or declared NOT NULLs; the load's first file
        with rows (nothing staged or merged before it); no SQL conversion and no sized type (the
        staged values are the target's values as they are)."""
        load, target = self.load, self.load.target
        if not load.direct_allowed or self.active or self.file_declined or not part.isolated:
            return False
        if target.write_mode != "merge" or target.marker is not None or target.sweep is not None:
            return False
        if load.partitioned or load.read.not_null or load.columns or load.merged_parts:
            return False
        if any(c.convert is not None for c in batch.columns):
            return False
        declared = [
            *target.column_hints.values(),
            *load.read.column_types.values(),
            *(c.declared for c in batch.columns if c.declared),
        ]
        return not any(types.exact_type(name) for name in declared)

    def csv_file(self, part: Part, batch: CsvCopyBatch) -> int | None:
        """COPY a clean CSV file into the table it creates (see `file_eligible`); None: the file
        is staged. The file's savepoint covers everything done here: a PostgreSQL error is raised
        as a FileRestart, on which the data layer rolls the file back and stages it (`load_part`)."""
        load = self.load
        if not self.file_eligible(part, batch):
            return None
        if types.existing_columns(load.conn, load.schema, load.table) is not None:
            return None
        load.lock_target()  # what the file's merge takes; held to the commit either way
        if types.existing_columns(load.conn, load.schema, load.table) is not None:
            return None
        names = [column.name for column in batch.columns]
        load.add_columns(names)
        stage_types = dict(zip(names, (c.stage_type for c in batch.columns), strict=True))
        for name in names:
            if load.wanted_type(load.columns[name]) != stage_types[name]:
                return None  # the merge would cast: staged
        # The staging columns as staging would type them (the cursor is staged from the target).
        load.retype_stage({load.columns[n].stage: stage_types[n] for n in names})
        load.stager.close()
        load.create_table(direct=True)
        writer = load.new_stager(load.target_sql)
        try:
            rows = writer.copy_raw(tuple(names), batch.chunks, load.csv_options(batch, False))
        except BaseException as error:
            writer.abort(error)
            writer.dispose()
            if isinstance(error, psycopg.Error):
                raise FileRestart(f"file {part.name}: {error}") from None
            raise
        writer.dispose()
        batch.rows = rows
        load.stager.part_rows += rows
        load.check_csv(batch, rows, load.target_sql, staged=False)
        self.file_rows = rows
        return rows

    def finish_file(self, part: Part) -> bool:
        """After a file COPYed by `csv_file`: the table completed and the cursor moved as the
        file's merge does; False when the file was staged (merge it)."""
        load = self.load
        if self.file_rows is None:
            return False
        rows, self.file_rows = self.file_rows, None
        try:
            self.complete_table()  # a repeated key fails the primary key
        except _UNDO as error:
            raise FileRestart(f"file {part.name}: {error}") from None
        load.fresh_table = False
        load.apply_comments(True)
        load.stats.rows_inserted += rows
        load.stats.load_path = "direct"
        self.stage_cursor_columns()
        load.stats.cursor_after = load.stats.cursor_before
        load.advance_cursor()
        return True

    def copy(self, part: Part, batch: CopyBatch) -> int | None:
        """Stream a binary COPY batch into a new target; None: stage it."""
        load = self.load
        if not self.active and not self.allowed:
            return None
        names = [name for name, _ in batch.columns]
        new = [name for name in names if name not in load.columns]
        if new:
            load.add_columns(new)
        for name, source_type in batch.columns:
            column = load.columns[name]
            column.seen = types.join_types(column.seen, types.canonical_type(source_type))
        same = all(
            self.expected_type(load.columns[name]) == source_type
            for name, source_type in batch.columns
        )
        if not self.active and not same:
            self.decline()
            return None
        if not self.begin(part, "copy"):
            return None
        if not same:
            raise self.undo("a COPY batch whose types are not the target's")
        self.keep_types()
        try:
            rows = self.writer.copy_raw(tuple(load.columns[n].name for n in names), batch.chunks)
        except _UNDO as error:
            raise self.undo(error) from None
        batch.rows = rows
        self.rows += rows
        load.check_copied_keys(part, load.target_sql, staged=False)
        return rows

    # --- finish -------------------------------------------------------------------------------

    def cursor_columns(self) -> list[Any]:
        """The staged columns the cursor is computed from: the cursor's and the key's."""
        load = self.load
        cursor = load.cursor_column()
        if cursor is None:
            return []
        keys = [load.columns[k] for k in load.pk_keys if k in load.columns]
        return [cursor, *(c for c in keys if c is not cursor)]

    def finish(self) -> None:
        """After the last batch: constraints of a new table, the cursor, the savepoint released."""
        load = self.load
        self.stage_pending()
        try:
            if self.fresh:
                self.complete_table()
        except _UNDO as error:
            raise self.undo(error) from None
        load.stats.rows_inserted += self.rows
        load.stats.load_path = "direct"
        load.apply_comments(self.fresh)
        if self.kind != "records":
            self.stage_cursor_columns()
        load.stats.cursor_after = load.stats.cursor_before
        load.advance_cursor()
        self.savepoint.commit()
        self.writer.dispose()
        load.fresh_table = False
        self.landed = True

    def complete_table(self) -> None:
        load = self.load
        load.execute(types.alter_columns(load.target_sql, "drop default", _CONSTANTS))
        declared = [c for c in load.columns.values() if c.key in load.read.not_null]
        if declared:
            row = load.fetch_one(
                sql.SQL("select {} from {}").format(
                    sql.SQL(", ").join(
                        sql.SQL("coalesce(bool_or({} is null), false)").format(
                            sql.Identifier(c.name)
                        )
                        for c in declared
                    ),
                    load.target_sql,
                )
            )
            assert row is not None
            whole = [c for c, has_null in zip(declared, row, strict=True) if not has_null]
            if whole:
                load.execute(
                    types.alter_columns(load.target_sql, "set not null", (c.name for c in whole))
                )
        load.add_primary_key()

    def stage_cursor_columns(self) -> None:
        """Typed batches: the cursor and key columns staged from the landed rows (same type)."""
        load = self.load
        picked = self.cursor_columns()
        if not picked:
            return
        load.retype_stage({c.stage: c.type for c in picked})
        load.execute(
            sql.SQL("insert into {} ({}) select {} from {} where integration_id = {}").format(
                sql.Identifier(STAGE_TABLE),
                sql.SQL(", ").join(sql.Identifier(c.stage) for c in picked),
                sql.SQL(", ").join(sql.Identifier(c.name) for c in picked),
                load.target_sql,
                sql.Literal(load.context.integration_id),
            )
        )

    # --- back to staging ----------------------------------------------------------------------

    def abort(self, error: BaseException) -> None:
        if self.writer is not None:
            self.writer.abort(error)

    def undo(self, reason: object) -> DirectRestart:
        """Roll the direct writes back; the caller raises the returned DirectRestart."""
        load = self.load
        self.writer.abort(DirectRestart(str(reason)))
        load.stager.abort(DirectRestart(str(reason)))
        self.savepoint.rollback()
        self.writer.dispose()
        self.kind = None
        return DirectRestart(str(reason))

    def restart(self) -> None:
        """Set the load back to where its first part began, direct path off."""
        load = self.load
        load.stats = self.stats_before
        load.reset_staging()
