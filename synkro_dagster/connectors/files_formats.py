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
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

from synkro_dagster import limits
from synkro_dagster.contracts import Record, SourceDataError
from synkro_dagster.specs.files import FileOptions

SAMPLE_BYTES = 64 * 1024
# Encodings told apart by detection when the spec fixes none; others must be named in the spec.
DETECTED_ENCODINGS = ["cp1251", "cp1252"]
# Below this confidence a detected single-byte encoding is a guess: the file is rejected and the
# spec must name the encoding (a cp1252 file whose only non-ASCII character is € reads as cp1251
# just as well).
MIN_ENCODING_CONFIDENCE = 0.6
# JSON objects and arrays nested deeper than this are rejected (PostgreSQL's jsonb and Python's
# own encoders recurse per level).
# Default nesting limit; SYNKRO_JSON_MAX_DEPTH (synkro_dagster.limits) changes it.
MAX_JSON_DEPTH = limits.JSON_DEPTH.default
DELIMITERS = (";", ",", "\t")
TEXT_BUFFER = 1024 * 1024


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
    text: bool = False  # str values that may hold a NUL character: check them (CSV)
    empty_is_null: bool = True  # "" still means null (CSV rows whose empties were not resolved)

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
    path: Path,
    options: FileOptions,
    primary_key: list[str],
    size: int,
    encodings: dict[str, str] | None = None,
) -> Iterator[RawBatch]:
    """The file's rows in file order, `size` at a time. A detected (not declared) text encoding
    is reported in `encodings` by file name."""
    if options.format == "csv":
        yield from _csv_batches(path, options, primary_key, size, encodings)
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
    words read as cp1251 or cp1252 (`cyrillic_or_western`), refused below MIN_ENCODING_CONFIDENCE."""
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
    candidates = []
    for encoding in DETECTED_ENCODINGS:
        try:
            candidates.append((encoding, sample.decode(encoding)))
        except UnicodeDecodeError:
            continue
    if not candidates:
        raise SourceDataError(
            f"{path.name}: cannot tell its text encoding (tried UTF-8, "
            f"{', '.join(DETECTED_ENCODINGS)}); set files.encoding in the spec"
        )
    if len(candidates) == 1:
        return candidates[0][0], "detected, confidence 1.00: the only one that decodes it"
    encoding, confidence = cyrillic_or_western(sample)
    if confidence < MIN_ENCODING_CONFIDENCE:
        other = next(e for e in DETECTED_ENCODINGS if e != encoding)
        raise SourceDataError(
            f"{path.name}: its text encoding is uncertain: {encoding} with confidence "
            f"{confidence:.2f}, below {MIN_ENCODING_CONFIDENCE}, and {other} reads it as well; "
            "set files.encoding in the spec"
        )
    return encoding, f"detected, confidence {confidence:.2f}"


_RUSSIAN = set("абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ")
_WORD = re.compile(r"[^\W\d_]+")


def cyrillic_or_western(sample: bytes) -> tuple[str, float]:
    """cp1251 or cp1252 for bytes both decode, and the confidence (0.5 = no evidence either way).

    Words are read as cp1251. A word of two or more Russian letters is evidence for cp1251; a
    word that mixes ASCII letters with non-ASCII ones ("Cafй" = cp1252's "Café") is evidence for
    cp1252. charset-normalizer is not asked: on short samples it reads a lone "€" (0x80) as
    cp1251's "Ђ" and a Russian text as "Italian" in cp1252.
    """
    text = sample.decode("cp1251")
    cyrillic = western = 0
    for word in _WORD.findall(text):
        if word.isascii():
            continue
        if len(word) >= 2 and all(char in _RUSSIAN for char in word):
            cyrillic += len(word)
        elif any(char.isascii() for char in word):
            western += len(word)
    if cyrillic == western:
        return ("cp1251" if cyrillic else "cp1252"), 0.5
    if cyrillic > western:
        return "cp1251", cyrillic / (cyrillic + western)
    return "cp1252", western / (cyrillic + western)


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
    return path.open("r", encoding=encoding, newline="", buffering=TEXT_BUFFER)


def _csv_header(
    path: Path, handle: io.TextIOBase, options: FileOptions, primary_key: list[str], enc: tuple
) -> _CsvLayout:
    for _ in range(options.skip_rows):
        handle.readline()
    first = handle.readline()
    if not first.strip():
        raise SourceDataError(f"{path.name}: the file is empty (no header row)")
    delimiter = options.delimiter or sniff_delimiter(first)
    header_line = options.skip_rows + 1
    # The header line is read on its own (to sniff); the rest goes through the csv reader.
    try:
        header = next(csv.reader([first], delimiter=delimiter, quotechar=options.quotechar))
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            raise _csv_error(path, header_line, exc) from None
        raise SourceDataError(
            f"{path.name} line {header_line}: malformed CSV header ({exc})"
        ) from None
    width = len(header)
    # A trailing delimiter (common in 1C exports) gives unnamed last columns: ignore them.
    while header and not header[-1].strip():
        header.pop()
    names = _check_header(path, f"line {header_line}", header, options, primary_key)
    return _CsvLayout(enc[0], enc[1], delimiter, options.quotechar, header_line, names, width)


def _is_blank(row: list[Any]) -> bool:
    return not row or (len(row) == 1 and not (row[0] or "").strip())


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
    path: Path,
    options: FileOptions,
    primary_key: list[str],
    size: int,
    encodings: dict[str, str] | None = None,
) -> Iterator[RawBatch]:
    _check_csv_lines(path)
    # The csv module's own default (131,072 characters) is both too small for long text fields
    # and not what the operator configured; it is process-wide, so it is set for every read.
    csv.field_size_limit(limits.CSV_FIELD_CHARS.value())
    enc = (options.encoding, "set by the spec") if options.encoding else detect_encoding(path)
    if encodings is not None and not options.encoding:
        encodings[path.name] = f"{enc[0]} ({enc[1]})"
    handle = _open_text(path, enc[0])
    try:
        layout = _csv_header(path, handle, options, primary_key, enc)
        locate = _csv_locator(path, options, layout)
        quoted_pair, nul = _scan_text_bytes(path, layout)
        if options.quoted_empty == "empty" and quoted_pair:
            yield from _csv_batches_keeping_quoted_empty(path, handle, layout, size, locate, nul)
            return
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
                raise _csv_error(path, line, exc) from None
            if not rows:
                return
            if set(map(len, rows)) != {named}:
                rows = _fixed_rows(path, rows, layout, index, locate)
                if not rows:
                    continue
            yield RawBatch(names, None, rows, index, locate, text=nul)
            index += len(rows)
    except UnicodeDecodeError:
        raise _decode_error(path, enc[0], enc[1]) from None
    finally:
        handle.close()


def _check_csv_lines(path: Path) -> None:
    """Refuse a file with a line longer than SYNKRO_CSV_MAX_LINE_BYTES before parsing it: the csv
    module (and the header read) would hold the whole line, however long, in memory."""
    limit = limits.CSV_LINE_BYTES.value()
    with path.open("rb") as handle:
        line = limits.longest_line_over(handle, limit)
    if line is not None:
        raise SourceDataError(
            f"{path.name} line {line}: longer than {limit} bytes, the most one CSV line may "
            f"hold ({limits.CSV_LINE_BYTES.hint()})"
        )


def _csv_error(path: Path, line: int, exc: csv.Error) -> SourceDataError:
    if "field larger than field limit" in str(exc):
        limit = limits.CSV_FIELD_CHARS.value()
        return SourceDataError(
            f"{path.name} line {line}: a field longer than {limit} characters, the most one CSV "
            f"field may hold ({limits.CSV_FIELD_CHARS.hint()})"
        )
    return SourceDataError(f"{path.name} line {line}: malformed CSV ({exc})")


def _scan_text_bytes(path: Path, layout: _CsvLayout) -> tuple[bool, bool]:
    """(two quote characters in a row anywhere, a NUL byte anywhere), in one pass over the bytes.

    A quoted empty field is `""`: most files hold none and take the fast path where every empty
    field is null. Values are checked for NUL characters only in a file that has a NUL byte."""
    name = codecs.lookup(layout.encoding).name
    if name.startswith(("utf-16", "utf-32")):
        return True, True  # every character has zero bytes; look at the text instead
    needle = (layout.quotechar * 2).encode("utf-8" if name == "utf-8-sig" else name)
    pair = nul = False
    tail = b""
    with path.open("rb") as handle:
        while chunk := handle.read(TEXT_BUFFER):
            pair = pair or needle in tail + chunk[: len(needle)] or needle in chunk
            nul = nul or b"\x00" in chunk
            if pair and nul:
                break
            tail = chunk[-len(needle) + 1 :]
    return pair, nul


class _RecordedLines:
    """The text lines a csv reader pulls, kept until taken: the raw text of the row just read
    (the csv module reads no further than the end of the current row)."""

    def __init__(self, handle: io.TextIOBase) -> None:
        self._handle = handle
        self._lines: list[str] = []

    def __iter__(self) -> _RecordedLines:
        return self

    def __next__(self) -> str:
        line = next(self._handle)
        self._lines.append(line)
        return line

    def take(self) -> str:
        text = "".join(self._lines)
        self._lines.clear()
        return text


def quoted_empty_fields(raw: str, delimiter: str, quotechar: str) -> set[int]:
    """Positions of the fields written as `""` in one CSV row's raw text (a row the csv module
    accepted in strict mode, so every quoted field is closed)."""
    found: set[int] = set()
    index = pos = 0
    while True:
        if raw.startswith(quotechar, pos):
            end = pos + 1
            while True:
                close = raw.find(quotechar, end)
                if close == -1:
                    return found
                if raw.startswith(quotechar, close + 1):
                    end = close + 2  # a doubled quote inside the field
                    continue
                break
            if close == pos + 1:
                found.add(index)
            pos = close + 1
        nxt = raw.find(delimiter, pos)
        if nxt == -1:
            return found
        pos = nxt + 1
        index += 1


def _csv_batches_keeping_quoted_empty(
    path: Path,
    handle: io.TextIOBase,
    layout: _CsvLayout,
    size: int,
    locate: Callable,
    nul: bool = True,
) -> Iterator[RawBatch]:
    """Rows where an unquoted empty field is None and a quoted one ("") is "", as PostgreSQL's
    COPY reads CSV. Python's csv module returns "" for both, so each row's raw text is looked at
    — the slower path, taken only by files that hold `""` at all."""
    lines = _RecordedLines(handle)
    reader = csv.reader(lines, delimiter=layout.delimiter, quotechar=layout.quotechar, strict=True)
    pair = layout.quotechar * 2
    index = 0
    while True:
        rows: list[list[Any]] = []
        try:
            for fields in reader:
                raw = lines.take()
                row: list[Any] = fields  # text, or None for an empty unquoted field
                if "" in row:
                    quoted = quoted_empty_fields(raw, layout.delimiter, layout.quotechar)
                    if pair in raw:
                        row = [
                            None if v == "" and i not in quoted else v for i, v in enumerate(row)
                        ]
                    else:
                        row = [None if v == "" else v for v in row]
                rows.append(row)
                if len(rows) >= size:
                    break
        except csv.Error as exc:
            line = layout.header_line + reader.line_num
            raise _csv_error(path, line, exc) from None
        if not rows:
            return
        if set(map(len, rows)) != {len(layout.names)}:
            rows = _fixed_rows(path, rows, layout, index, locate)
            if not rows:
                continue
        yield RawBatch(layout.names, None, rows, index, locate, text=nul, empty_is_null=False)
        index += len(rows)


def _fixed_rows(
    path: Path, rows: list[list[Any]], layout: _CsvLayout, index: int, locate: Callable
) -> list[list[Any]]:
    """Rows without blank lines and unnamed trailing fields; a ragged row is an error."""
    named = len(layout.names)
    fixed: list[list[Any]] = []
    for row in rows:
        if len(row) != named:
            if _is_blank(row):
                continue
            extra = row[named:]
            if not (named < len(row) <= layout.width and not any((v or "").strip() for v in extra)):
                raise SourceDataError(
                    f"{path.name} {locate(index + len(fixed))}: {len(row)} fields, the header "
                    f"has {named} (delimiter {layout.delimiter!r})"
                )
            row = row[:named]
        fixed.append(row)
    return fixed


# -- XLSX ---------------------------------------------------------------------------------------


def check_xlsx_archive(path: Path) -> None:
    """Refuse a zip bomb before openpyxl opens it: the archive's declared sizes (zipfile stops
    any member at its declared size, so they cannot lie upwards) against the total, per-part
    ratio and shared-strings limits. openpyxl holds the shared strings in memory even in
    read-only mode; everything else it streams."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise SourceDataError(f"{path.name}: not a valid XLSX workbook ({exc})") from None
    total_limit = limits.XLSX_UNCOMPRESSED_BYTES.value()
    total = sum(m.file_size for m in members)
    if total > total_limit:
        raise SourceDataError(
            f"{path.name}: unpacks to {total} bytes, more than the {total_limit} an XLSX file may "
            f"({limits.XLSX_UNCOMPRESSED_BYTES.hint()})"
        )
    ratio_limit = limits.XLSX_RATIO.value()
    strings_limit = limits.XLSX_SHARED_STRINGS_BYTES.value()
    for member in members:
        if (
            member.filename.lower().endswith("sharedstrings.xml")
            and member.file_size > strings_limit
        ):
            raise SourceDataError(
                f"{path.name}: its shared-strings table {member.filename} unpacks to "
                f"{member.file_size} bytes, more than {strings_limit} "
                f"({limits.XLSX_SHARED_STRINGS_BYTES.hint()})"
            )
        # Small parts may compress very well without harm; a bomb is large by definition.
        if member.file_size > 1024 * 1024:
            ratio = member.file_size / max(member.compress_size, 1)
            if ratio > ratio_limit:
                raise SourceDataError(
                    f"{path.name}: part {member.filename} unpacks {ratio:.0f} times its packed "
                    f"size ({member.compress_size} -> {member.file_size} bytes), more than "
                    f"{ratio_limit} (a zip bomb?; {limits.XLSX_RATIO.hint()})"
                )


