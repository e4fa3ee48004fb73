"""Streams CSV, XLSX, JSON and NDJSON files as bounded batches without holding a file in memory.

`read_batches` yields `RawBatch`es. CSV and XLSX batches are *tabular*: positional rows under one
list of column names (already renamed per the spec), so that values can be converted a column at
a time; JSON and NDJSON batches hold records (dicts). Each row comes with `where` — a line number
(CSV, NDJSON) or a label such as "sheet 'Orders' row 12" or "record 3" — for error messages;
`describe(where)` gives the text. Structural problems (bad encoding, ragged rows, broken workbook,
invalid JSON, missing records path, duplicate or missing header names) raise SourceDataError
naming the file and the place.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

from synkro_dagster.contracts import Record, SourceDataError
from synkro_dagster.specs.files import FileOptions

SAMPLE_BYTES = 64 * 1024
# Encodings told apart by detection when the spec fixes none; others must be named in the spec.
DETECTED_ENCODINGS = ["cp1251", "cp1252"]
DELIMITERS = (";", ",", "\t")
TEXT_BUFFER = 1024 * 1024

Located = tuple[int | str, Any]


@dataclass
class RawBatch:
    """Up to `size` rows: positional rows under `names` (tabular), or records (names is None).

    `wheres` places each row for error messages; CSV batches leave it None and place a row only
    when an error needs it (`locate`, re-reading the file), as tracking line numbers costs more
    than parsing the rows."""

    names: list[str] | None
    wheres: list[int | str] | None
    rows: list[Any]
    first: int = 0  # index of rows[0] among the file's data rows
    locate: Callable[[int], str] | None = None

    def where(self, index: int) -> str:
        """Where row `index` of this batch is in the file: "line 57", "record 3", ..."""
        if self.wheres is not None:
            return describe(self.wheres[index])
        assert self.locate is not None
        return self.locate(self.first + index)


def describe(where: int | str) -> str:
    """ "line 57" for a line number, else the reader's own label."""
    return f"line {where}" if isinstance(where, int) else where


def read_batches(
    path: Path, options: FileOptions, primary_key: list[str], size: int
) -> Iterator[RawBatch]:
    """The file's rows in file order, `size` at a time."""
    if options.format == "csv":
        yield from _csv_batches(path, options, primary_key, size)
        return
    readers = {"xlsx": _xlsx_rows, "json": _json_records}
    rows = readers.get(options.format, _ndjson_records)(path, options, primary_key)
    # Every reader first yields its column names (None for record formats), then its rows.
    names = next(rows)
    wheres: list[int | str] = []
    batch: list[Any] = []
    for where, row in rows:
        wheres.append(where)
        batch.append(row)
        if len(batch) >= size:
            yield RawBatch(names, wheres, batch)
            wheres, batch = [], []
    if batch:
        yield RawBatch(names, wheres, batch)


# -- CSV ----------------------------------------------------------------------------------------


def detect_encoding(path: Path) -> tuple[str, str]:
    """(encoding, how it was chosen) from the first 64 KB: BOM, then valid UTF-8, then
    charset-normalizer among DETECTED_ENCODINGS."""
    with path.open("rb") as handle:
        sample = handle.read(SAMPLE_BYTES)
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig", "detected: UTF-8 byte-order mark"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16", "detected: UTF-16 byte-order mark"
    try:
        # final=False: a multi-byte character cut by the sample's end is not an error.
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
        return "utf-8", "detected from the first 64 KB"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(sample, cp_isolation=DETECTED_ENCODINGS).best()
    if best is None:
        raise SourceDataError(
            f"{path.name}: cannot tell its text encoding (tried UTF-8, "
            f"{', '.join(DETECTED_ENCODINGS)}); set files.encoding in the spec"
        )
    return best.encoding, "detected from the first 64 KB"


def _decode_error(path: Path, encoding: str, how: str) -> SourceDataError:
    """Find the first undecodable byte (only on the error path) and say where it is."""
    decoder = codecs.getincrementaldecoder(encoding)()
    line = 1
    offset = 0
    with path.open("rb") as handle:
        while chunk := handle.read(TEXT_BUFFER):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                # The decoder may hold back a few bytes of the previous chunk; close enough.
                bad = max(exc.start, 0)
                line += chunk[:bad].count(b"\n")
                value = chunk[bad : bad + 4].hex(" ")
                return SourceDataError(
                    f"{path.name} line {line} (byte {offset + bad}): bytes {value} are not "
                    f"valid {encoding} (encoding {how}); fix the export or set files.encoding"
                )
            line += chunk.count(b"\n")
            offset += len(chunk)
    return SourceDataError(f"{path.name}: not valid {encoding} (encoding {how})")


