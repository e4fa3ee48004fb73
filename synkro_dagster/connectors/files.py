"""FileDropConnector: reads the files dropped into an integration's inbox, one part per file.

Each complete file of a stream becomes one isolated `Part`, applied oldest export first. Its
identity is the upload: the file's name (plus the manifest's export id) and its SHA-256. The data
layer records it with the file's rows in one transaction and skips an upload it has already
recorded, so a file lands exactly once even if the move to `processed/` never happened, while a
new export with the same bytes as an older one loads again (the latest export wins).
Any error the file's content causes — reading, converting, or PostgreSQL rejecting a value —
rolls back that file alone and moves it to `quarantine/` with `<name>.error.txt`.
"""

from __future__ import annotations

import csv
import gc
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import repeat
from pathlib import Path
from typing import Any

from pydantic import Field

from synkro_dagster.connectors.base import ConnectorResource
from synkro_dagster.connectors.files_copy import NotEligible, csv_copy_plan
from synkro_dagster.connectors.files_formats import RawBatch, read_batches
from synkro_dagster.connectors.files_inbox import (
    DroppedFile,
    HashCache,
    Manifest,
    check_inbox,
    export_order,
    inbox_dir,
    move_to_processed,
    move_to_quarantine,
    read_manifest_info,
    ready_files,
    resolve_inbox_root,
    split_reason,
)
from synkro_dagster.connectors.files_values import (
    ColumnConverter,
    Converter,
    make_column_converter,
    make_converter,
)
from synkro_dagster.contracts import (
    Batch,
    Integration,
    Part,
    ReadStats,
    SourceDataError,
    StreamRead,
)
from synkro_dagster.specs.files import FileOptions
from synkro_dagster.specs.models import SourceSpec, StreamSpec, base_type

_hashes = HashCache()
# dict.get(v, v) as a C-speed "empty string -> None" over a column.
_EMPTY_IS_NULL = {"": None}


class FileDropConnector(ConnectorResource):
    """Reads CSV, XLSX, JSON and NDJSON files from `<inbox_root>/<integration id>/`."""

    inbox_root: str | None = Field(
        default=None,
        description="folder holding one inbox per integration; default SYNKRO_INBOX_ROOT, "
        "else <temp dir>/inbox",
    )
    batch_rows: int = Field(default=10_000, ge=1, description="records per batch handed on")
    fast_paths: bool = Field(
        default=True,
        description="load a clean CSV file by PostgreSQL's own COPY (files_copy.py), falling "
        "back to the precise path for any file it refuses; off: every file is read in Python",
    )
    stable_seconds: float = Field(
        default=5.0,
        ge=0,
        description="a file must be unchanged this long before it is read (writers that do not "
        "use the .tmp -> rename protocol)",
    )

    def root(self) -> Path:
        return resolve_inbox_root(self.inbox_root)

    def inbox(self, integration_id: str) -> Path:
        """The integration's inbox folder."""
        return inbox_dir(self.root(), integration_id)

    @contextmanager
    def open_session(
        self, source: SourceSpec, integration: Integration
    ) -> Iterator[FileDropSession]:
        inbox = self.inbox(integration.id)
        inbox.mkdir(parents=True, exist_ok=True)
        # A linked inbox or processed/ folder, or a file in its place: fail before reading.
        check_inbox(inbox)
        yield FileDropSession(self, source, integration, inbox)


class FileDropSession:
    """One run's view of one integration's inbox."""

    def __init__(
        self,
        connector: FileDropConnector,
        source: SourceSpec,
        integration: Integration,
        inbox: Path,
    ) -> None:
        self.connector = connector
        self.source = source
        self.integration = integration
        self.inbox = inbox

    def read(self, stream: StreamSpec, cursor: str | None) -> StreamRead:
        """The stream's complete files, oldest export first, as parts. `cursor` is not used:
        which files were loaded is known by their uploads (name + hash), not by a cursor."""
        options = FileOptions.resolve(self.source, stream)
        stats = ReadStats()
        return StreamRead(
            parts=self._parts(stream, options, stats),
            stats=stats,
            column_types=dict(stream.columns),
        )

    def _parts(self, stream: StreamSpec, options: FileOptions, stats: ReadStats) -> Iterator[Part]:
        listed = ready_files(self.inbox, [(stream, options)], self.connector.stable_seconds)
        for dropped in export_order(listed):
            if dropped.refused is not None:
                # Never read (or hashed) through the link; the part fails and is quarantined.
                name = f"refused:{dropped.path.name}:{dropped.mtime_ns}"
                identity = hashlib.sha256(name.encode()).hexdigest()
                yield FilePart(self, stream, options, dropped, identity, stats, None)
                continue
            if not dropped.path.exists():
                continue  # taken by a concurrent run
            try:
                identity = _hashes.hash(dropped)
            except FileNotFoundError:
                continue
            # Changed while it was hashed: still being written; the next sync takes it.
            if not dropped.unchanged():
                continue
            manifest = read_manifest_info(dropped.path)
            yield FilePart(self, stream, options, dropped, identity, stats, manifest)


