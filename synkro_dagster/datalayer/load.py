"""Lands a stream read in PostgreSQL: COPY into staging, evolve the target, merge, commit the cursor.

One load is one transaction. Every part's batches are COPYed (text format, psycopg's C
`write_row`) into a temporary staging table whose columns are all `text`; after the last part the
target table is created or widened, the staged rows are cast and merged into it, and the stream's
new cursor is written to `synkro.sync_state`. A crash anywhere before the commit leaves the table
and the cursor as they were.

Tables are shared by every integration of a spec, so all writes are scoped by `integration_id`,
and DDL plus merge run under a transaction-level advisory lock per target table: two loads into
the same table never deadlock on schema changes, they take turns for the (short) merge only.

Append and replace tables have no primary key (append may legitimately hold repeated records);
they get an index on `integration_id` instead, which the replace delete and the boundary check use.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import chain, repeat
from operator import itemgetter
from typing import Any, Literal

import psycopg
import sqlalchemy as sa
from psycopg import sql
from psycopg.abc import Query
from psycopg.adapt import Dumper

from synkro_dagster import jsonnumbers
from synkro_dagster.contracts import (
    CopyBatch,
    CsvCopyBatch,
    Part,
    Record,
    SourceDataError,
    StreamRead,
)
from synkro_dagster.datalayer import deletes
from synkro_dagster.datalayer import schema as types
from synkro_dagster.datalayer.copy_binary import (
    COPY_HEADER,
    COPY_TRAILER,
    TypedStaging,
    is_arrow_batch,
    staged_value,
)
from synkro_dagster.datalayer.deletes import DELETED_AT, Marker
from synkro_dagster.datalayer.direct import DirectLoad, DirectRestart, FileRestart
from synkro_dagster.datalayer.identifiers import column_name, qualified, table_name
from synkro_dagster.datalayer.state import (
    claim_part,
    lock_stream,
    read_cursor,
    set_part_rows,
    write_state,
)
from synkro_dagster.specs.cursors import (
    EPOCH_FORMATS,
    CursorValueError,
    as_time,
    parse_duration,
    read_start,
)
from synkro_dagster.specs.models import CursorSpec, DeleteMarker, SourceSpec, StreamSpec

log = logging.getLogger(__name__)

WriteMode = Literal["merge", "append", "replace", "history"]
HISTORY_ROWS = "synkro_history_rows"
PARTITION_COLUMN = "partition_date"  # a report stream's period, landed in every row
CURRENT_VIEW_SUFFIX = "_current"
# The connector's read of a stream, given where it starts (None: everything).
ReadFrom = Callable[[str | None], StreamRead]
DEFAULT_LOCK_TIMEOUT_S = 600.0

STAGE_TABLE = "synkro_stage"
SEEN_TABLE = "synkro_seen_keys"  # keys every merged part of a sweeping load brought
_EXAMPLE_CHARS = 300


@dataclass(frozen=True)
class TableTarget:
    """Where a stream lands and how: `<schema>.<table>`, its key, cursor field and write mode."""

    schema: str
    table: str
    primary_key: list[str]
    write_mode: WriteMode
    cursor_field: str | None = None
    # Spec type hints (PostgreSQL type names by record field); they win over declared and inferred.
    column_hints: dict[str, str] = field(default_factory=dict)
    # After a complete full read (merge only): soft-delete or delete the rows it did not return.
    sweep: Literal["soft", "hard"] | None = None
    # A record field that marks deletions (merge only).
    marker: Marker | None = None
    # A replace or sweep removing more than this share of the integration's rows fails.
    max_delete_fraction: float = 0.5
    # History mode: the columns whose change opens a new version (None: every column).
    track_columns: list[str] | None = None
    # A partitioned (report) stream: the column holding the period; a load replaces one period.
    partition_column: str | None = None
    # The stream's cursor settings (format, lookback, max_future, initial); a target made from a
    # bare `cursor_field` gets the defaults.
    cursor: CursorSpec | None = None

    @classmethod
    def for_stream(cls, source: SourceSpec, stream: StreamSpec) -> TableTarget:
        policy = source.deletes_for(stream)
        return cls(
            schema=source.target_schema,
            table=source.table_for(stream),
            # Landed names: a spec's rename / naming rule applies to keys, cursor and hints too.
            primary_key=source.landed_primary_key(stream),
            write_mode=stream.write_mode,
            cursor_field=source.landed_cursor(stream),
            column_hints=source.landed_hints(stream),
            sweep=policy if policy in ("soft", "hard") else None,  # type: ignore[arg-type]
            marker=Marker(source.landed(stream, policy.field), policy.value, policy.mode == "hard")
            if isinstance(policy, DeleteMarker)
            else None,
            max_delete_fraction=stream.max_delete_fraction,
            track_columns=(
                [source.landed(stream, f) for f in stream.track_columns]
                if stream.track_columns is not None
                else None
            ),
            partition_column=PARTITION_COLUMN if stream.partitioned_by else None,
            cursor=_landed_cursor_spec(source, stream),
        )

    @property
    def soft_deletes(self) -> bool:
        """Rows are marked with _synkro_deleted_at rather than deleted."""
        return self.sweep == "soft" or (self.marker is not None and not self.marker.hard)

    @property
    def cursor_spec(self) -> CursorSpec | None:
        if self.cursor is not None:
            return self.cursor
        return CursorSpec(field=self.cursor_field) if self.cursor_field else None


def _landed_cursor_spec(source: SourceSpec, stream: StreamSpec) -> CursorSpec | None:
    """The stream's cursor settings (a child stream's are its parent's), naming the landed column."""
    spec = stream.cursor
    if spec is None and stream.parent is not None:
        spec = source.stream(stream.parent).cursor
    column = source.landed_cursor(stream)
    if spec is None or column is None:
        return None
    return spec.model_copy(update={"field": column})


@dataclass(frozen=True)
class LoadContext:
    """Who the rows belong to and which run wrote them."""

    tenant_id: str
    integration_id: str
    stream: str
    run_id: str
    full_refresh: bool = False
    # The read sent no cursor filter (a stream without cursor always reads whole): only then may
    # a cursor stream's sweep run. A function of where the read started, when that is known only
    # once the data layer has read the cursor under the stream's lock.
    reads_whole_source: bool | Callable[[str | None], bool] = False
    # The run tag synkro/allow_mass_delete=true: the max_delete_fraction guard lets this load pass.
    allow_mass_delete: bool = False
    # A partitioned stream's period (its first day, ISO): the load replaces exactly its rows.
    partition: str | None = None
    # Where "waiting for another run of this stream" is said (a Dagster run's context.log).
    log: Any = None


@dataclass
class LoadStats:
    """What one load did; `as_metadata` is what a materialization reports."""

    rows_read: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_deleted: int = 0
    rows_unchanged: int = 0
    duplicates_collapsed: int = 0
    duplicate_key_example: dict | None = None
    columns_added: list[str] = field(default_factory=list)
    types_widened: list[str] = field(default_factory=list)  # e.g. "amount: integer -> numeric"
    cursor_before: str | None = None
    cursor_after: str | None = None
    read_from: str | None = None  # where the read started (initial, lookback applied)
    # Records dated beyond now + max_future: landed, but they did not move the cursor.
    future_records: int = 0
    future_record_example: dict | None = None
    future_limit: str | None = None
    parts_loaded: int = 0
    parts_skipped: int = 0
    parts_rejected: int = 0
    seconds: float = 0.0
    table_created: bool = False
    deletes: str | None = None  # what the delete handling did, e.g. "soft sweep: 3 rows"
    # "direct": COPYed straight into an empty target (direct.py); "staging": staged and merged;
    # "direct, then staging": a file drop's first file went straight in, later files were merged.
    load_path: str = "staging"

    def as_metadata(self) -> dict[str, int | float | str]:
        """Numbers stay numbers (the UI plots them); lists and keys become short text."""
        metadata: dict[str, int | float | str] = {
            "rows_read": self.rows_read,
            "rows_inserted": self.rows_inserted,
            "rows_updated": self.rows_updated,
            "rows_deleted": self.rows_deleted,
            "rows_unchanged": self.rows_unchanged,
            "duplicates_collapsed": self.duplicates_collapsed,
            "columns_added": len(self.columns_added),
            "types_widened": len(self.types_widened),
            "parts_loaded": self.parts_loaded,
            "parts_skipped": self.parts_skipped,
            "parts_rejected": self.parts_rejected,
            "seconds": round(self.seconds, 3),
            "load_path": self.load_path,
        }
        if self.duplicate_key_example is not None:
            metadata["duplicate_key_example"] = json.dumps(self.duplicate_key_example, default=str)
        if self.columns_added:
            metadata["columns_added_names"] = ", ".join(self.columns_added)
        if self.types_widened:
            metadata["types_widened_detail"] = "; ".join(self.types_widened)
        if self.deletes is not None:
            metadata["deletes"] = self.deletes
        if self.cursor_before is not None:
            metadata["cursor_before"] = self.cursor_before
        if self.cursor_after is not None:
            metadata["cursor_after"] = self.cursor_after
        if self.read_from is not None:
            metadata["read_from"] = self.read_from
        metadata["future_records"] = self.future_records
        return metadata


@dataclass
class _Column:
    key: Any  # the record key as the source sent it
    name: str  # target column
    stage: str  # staging column
    seen: str | None = None  # type inferred from the data so far
    type: str = types.TEXT  # final target type, set before the merge


class _BoolText(Dumper):
    # psycopg writes 't'/'f'; 'true'/'false' reads the same as a boolean and better as text.
    def dump(self, obj: Any) -> bytes:
        return b"true" if obj else b"false"


class _JsonText(Dumper):
    def dump(self, obj: Any) -> bytes:
        # Decimals print as exact JSON numbers: {"price": 1.10} stays the number 1.10.
        return jsonnumbers.dumps(obj).encode()


