"""Converts file values to the types a stream's `columns:` hints ask for (numbers, dates, ...).

Each converter takes a raw value (a string from CSV, or a typed value from XLSX / JSON) and returns
the Python value the data layer lands, or raises ValueError with the reason, phrased to follow the
quoted value: "'12,3,4' is not a number (decimal ',')".
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from synkro_dagster.specs.files import FileOptions

Converter = Callable[[Any], Any]

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_TRUE = {"true", "t", "yes", "y", "1", "да", "д", "истина"}
_FALSE = {"false", "f", "no", "n", "0", "нет", "н", "ложь"}
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
    if isinstance(value, str):
        return value
    # XLSX keeps codes such as 00123 as the number 123.0; a text column wants "123".
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
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

    def parse(value: Any) -> Decimal:
        if isinstance(value, bool):
            raise ValueError(f"is not {noun}")
        if isinstance(value, Decimal):
            number = value
        elif isinstance(value, int):
            number = Decimal(value)
        elif isinstance(value, float):
            number = Decimal(repr(value))
        elif isinstance(value, str):
            number = Decimal(clean(value))
        else:
            raise ValueError(f"is not {noun}")
        if not number.is_finite():
            raise ValueError(f"is not {noun}")
        return number

    if column_type in ("integer", "bigint"):

        def to_int(value: Any) -> int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            number = parse(value)
            if number != number.to_integral_value():
                raise ValueError(f"is not {noun} ({describe})")
            return int(number)

        return to_int
    if column_type == "double precision":
        return lambda value: value if isinstance(value, float) else float(parse(value))
    return parse


def _date_converter(options: FileOptions) -> Converter:
    pattern = options.date_format

    def to_date(value: Any) -> date:
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

    def to_timestamp(value: Any) -> datetime:
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


def _to_boolean(value: Any) -> bool:
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
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ValueError("is not JSON") from None
    return value
