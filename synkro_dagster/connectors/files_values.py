"""Converts file values to the types a stream's `columns:` hints ask for (numbers, dates, ...).

Each converter takes a raw value (a string from CSV, or a typed value from XLSX / JSON) and returns
the Python value the data layer lands, or raises ValueError with the reason, phrased to follow the
quoted value: "'12,3,4' is not a number (decimal ',')". None passes through as None, so that a
whole column can be mapped at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from synkro_dagster import jsonnumbers
from synkro_dagster.specs.files import FileOptions

Converter = Callable[[Any], Any]

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_TRUE = {"true", "t", "yes", "y", "1", "да", "д", "истина"}
_FALSE = {"false", "f", "no", "n", "0", "нет", "н", "ложь"}
_BOOLEANS = {
    **{v: True for t in _TRUE for v in (t, t.upper(), t.capitalize())},
    **{v: False for f in _FALSE for v in (f, f.upper(), f.capitalize())},
}
# What PostgreSQL's integer types hold: a value beyond them is the file's error, named here with
# its line and column rather than by PostgreSQL at merge time.
INTEGER_RANGES = {"integer": (-(2**31), 2**31 - 1), "bigint": (-(2**63), 2**63 - 1)}
# Spreadsheet programs and 1C write the thousands space as a non-breaking or narrow space.
_SPACES = ("\u00a0", "\u202f", "\u2009")


def make_converter(column_type: str, options: FileOptions) -> Converter | None:
    """The converter for one hinted column type; None when values pass through unchanged."""
    if column_type == "text":
        return _to_text
    if column_type in ("numeric", "integer", "bigint", "double precision"):
        return _number_converter(column_type, options)
    if column_type == "date":
        return _date_converter(options)
    if column_type in ("timestamp", "timestamptz"):
        return _timestamp_converter(options)
    if column_type == "boolean":
        return _to_boolean
    if column_type == "jsonb":
        return _to_json
    return None


def _to_text(value: Any) -> Any:
    if value is None or type(value) is str:
        return value
    # XLSX keeps codes such as 00123 as the number 123.0; a text column wants "123".
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return jsonnumbers.dumps(value)
    return str(value)


def _number_converter(column_type: str, options: FileOptions) -> Converter:
    decimal = options.decimal
    thousands = options.thousands
    describe = f"decimal '{decimal}'" + (f", thousands '{thousands}'" if thousands else "")
    noun = "a whole number" if column_type in ("integer", "bigint") else "a number"

    def clean(text: str) -> str:
        text = text.strip()
        if thousands:
            if thousands == " ":
                for space in _SPACES:
                    text = text.replace(space, " ")
            text = text.replace(thousands, "")
        if decimal != ".":
            if "." in text:
                raise ValueError(f"is not {noun} ({describe})")
            text = text.replace(decimal, ".")
        if not _NUMBER.fullmatch(text):
            raise ValueError(f"is not {noun} ({describe})")
        return text

    # The common case (plain "1234.50" with decimal '.') skips the cleaning; Decimal() alone
    # would also accept "1_000", so underscores take the strict path.
    plain = decimal == "." and not thousands

    def parse(value: Any) -> Decimal | None:
        if value is None:
            return None
        if type(value) is str:
            if plain and "_" not in value:
                try:
                    number = Decimal(value)
                except ArithmeticError:
                    number = Decimal(clean(value))
            else:
                number = Decimal(clean(value))
        elif isinstance(value, bool):
            raise ValueError(f"is not {noun}")
        elif isinstance(value, Decimal):
            number = value
        elif isinstance(value, int):
            number = Decimal(value)
        elif isinstance(value, float):
            number = Decimal(repr(value))
        else:
            raise ValueError(f"is not {noun}")
        if not number.is_finite():
            raise ValueError(f"is not {noun}")
        return number

    if column_type in ("integer", "bigint"):
        low, high = INTEGER_RANGES[column_type]
        out_of_range = f"is out of range for {column_type} ({low} to {high})"

        def checked(number: int) -> int:
            if not low <= number <= high:
                raise ValueError(out_of_range)
            return number

        def to_int(value: Any) -> int | None:
            if value is None:
                return None
            if type(value) is str and value.isascii() and "_" not in value:
                try:
                    return checked(int(value))  # the common case: plain digits
                except ValueError as exc:
                    if str(exc) == out_of_range:
                        raise
            elif isinstance(value, int) and not isinstance(value, bool):
                return checked(value)
            number = parse(value)
            assert number is not None
            if number != number.to_integral_value():
                raise ValueError(f"is not {noun} ({describe})")
            if not number.is_finite() or abs(number.adjusted()) > 30:
                raise ValueError(out_of_range)
            return checked(int(number))

        return to_int
    if column_type == "double precision":

        def to_float(value: Any) -> float | None:
            if value is None or isinstance(value, float):
                return value
            return float(parse(value))  # type: ignore[arg-type]

        return to_float
    return parse


def _date_converter(options: FileOptions) -> Converter:
    pattern = options.date_format

    def to_date(value: Any) -> date | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, date):
            return value
        if not isinstance(value, str):
            raise ValueError("is not a date")
        text = value.strip()
        try:
            if pattern:
                return datetime.strptime(text, pattern).date()
            return date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"is not a date (format {pattern or 'YYYY-MM-DD'})") from None

    return to_date


def _timestamp_converter(options: FileOptions) -> Converter:
    patterns = [p for p in (options.datetime_format, options.date_format) if p]

    def to_timestamp(value: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            return value
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day)
        if not isinstance(value, str):
            raise ValueError("is not a timestamp")
        text = value.strip()
        for pattern in patterns:
            try:
                return datetime.strptime(text, pattern)
            except ValueError:
                continue
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            expected = " or ".join(patterns) if patterns else "ISO 8601"
            raise ValueError(f"is not a timestamp (format {expected})") from None

    return to_timestamp


def _to_boolean(value: Any) -> bool | None:
    if value is None:
        return None
    if type(value) is str:
        known = _BOOLEANS.get(value)
        if known is not None:
            return known
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | Decimal) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise ValueError("is not a boolean (true/false, yes/no, 1/0, да/нет)")


def _to_json(value: Any) -> Any:
    if type(value) is str:
        try:
            return jsonnumbers.loads(value)
        except ValueError:
            raise ValueError("is not JSON") from None
    return value


# -- whole columns ------------------------------------------------------------------------------

ColumnConverter = Callable[[Sequence[Any]], list[Any]]
_SEPARATOR = "\x1f"  # joins a column into one string for C-speed checks and replacements


def make_column_converter(column_type: str, options: FileOptions) -> ColumnConverter | None:
    """Converts a whole column (a batch's values of one column) at once.

    A fast path runs the conversion as C loops (`map(int, ...)`, `map(Decimal, ...)`,
    `map(date.fromisoformat, ...)`) when the column's text has the plain shape; anything else
    falls back to the per-value converter, which raises ValueError for the first bad value.
    """
    convert = make_converter(column_type, options)
    if convert is None:
        return None
    fast = _fast_path(column_type, options)

    def column_converter(column: Sequence[Any]) -> list[Any]:
        if fast is not None and None not in column:
            try:
                joined = _SEPARATOR.join(column)
            except TypeError:
                joined = None  # not all text (XLSX, JSON): per value
            if joined is not None:
                try:
                    converted = fast(column, joined)
                except (ValueError, ArithmeticError, KeyError, IndexError):
                    converted = None
                if converted is not None:
                    return converted
        return list(map(convert, column))

    return column_converter


def _fast_path(
    column_type: str, options: FileOptions
) -> Callable[[Sequence[str], str], list[Any] | None] | None:
    decimal, thousands = options.decimal, options.thousands
    if column_type in ("integer", "bigint", "numeric", "double precision"):

        def numbers(column: Sequence[str], joined: str) -> list[Any] | None:
            # Underscores, NaN and Infinity are accepted by int()/Decimal() but not numbers here.
            if "_" in joined or "n" in joined or "N" in joined:
                return None
            if thousands:
                for space in (thousands, *(_SPACES if thousands == " " else ())):
                    joined = joined.replace(space, "")
            if decimal != ".":
                if "." in joined:
                    return None
                joined = joined.replace(decimal, ".")
            values = joined.split(_SEPARATOR)
            if len(values) != len(column):
                return None
            if column_type in ("integer", "bigint"):
                ints = list(map(int, values))
                low, high = INTEGER_RANGES[column_type]
                if ints and (min(ints) < low or max(ints) > high):
                    return None  # per value: the converter names the first one out of range
                return ints
            if column_type == "double precision":
                return list(map(float, values))
            return list(map(Decimal, values))

        return numbers
    if column_type == "date" and options.date_format in (None, "%Y-%m-%d"):
        return lambda column, joined: list(map(date.fromisoformat, column))
    if column_type == "date" and options.date_format in ("%d.%m.%Y", "%d/%m/%Y", "%d-%m-%Y"):
        sep = options.date_format[2]

        def dotted_dates(column: Sequence[str], joined: str) -> list[Any] | None:
            # dd.mm.yyyy -> yyyy-mm-dd, then C-speed parsing; other shapes go per value.
            iso = [
                f"{v[6:]}-{v[3:5]}-{v[:2]}" if len(v) == 10 and v[2] == v[5] == sep else "x"
                for v in column
            ]
            return list(map(date.fromisoformat, iso))

        return dotted_dates
    if column_type in ("timestamp", "timestamptz") and not options.datetime_format:
        if options.date_format:
            return None  # a date-only value must go through the date pattern
        return lambda column, joined: list(map(datetime.fromisoformat, column))
    if column_type == "boolean":
        return lambda column, joined: list(map(_BOOLEANS.__getitem__, column))
    return None