class _Stager:
    """Keeps one COPY open across batches while the staged column list stays the same."""

    def __init__(self, connection: psycopg.Connection, table: sql.Composable | None = None) -> None:
        self._table = table if table is not None else sql.Identifier(STAGE_TABLE)
        # A cursor of its own: its dumpers render values the way the text staging columns want.
        self._cursor = connection.cursor()
        self._cursor.adapters.register_dumper(bool, _BoolText)
        for kind in (dict, list, tuple):
            self._cursor.adapters.register_dumper(kind, _JsonText)
        self._columns: tuple[str, ...] = ()
        self._binary = False
        self._context: Any = None
        self._copy: Any = None
        # Rows of the current part written so far, and before the open COPY began: PostgreSQL
        # numbers COPY lines from 1 per COPY, the part's reader numbers its records.
        self.part_rows = 0
        self.part_rows_before_copy = 0

    def start_part(self) -> None:
        self.close()
        self.part_rows = self.part_rows_before_copy = 0

    def _open(self, columns: tuple[str, ...], binary: bool) -> None:
        if self._copy is not None and columns == self._columns and binary == self._binary:
            return
        self.close()
        statement = sql.SQL("copy {} ({}) from stdin{}").format(
            self._table,
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(" (format binary)" if binary else ""),
        )
        self._context = self._cursor.copy(statement)
        self._copy = self._context.__enter__()
        self._columns, self._binary = columns, binary
        if binary:
            self._copy.write(COPY_HEADER)

    def write(self, columns: tuple[str, ...], rows: Iterable[Sequence[Any]]) -> None:
        if self._copy is None or columns != self._columns or self._binary:
            self._open(columns, binary=False)
            self.part_rows_before_copy = self.part_rows
        write_row = self._copy.write_row
        for row in rows:
            write_row(row)

    def write_binary(self, columns: tuple[str, ...], tuples: bytes) -> None:
        """Binary COPY tuples (no header/trailer) into `columns`; the COPY stays open."""
        self._open(columns, binary=True)
        self._copy.write(tuples)

    def copy_raw(
        self,
        columns: tuple[str, ...],
        chunks: Iterable[bytes],
        options: sql.Composable = sql.SQL("format binary"),
    ) -> int:
        """A whole COPY stream (binary: header to trailer) into `columns`; returns its row count."""
        self.close()
        statement = sql.SQL("copy {} ({}) from stdin ({})").format(
            self._table, sql.SQL(", ").join(map(sql.Identifier, columns)), options
        )
        self._context = self._cursor.copy(statement)
        self._copy = self._context.__enter__()
        self._columns, self._binary = (), False
        write = self._copy.write
        for chunk in chunks:
            write(chunk)
        context, self._context, self._copy = self._context, None, None
        context.__exit__(None, None, None)
        return max(self._cursor.rowcount, 0)

    def close(self) -> None:
        if self._context is not None:
            if self._binary:
                self._copy.write(COPY_TRAILER)
            context, self._context, self._copy = self._context, None, None
            context.__exit__(None, None, None)

    def dispose(self) -> None:
        self._cursor.close()

    def abort(self, error: BaseException) -> None:
        """End an open COPY with an error (CopyFail), leaving the connection usable for ROLLBACK."""
        if self._context is not None:
            context, self._context, self._copy = self._context, None, None
            # The server answers with "COPY failed"; the caller rolls back.
            with contextlib.suppress(psycopg.Error):
                context.__exit__(type(error), error, error.__traceback__)