def _xlsx_rows(path: Path, options: FileOptions, primary_key: list[str]) -> Iterator[Any]:
    from openpyxl import load_workbook

    check_xlsx_archive(path)
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
    for key, value in record.items():
        if isinstance(value, dict | list) and _too_deep(value):
            raise SourceDataError(
                f"{path.name} {describe(where)}, column '{key}': JSON nested more than "
                f"{limits.JSON_DEPTH.value()} levels deep (SYNKRO_JSON_MAX_DEPTH)"
            )
    if options.rename:
        return {options.rename.get(k, k): v for k, v in record.items()}
    return record


def _too_deep(value: Any) -> bool:
    """Whether objects/arrays nest deeper than MAX_JSON_DEPTH below `value` (iteratively: a
    recursive walk would itself fail on the values it is meant to catch)."""
    max_depth = limits.JSON_DEPTH.value()
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _one_line(error: BaseException, limit: int = 160) -> str:
    """An exception's text on one line (parsers' messages carry newlines and carets)."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _prefixed(
    events: Iterator[tuple[str, Any]], path: Path, records_path: str
) -> Iterator[tuple[str, str, Any]]:
    """ijson's (prefix, event, value) events, built here with a depth limit.

    ijson's own `parse` builds every event's prefix from the whole path, which for a document
    nested 100,000 levels deep takes gigabytes before any record is complete; nesting beyond
    MAX_JSON_DEPTH below the records is rejected instead."""
    limit = (records_path.count(".") + 1 if records_path else 0) + 1 + limits.JSON_DEPTH.value()
    stack: list[str | None] = []
    for event, value in events:
        if event == "map_key":
            prefix = ".".join(map(str, stack[:-1]))
            stack[-1] = value
        elif event == "start_map" or event == "start_array":
            prefix = ".".join(map(str, stack))
            stack.append(None if event == "start_map" else "item")
            if len(stack) > limit:
                raise SourceDataError(
                    f"{path.name}: JSON nested more than {limits.JSON_DEPTH.value()} levels deep (SYNKRO_JSON_MAX_DEPTH) "
                    f"(at {prefix[:60] or 'the top level'}…)"
                )
        elif event == "end_map" or event == "end_array":
            stack.pop()
            prefix = ".".join(map(str, stack))
        else:
            prefix = ".".join(map(str, stack))
        yield prefix, event, value


def _lone_surrogate_error(path: Path, at: int) -> SourceDataError:
    line, line_start, done = 1, 0, 0
    with path.open("rb") as handle:
        while done < at and (chunk := handle.read(min(TEXT_BUFFER, at - done))):
            line += chunk.count(b"\n")
            last = chunk.rfind(b"\n")
            if last != -1:
                line_start = done + last + 1
            done += len(chunk)
        escape = handle.read(6).decode("ascii", errors="replace")
    return SourceDataError(
        f"{path.name} line {line}, column {at - line_start + 1}: a lone UTF-16 surrogate escape "
        f"{escape}; it is not a character and cannot be stored"
    )


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
        # ijson turns a lone surrogate escape into "?" without a word: refuse it first.
        at = limits.lone_surrogate_in_file(handle)
        if at is not None:
            raise _lone_surrogate_error(path, at)
        number = 0
        try:
            events = _prefixed(ijson.basic_parse(handle, use_float=False), path, records_path)
            for record in ijson.items(watched(events), item_prefix):
                number += 1
                where = f"record {number}"
                yield where, _renamed(record, where, path, options)
        except ijson.JSONError as exc:
            where = f"after record {number}" if number else "before the first record"
            raise SourceDataError(
                f"{path.name}: not valid JSON {where} ({_one_line(exc)})"
            ) from None
        except RecursionError:
            raise SourceDataError(
                f"{path.name} record {number + 1}: JSON nested too deep to read"
            ) from None
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
            if b"\\u" in raw and (at := limits.lone_surrogate_at(raw)) is not None:
                raise SourceDataError(
                    f"{path.name} line {number}, column {at + 1}: a lone UTF-16 surrogate escape "
                    f"{raw[at : at + 6].decode('ascii')}; it is not a character and cannot be "
                    "stored"
                )
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
                    f"{path.name} line {number}: not valid JSON ({_one_line(exc)})"
                ) from None
            except RecursionError:
                raise SourceDataError(
                    f"{path.name} line {number}: JSON nested too deep to read (more than "
                    f"{limits.JSON_DEPTH.value()} levels, SYNKRO_JSON_MAX_DEPTH)"
                ) from None
            yield number, _renamed(value, number, path, options)