class FilePart(Part):
    """One dropped file: its batches, its identity, and where it goes afterwards."""

    isolated = True
    identity: str  # always known: the file's SHA-256 (or its name's, for a refused file)

    def __init__(
        self,
        session: FileDropSession,
        stream: StreamSpec,
        options: FileOptions,
        dropped: DroppedFile,
        identity: str,
        stats: ReadStats,
        manifest: Manifest | None = None,
    ) -> None:
        self.session = session
        self.stream = stream
        self.options = options
        self.dropped = dropped
        self.identity = identity
        self.stats = stats
        self.name = dropped.path.name
        self.path = dropped.path
        self.records = 0
        self.manifest = manifest
        self.export_id = manifest.export_id if manifest is not None else None
        self.dedupe = options.dedupe
        # "csv_copy" while the CSV pass-through is this file's path, else "records".
        self.read_path = "records"
        # Records the pass-through put in stats (taken back on a fallback); None: nothing yet.
        self._counted: int | None = None

    def typed_batches(self) -> Iterator[Any]:
        """A `CsvCopyBatch` of the file when its CSV can pass through PostgreSQL's COPY
        (files_copy.py), else the records of `batches()`."""
        plan = self._csv_copy_plan() if self.read_path == "records" else None
        if plan is None:
            yield from self.batches()
            return
        self.read_path = "csv_copy"
        self.stats.read_paths[self.name] = "csv_copy"
        yield plan
        self.records = self._counted = plan.rows
        self.stats.files += 1
        self.stats.bytes += self.dropped.size
        self.stats.records += plan.rows

    def _csv_copy_plan(self) -> Any:
        if not self.session.connector.fast_paths or self.options.format != "csv":
            return None
        manifest = self.manifest
        if self.dropped.refused is not None or (
            manifest is not None
            and (manifest.sha256 not in (None, self.identity) or manifest.exported_at_error)
        ):
            return None  # the precise path says what is wrong
        try:
            return csv_copy_plan(
                self.path,
                self.options,
                dict(self.stream.columns),
                list(self.stream.primary_key),
                self.stream.cursor.field if self.stream.cursor is not None else None,
                self.stats.encodings,
            )
        except NotEligible as reason:
            self.stats.read_paths[self.name] = f"records ({_one_line(reason)})"
            return None

    def fall_back(self, error: BaseException) -> bool:
        """The pass-through failed (PostgreSQL refused the COPY or a conversion, or a check):
        read the file again on the precise path, which lands it or names what is wrong."""
        if self.read_path != "csv_copy":
            return False
        self.read_path = "fallback"
        self.stats.read_paths[self.name] = f"records (pass-through refused: {_one_line(error)})"
        self._take_back()
        return True

    def again(self) -> None:
        """The pass-through is read again from the start (the data layer undid a direct load of
        the file to stage it instead)."""
        if self.read_path == "csv_copy":
            self.read_path = "records"
            self._take_back()

    def _take_back(self) -> None:
        """The read stats of an attempt the data layer rolled back."""
        if self._counted is not None:
            self.stats.files -= 1
            self.stats.bytes -= self.dropped.size
            self.stats.records -= self._counted
        self.records, self._counted = 0, None

    def batches(self) -> Iterator[Batch]:
        try:
            yield from self._batches()
        except SourceDataError:
            raise
        except RecursionError:
            raise SourceDataError(
                f"{self.name}: a value is nested too deep to read (JSON objects or arrays "
                "inside each other beyond Python's recursion limit)"
            ) from None
        except csv.Error as exc:
            raise SourceDataError(f"{self.name}: malformed CSV ({_one_line(exc)})") from None
        except (ValueError, ArithmeticError, LookupError, UnicodeError, EOFError) as exc:
            # Whatever else the file's content makes a parser raise is still this file's fault.
            raise SourceDataError(
                f"{self.name}: cannot read the file ({type(exc).__name__}: {_one_line(exc)})"
            ) from None

    def _batches(self) -> Iterator[Batch]:
        if self.dropped.refused is not None:
            raise SourceDataError(self.dropped.refused)
        manifest = self.manifest
        declared = manifest.sha256 if manifest is not None else None
        if declared is not None and declared != self.identity:
            raise SourceDataError(
                f"{self.name}: content does not match its manifest {self.name}.sha256 "
                f"(manifest {declared[:16]}…, file {self.identity[:16]}…): incomplete or "
                "altered upload"
            )
        if manifest is not None and manifest.exported_at_error:
            raise SourceDataError(
                f"{self.name}: its manifest {self.name}.sha256 is unreadable: "
                f"{manifest.exported_at_error}"
            )
        # Parsing goes by the plain type (numeric(10,2) parses as numeric); the data layer keeps
        # the declared size.
        kinds = {column: base_type(kind) for column, kind in self.stream.columns.items()}
        converters = {
            column: converter
            for column, kind in kinds.items()
            # CSV values are text already: a text hint has nothing to do.
            if not (kind == "text" and self.options.format == "csv")
            and (converter := make_converter(kind, self.options)) is not None
        }
        column_converters = {
            column: converter
            for column, kind in kinds.items()
            if column in converters
            and (converter := make_column_converter(kind, self.options)) is not None
        }
        size = self.session.connector.batch_rows
        raws = read_batches(
            self.path, self.options, list(self.stream.primary_key), size, self.stats.encodings
        )
        while True:
            with _no_cycle_collection():
                raw = next(raws, None)
                if raw is None:
                    break
                if raw.names is not None:
                    batch = self._table(raw, converters, column_converters)
                else:
                    batch = self._records(raw, converters)
            self.records += len(batch)
            yield batch
        self.stats.files += 1
        self.stats.bytes += self.dropped.size
        self.stats.records += self.records

    def _table(
        self,
        raw: RawBatch,
        converters: dict[str, Converter],
        column_converters: dict[str, ColumnConverter],
    ) -> Batch:
        """Convert positional rows a column at a time (the loops run in C), then make records."""
        names = raw.names or []
        columns: list[Any] = list(zip(*raw.rows, strict=True))
        for index, name in enumerate(names):
            column = columns[index]
            if raw.text:
                self._check_text(raw, name, column)
            # An unquoted empty field is null; a quoted one ("") stays an empty string in a text
            # column, while a typed column has no empty value but null.
            if (raw.empty_is_null or name in converters) and "" in column:
                column = list(map(_EMPTY_IS_NULL.get, column, column))
            convert = column_converters.get(name)
            if convert is not None:
                try:
                    column = convert(column)
                except ValueError:
                    self._raise_for_value(raw, name, column, converters[name])
            columns[index] = column
        for key in self.stream.primary_key:
            column = columns[names.index(key)]
            if None in column:
                where = raw.where(column.index(None))
                raise SourceDataError(f"{self.name} {where}: primary key '{key}' is empty")
        return list(map(dict, map(zip, repeat(names), zip(*columns, strict=True))))

    def _check_text(self, raw: RawBatch, name: str, column: tuple[Any, ...]) -> None:
        """PostgreSQL cannot store a NUL character in text: name the row instead of failing the
        stream at COPY time."""
        try:
            joined = "".join(column)
        except TypeError:
            joined = "".join(v for v in column if v is not None)
        if "\x00" not in joined:
            return
        index = next(i for i, v in enumerate(column) if v is not None and "\x00" in v)
        raise SourceDataError(
            f"{self.name} {raw.where(index)}, column '{name}': {_show(column[index])} contains a "
            "NUL character (byte 00), which PostgreSQL cannot store in text"
        )

    def locate(self, index: int) -> str | None:
        """Where record `index` of this file is: re-reads the file (only on the error path)."""
        try:
            start = 0
            size = self.session.connector.batch_rows
            keys = list(self.stream.primary_key)
            for raw in read_batches(self.path, self.options, keys, size):
                if index < start + len(raw.rows):
                    return raw.where(index - start)
                start += len(raw.rows)
        except Exception:  # noqa: BLE001 - a place is a courtesy; the error is reported anyway
            return None
        return None

    def _raise_for_value(
        self, raw: RawBatch, name: str, column: list[Any], convert: Converter
    ) -> None:
        for index, value in enumerate(column):
            try:
                convert(value)
            except ValueError as exc:
                raise SourceDataError(
                    f"{self.name} {raw.where(index)}, column '{name}': {_show(value)} {exc}"
                ) from None

    def _records(self, raw: RawBatch, converters: dict[str, Converter]) -> Batch:
        for index, record in enumerate(raw.rows):
            for column, convert in converters.items():
                value = record.get(column)
                if value is not None:
                    try:
                        record[column] = convert(value)
                    except ValueError as exc:
                        raise SourceDataError(
                            f"{self.name} {raw.where(index)}, column '{column}': "
                            f"{_show(value)} {exc}"
                        ) from None
            for key in self.stream.primary_key:
                if record.get(key) is None:
                    raise SourceDataError(
                        f"{self.name} {raw.where(index)}: primary key '{key}' is empty"
                        + ("" if key in record else " (no such field in the record)")
                    )
        return raw.rows

    def after_commit(self) -> None:
        move_to_processed(self.path)

    def rejected(self, error: SourceDataError) -> None:
        self.stats.files_rejected += 1
        self.stats.rejected.append((self.name, split_reason(str(error))[0]))
        move_to_quarantine(
            self.path,
            str(error),
            {
                "integration": self.session.integration.id,
                "stream": self.stream.name,
                "sha256": self.identity or "",
                **({"export id": self.export_id} if self.export_id else {}),
                "size": f"{self.dropped.size} bytes",
            },
        )


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Pause the cyclic garbage collector while one batch is built.

    A batch allocates hundreds of thousands of lists, tuples and dicts, each allocation counting
    towards the collector's thresholds, so it would run over and over — half of the read's CPU
    time — while none of these objects can form a cycle (reference counting frees them). It runs
    again between batches, while the data layer works.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 200 else text[:199] + "…"


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else repr(str(value))
    return text if len(text) <= 80 else text[:77] + "…'"
