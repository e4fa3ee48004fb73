"""The CSV pass-through: a clean CSV file's bytes go to PostgreSQL's own `COPY (FORMAT csv)`.

The precise path parses every value in Python (files_formats.py, files_values.py). For a file
whose every column PostgreSQL can read the same way, `csv_copy_plan` instead hands the data layer
a `CsvCopyBatch`: the file's data lines streamed as they are, parsed and re-encoded by the
server. A column whose text PostgreSQL reads as the precise path would (plain integers and
decimals, ISO dates and times) is staged in its type; the others are staged as text, and their
conversion is a SQL expression the merge applies (decimal comma, thousands separators,
dd.mm.yyyy, yes/no). While the bytes stream, one regular expression per row (C speed, beside
the server's COPY) checks that every field has a shape both readers agree on, so the SQL needs no
pattern matching of its own. Any doubt raises, and the file falls back to the precise path, which
then lands it or names the line, column and value.

Taken only when:
- the encoding is one whose PostgreSQL conversion maps every byte as Python's codec does
  (`PG_ENCODINGS`; checked byte by byte in the tests), and the bytes decode in Python;
- the header (after `skip_rows`) names every field, at least two, and its names pass the
  precise path's own checks;
- every declared column type has a conversion here (`jsonb` has none), and a cursor column
  is text (its landed text must be the source's, byte for byte);
- every row has the header's number of fields, each of its column's shape; every quote opens a
  field or closes one (PostgreSQL and Python's csv module read a quote inside an unquoted field
  differently); a column without a declared type holds no value the precise path would read as
  a date (it infers such a column's type); no line is longer than the precise path allows, no
  NUL byte and no `\\.` (COPY's end-of-data marker) appear.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from psycopg import sql

from synkro_dagster import limits
from synkro_dagster.connectors.files_formats import _csv_header, _open_text, detect_encoding
from synkro_dagster.connectors.files_values import _BOOLEANS, _SPACES
from synkro_dagster.contracts import CsvColumn, CsvCopyBatch, SourceDataError
from synkro_dagster.specs.files import FileOptions
from synkro_dagster.specs.models import base_type

# Python codec name -> PostgreSQL encoding name.
PG_ENCODINGS = {
    "utf-8": "UTF8",
    "utf-8-sig": "UTF8",
    "cp1251": "WIN1251",
    "cp1252": "WIN1252",
    "iso8859-1": "LATIN1",
    "koi8-r": "KOI8R",
    "cp866": "WIN866",
    "iso8859-5": "ISO_8859_5",
}
CHUNK_BYTES = 256 * 1024
# Prefixed to a value of the wrong shape: no cast to a number, date or boolean accepts it.
_REFUSED = "not convertible: "

Convert = Callable[[sql.Composable], sql.Composable]


class NotEligible(SourceDataError):
    """Why a file is read by the precise path (raised while the bytes stream, it ends the COPY
    and the data layer gives the file to the precise path)."""


def csv_copy_plan(
    path: Path,
    options: FileOptions,
    columns: dict[str, str],
    primary_key: list[str],
    cursor: str | None,
    encodings: dict[str, str] | None = None,
) -> CsvCopyBatch:
    """The file as a CsvCopyBatch, or NotEligible saying why it takes the precise path."""
    if options.format != "csv":
        raise NotEligible("not CSV")
    try:
        encoding, how = (
            (options.encoding, "set by the spec") if options.encoding else detect_encoding(path)
        )
    except SourceDataError as error:
        raise NotEligible(str(error)) from None
    codec = codecs.lookup(encoding).name
    pg_encoding = PG_ENCODINGS.get(codec)
    if pg_encoding is None:
        raise NotEligible(f"encoding {encoding} has no PostgreSQL COPY conversion here")
    quote = options.quotechar
    if not (quote.isascii() and quote not in "\r\n\x00"):
        raise NotEligible(f"quote character {quote!r}")
    _check_header_lines(path, options.skip_rows + 1)
    with _open_text(path, encoding) as handle:
        try:
            layout = _csv_header(path, handle, options, primary_key, (encoding, how))
        except (SourceDataError, UnicodeDecodeError) as error:
            raise NotEligible(f"header: {error}") from None
    delimiter = layout.delimiter
    if not delimiter.isascii() or delimiter in f"\r\n\x00{quote}\\":
        raise NotEligible(f"delimiter {delimiter!r}")
    if layout.width != len(layout.names) or layout.width < 2:
        raise NotEligible("the header has unnamed or fewer than two columns")
    kinds = {name: base_type(kind) for name, kind in columns.items()}
    if cursor is not None and kinds.get(cursor, "text") != "text":
        raise NotEligible(f"the cursor column '{cursor}' is {kinds[cursor]}")
    start, sample = _data_offset(path, encoding, options.skip_rows + 1)
    csv_columns = []
    shapes = []
    for name in layout.names:
        kind = kinds.get(name)
        if kind is None or kind == "text":
            csv_columns.append(CsvColumn(name, kind))
            shapes.append(None if kind is None else b"")
            continue
        found = column_shape(kind, options, codec, sample)
        if found is None:
            raise NotEligible(f"column '{name}' is {kind}")
        shape, stage_type, convert = found
        csv_columns.append(CsvColumn(name, kind, convert, stage_type))
        shapes.append(shape)
    if encodings is not None and not options.encoding:
        encodings[path.name] = f"{encoding} ({how})"
    typed = [c.name for c in csv_columns if c.declared not in (None, "text")]
    return CsvCopyBatch(
        columns=csv_columns,
        chunks=checked_chunks(
            path,
            start,
            codec,
            _RowShapes(
                delimiter,
                quote,
                shapes,
                [name in primary_key for name in layout.names],
                options.quoted_empty == "null",
            ),
        ),
        encoding=pg_encoding,
        delimiter=delimiter,
        quote=quote,
        # A typed column has no empty value: the precise path reads "" as null there, and
        # everywhere under quoted_empty: null.
        force_null=[c.name for c in csv_columns] if options.quoted_empty == "null" else typed,
    )


def _check_header_lines(path: Path, lines: int) -> None:
    """NotEligible when one of the first `lines` lines is longer than the CSV line limit (read in
    chunks: the header is read whole next)."""
    limit = limits.CSV_LINE_BYTES.value()
    run = 0
    with path.open("rb") as handle:
        while lines and (chunk := handle.read(CHUNK_BYTES)):
            pieces = chunk.split(b"\n", lines)
            ended = len(pieces) - 1
            run += len(pieces[0])
            if run > limit or any(len(piece) > limit for piece in pieces[1:ended]):
                raise NotEligible("a header line longer than the CSV line limit")
            if ended:
                lines -= ended
                run = len(pieces[-1])
    if run > limit:
        raise NotEligible("a header line longer than the CSV line limit")


def _data_offset(path: Path, encoding: str, lines: int) -> tuple[int, bytes]:
    """The byte offset after the first `lines` text lines (the precise path reads them the same
    way) and the first chunk of bytes after it; NotEligible when the file holds nothing after
    them but blank space."""
    with _open_text(path, encoding) as handle:
        text = "".join(handle.readline() for _ in range(lines))
    size = len(text.encode(encoding))
    with path.open("rb") as handle:
        if handle.read(size) != text.encode(encoding):
            raise NotEligible("the header's bytes do not read back")
        sample = handle.read(CHUNK_BYTES)
        if not sample.strip():
            raise NotEligible("no data lines")
    return size, sample


def checked_chunks(path: Path, start: int, codec: str, rows: _RowShapes) -> Iterator[bytes]:
    """The file's bytes from `start`, in chunks, checked as they pass (SourceDataError when a
    check fails, which ends the COPY and sends the file to the precise path)."""
    decoder = codecs.getincrementaldecoder(codec)()
    line_limit = limits.CSV_LINE_BYTES.value()
    size = min(CHUNK_BYTES, line_limit)
    run = 0  # bytes since the last line feed
    held = b""  # trailing line ends, held back until more data follows them
    tail = b""  # the previous chunk's last byte
    with path.open("rb") as handle:
        handle.seek(start)
        while chunk := handle.read(size):
            if b"\x00" in chunk or b"\\." in chunk or b"\\." in tail + chunk[:1]:
                raise NotEligible("a NUL byte or \\. in the data")
            tail = chunk[-1:]
            first = chunk.find(b"\n")
            if first == -1:
                run += len(chunk)
            else:
                if run + first > line_limit:
                    break
                run = len(chunk) - chunk.rfind(b"\n") - 1
            if run > line_limit:
                break
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError:
                raise NotEligible(f"bytes that are not {codec}") from None
            rows.feed(chunk)
            data = held + chunk
            body = data.rstrip(b"\r\n")
            held = data[len(body) :]
            if body:
                yield body
        else:
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                raise NotEligible(f"bytes that are not {codec}") from None
            rows.finish()
            # Blank lines at the end are no rows to the precise path; to COPY they would be.
            if held:
                yield b"\r\n" if held.endswith(b"\r\n") else held[-1:]
            return
    raise NotEligible(f"a line longer than {line_limit} bytes")


class _RowShapes:
    """Checks every row against the shapes of its fields, a chunk at a time.

    A field is quoted (`"..."`, inner quotes doubled) or not (no quote in it); a typed column's
    field is empty, or its shape bare or quoted; a primary key's field is not empty. Where
    PostgreSQL's COPY and Python's csv module agree on every row, they read the same values; they
    part where a quote stands inside an unquoted field (`ab"c`) or after a closing quote
    (`"ab"c`). What the expression cannot consume at a chunk's end waits for the next chunk; a
    row that waits for more than the longest field the precise path reads (`CSV_FIELD_CHARS`,
    less a chunk) goes to the precise path, which decides."""

    def __init__(
        self,
        delimiter: str,
        quote: str,
        shapes: list[bytes | None],
        keys: list[bool],
        quoted_empty_is_null: bool,
    ) -> None:
        d, q = re.escape(delimiter.encode()), re.escape(quote.encode())
        inside = b"(?:[^" + q + b"]++|" + q + q + b")"
        quoted = q + inside + b"*+" + q
        plain = b"[^" + d + q + b"\r\n]*+"
        fields = []
        for shape, key in zip(shapes, keys, strict=True):
            if shape:
                field = shape + b"|" + q + shape + q + (b"" if key else b"|" + q + q + b"|")
            elif key:  # a text key: never null
                field = (q + inside + b"++" + q if quoted_empty_is_null else quoted) + b"|"
                field += plain[:-2] + b"++"
            else:
                field = quoted + b"|" + plain
            if shape is None:  # no declared type: nothing the precise path reads as a date
                field = b"(?!" + q + b"?" + _ISO_DATE + b")(?:" + field + b")"
            fields.append(b"(?:" + field + b")")
        row = d.join(fields) + b"\r?\n"
        self._pattern = re.compile(b"(?:" + row + b")*+")
        self._pending = b""
        self._longest = limits.CSV_FIELD_CHARS.value() - CHUNK_BYTES

    def feed(self, chunk: bytes) -> None:
        data = self._pending + chunk
        end = self._pattern.match(data).end()  # type: ignore[union-attr]
        self._pending = data[end:]
        if len(self._pending) > self._longest:
            raise NotEligible(
                "a row whose fields do not have their columns' shapes, or a very long one"
            )

    def finish(self) -> None:
        data = self._pending.rstrip(b"\r\n")
        if data and self._pattern.fullmatch(data + b"\n") is None:
            raise NotEligible("a row whose fields do not have their columns' shapes")


# -- shapes and conversions ---------------------------------------------------------------------

_ISO_DATE = b"[0-9]{4}-[0-9]{2}-[0-9]{2}"
# At most this many digits in a number: a longer one goes to the precise path (its field limit).
_DIGITS = b"{1,1000}"
_ISO_TIMESTAMP = (
    _ISO_DATE + b"(?:[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:[.][0-9]{1,6})?)?"
    b"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?)?"
)
Shape = tuple[bytes, str, Convert | None]


def column_shape(kind: str, options: FileOptions, codec: str, sample: bytes) -> Shape | None:
    """(field shape, staging type, SQL conversion of the staged text) for a declared column, as
    files_values reads it; None for a type without one here (jsonb). `sample`: the first data
    bytes (a choice of shape made from them is still checked on every row)."""
    if kind in ("integer", "bigint", "numeric", "double precision"):
        return _number(kind, options, codec)
    if kind == "date":
        if options.date_format in (None, "%Y-%m-%d"):
            return _ISO_DATE, "date", None
        return _formatted([options.date_format or ""], iso=False)
    if kind in ("timestamp", "timestamptz"):
        patterns = [p for p in (options.datetime_format, options.date_format) if p]
        if not patterns:
            return _ISO_TIMESTAMP, kind, None
        return _formatted(patterns, iso=True)
    if kind == "boolean":
        words = {}
        for word in sorted(_BOOLEANS, key=len, reverse=True):
            try:
                words[word] = re.escape(word.encode(codec))
            except UnicodeEncodeError:
                continue
        ascii_words = [w for word, w in words.items() if word.isascii()]
        if not any(word.encode(codec) in sample for word in words if not word.isascii()):
            # PostgreSQL reads t/yes/1/N/False... as the precise path does; да/нет need SQL.
            return b"(?:" + b"|".join(ascii_words) + b")", "boolean", None
        return b"(?:" + b"|".join(words.values()) + b")", "text", _boolean
    return None


def _number(kind: str, options: FileOptions, codec: str) -> Shape:
    decimal, thousands = options.decimal or ".", options.thousands
    removed = ""
    if thousands:
        removed = thousands + ("".join(_SPACES) if thousands == " " else "")
    whole = kind in ("integer", "bigint")
    digits = b"[0-9]" + _DIGITS
    if removed:
        # Digits with separators between them; the precise path removes the separators.
        separators = b"|".join(
            re.escape(c.encode(codec)) for c in removed if c.encode(codec, "ignore")
        )
        digits = b"[0-9]++(?:(?:" + separators + b")[0-9]++){0,300}"
    point = re.escape(decimal.encode())
    if whole:
        # The precise path also takes "5,0" or "1e3" as a whole number; such a file falls back.
        shape = b"[+-]?" + digits
    else:
        shape = (
            b"[+-]?(?:" + digits + b"(?:" + point + b"[0-9]{0,1000})?|" + point + b"[0-9]{1,1000})"
            b"(?:[eE][+-]?[0-9]{1,6})?"
        )
    if not removed and decimal == ".":
        return shape, kind, None  # PostgreSQL reads it as it is

    def convert(value: sql.Composable) -> sql.Composable:
        if removed:
            value = sql.SQL("translate({}, {}, '')").format(value, sql.Literal(removed))
        if decimal != "." and not whole:
            value = sql.SQL("replace({}, {}, '.')").format(value, sql.Literal(decimal))
        return value

    return shape, "text", convert


_FIELDS = {
    "%d": (b"[0-9]{2}", "day", 2),
    "%m": (b"[0-9]{2}", "month", 2),
    "%Y": (b"[0-9]{4}", "year", 4),
    "%H": (b"(?:[01][0-9]|2[0-3])", "hour", 2),
    "%M": (b"[0-5][0-9]", "minute", 2),
    "%S": (b"[0-5][0-9]", "second", 2),
}
_LITERALS = set(".-/ :T")


def _strptime_shape(pattern: str) -> tuple[bytes, tuple[int, int, str], Convert] | None:
    """(shape, (length, position, character of its first literal), SQL giving ISO text) of a
    strptime pattern of fixed-width fields."""
    shape, at, parts = b"", 1, {}
    literal: tuple[int, str] | None = None
    for token in re.findall(r"%.|.", pattern):
        if token in _FIELDS:
            regex, name, width = _FIELDS[token]
            if name in parts:
                return None
            shape += regex
            parts[name] = (at, width)
            at += width
        elif token in _LITERALS:
            shape += re.escape(token.encode())
            literal = literal or (at, token)
            at += 1
        else:
            return None
    if not {"year", "month", "day"} <= set(parts) or ("minute" in parts) != ("hour" in parts):
        return None
    if ("second" in parts and "minute" not in parts) or literal is None:
        return None

    def piece(value: sql.Composable, name: str) -> sql.Composable:
        start, width = parts[name]
        return sql.SQL("substr({}, {}, {})").format(value, sql.Literal(start), sql.Literal(width))

    def iso(value: sql.Composable) -> sql.Composable:
        pieces: list[sql.Composable] = [piece(value, "year"), sql.Literal("-")]
        pieces += [piece(value, "month"), sql.Literal("-"), piece(value, "day")]
        if "hour" in parts:
            pieces += [sql.Literal(" "), piece(value, "hour"), sql.Literal(":")]
            pieces.append(piece(value, "minute"))
            if "second" in parts:
                pieces += [sql.Literal(":"), piece(value, "second")]
        return sql.SQL("({})").format(sql.SQL(" || ").join(pieces))

    return shape, (at - 1, *literal), iso


def _formatted(patterns: list[str], iso: bool) -> Shape | None:
    """Dates or times in strptime patterns (tried in order, then ISO), told apart in SQL by their
    length and first literal: each pattern must have its own, and (beside ISO) its first literal
    third, where ISO has a digit."""
    shapes = []
    for pattern in patterns:
        found = _strptime_shape(pattern)
        if found is None or (iso and found[1][1] != 3):
            return None
        shapes.append(found)
    if len({mark for _, mark, _ in shapes}) != len(shapes):
        return None
    alternatives = [shape for shape, _, _ in shapes] + ([_ISO_TIMESTAMP] if iso else [])

    def convert(value: sql.Composable) -> sql.Composable:
        cases = sql.SQL(" ").join(
            sql.SQL("when length({v}) = {n} and substr({v}, {p}, 1) = {c} then {iso}").format(
                v=value,
                n=sql.Literal(length),
                p=sql.Literal(position),
                c=sql.Literal(char),
                iso=canonical(value),
            )
            for _, (length, position, char), canonical in shapes
        )
        return sql.SQL("(case {} else {} end)").format(
            cases, value if iso else sql.SQL("{} || {}").format(sql.Literal(_REFUSED), value)
        )

    return b"(?:" + b"|".join(alternatives) + b")", "text", convert


def _boolean(value: sql.Composable) -> sql.Composable:
    true = sorted(k for k, v in _BOOLEANS.items() if v)
    return sql.SQL(
        "(case when {v} = any({t}) then 'true' when {v} is not null then 'false' end)"
    ).format(v=value, t=sql.Literal(true))