class _Load(TypedStaging):
    def __init__(
        self,
        conn: sa.Connection,
        target: TableTarget,
        read: StreamRead | ReadFrom,
        context: LoadContext,
        batch_rows: int,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
        direct: bool = True,
    ) -> None:
        self.conn = conn
        self.direct_allowed = direct  # False: always staged and merged (direct.py off)
        self.pg: psycopg.Connection = conn.connection.driver_connection  # type: ignore[assignment]
        self.cursor = self.pg.cursor()
        self.target = target
        self.reader = read
        self.read = StreamRead(parts=iter(()))
        self.lock_timeout_s = lock_timeout_s
        self.context = context
        self.batch_rows = max(1, batch_rows)
        self.stats = LoadStats()
        self.columns: dict[Any, _Column] = {}
        self._unfit: set[Any] = set()  # keys whose sized declared type the values do not fit
        self._nulls: set[Any] = set()  # keys of NOT NULL candidates that got a null
        self._getter: Any = None
        self.done_parts: list[Part] = []
        # Isolated parts (files) are merged one by one inside their own savepoint, so that every
        # error a file causes, PostgreSQL's included, rolls back that file alone.
        self.merged_parts = 0
        self.unmerged_rows = False  # rows of a non-isolated part wait in staging
        self.replaced = False  # `replace` deleted this integration's rows in this load
        self.fresh_table = False  # created by this load and still without its primary key
        # The integration's (live) rows before this load's first change; None until counted.
        self.rows_before: int | None = None
        self.merge_duplicates = 0  # repeated keys collapsed by the current merge
        self.stager = _Stager(self.pg)
        self.direct: DirectLoad | None = None  # straight into an empty target (direct.py)
        # Staging column types other than text (typed batches) and the columns holding values.
        self.stage_types: dict[str, str] = {}
        self.stage_filled: set[str] = set()
        # Staged CSV text's conversions to what the target type reads (copy_binary.stage_csv).
        self.stage_convert: dict[str, Any] = {}
        self.schema = table_name(target.schema)
        self.table = table_name(target.table)
        self.target_sql = qualified(target.schema, target.table)
        self.pk_keys = list(target.primary_key)
        self.pk_names = [column_name(k) for k in self.pk_keys]

    # --- staging ---------------------------------------------------------------------------

    def run(self) -> None:
        self.execute(sql.SQL("set local timezone = 'UTC'"))
        # Room for the dedupe sort and the staged rows (temp_buffers only takes effect if this
        # session has not used a temporary table yet; beyond it the staging spills to temp files).
        self.execute(sql.SQL("set local work_mem = '64MB'"))
        self.execute(sql.SQL("set local temp_buffers = '64MB'"))
        # One writer per (integration, stream): the cursor this read starts from is the one read
        # under the lock, so a second run can neither re-read the same range nor move it back.
        lock_stream(
            self.cursor,
            self.context,
            timeout_s=self.lock_timeout_s,
        )
        self.stats.cursor_before = read_cursor(
            self.conn, self.context.integration_id, self.context.stream
        )
        spec = self.target.cursor_spec
        try:
            self.stats.read_from = read_start(
                spec, self.stats.cursor_before, self.context.full_refresh
            )
        except CursorValueError as error:
            raise CursorValueError(
                f"stream '{self.context.stream}' (integration {self.context.integration_id}):"
                f" {error}. Fix cursor.lookback in the spec."
            ) from None
        if callable(self.reader):
            self.read = self.reader(self.stats.read_from)
        else:
            self.read = self.reader
        self.execute(
            sql.SQL("create temp table {} () on commit drop").format(sql.Identifier(STAGE_TABLE))
        )
        if self.target.sweep is not None:
            self.execute(deletes.create_seen_keys(sql.Identifier(SEEN_TABLE)))
        self.direct = DirectLoad(self)
        try:
            try:
                self.load_parts()
            except DirectRestart as reason:
                log.info(
                    "stream %s (integration %s): loading through staging: %s",
                    self.context.stream,
                    self.context.integration_id,
                    reason,
                )
                self.direct.restart()
                assert callable(self.reader)
                self.read = self.reader(self.stats.read_from)
                self.load_parts()
        except BaseException as error:
            self.direct.abort(error)  # an open COPY into the target ends before the rollback
            raise
        self.finish_deletes()
        write_state(
            self.conn,
            integration_id=self.context.integration_id,
            stream=self.context.stream,
            tenant_id=self.context.tenant_id,
            cursor=self.stats.cursor_after,
            rows=self.stats.rows_inserted + self.stats.rows_updated,
            run_id=self.context.run_id,
        )

    def load_parts(self) -> None:
        for part in self.read.parts:
            self.load_part(part)
        self.stager.close()
        if self.direct is not None and self.direct.active:
            self.direct.finish()
        elif self.unmerged_rows or not self.merged_parts:
            self.merge()

    def reset_staging(self) -> None:
        """An empty staging table and nothing staged or merged (the load starts over)."""
        self.stager.start_part()
        self.execute(sql.SQL("drop table {}").format(sql.Identifier(STAGE_TABLE)))
        self.execute(
            sql.SQL("create temp table {} () on commit drop").format(sql.Identifier(STAGE_TABLE))
        )
        self.columns, self._getter = {}, None
        self._unfit, self._nulls = set(), set()
        self.stage_types, self.stage_filled = {}, set()
        self.stage_convert.clear()
        self.done_parts = []
        self.merged_parts, self.unmerged_rows, self.replaced, self.fresh_table = (
            0,
            False,
            False,
            False,
        )
        self.rows_before = None

    def new_stager(self, table: sql.Composable) -> _Stager:
        return _Stager(self.pg, table)

    def load_part(self, part: Part) -> None:
        savepoint = self.conn.begin_nested() if part.isolated else None
        snapshot = {k: replace(c) for k, c in self.columns.items()}
        stats = replace(
            self.stats,
            columns_added=list(self.stats.columns_added),
            types_widened=list(self.stats.types_widened),
        )
        flags = (self.merged_parts, self.replaced, self.fresh_table)
        stage_snapshot = (dict(self.stage_types), set(self.stage_filled))
        try:
            key = None
            if part.identity is not None:
                key = claim_part(
                    self.conn,
                    integration_id=self.context.integration_id,
                    stream=self.context.stream,
                    file_name=part.name,
                    content_hash=part.identity,
                    export_id=part.export_id,
                    dedupe=part.dedupe,
                    run_id=self.context.run_id,
                )
                if key is None:
                    if savepoint is not None:
                        savepoint.commit()
                    self.stats.parts_skipped += 1
                    self.done_parts.append(part)
                    return
            rows = self.stage_part(part)
            self.stager.close()
            if key is not None:
                set_part_rows(self.conn, self.context.integration_id, key, rows)
            if savepoint is not None:
                self.merge_part(part)
            else:
                self.unmerged_rows = True
            part.before_commit(self.conn)
            if savepoint is not None:
                savepoint.commit()
        except FileRestart as reason:
            # A file COPYed straight into the target that staging handles its own way (a
            # repeated key, a value PostgreSQL refuses): undone, and staged like the others.
            assert savepoint is not None and self.direct is not None
            self.stager.abort(reason)
            savepoint.rollback()
            self.columns, self._getter = snapshot, None
            self.stats = stats
            self.merged_parts, self.replaced, self.fresh_table = flags
            self.stage_types, self.stage_filled = stage_snapshot
            self.direct.file_declined = True
            log.info("stream %s: staging part %s: %s", self.context.stream, part.name, reason)
            part.again()
            self.load_part(part)
            return
        except (SourceDataError, psycopg.DataError, psycopg.errors.ProgramLimitExceeded) as error:
            self.stager.abort(error)
            if savepoint is None:
                raise
            # A part whose fast path failed is loaded again from its records (its own path).
            rejection: SourceDataError | None = None
            if not part.fall_back(error):
                rejection = (
                    error if isinstance(error, SourceDataError) else self.copy_error(part, error)
                )
            savepoint.rollback()
            self.columns, self._getter = snapshot, None
            self.stats = stats
            self.merged_parts, self.replaced, self.fresh_table = flags
            self.stage_types, self.stage_filled = stage_snapshot
            if rejection is None:
                log.info(
                    "stream %s: part %s: fast path refused, loading its records: %s",
                    self.context.stream,
                    part.name,
                    _first_line(error),
                )
                self.load_part(part)
                return
            log.warning(
                "stream %s: part %s rejected: %s", self.context.stream, part.name, rejection
            )
            part.rejected(rejection)
            self.stats.parts_rejected += 1
            return
        except BaseException as error:
            self.stager.abort(error)
            raise
        self.stats.parts_loaded += 1
        self.stats.rows_read += rows
        self.done_parts.append(part)

    def merge_part(self, part: Part) -> None:
        """Merge an isolated part's staged rows now, and empty the staging table for the next.

        A PostgreSQL error here (a value its column type rejects) is the part's: it becomes a
        SourceDataError naming the part, the row and the value, and the part is rolled back alone.
        """
        if self.direct is not None and self.direct.finish_file(part):
            self.merged_parts += 1
            self.execute(sql.SQL("truncate {}").format(sql.Identifier(STAGE_TABLE)))
            self.stage_filled.clear()
            return
        attempt = self.conn.begin_nested()
        try:
            self.merge(loading=True)
            attempt.commit()
        except (psycopg.DataError, psycopg.errors.ProgramLimitExceeded) as error:
            attempt.rollback()
            if self.stage_convert:
                # CSV text the conversions refused: the part falls back to its records, whose
                # reader names the line and value (no per-value search here).
                raise SourceDataError(f"{part.name}: {_first_line(error)}") from None
            raise self.merge_error(part, error) from None
        if self.stats.load_path == "direct":
            self.stats.load_path = "direct, then staging"  # an earlier file went straight in
        self.merged_parts += 1
        self.execute(sql.SQL("truncate {}").format(sql.Identifier(STAGE_TABLE)))
        self.stage_filled.clear()

    def copy_error(self, part: Part, error: psycopg.Error) -> SourceDataError:
        """A COPY error of an isolated part, placed by the part (file line) where PostgreSQL says."""
        message = _first_line(error)
        context = getattr(getattr(error, "diag", None), "context", None) or ""
        match = re.search(r"line (\d+)(?:, column (\w+))?(?:: (.*))?", context)
        where = ""
        if match:
            index = self.stager.part_rows_before_copy + int(match.group(1)) - 1
            where = part.locate(index) or f"record {index + 1}"
            stage = match.group(2)
            named = next((c.name for c in self.columns.values() if c.stage == stage), None)
            if named:
                where += f", column '{named}'"
            if match.group(3):
                where += f": value {_clip(match.group(3))}"
        return SourceDataError(
            f"{part.name}{' ' + where if where else ''}: PostgreSQL rejected a value: {message}"
        )

    def merge_error(self, part: Part, error: psycopg.Error) -> SourceDataError:
        """A merge error of an isolated part, with the row, column and value that caused it."""
        message = _first_line(error)
        detail = getattr(getattr(error, "diag", None), "message_detail", None)
        place = self.find_uncastable(part)
        return SourceDataError(
            f"{part.name}{place}: PostgreSQL rejected a value for the column's type: {message}"
            + (f"\n{detail}" if detail else "")
        )

    def find_uncastable(self, part: Part) -> str:
        """ " record 2, column 'amount': '1E+200000' (numeric)" for the first staged value of the
        part that its column's type refuses; "" if none is found. Error path only: a cast is
        tried value by value (PostgreSQL 15 has no pg_input_is_valid)."""
        typed = [c for c in self.columns.values() if c.type != types.TEXT]
        if not typed:
            return ""
        try:
            self.execute(
                sql.SQL(
                    "create or replace function pg_temp.synkro_castable(value text, type text)"
                    " returns boolean language plpgsql as $$ begin"
                    " execute format('select %L::%s', value, type); return true;"
                    " exception when others then return false; end $$"
                )
            )
            candidates = sql.SQL(", ").join(
                sql.SQL("({}, s.{}, {})").format(
                    sql.Literal(index),
                    sql.Identifier(column.stage),
                    sql.Literal(types.type_sql(column.type).as_string(self.pg)),
                )
                for index, column in enumerate(typed)
            )
            row = self.fetch_one(
                sql.SQL(
                    "select s.n, v.k, v.value from (select row_number() over (order by ctid) - 1"
                    " as n, * from {}) s, lateral (values {}) v(k, value, type)"
                    " where v.value is not null and not pg_temp.synkro_castable(v.value, v.type)"
                    " order by s.n, v.k limit 1"
                ).format(sql.Identifier(STAGE_TABLE), candidates)
            )
        except psycopg.Error:
            return ""  # the part is rolled back anyway; the message still says what was wrong
        if row is None:
            return ""
        column = typed[int(row[1])]
        where = part.locate(int(row[0])) or f"record {int(row[0]) + 1}"
        return f" {where}, column '{column.name}': {_clip(repr(row[2]))} ({column.type})"

    def stage_part(self, part: Part) -> int:
        self.stager.start_part()
        self.stage_convert.clear()
        rows = 0
        direct = self.direct
        if direct is not None:
            direct.file_rows = None  # only this part's own direct COPY is finished as its merge
        for batch in part.typed_batches():
            if isinstance(batch, CopyBatch):
                landed = direct.copy(part, batch) if direct is not None else None
                rows += self.stage_copy(part, batch) if landed is None else landed
                continue
            if isinstance(batch, CsvCopyBatch):
                landed = None
                if direct is not None:
                    direct.decline()  # a file: a part of its own, never the whole load direct
                    landed = direct.csv_file(part, batch)
                rows += self.stage_csv(part, batch) if landed is None else landed
                continue
            if not isinstance(batch, list) and is_arrow_batch(batch):
                landed = direct.arrow(part, batch) if direct is not None else None
                rows += self.stage_arrow(part, batch) if landed is None else landed
                continue
            if len(batch) <= self.batch_rows:
                rows += self.stage_batch(part, batch)
                continue
            for start in range(0, len(batch), self.batch_rows):
                rows += self.stage_batch(part, batch[start : start + self.batch_rows])
        return rows

    def stage_batch(self, part: Part, batch: list[Record]) -> int:
        if not batch:
            return 0
        rows = self.rows_of_known_keys(batch)
        if rows is not None:
            # Per-column itemgetter passes: cheaper than transposing with zip(*rows).
            data: list[Sequence[Any]] = [
                list(map(itemgetter(position), rows)) for position in range(len(self.columns))
            ]
        else:
            data = self.columns_of_any_keys(part, batch)
        converted = False
        for position, column in enumerate(self.columns.values()):
            values = data[position]
            if isinstance(values, repeat):
                continue
            if column.key in self.pk_keys and None in values:
                raise self.null_key_error(part, column.key, batch[list(values).index(None)])
            found, convert = types.infer_column(values)
            if found is not None:
                column.seen = types.join_types(column.seen, found)
            if convert is not None:
                data[position] = convert(values)
                converted = True
        staged: Iterable[tuple[Any, ...]] = (
            zip(*data, strict=False) if rows is None or converted else rows
        )
        direct = self.direct
        if direct is not None and direct.records(part, staged, len(batch)):
            self.stager.part_rows += len(batch)
            return len(batch)
        if self.stage_types:
            self.text_staging()
        self.stage_filled.update(c.stage for c in self.columns.values())
        if self.columns:
            try:
                self.stager.write(tuple(c.stage for c in self.columns.values()), staged)
            except psycopg.DataError as error:
                if part.isolated:
                    raise self.value_error(part, batch, error) from None
                raise
        self.stager.part_rows += len(batch)
        return len(batch)

    def value_error(self, part: Part, batch: list[Record], error: psycopg.Error) -> SourceDataError:
        """A value psycopg cannot send (a NUL character): which record, field and value."""
        for index, record in enumerate(batch):
            for key, value in record.items():
                text = value if isinstance(value, str) else json.dumps(value, default=str)
                if "\x00" in text or "\\u0000" in text:
                    where = part.locate(self.stager.part_rows + index)
                    where = where or f"record {self.stager.part_rows + index + 1}"
                    return SourceDataError(
                        f"{part.name} {where}, column '{key}': {_clip(repr(value))} contains a NUL"
                        " character, which PostgreSQL cannot store in text"
                    )
        return SourceDataError(f"{part.name}: PostgreSQL rejected a value: {_first_line(error)}")

    def rows_of_known_keys(self, batch: list[Record]) -> list[tuple] | None:
        """Row tuples in one C-level pass when every record has exactly the known keys, else None.

        That is the usual case (an API page, a file, a SQL fetch all repeat one shape); other
        batches go through `columns_of_any_keys`.
        """
        if len(self.columns) < 2 or set(map(len, batch)) != {len(self.columns)}:
            return None
        if self._getter is None:
            self._getter = itemgetter(*self.columns)
        try:
            return list(map(self._getter, batch))
        except KeyError:
            return None

    def columns_of_any_keys(self, part: Part, batch: list[Record]) -> list[Sequence[Any]]:
        """Column value lists for records of any shape (new keys add columns, missing are null)."""
        keys = dict.fromkeys(chain.from_iterable(batch))
        for key in self.pk_keys:
            if key not in keys:
                raise self.null_key_error(part, key, batch[0])
        new = [key for key in keys if key not in self.columns]
        if new:
            self.add_columns(new)
        size = len(batch)
        return [
            [record.get(column.key) for record in batch]
            if column.key in keys
            else repeat(None, size)  # type: ignore[misc]
            for column in self.columns.values()
        ]

    def add_columns(self, keys: list[Any]) -> None:
        self.stager.close()
        if self.direct is not None and self.direct.active:
            self.direct.pause()
        self._getter = None
        used = {c.name for c in self.columns.values()}
        added = []
        for key in keys:
            name = column_name(str(key))
            if name in used:
                # Two keys that differ only as Python objects (1 and "1") share a name; keep both.
                name = column_name(f"{key}_{type(key).__name__}")
            used.add(name)
            column = _Column(key=key, name=name, stage=f"c{len(self.columns) + 1}")
            self.columns[key] = column
            added.append(sql.SQL("add column {} text").format(sql.Identifier(column.stage)))
        self.execute(types.alter_table(sql.Identifier(STAGE_TABLE), added))

    def null_key_error(self, part: Part, key: Any, record: Record) -> SourceDataError:
        where = f"stream '{self.context.stream}'"
        if part.name and part.name != "stream":
            where += f", part '{part.name}'"
        example = repr(record)
        if len(example) > _EXAMPLE_CHARS:
            example = example[:_EXAMPLE_CHARS] + "...}"
        return SourceDataError(
            f"{where}: a record has no value for primary key field '{key}'"
            f" (integration {self.context.integration_id}), e.g. {example}"
        )

    # --- target ----------------------------------------------------------------------------

    def merge(self, loading: bool = False) -> None:
        """Evolve the target and move the staged rows into it, under the table's advisory lock.

        `replace` deletes this integration's rows only when at least one part loaded: a load
        whose every part was skipped or rejected never empties the table. Sweeps and the
        max_delete_fraction guard act once, after the last part (`finish_deletes`).
        """
        cursor_before = self.stats.cursor_before
        if not self.merged_parts:
            self.stats.cursor_after = cursor_before
        loading_part = loading  # an isolated part (a file), not the whole read
        # Parts merged one by one: the first that loads replaces, the others add to it.
        loading = loading or bool(self.stats.parts_loaded)
        mode = self.target.write_mode
        if self.partitioned and not self.columns:
            # An empty period still replaces what was landed for it before (if the guard agrees).
            self.lock_target()
            exists = types.existing_columns(self.conn, self.schema, self.table) is not None
            if exists and not self.replaced:
                self.delete_partition()
                self.replaced = True
            return
        if not self.columns:
            if mode == "replace" and loading and not self.replaced:
                self.lock_target()
                if types.existing_columns(self.conn, self.schema, self.table) is not None:
                    self.delete_integration_rows()
                    self.replaced = True
            return
        self.lock_target()
        existing = types.existing_columns(self.conn, self.schema, self.table)
        required = types.not_null_columns(self.conn, self.schema, self.table) if existing else set()
        self.check_declared(required)
        if existing is None:
            self.create_table()
        else:
            self.evolve_table(existing)
            self.relax_not_null(required)
        self.apply_comments(existing is None)
        if mode == "merge":
            if self.target.sweep is not None and self.rows_before is None:
                self.rows_before = 0 if self.stats.table_created else self.live_rows()
            self.upsert()
            if self.target.sweep is not None:
                self.execute(
                    deletes.remember_keys(
                        sql.Identifier(SEEN_TABLE), sql.Identifier(STAGE_TABLE), self.staged_key()
                    )
                )
        elif self.partitioned:
            if existing is not None and not self.replaced:
                self.delete_partition()
                self.replaced = True  # the period's other parts add to it
            self.insert(boundary_filter=False)
        elif mode == "replace" and loading and not self.replaced and existing is not None:
            self.replaced = True
            self.replace(existing)
        elif mode == "history":
            self.historize(complete=not loading_part)
            self.ensure_current_view()
        else:
            if mode == "replace" and loading:
                self.replaced = True
            self.insert(boundary_filter=mode == "append")
        self.advance_cursor()

    # --- deletes ---------------------------------------------------------------------------

    def where(self) -> str:
        return (
            f"stream '{self.context.stream}' (integration {self.context.integration_id},"
            f" table {self.target.schema}.{self.target.table})"
        )

    def reads_whole_source(self) -> bool:
        whole = self.context.reads_whole_source
        return whole(self.stats.read_from) if callable(whole) else bool(whole)

    def sweep_allowed(self) -> bool:
        """A sweep runs only after a complete full read; otherwise say why it did not."""
        kind = self.target.sweep
        if kind is None:
            return False
        if self.target.cursor_field is not None and not self.reads_whole_source():
            self.stats.deletes = (
                f"{kind} sweep skipped: incremental read (a sweep follows only a full refresh)"
            )
            return False
        return self.read_was_complete(f"{kind} sweep")

    def read_was_complete(self, what: str) -> bool:
        """Nothing rejected, something read, and as many rows as a source-reported total; else
        the reason lands in the `deletes` metadata (the completeness or files check fails too)."""
        reason = None
        total = self.read.stats.source_total
        if self.stats.parts_rejected:
            reason = f"{self.stats.parts_rejected} part(s) rejected"
        elif not self.stats.parts_loaded:
            reason = "nothing was read"
        elif total is not None and self.stats.rows_read < total:
            reason = f"read {self.stats.rows_read} rows of the {total} the source reported"
        if reason is None:
            return True
        self.stats.deletes = f"{what} skipped: {reason}"
        if self.stats.parts_rejected or total is not None:
            log.warning("%s: %s skipped: %s", self.where(), what, reason)
        return False

    def live_rows(self) -> int:
        row = self.fetch_one(
            deletes.live_rows(
                self.target_sql, self.context.integration_id, self.has_deleted_at_column()
            )
        )
        return int(row[0]) if row else 0

    def has_deleted_at_column(self) -> bool:
        if not self.target.soft_deletes:
            return False
        existing = types.existing_columns(self.conn, self.schema, self.table)
        return bool(existing and DELETED_AT in existing)

    def key_match(self) -> sql.Composable:
        """Target row `t` and staged row `s` have the same primary key."""
        return deletes.keys_match(
            [sql.Identifier("t", name) for name in self.pk_names],
            [self.staged(self.columns[key]) for key in self.pk_keys],
        )

    def staged_count(self) -> int:
        row = self.fetch_one(sql.SQL("select count(*) from {}").format(sql.Identifier(STAGE_TABLE)))
        return int(row[0]) if row else 0

    def staged_key(self) -> sql.Composable:
        """The primary key of staged row `s` as text, cast as the target's key columns are."""
        return deletes.key_text([self.staged(self.columns[key]) for key in self.pk_keys])

    def finish_deletes(self) -> None:
        """After the last part: sweep (if the read was complete), then the mass-delete guard."""
        mode = self.target.write_mode
        if self.partitioned:
            # A period's replace is held to the same guard, measured against all of the
            # integration's rows: an empty answer for a period may not silently empty the table.
            if self.replaced and self.rows_before:
                after = self.live_rows()
                self.check_guard(
                    f"replace of period {self.context.partition}",
                    self.rows_before - after,
                    self.rows_before,
                )
            return
        if mode == "replace" and self.replaced and self.rows_before:
            row = self.fetch_one(
                deletes.live_rows(self.target_sql, self.context.integration_id, soft=False)
            )
            after = int(row[0]) if row else 0
            # What leaves for good: a changed row is one out and one in, so count the shrink.
            self.check_guard("replace", self.rows_before - after, self.rows_before)
        elif mode == "merge" and self.sweep_allowed():
            if self.direct is not None and self.direct.landed:
                # The integration had no rows before this load (direct.py): all it has now, this
                # read brought, so the sweep removes none (its seen keys were never recorded).
                self.swept(0)
                return
            if types.existing_columns(self.conn, self.schema, self.table) is None:
                return
            if self.rows_before is None:
                self.lock_target()
                self.rows_before = self.live_rows()
            self.run_sweep(self.rows_before)

    def check_guard(self, what: str, removing: int, rows_before: int) -> None:
        deletes.check_fraction(
            what=what,
            removing=removing,
            rows_before=rows_before,
            max_fraction=self.target.max_delete_fraction,
            allowed=self.context.allow_mass_delete,
            where=self.where(),
        )

    def run_sweep(self, rows_before: int) -> None:
        hard = self.target.sweep == "hard"
        if not hard and not self.has_deleted_at_column():
            # Only on an empty read of a table made before soft deletes: nothing else adds it.
            self.execute(
                sql.SQL("alter table {} add column if not exists {} timestamptz").format(
                    self.target_sql, sql.Identifier(DELETED_AT)
                )
            )
        self.cursor.execute(
            deletes.sweep(
                self.target_sql,
                sql.Identifier(SEEN_TABLE),
                self.context.integration_id,
                deletes.key_text([sql.Identifier("t", name) for name in self.pk_names]),
                hard=hard,
            )
        )
        swept = max(self.cursor.rowcount, 0)
        self.check_guard(f"{self.target.sweep} sweep", swept, rows_before)
        self.swept(swept)

    def swept(self, rows: int) -> None:
        self.stats.rows_deleted += rows
        self.stats.deletes = f"{self.target.sweep} sweep: {rows} row(s)"

    def marked(self) -> sql.Composable:
        assert self.target.marker is not None
        column = self.columns.get(self.target.marker.field)
        if column is None:
            return deletes.marked(None, self.target.marker)
        # The marker is compared as text, as the records path stages it ('true', '1', 'deleted').
        staged = staged_value(
            self.stage_expression(column),
            self.stage_types.get(column.stage, types.TEXT),
            types.TEXT,
        )
        return deletes.marked(staged, self.target.marker)

    def apply_marker(self) -> tuple[int, int]:
        """Before the upsert: judge each key by its latest record and act on the marked ones.

        Returns (marked records the upsert leaves out (hard), live rows a soft marker is about
        to mark deleted); the deletions are counted in rows_deleted here.
        """
        marker = self.target.marker
        assert marker is not None
        key_columns = [self.columns[k] for k in self.pk_keys]
        self.count_duplicates(key_columns)
        if self.merge_duplicates:
            self.execute(
                deletes.keep_latest_per_key(
                    sql.Identifier(STAGE_TABLE),
                    sql.SQL(", ").join(self.staged(c) for c in key_columns),
                    self.latest_first(key_columns),
                )
            )
        existing_rows = not self.fresh_table and self.integration_has_rows()
        marked_deleted = 0
        if existing_rows and marker.hard:
            self.cursor.execute(
                deletes.delete_marked(
                    self.target_sql,
                    sql.Identifier(STAGE_TABLE),
                    self.context.integration_id,
                    self.key_match(),
                    self.marked(),
                )
            )
            self.stats.rows_deleted += max(self.cursor.rowcount, 0)
        elif existing_rows:
            row = self.fetch_one(
                deletes.count_marked_live(
                    self.target_sql,
                    sql.Identifier(STAGE_TABLE),
                    self.context.integration_id,
                    self.key_match(),
                    self.marked(),
                )
            )
            marked_deleted = int(row[0]) if row else 0
            self.stats.rows_deleted += marked_deleted
        if not marker.hard:
            return 0, marked_deleted
        row = self.fetch_one(
            sql.SQL("select count(*) from {} s where {}").format(
                sql.Identifier(STAGE_TABLE), self.marked()
            )
        )
        return (int(row[0]) if row else 0), 0

    def declared_types(self) -> dict[str, str]:
        """{column: its exact type as PostgreSQL prints it} of the target (numeric(8,2), ...)."""
        return {c.name: c.type for c in types.table_columns(self.conn, self.schema, self.table)}

    def replace(self, existing: dict[str, str]) -> None:
        """Swap this integration's rows for the staged ones, writing only what changed."""
        system = {"integration_id", "_synkro_synced_at", "_synkro_run_id", DELETED_AT}
        by_name = {c.name: c for c in self.columns.values()}
        names = ["tenant_id"]
        names += [n for n in existing if n not in system and n != "tenant_id"]
        names += [c.name for c in self.columns.values() if c.name not in existing]
        # Compared as stored: a staged 1.1 is the 1.10 a numeric(8,2) column holds.
        exact = self.declared_types()
        new_row = [
            sql.Literal(self.context.tenant_id)
            if name == "tenant_id"
            else sql.SQL("({})::{}").format(self.staged(by_name[name]), sql.SQL(exact[name]))
            if name in by_name
            else sql.SQL("null::{}").format(sql.SQL(exact[name]))
            for name in names
        ]
        keyed = all(k in self.columns for k in self.pk_keys) and bool(self.pk_keys)
        insert_names, values = self.insert_select()
        row = self.fetch_one(
            deletes.replace_diff(
                target=self.target_sql,
                stage=sql.Identifier(STAGE_TABLE),
                integration=self.context.integration_id,
                old_row=[sql.Identifier("t", name) for name in names],
                new_row=new_row,
                old_key=[sql.Identifier("t", n) for n in self.pk_names] if keyed else [],
                new_key=[self.staged(self.columns[k]) for k in self.pk_keys] if keyed else [],
                names=insert_names,
                values=values,
            )
        )
        assert row is not None
        before, gone, came, both = (int(v) for v in row)
        self.rows_before = before
        if keyed:
            # A key that left and came back with other values is an updated row.
            self.stats.rows_updated += both
            self.stats.rows_inserted += came - both
            self.stats.rows_deleted += gone - both
        else:
            self.stats.rows_inserted += came
            self.stats.rows_deleted += gone
        self.stats.rows_unchanged += max(self.staged_count() - came, 0)

    def lock_target(self) -> None:
        key = f"synkro.load:{self.schema}.{self.table}"
        self.execute(
            sql.SQL("select pg_advisory_xact_lock(hashtextextended({}, 0))").format(
                sql.Literal(key)
            )
        )

    def wanted_type(self, column: _Column) -> str:
        hint = self.target.column_hints.get(column.key) or self.read.column_types.get(column.key)
        if hint:
            declared = types.declared_type(hint)
            # A sized type the staged values do not fit is widened, never rounded or cut.
            return types.canonical_type(declared) if column.key in self._unfit else declared
        return column.seen or types.TEXT

    def check_declared(self, required: set[str]) -> None:
        """One pass over the staged rows: which sized declared types the values do not fit, and
        which columns got nulls (a NOT NULL is kept only for columns that got none)."""
        checks: list[sql.Composable] = []
        probes: list[tuple[str, Any]] = []
        for column in self.columns.values():
            hint = self.target.column_hints.get(column.key) or self.read.column_types.get(
                column.key
            )
            fits = types.fits_sql(self.stage_expression(column), types.declared_type(hint or ""))
            if hint and fits is not None:
                checks.append(sql.SQL("coalesce(bool_and({}), true)").format(fits))
                probes.append(("fits", column))
            if column.key in self.read.not_null or column.name in required:
                checks.append(
                    sql.SQL("bool_or({} is null)").format(sql.Identifier("s", column.stage))
                )
                probes.append(("nulls", column))
        if not checks:
            return
        row = self.fetch_one(
            sql.SQL("select {} from {} s").format(
                sql.SQL(", ").join(checks), sql.Identifier(STAGE_TABLE)
            )
        )
        assert row is not None
        for (kind, column), value in zip(probes, row, strict=True):
            if kind == "fits" and value is False:
                self._unfit.add(column.key)
            if kind == "nulls" and value:
                self._nulls.add(column.key)

    def not_null_sql(self, column: _Column) -> sql.Composable:
        """` not null` for a new table's column the source declares NOT NULL and that got no null
        in this load (a later null drops it again: see `relax_not_null`)."""
        if column.key in self.read.not_null and column.key not in self._nulls:
            return sql.SQL(" not null")
        return sql.SQL("")

    def relax_not_null(self, required: set[str]) -> None:
        """Drop NOT NULL from columns this load leaves null (a null value, or no value at all)."""
        keep = {"tenant_id", "integration_id", "_synkro_synced_at", *self.pk_names}
        present = {c.name: c for c in self.columns.values()}
        relaxed = [
            name
            for name in sorted(required - keep)
            if name not in present or present[name].key in self._nulls
        ]
        if not relaxed:
            return
        self.execute(types.alter_columns(self.target_sql, "drop not null", relaxed))
        self.stats.types_widened += [f"{name}: not null -> null" for name in relaxed]

    def apply_comments(self, created: bool) -> None:
        """The source's column comments become the landed columns' comments (kept in step)."""
        wanted = {
            c.name: self.read.column_comments[c.key]
            for c in self.columns.values()
            if c.key in self.read.column_comments
        }
        if not wanted:
            return
        have = {} if created else types.column_comments(self.conn, self.schema, self.table)
        for name, text in wanted.items():
            if have.get(name) != text:
                self.execute(
                    sql.SQL("comment on column {}.{} is {}").format(
                        self.target_sql, sql.Identifier(name), sql.Literal(text)
                    )
                )

    def create_table(self, direct: bool = False) -> None:
        """The target table for the staged columns. `direct`: the rows are COPYed in next, so
        tenant, integration and run id are column defaults and NOT NULLs wait for the rows."""
        if not self.conn.execute(
            sa.text("select 1 from pg_namespace where nspname = :schema"), {"schema": self.schema}
        ).first():
            # Two tables of one new schema may be created at once; only one may create the schema.
            self.execute(
                sql.SQL("select pg_advisory_xact_lock(hashtextextended({}, 0))").format(
                    sql.Literal(f"synkro.schema:{self.schema}")
                )
            )
            self.execute(
                sql.SQL("create schema if not exists {}").format(sql.Identifier(self.schema))
            )
            # Client apps read landed tables as `authenticated`, filtered by row-level security.
            self.execute(
                sql.SQL("grant usage on schema {} to authenticated").format(
                    sql.Identifier(self.schema)
                )
            )

        def default(value: str) -> sql.Composable:
            return sql.SQL(" default {}").format(sql.Literal(value)) if direct else sql.SQL("")

        definitions: list[sql.Composable] = [
            sql.SQL("tenant_id text not null{}").format(default(self.context.tenant_id)),
            sql.SQL("integration_id text not null{}").format(default(self.context.integration_id)),
        ]
        for column in self.columns.values():
            column.type = self.wanted_type(column)
            definitions.append(
                sql.SQL("{} {}{}").format(
                    sql.Identifier(column.name),
                    types.type_sql(column.type),
                    sql.SQL("") if direct else self.not_null_sql(column),
                )
            )
        definitions += [
            sql.SQL("_synkro_synced_at timestamptz not null default now()"),
            sql.SQL("_synkro_run_id text{}").format(default(self.context.run_id)),
        ]
        if self.target.soft_deletes:
            definitions.append(sql.SQL("{} timestamptz").format(sql.Identifier(DELETED_AT)))
        if self.target.write_mode == "history":
            definitions += [
                sql.SQL("_synkro_valid_from timestamptz not null default now()"),
                sql.SQL("_synkro_valid_to timestamptz"),
                sql.SQL("_synkro_is_current boolean not null default true"),
            ]
        self.execute(
            sql.SQL("create table {} ({})").format(self.target_sql, sql.SQL(", ").join(definitions))
        )
        if self.target.write_mode != "merge":
            self.execute(sql.SQL("create index on {} (integration_id)").format(self.target_sql))
        if self.target.write_mode == "history":
            # At most one current version per key; it is also the index the history merge uses.
            self.execute(
                sql.SQL("create unique index on {} ({}) where _synkro_is_current").format(
                    self.target_sql, self.identifiers(["integration_id", *self.pk_names])
                )
            )
        self.execute(
            sql.SQL("select synkro.enable_tenant_rls({}::regclass)").format(
                sql.Literal(self.target_sql.as_string(self.pg))
            )
        )
        self.stats.table_created = True
        self.fresh_table = True

    def evolve_table(self, existing: dict[str, str]) -> None:
        changes = []
        for column in self.columns.values():
            have = existing.get(column.name)
            declared = self.target.column_hints.get(column.key) or self.read.column_types.get(
                column.key
            )
            if have is not None and column.seen is None and not declared:
                # Only nulls arrived for this column: they fit whatever type it already has.
                column.type = have
                continue
            wanted = self.wanted_type(column)
            if have is None:
                column.type = wanted
                changes.append(
                    sql.SQL("add column {} {}").format(
                        sql.Identifier(column.name), types.type_sql(wanted)
                    )
                )
                self.stats.columns_added.append(column.name)
                continue
            widened = types.join_types(have, wanted) or have
            column.type = widened
            if widened != have:
                changes.append(
                    sql.SQL("alter column {0} type {1} using {0}::{1}").format(
                        sql.Identifier(column.name), types.type_sql(widened)
                    )
                )
                self.stats.types_widened.append(f"{column.name}: {have} -> {widened}")
        if self.target.soft_deletes and DELETED_AT not in existing:
            changes.append(sql.SQL("add column {} timestamptz").format(sql.Identifier(DELETED_AT)))
        if changes:
            if self.target.write_mode == "history":
                # A view pins its columns' types; it is made again after the change.
                self.execute(sql.SQL("drop view if exists {}").format(self.current_view_sql()))
            self.execute(types.alter_table(self.target_sql, changes))

    def staged(self, column: _Column) -> sql.Composable:
        """The staged value of `column`, cast to its target type."""
        stage_type = self.stage_types.get(column.stage, types.TEXT)
        return staged_value(self.stage_expression(column), stage_type, column.type)

    def identifiers(self, names: Iterable[str]) -> sql.Composable:
        return sql.SQL(", ").join(sql.Identifier(n) for n in names)

    def insert_select(self) -> tuple[sql.Composable, sql.Composable]:
        """(target column list, select list) for rows coming from staging alias `s`."""
        columns = list(self.columns.values())
        names = ["tenant_id", "integration_id", *(c.name for c in columns), "_synkro_run_id"]
        values = [
            sql.Literal(self.context.tenant_id),
            sql.Literal(self.context.integration_id),
            *(self.staged(c) for c in columns),
            sql.Literal(self.context.run_id),
        ]
        if self.target.write_mode == "merge" and self.target.soft_deletes:
            names.append(DELETED_AT)
            marker = self.target.marker
            values.append(
                sql.SQL("case when {} then now() end").format(self.marked())
                if marker is not None and not marker.hard
                else sql.SQL("null::timestamptz")
            )
        return self.identifiers(names), sql.SQL(", ").join(values)

    def upserted_rows(self) -> sql.Composable:
        """Which staged rows the merge writes: all, but those a hard marker deleted."""
        marker = self.target.marker
        if marker is not None and marker.hard:
            return sql.SQL(" where not {}").format(self.marked())
        return sql.SQL("")

    def latest_first(self, key_columns: list[_Column]) -> sql.Composable:
        """Staged rows ordered by key, the latest of each key first: highest cursor, then last in."""
        order: list[sql.Composable] = [sql.SQL(", ").join(self.staged(c) for c in key_columns)]
        cursor_column = self.cursor_column()
        if cursor_column is not None:
            order.append(sql.SQL("{} desc nulls last").format(self.staged(cursor_column)))
        # Staging only ever receives appended rows, so ctid order is arrival order.
        order.append(sql.SQL("s.ctid desc"))
        return sql.SQL(", ").join(order)

    def add_primary_key(self) -> None:
        self.execute(
            sql.SQL("alter table {} add primary key ({})").format(
                self.target_sql, self.identifiers(["integration_id", *self.pk_names])
            )
        )

    def integration_has_rows(self) -> bool:
        row = self.fetch_one(
            sql.SQL("select exists (select 1 from {} where integration_id = {})").format(
                self.target_sql, sql.Literal(self.context.integration_id)
            )
        )
        return bool(row and row[0])

    def deduplicated(self, values: sql.Composable) -> sql.Composable:
        """The staged rows, one per key: the highest cursor wins, then the last one staged."""
        key_columns = [self.columns[k] for k in self.pk_keys]
        self.count_duplicates(key_columns)
        keys = sql.SQL(", ").join(self.staged(c) for c in key_columns)
        return sql.SQL("select distinct on ({}) {} from {} s{} order by {}").format(
            keys,
            values,
            sql.Identifier(STAGE_TABLE),
            self.upserted_rows(),
            self.latest_first(key_columns),
        )

    @property
    def partitioned(self) -> bool:
        return self.target.partition_column is not None and self.context.partition is not None

    def delete_partition(self) -> None:
        """Delete this integration's rows of the run's period (and no other)."""
        column = self.target.partition_column
        assert column is not None and self.context.partition is not None
        self.rows_before = self.live_rows()
        self.cursor.execute(
            sql.SQL("delete from {} where integration_id = {} and {}::text = {}").format(
                self.target_sql,
                sql.Literal(self.context.integration_id),
                sql.Identifier(column_name(column)),
                sql.Literal(self.context.partition),
            )
        )
        self.stats.rows_deleted += max(self.cursor.rowcount, 0)

    def current_view_sql(self) -> sql.Identifier:
        return qualified(self.target.schema, self.target.table + CURRENT_VIEW_SUFFIX)

    def ensure_current_view(self) -> None:
        """`<table>_current`: the current version of every row, under the table's row-level
        security (security_invoker), readable like the table itself."""
        view = self.current_view_sql()
        name = view.as_string(self.pg)
        row = self.fetch_one(sql.SQL("select to_regclass({})").format(sql.Literal(name)))
        if row is not None and row[0] is not None and not self.stats.columns_added:
            return
        if row is not None and row[0] is not None:
            self.execute(sql.SQL("drop view {}").format(view))
        self.execute(
            sql.SQL(
                "create view {} with (security_invoker = true) as"
                " select * from {} where _synkro_is_current"
            ).format(view, self.target_sql)
        )
        self.execute(sql.SQL("revoke all on {} from public, anon, authenticated").format(view))
        self.execute(sql.SQL("grant select on {} to authenticated").format(view))

    def historize(self, complete: bool) -> None:
        """History mode: a key whose tracked columns changed gets its current version closed
        (`_synkro_valid_to`, `_synkro_is_current = false`) and a new current version; an unchanged
        record (a boundary record read again, a rerun) changes nothing. Untracked columns are
        updated in place. When the read was a whole snapshot of the source (no cursor, or a full
        refresh), current versions of keys the source no longer has are closed.
        """
        key_columns = [self.columns[k] for k in self.pk_keys]
        closes_missing = (
            complete
            and (self.target.cursor_field is None or self.context.full_refresh)
            # Like a sweep: not after a read that was cut short or lost a file.
            and self.read_was_complete("closing deleted keys")
        )
        current_before = 0
        if closes_missing and not self.stats.table_created:
            row = self.fetch_one(
                sql.SQL(
                    "select count(*) from {} where integration_id = {} and _synkro_is_current"
                ).format(self.target_sql, sql.Literal(self.context.integration_id))
            )
            current_before = int(row[0]) if row else 0
        aliased = sql.SQL(", ").join(
            [
                sql.SQL("{} as tenant_id").format(sql.Literal(self.context.tenant_id)),
                *(
                    sql.SQL("{} as {}").format(self.staged(c), sql.Identifier(c.name))
                    for c in self.columns.values()
                ),
                sql.SQL("{} as _synkro_run_id").format(sql.Literal(self.context.run_id)),
            ]
        )
        rows = sql.Identifier(HISTORY_ROWS)
        self.execute(sql.SQL("drop table if exists {}").format(rows))
        self.execute(
            sql.SQL("create temp table {} on commit drop as {}").format(
                rows, self.deduplicated(aliased)
            )
        )
        integration = sql.Literal(self.context.integration_id)
        same_key = sql.SQL(" and ").join(
            sql.SQL("t.{0} = h.{0}").format(sql.Identifier(c.name)) for c in key_columns
        )
        current = sql.SQL("t.integration_id = {} and t._synkro_is_current and {}").format(
            integration, same_key
        )
        others = [c.name for c in self.columns.values() if c.key not in self.pk_keys]
        track = self.target.track_columns
        tracked = ["tenant_id", *(n for n in others if track is None or n in track)]
        untracked = [n for n in others if n not in tracked]

        def differ(names: list[str]) -> sql.Composable:
            return sql.SQL("row({}) is distinct from row({})").format(
                sql.SQL(", ").join(sql.Identifier("t", n) for n in names),
                sql.SQL(", ").join(sql.Identifier("h", n) for n in names),
            )

        closed = self.fetch_one(
            sql.SQL(
                "with c as (update {t} t set _synkro_valid_to = now(), _synkro_is_current = false"
                " from {h} h where {current} and {differ} returning 1) select count(*) from c"
            ).format(t=self.target_sql, h=rows, current=current, differ=differ(tracked))
        )
        if untracked:
            self.execute(
                sql.SQL(
                    "update {t} t set {sets}, _synkro_run_id = h._synkro_run_id,"
                    " _synkro_synced_at = now() from {h} h where {current} and {differ}"
                ).format(
                    t=self.target_sql,
                    h=rows,
                    sets=sql.SQL(", ").join(
                        sql.SQL("{0} = h.{0}").format(sql.Identifier(n)) for n in untracked
                    ),
                    current=current,
                    differ=differ(untracked),
                )
            )
        names = ["tenant_id", *(c.name for c in self.columns.values()), "_synkro_run_id"]
        self.cursor.execute(
            sql.SQL(
                "insert into {t} (integration_id, {names}) select {integration}, {h_names}"
                " from {h} h where not exists (select 1 from {t} t where {current})"
            ).format(
                t=self.target_sql,
                names=self.identifiers(names),
                integration=integration,
                h_names=sql.SQL(", ").join(sql.Identifier("h", n) for n in names),
                h=rows,
                current=current,
            )
        )
        inserted = max(self.cursor.rowcount, 0)
        versions = int(closed[0]) if closed else 0
        self.stats.rows_updated += versions
        self.stats.rows_inserted += inserted - versions
        if closes_missing and current_before:
            gone = sql.SQL(
                "t.integration_id = {integration} and t._synkro_is_current"
                " and not exists (select 1 from {h} h where {same_key})"
            ).format(integration=integration, h=rows, same_key=same_key)
            row = self.fetch_one(
                sql.SQL("select count(*) from {} t where {}").format(self.target_sql, gone)
            )
            # Closing keys is a delete: the same max_delete_fraction guard as a replace or sweep.
            self.check_guard("close of deleted keys", int(row[0]) if row else 0, current_before)
            self.cursor.execute(
                sql.SQL(
                    "update {} t set _synkro_valid_to = now(), _synkro_is_current = false where {}"
                ).format(self.target_sql, gone)
            )
            self.stats.rows_deleted += max(self.cursor.rowcount, 0)

    def upsert(self) -> None:
        self.merge_duplicates = 0
        staged = self.staged_count()
        marked_out, marked_deleted = (
            self.apply_marker() if self.target.marker is not None else (0, 0)
        )
        names, values = self.insert_select()
        plain = sql.SQL("select {} from {} s{}").format(
            values, sql.Identifier(STAGE_TABLE), self.upserted_rows()
        )
        # Most loads have no repeated keys: every path tries the plain statement first and only
        # sorts the staged rows when PostgreSQL reports a key twice.
        if self.fresh_table or not self.integration_has_rows():
            self.insert_fresh(names, plain, values)
            return
        compared = [
            "tenant_id",
            *(c.name for c in self.columns.values() if c.key not in self.pk_keys),
        ]
        updates: list[sql.Composable] = [
            sql.SQL("{0} = excluded.{0}").format(sql.Identifier(name))
            for name in [*compared, "_synkro_run_id"]
        ]
        updates.append(sql.SQL("_synkro_synced_at = now()"))
        old: list[sql.Composable] = [sql.Identifier("t", name) for name in compared]
        new: list[sql.Composable] = [sql.Identifier("excluded", name) for name in compared]
        soft = self.target.soft_deletes
        if soft:
            # A row that comes back is live again; a marked one keeps its first deletion time.
            deleted = sql.Identifier(DELETED_AT)
            updates.append(
                sql.SQL(
                    "{0} = case when excluded.{0} is null then null"
                    " else coalesce(t.{0}, excluded.{0}) end"
                ).format(deleted)
            )
            old.append(sql.SQL("t.{} is null").format(deleted))
            new.append(sql.SQL("excluded.{} is null").format(deleted))
        # A record that comes again unchanged (the boundary record of a `>=` cursor read) is
        # left alone: no new row version, not counted as updated.
        changed = sql.SQL("row({}) is distinct from row({})").format(
            sql.SQL(", ").join(old), sql.SQL(", ").join(new)
        )

        def statement(source: sql.Composable) -> sql.Composed:
            return sql.SQL(
                "with m as (insert into {target} as t ({names}) {source}"
                " on conflict ({conflict}) do update set {updates} where {changed}"
                " returning (t.xmax = 0) as inserted)"
                " select count(*) filter (where inserted), count(*) filter (where not inserted)"
                " from m"
            ).format(
                target=self.target_sql,
                names=names,
                source=source,
                conflict=self.identifiers(["integration_id", *self.pk_names]),
                updates=sql.SQL(", ").join(updates),
                changed=changed,
            )

        savepoint = self.conn.begin_nested()
        try:
            counts = self.fetch_one(statement(plain))
            savepoint.commit()
        except psycopg.errors.CardinalityViolation:
            savepoint.rollback()
            counts = self.fetch_one(statement(self.deduplicated(values)))
        except BaseException:
            # Any other error ends this savepoint too, so that an enclosing one (a file's) can
            # be rolled back cleanly.
            savepoint.rollback()
            raise
        assert counts is not None
        inserted, updated = int(counts[0]), int(counts[1])
        keys = staged - self.merge_duplicates - marked_out
        self.stats.rows_unchanged += max(keys - inserted - updated, 0)
        # Rows a soft marker just marked are reported as deleted, not as updated.
        updated -= marked_deleted
        self.stats.rows_inserted += inserted
        self.stats.rows_updated += max(updated, 0)

    def insert_fresh(
        self, names: sql.Composable, plain: sql.Composable, values: sql.Composable
    ) -> None:
        """Merge when this integration has no rows yet: a plain INSERT, no conflict handling.

        Safe because every load of this table holds its advisory lock until commit. A table
        created by this load gets its primary key after the rows (one sorted index build instead
        of a row-by-row one); a duplicate key shows as a unique violation and the rows are
        inserted again deduplicated.
        """

        def insert(source: sql.Composable) -> int:
            self.cursor.execute(
                sql.SQL("insert into {} ({}) {}").format(self.target_sql, names, source)
            )
            inserted = self.cursor.rowcount
            if self.fresh_table:
                self.add_primary_key()
            return inserted

        savepoint = self.conn.begin_nested()
        try:
            self.stats.rows_inserted += insert(plain)
            savepoint.commit()
        except psycopg.errors.UniqueViolation:
            savepoint.rollback()
            self.stats.rows_inserted += insert(self.deduplicated(values))
        except BaseException:
            # Any other error ends this savepoint too, so that an enclosing one (a file's) can
            # be rolled back cleanly.
            savepoint.rollback()
            raise
        self.fresh_table = False

    def count_duplicates(self, key_columns: list[_Column]) -> None:
        aliases = [sql.Identifier(f"k{i}") for i in range(len(key_columns))]
        row = self.fetch_one(
            sql.SQL(
                "select sum(n - 1) over (), {aliases} from"
                " (select {keys}, count(*) as n from {stage} s group by {positions}"
                "  having count(*) > 1) g limit 1"
            ).format(
                aliases=sql.SQL(", ").join(aliases),
                keys=sql.SQL(", ").join(
                    sql.SQL("{} as {}").format(self.staged(c), a)
                    for c, a in zip(key_columns, aliases, strict=True)
                ),
                stage=sql.Identifier(STAGE_TABLE),
                positions=sql.SQL(", ").join(sql.SQL(str(i + 1)) for i in range(len(key_columns))),
            )
        )
        if row is not None:
            self.merge_duplicates = int(row[0])
            self.stats.duplicates_collapsed += int(row[0])
            if self.stats.duplicate_key_example is None:
                self.stats.duplicate_key_example = dict(zip(self.pk_keys, row[1:], strict=True))

    def insert(self, boundary_filter: bool) -> None:
        names, values = self.insert_select()
        where: sql.Composable = sql.SQL("")
        distinct: sql.Composable = sql.SQL("")
        cursor_column = self.cursor_column()
        if boundary_filter and cursor_column is not None:
            # An append stream with a cursor: identical records are one record, whether a page
            # repeated it, the `>=` / lookback window re-read it, or a full refresh read it again.
            distinct = sql.SQL("distinct ")
            before = None if self.context.full_refresh else self.stats.cursor_before
            where = self.boundary_filter(cursor_column, self.stats.read_from or before, before)
        self.cursor.execute(
            sql.SQL("insert into {} ({}) select {}{} from {} s{}").format(
                self.target_sql, names, distinct, values, sql.Identifier(STAGE_TABLE), where
            )
        )
        inserted = max(self.cursor.rowcount, 0)
        self.stats.rows_inserted += inserted
        # Boundary records read again and already landed.
        self.stats.rows_unchanged += max(self.staged_count() - inserted, 0)

    def boundary_filter(
        self, cursor_column: _Column, read_from: str | None, before: str | None
    ) -> sql.Composable:
        """Drop rows older than where the read started, and rows that are already landed.

        The source is read with `>=` from the stored cursor (moved back by the lookback), so the
        records of that window come again; a landed record with the same values is the same
        record. Records of the window not landed yet (late commits) are appended. Without a
        stored cursor (the first sync, a full refresh) every landed record is compared.
        """
        staged_cursor = self.staged(cursor_column)
        same_values = sql.SQL(" and ").join(
            sql.SQL("t.{} is not distinct from {}").format(sql.Identifier(c.name), self.staged(c))
            for c in self.columns.values()
        )
        cur_name = sql.Identifier(cursor_column.name)
        landed = sql.SQL(
            "exists (select 1 from {target} t where t.integration_id = {integration}{window}"
            " and t.{cur_name} = {cur} and {same_values})"
        )
        parts = {
            "target": self.target_sql,
            "integration": sql.Literal(self.context.integration_id),
            "cur_name": cur_name,
            "cur": staged_cursor,
            "same_values": same_values,
        }
        if before is None or read_from is None:
            return sql.SQL(" where {cur} is null or not {landed}").format(
                cur=staged_cursor, landed=landed.format(window=sql.SQL(""), **parts)
            )
        start = types.cast(sql.Literal(read_from), cursor_column.type)
        stored = types.cast(sql.Literal(before), cursor_column.type)
        window = sql.SQL(" and t.{cur_name} >= {start} and t.{cur_name} <= {stored}").format(
            cur_name=cur_name, start=start, stored=stored
        )
        return sql.SQL(
            " where {cur} is null or {cur} > {stored} or ({cur} >= {start} and not {landed})"
        ).format(
            cur=staged_cursor,
            start=start,
            stored=stored,
            landed=landed.format(window=window, **parts),
        )

    def delete_integration_rows(self) -> None:
        """A replace with nothing staged: every row of the integration goes (if the guard agrees)."""
        self.cursor.execute(
            sql.SQL("delete from {} where integration_id = {}").format(
                self.target_sql, sql.Literal(self.context.integration_id)
            )
        )
        deleted = max(self.cursor.rowcount, 0)
        self.stats.rows_deleted += deleted
        self.rows_before = deleted

    def cursor_column(self) -> _Column | None:
        if self.target.cursor_field is None:
            return None
        return self.columns.get(self.target.cursor_field)

    def advance_cursor(self) -> None:
        """The new cursor: the source's own text of the newest staged cursor value, compared as
        the column's type, never beyond now + max_future and (except on a full refresh) never
        behind the stored cursor."""
        column = self.cursor_column()
        if column is None or (self.stats.rows_read == 0 and not self.stager.part_rows):
            return
        spec = self.target.cursor_spec
        assert spec is not None
        raw = sql.Identifier("s", column.stage)
        typed = self.staged(column)
        beyond = self.future_condition(column, spec)
        if beyond is None and spec.max_future is not None and column.type == types.TEXT:
            newest = self.newest_text_time(column, spec)
        else:
            within = sql.SQL("") if beyond is None else sql.SQL(" and not ({})").format(beyond)
            row = self.fetch_one(
                # ::text: a typed staging column (a SQL source's timestamp) gives its text form.
                sql.SQL(
                    "select {raw}::text from {stage} s where {raw} is not null{within}"
                    " order by {typed} desc, {raw}::text limit 1"
                ).format(raw=raw, stage=sql.Identifier(STAGE_TABLE), within=within, typed=typed)
            )
            newest = None if row is None else row[0]
            if beyond is not None:
                self.report_future(column, beyond)
        before = self.stats.cursor_before
        compare = before is not None and not self.context.full_refresh
        if self.merged_parts:
            before = self.stats.cursor_after  # the parts merged before this one moved it
            compare = before is not None
        if newest is None:
            return
        if compare:
            row = self.fetch_one(
                sql.SQL("select {} > {}").format(
                    types.cast(sql.Literal(newest), column.type),
                    types.cast(sql.Literal(before), column.type),
                )
            )
            if not (row and row[0]):
                return  # never backwards (a lookback window, a stale or late record)
        self.stats.cursor_after = newest

    def future_limit(self, spec: CursorSpec) -> sql.Composable | None:
        if spec.max_future is None:
            return None
        seconds = parse_duration(spec.max_future).total_seconds()
        return sql.SQL("(now() + make_interval(secs => {}))").format(sql.Literal(seconds))

    def future_condition(self, column: _Column, spec: CursorSpec) -> sql.Composable | None:
        """SQL true for a staged row dated beyond now + max_future, where the column's type
        says what a value means (a date or timestamp; epoch numbers under unix / unix_ms)."""
        limit = self.future_limit(spec)
        if limit is None:
            return None
        typed = self.staged(column)
        if column.type in (types.DATE, types.TIMESTAMP, types.TIMESTAMPTZ):
            return sql.SQL("{} > {}").format(typed, limit)
        scale = EPOCH_FORMATS.get(spec.format)
        if scale is not None and column.type in (types.INTEGER, types.BIGINT, types.NUMERIC):
            return sql.SQL("{}::numeric > extract(epoch from {}) * {}").format(
                typed, limit, sql.Literal(scale)
            )
        if scale is not None and column.type == types.DOUBLE:
            return sql.SQL("{} > extract(epoch from {})::double precision * {}").format(
                typed, limit, sql.Literal(scale)
            )
        return None

    def report_future(self, column: _Column, beyond: sql.Composable) -> None:
        key_columns = [self.columns[k] for k in self.pk_keys if k in self.columns]
        keys = sql.SQL("").join(sql.SQL(", {}").format(self.staged(c)) for c in key_columns)
        row = self.fetch_one(
            sql.SQL(
                "select count(*) over (), {raw}::text{keys} from {stage} s where {beyond}"
                " order by {typed} desc limit 1"
            ).format(
                raw=sql.Identifier("s", column.stage),
                keys=keys,
                stage=sql.Identifier(STAGE_TABLE),
                beyond=beyond,
                typed=self.staged(column),
            )
        )
        if row is None:
            return
        self.note_future(int(row[0]), row[1], list(row[2:]))

    def note_future(self, count: int, value: Any, key_values: list[Any]) -> None:
        spec = self.target.cursor_spec
        assert spec is not None and spec.max_future is not None
        example: dict[str, Any] = dict(zip(self.pk_keys, key_values, strict=False))
        example[spec.field] = value
        self.stats.future_records += count
        self.stats.future_record_example = example
        limit = datetime.now(UTC) + parse_duration(spec.max_future)
        self.stats.future_limit = limit.isoformat(timespec="seconds")
        log.warning(
            "stream %s (integration %s): %d record(s) dated beyond now + %s landed without "
            "moving the cursor, e.g. %s",
            self.context.stream,
            self.context.integration_id,
            count,
            spec.max_future,
            example,
        )

    def newest_text_time(self, column: _Column, spec: CursorSpec) -> str | None:
        """For a text cursor column (a strftime format, mixed shapes): the newest value that
        reads as a time no later than now + max_future, compared in Python."""
        assert spec.max_future is not None
        limit = datetime.now(UTC) + parse_duration(spec.max_future)
        key_columns = [self.columns[k] for k in self.pk_keys if k in self.columns]
        keys = sql.SQL("").join(sql.SQL(", {}").format(self.staged(c)) for c in key_columns)
        newest: tuple[datetime, str] | None = None
        newest_text: tuple[str, str] | None = None
        future: list[Any] = []
        count = 0
        with self.pg.cursor(name="synkro_cursor_values") as values:
            values.execute(
                sql.SQL("select {raw}::text{keys} from {stage} s where {raw} is not null").format(
                    raw=sql.Identifier("s", column.stage),
                    keys=keys,
                    stage=sql.Identifier(STAGE_TABLE),
                )
            )
            for row in values:
                text = row[0]
                moment = as_time(text, spec.format)
                if moment is None:
                    # Not a time: plain text order, as PostgreSQL would compare it.
                    if newest_text is None or text > newest_text[0]:
                        newest_text = (text, text)
                    continue
                if moment > limit:
                    count += 1
                    if not future or moment > future[0]:
                        future = [moment, text, list(row[1:])]
                    continue
                if (
                    newest is None
                    or moment > newest[0]
                    or (moment == newest[0] and text < newest[1])
                ):
                    newest = (moment, text)
        if count:
            self.note_future(count, future[1], future[2])
        if newest is not None:
            return newest[1]
        return None if newest_text is None else newest_text[1]

    # --- helpers ---------------------------------------------------------------------------

    def execute(self, statement: Query) -> None:
        self.cursor.execute(statement)

    def fetch_one(self, statement: Query) -> tuple[Any, ...] | None:
        self.cursor.execute(statement)
        return self.cursor.fetchone()

    def after_commit(self) -> None:
        errors = []
        for part in self.done_parts:
            try:
                part.after_commit()
            except Exception as error:  # the data is committed; report every failed hook
                log.exception(
                    "stream %s: after_commit of part %s failed", self.context.stream, part.name
                )
                errors.append(f"{part.name}: {error}")
        if errors:
            raise RuntimeError(
                f"stream '{self.context.stream}': rows were committed, but after-commit steps"
                f" failed for {len(errors)} part(s): {'; '.join(errors)}"
            )


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_stream(
    engine: sa.Engine,
    target: TableTarget,
    read: StreamRead | ReadFrom,
    context: LoadContext,
    batch_rows: int = 10_000,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    direct: bool = True,
) -> LoadStats:
    """Land a stream in `target` in one transaction and return what happened.

    `read` is best a function from the start cursor to the connector's read: it is called under
    the stream's lock, with the cursor read under that lock (initial and lookback applied), so
    two runs of one stream never read from the same stale cursor.
    """
    started = time.perf_counter()
    with engine.connect() as conn:
        load = _Load(conn, target, read, context, batch_rows, lock_timeout_s, direct)
        try:
            with conn.begin():
                load.run()
        except psycopg.errors.DataError as error:
            message = str(error).strip().splitlines()[0]
            raise SourceDataError(
                f"stream '{context.stream}' (integration {context.integration_id}): a value does"
                f" not fit its column type in {target.schema}.{target.table}: {message}."
                " Check the stream's column hints or the source data."
            ) from error
        finally:
            load.stager.dispose()
            load.cursor.close()
    load.after_commit()
    load.stats.seconds = time.perf_counter() - started
    return load.stats


def stored_cursor(engine: sa.Engine, integration_id: str, stream: str) -> str | None:
    with engine.connect() as conn:
        return read_cursor(conn, integration_id, stream)
