"""The CSV pass-through: a clean CSV file's bytes go to PostgreSQL's own `COPY (FORMAT csv)`.

The precise path parses every value in Python (files_formats.py, files_values.py). For a file
whose every column PostgreSQL can read the same way, `csv_copy_plan` instead hands the data layer
a `CsvCopyBatch`: the file's data lines streamed as they are, parsed and re-encoded by the
server, with each declared column's conversion as a SQL expression the merge applies (decimal
comma, thousands separators, dd.mm.yyyy, yes/no). The rules are conservative, and everything they
cannot promise is checked while the bytes stream or after the COPY; any doubt raises, and the
file falls back to the precise path, which then lands it or names the line, column and value.

Taken only when:
- the encoding is one whose PostgreSQL conversion maps every byte as Python's codec does
  (`PG_ENCODINGS`; checked byte by byte in the tests), and the bytes decode in Python;
- the header (after `skip_rows`) names every field, at least two, and its names pass the
  precise path's own checks;
- every declared column type has a conversion here (`jsonb` has none), and a cursor column
  is text (its landed text must be the source's, byte for byte);
- every quote opens a field or closes one (PostgreSQL and Python's csv module read a quote inside
  an unquoted field differently), no line is longer than the precise path allows, no NUL byte and
  no `\\.` (COPY's end-of-data marker) appear.
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
CHUNK_BYTES = 1024 * 1024
# A quoted field may run across chunks; one longer than this goes to the precise path.
MAX_CARRY_BYTES = 8 * CHUNK_BYTES
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
    csv_columns = []
    for name in layout.names:
        kind = kinds.get(name)
        if kind is None or kind == "text":
            csv_columns.append(CsvColumn(name, kind))
            continue
        convert = converter(kind, options)
        if convert is None:
            raise NotEligible(f"column '{name}' is {kind}")
        csv_columns.append(CsvColumn(name, kind, convert))
    start = _data_offset(path, encoding, options.skip_rows + 1)
    if encodings is not None and not options.encoding:
        encodings[path.name] = f"{encoding} ({how})"
    typed = [c.name for c in csv_columns if c.declared not in (None, "text")]
    return CsvCopyBatch(
        columns=csv_columns,
        chunks=checked_chunks(path, start, codec, delimiter, quote),
        encoding=pg_encoding,
        delimiter=delimiter,
        quote=quote,
        # A typed column has no empty value: the precise path reads "" as null there, and
        # everywhere under quoted_empty: null.
        force_null=[c.name for c in csv_columns] if options.quoted_empty == "null" else typed,
        max_value_bytes=limits.CSV_FIELD_CHARS.value(),
    )


def _data_offset(path: Path, encoding: str, lines: int) -> int:
    """The byte offset after the first `lines` text lines (the precise path reads them the same
    way); NotEligible when the file holds nothing after them but blank space."""
    with _open_text(path, encoding) as handle:
        text = "".join(handle.readline() for _ in range(lines))
    size = len(text.encode(encoding))
    with path.open("rb") as handle:
        if handle.read(size) != text.encode(encoding):
            raise NotEligible("the header's bytes do not read back")
        if not handle.read(CHUNK_BYTES).strip():
            raise NotEligible("no data lines")
    return size


def checked_chunks(
    path: Path, start: int, codec: str, delimiter: str, quote: str
) -> Iterator[bytes]:
    """The file's bytes from `start`, in chunks, checked as they pass (SourceDataError when a
    check fails, which ends the COPY and sends the file to the precise path)."""
    decoder = codecs.getincrementaldecoder(codec)()
    fields = _QuotedFields(delimiter, quote)
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
            fields.feed(chunk)
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
            fields.finish()
            # Blank lines at the end are no rows to the precise path; to COPY they would be.
            if held:
                yield b"\r\n" if held.endswith(b"\r\n") else held[-1:]
            return
    raise NotEligible(f"a line longer than {line_limit} bytes")


class _QuotedFields:
    """Checks that every quote in the data opens or closes a field, or is doubled inside one.

    There PostgreSQL's COPY and Python's csv module agree; they part where a quote stands inside
    an unquoted field (`ab"c`) or after a closing quote (`"ab"c`). A regular expression consumes
    whole fields; what it cannot consume at a chunk's end waits for the next chunk."""

    def __init__(self, delimiter: str, quote: str) -> None:
        d, q = re.escape(delimiter.encode()), re.escape(quote.encode())
        ends = b"[" + d + rb"\r\n]"
        self._pattern = re.compile(
            rb"(?:[^" + q + rb"]++|(?<=" + ends + rb")" + q
            + rb"(?:[^" + q + rb"]++|" + q + q + rb")*+" + q + rb"(?=" + ends + rb"))*+"
        )  # fmt: skip
        self._pending = b"\n"  # the byte before the data (the header's line end), then the rest

    def feed(self, chunk: bytes) -> None:
        data = self._pending + chunk
        end = self._pattern.match(data, 1).end()  # type: ignore[union-attr]
        if end - 1 > MAX_CARRY_BYTES and end < len(data):
            raise NotEligible("a quoted field longer than the pass-through holds")
        self._pending = data[end - 1 :]
        if len(self._pending) > MAX_CARRY_BYTES:
            raise NotEligible("a quote that does not open or close a field, or a long quoted field")

    def finish(self) -> None:
        data = self._pending + b"\n"
        if self._pattern.match(data, 1).end() != len(data):  # type: ignore[union-attr]
            raise NotEligible("a quote that does not open or close a field")