def sniff_delimiter(first_line: str) -> str:
    """The candidate that occurs most often outside quotes in the header line (',' if none)."""
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for char in first_line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def _check_header(
    path: Path, where: str, names: list[Any], options: FileOptions, primary_key: list[str]
) -> list[str]:
    """Header cells -> column names (renamed); errors for empty, duplicate or missing key names."""
    cleaned = ["" if n is None else str(n).strip().lstrip("\ufeff") for n in names]
    for index, name in enumerate(cleaned, start=1):
        if not name:
            raise SourceDataError(f"{path.name} {where}: column {index} of the header has no name")
    duplicated = sorted({n for n in cleaned if cleaned.count(n) > 1})
    if duplicated:
        raise SourceDataError(
            f"{path.name} {where}: duplicate column names in the header: "
            + ", ".join(repr(n) for n in duplicated)
        )
    renamed = [options.rename.get(n, n) for n in cleaned]
    collided = sorted({n for n in renamed if renamed.count(n) > 1})
    if collided:
        raise SourceDataError(
            f"{path.name} {where}: after renaming, several columns are named "
            + ", ".join(repr(n) for n in collided)
        )
    missing = [k for k in primary_key if k not in renamed]
    if missing:
        raise SourceDataError(
            f"{path.name} {where}: primary-key column "
            + ", ".join(repr(k) for k in missing)
            + f" is not in the header (columns: {', '.join(cleaned)})"
        )
    return renamed


@dataclass(frozen=True)
class _CsvLayout:
    """What the header told: how to read the rest of the file, and its line numbers."""

    encoding: str
    how: str
    delimiter: str
    quotechar: str
    header_line: int
    names: list[str]
    width: int  # fields in the header line, including unnamed trailing ones


def _open_text(path: Path, encoding: str) -> io.TextIOWrapper:
    return path.open("r", encoding=encoding, newline="", buffering=TEXT_BUFFER)  # type: ignore[return-value]


def _csv_header(
    path: Path, handle: io.TextIOBase, options: FileOptions, primary_key: list[str], enc: tuple
) -> _CsvLayout:
    for _ in range(options.skip_rows):
        handle.readline()
    first = handle.readline()
    if not first.strip():
        raise SourceDataError(f"{path.name}: the file is empty (no header row)")
    delimiter = options.delimiter or sniff_delimiter(first)
    # The header line is read on its own (to sniff); the rest goes through the csv reader.
    header = next(csv.reader([first], delimiter=delimiter, quotechar=options.quotechar))
    header_line = options.skip_rows + 1
    width = len(header)
    # A trailing delimiter (common in 1C exports) gives unnamed last columns: ignore them.
    while header and not header[-1].strip():
        header.pop()
    names = _check_header(path, f"line {header_line}", header, options, primary_key)
    return _CsvLayout(enc[0], enc[1], delimiter, options.quotechar, header_line, names, width)


def _is_blank(row: list[str]) -> bool:
    return not row or (len(row) == 1 and not row[0].strip())


def _csv_locator(path: Path, options: FileOptions, layout: _CsvLayout) -> Callable[[int], str]:
    """index of a data row -> "line N": re-reads the file (only on the error path)."""

    def locate(index: int) -> str:
        with _open_text(path, layout.encoding) as handle:
            for _ in range(layout.header_line):
                handle.readline()
            reader = csv.reader(handle, delimiter=layout.delimiter, quotechar=layout.quotechar)
            count = -1
            start = layout.header_line + 1
            for row in reader:
                if not _is_blank(row):
                    count += 1
                    if count == index:
                        return f"line {start}"
                start = layout.header_line + 1 + reader.line_num
        return f"data row {index + 1}"

    return locate


def _csv_batches(
    path: Path, options: FileOptions, primary_key: list[str], size: int
) -> Iterator[RawBatch]:
    enc = (options.encoding, "set by the spec") if options.encoding else detect_encoding(path)
    handle = _open_text(path, enc[0])
    try:
        layout = _csv_header(path, handle, options, primary_key, enc)
        locate = _csv_locator(path, options, layout)
        names, named = layout.names, len(layout.names)
        reader = csv.reader(
            handle, delimiter=layout.delimiter, quotechar=layout.quotechar, strict=True
        )
        index = 0
        while True:
            try:
                # The csv module parses a whole batch in C; nothing runs per row in Python.
                rows = list(islice(reader, size))
            except csv.Error as exc:
                line = layout.header_line + reader.line_num
                raise SourceDataError(f"{path.name} line {line}: malformed CSV ({exc})") from None
            if not rows:
                return
            if set(map(len, rows)) != {named}:
                rows = _fixed_rows(path, rows, layout, index, locate)
                if not rows:
                    continue
            yield RawBatch(names, None, rows, index, locate)
            index += len(rows)
    except UnicodeDecodeError:
        raise _decode_error(path, enc[0], enc[1]) from None
    finally:
        handle.close()


def _fixed_rows(
    path: Path, rows: list[list[str]], layout: _CsvLayout, index: int, locate: Callable
) -> list[list[str]]:
    """Rows without blank lines and unnamed trailing fields; a ragged row is an error."""
    named = len(layout.names)
    fixed = []
    for row in rows:
        if len(row) != named:
            if _is_blank(row):
                continue
            if not (named < len(row) <= layout.width and not any(v.strip() for v in row[named:])):
                raise SourceDataError(
                    f"{path.name} {locate(index + len(fixed))}: {len(row)} fields, the header "
                    f"has {named} (delimiter {layout.delimiter!r})"
                )
            row = row[:named]
        fixed.append(row)
    return fixed


# -- XLSX ---------------------------------------------------------------------------------------


def _xlsx_rows(path: Path, options: FileOptions, primary_key: list[str]) -> Iterator[Any]:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise SourceDataError(f"{path.name}: not a valid XLSX workbook ({exc})") from None
    except Exception as exc:  # openpyxl raises its own InvalidFileException and XML errors
        raise SourceDataError(
            f"{path.name}: not a valid XLSX workbook ({type(exc).__name__}: {exc})"
        ) from None
    try:
        if options.sheet is not None:
            if options.sheet not in workbook.sheetnames:
                raise SourceDataError(
                    f"{path.name}: no sheet {options.sheet!r} (sheets: "
                    + ", ".join(repr(s) for s in workbook.sheetnames)
                    + ")"
                )
            sheet = workbook[options.sheet]
            label = f"sheet {options.sheet!r}"
        else:
            sheet = workbook.worksheets[0]
            label = f"sheet {sheet.title!r}"
        rows = sheet.iter_rows(values_only=True)
        number = 0
        for _ in range(options.skip_rows):
            next(rows, None)
            number += 1
        header = None
        for cells in rows:
            number += 1
            if any(c is not None and str(c).strip() for c in cells):
                header = list(cells)
                break
        if header is None:
            raise SourceDataError(f"{path.name} {label}: the sheet is empty (no header row)")
        while header and (header[-1] is None or not str(header[-1]).strip()):
            header.pop()
        names = _check_header(path, f"{label} row {number}", header, options, primary_key)
        width = len(names)
        yield names
        padding = (None,) * width
        for cells in rows:
            number += 1
            if all(c is None or (isinstance(c, str) and not c.strip()) for c in cells):
                continue
            extra = cells[width:]
            if any(c is not None and str(c).strip() for c in extra):
                raise SourceDataError(
                    f"{path.name} {label} row {number}: values beyond the header's {width} columns"
                )
            if len(cells) != width:
                cells = (tuple(cells) + padding)[:width]
            yield f"{label} row {number}", cells
    except SourceDataError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise SourceDataError(f"{path.name}: not a valid XLSX workbook ({exc})") from None
    finally:
        workbook.close()


# -- JSON and NDJSON ----------------------------------------------------------------------------


def _renamed(record: Any, where: int | str, path: Path, options: FileOptions) -> Record:
    if not isinstance(record, dict):
        raise SourceDataError(
            f"{path.name} {describe(where)}: is a {type(record).__name__}, not an object (a record)"
        )
    if options.rename:
        return {options.rename.get(k, k): v for k, v in record.items()}
    return record


def _json_records(path: Path, options: FileOptions, primary_key: list[str]) -> Iterator[Any]:
    import ijson

    yield None
    records_path = options.records_path or ""
    found = {"array": False}

    def watched(events: Iterator[tuple[str, str, Any]]) -> Iterator[tuple[str, str, Any]]:
        for prefix, event, value in events:
            if prefix == records_path and not found["array"]:
                if event == "start_array":
                    found["array"] = True
                elif event in ("start_map", "string", "number", "boolean", "null"):
                    what = "an object" if event == "start_map" else f"a {event}"
                    hint = "set files.records_path" if not records_path else "check records_path"
                    at = f"records path {records_path!r}" if records_path else "the top level"
                    raise SourceDataError(
                        f"{path.name}: {at} is {what}, not an array of records ({hint})"
                    )
            yield prefix, event, value

    item_prefix = f"{records_path}.item" if records_path else "item"
    with path.open("rb") as handle:
        if handle.read(3) != codecs.BOM_UTF8:
            handle.seek(0)
        number = 0
        try:
            for record in ijson.items(watched(ijson.parse(handle)), item_prefix):
                number += 1
                where = f"record {number}"
                yield where, _renamed(record, where, path, options)
        except ijson.JSONError as exc:
            where = f"after record {number}" if number else "before the first record"
            raise SourceDataError(f"{path.name}: not valid JSON {where} ({exc})") from None
    if not found["array"]:
        if not records_path:
            raise SourceDataError(f"{path.name}: the file is empty (no JSON array)")
        raise SourceDataError(
            f"{path.name}: records path {records_path!r} is not in the file "
            "(check files.records_path)"
        )


def _ndjson_records(path: Path, options: FileOptions, primary_key: list[str]) -> Iterator[Any]:
    yield None
    encoding = options.encoding or "utf-8-sig"
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode(encoding)
                value = json.loads(text, parse_float=Decimal)
            except UnicodeDecodeError as exc:
                raise SourceDataError(
                    f"{path.name} line {number}: bytes {raw[exc.start : exc.start + 4].hex(' ')} are "
                    f"not valid {encoding}"
                ) from None
            except ValueError as exc:
                raise SourceDataError(
                    f"{path.name} line {number}: not valid JSON ({exc})"
                ) from None
            yield number, _renamed(value, number, path, options)