# -- conversions --------------------------------------------------------------------------------


def converter(kind: str, options: FileOptions) -> Convert | None:
    """The SQL that turns a staged CSV text into the text `kind` reads, as files_values does."""
    if kind in ("integer", "bigint", "numeric", "double precision"):
        return _number(kind, options)
    if kind == "date":
        return _temporal([options.date_format or "%Y-%m-%d"], iso=False)
    if kind in ("timestamp", "timestamptz"):
        patterns = [p for p in (options.datetime_format, options.date_format) if p]
        return _temporal(patterns, iso=True)
    if kind == "boolean":
        return _boolean
    return None


def _shaped(pattern: str, canonical: Convert) -> Convert:
    def convert(value: sql.Composable) -> sql.Composable:
        return sql.SQL("(case when {v} ~ {p} then {c} else {r} || {v} end)").format(
            v=value, p=sql.Literal(pattern), c=canonical(value), r=sql.Literal(_REFUSED)
        )

    return convert


def _number(kind: str, options: FileOptions) -> Convert:
    decimal, thousands = options.decimal or ".", options.thousands
    removed = ""
    if thousands:
        removed = thousands + ("".join(_SPACES) if thousands == " " else "")
    point = re.escape(decimal)
    if kind in ("integer", "bigint"):
        # The precise path also takes "5,0" as 5; such a file falls back to it.
        shape = "^[+-]?[0-9]+$"
    else:
        shape = f"^[+-]?([0-9]+{point}?[0-9]*|{point}[0-9]+)([eE][+-]?[0-9]+)?$"

    def cleaned(value: sql.Composable) -> sql.Composable:
        if not removed:
            return value
        return sql.SQL("translate({}, {}, '')").format(value, sql.Literal(removed))

    def canonical(value: sql.Composable) -> sql.Composable:
        if decimal == "." or kind in ("integer", "bigint"):
            return value
        return sql.SQL("replace({}, {}, '.')").format(value, sql.Literal(decimal))

    shaped = _shaped(shape, canonical)
    return lambda value: shaped(cleaned(value))


_FIELDS = {"%d": ("[0-9]{2}", "day"), "%m": ("[0-9]{2}", "month"), "%Y": ("[0-9]{4}", "year")}
_FIELDS.update(
    {
        "%H": ("([01][0-9]|2[0-3])", "hour"),
        "%M": ("[0-5][0-9]", "minute"),
        "%S": ("[0-5][0-9]", "second"),
    }
)
_WIDTHS = {"%d": 2, "%m": 2, "%Y": 4, "%H": 2, "%M": 2, "%S": 2}
_LITERALS = set(".-/ :T")
_ISO_TIMESTAMP = (
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    "([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9]([.][0-9]{1,6})?)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?$"
)


def _strptime_shape(pattern: str) -> tuple[str, Convert] | None:
    """(regex, SQL giving ISO text) for a strptime pattern of fixed-width fields, or None."""
    tokens = re.findall(r"%.|.", pattern)
    regex, at, parts = "^", 1, {}
    for token in tokens:
        if token in _FIELDS:
            if _FIELDS[token][1] in parts:
                return None
            regex += _FIELDS[token][0]
            parts[_FIELDS[token][1]] = (at, _WIDTHS[token])
            at += _WIDTHS[token]
        elif token in _LITERALS:
            regex += re.escape(token)
            at += 1
        else:
            return None
    if not {"year", "month", "day"} <= set(parts) or ("minute" in parts) != ("hour" in parts):
        return None
    if "second" in parts and "minute" not in parts:
        return None

    def piece(value: sql.Composable, name: str) -> sql.Composable:
        start, width = parts[name]
        return sql.SQL("substr({}, {}, {})").format(value, sql.Literal(start), sql.Literal(width))

    def iso(value: sql.Composable) -> sql.Composable:
        pieces = [piece(value, "year"), "-", piece(value, "month"), "-", piece(value, "day")]
        if "hour" in parts:
            pieces += [" ", piece(value, "hour"), ":", piece(value, "minute")]
            if "second" in parts:
                pieces += [":", piece(value, "second")]
        return sql.SQL("({})").format(
            sql.SQL(" || ").join(p if not isinstance(p, str) else sql.Literal(p) for p in pieces)
        )

    return regex + "$", iso


def _temporal(patterns: list[str], iso: bool) -> Convert | None:
    shapes = []
    for pattern in patterns:
        shape = _strptime_shape(pattern)
        if shape is None:
            return None
        shapes.append(shape)
    if iso:
        shapes.append((_ISO_TIMESTAMP, lambda value: value))

    def convert(value: sql.Composable) -> sql.Composable:
        cases = sql.SQL(" ").join(
            sql.SQL("when {} ~ {} then {}").format(value, sql.Literal(regex), canonical(value))
            for regex, canonical in shapes
        )
        return sql.SQL("(case {} else {} || {} end)").format(cases, sql.Literal(_REFUSED), value)

    return convert


def _boolean(value: sql.Composable) -> sql.Composable:
    true = sorted(k for k, v in _BOOLEANS.items() if v)
    false = sorted(k for k, v in _BOOLEANS.items() if not v)
    return sql.SQL(
        "(case when {v} = any({t}) then 'true' when {v} = any({f}) then 'false'"
        " else {r} || {v} end)"
    ).format(v=value, t=sql.Literal(true), f=sql.Literal(false), r=sql.Literal(_REFUSED))
