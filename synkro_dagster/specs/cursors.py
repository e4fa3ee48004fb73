"""Cursor values: how a stored cursor is sent back, shifted by a lookback, and read as a time.

The stored cursor is the source's own text (e.g. `2025-12-22T00:00:00`, `1767323045`,
`22.12.2025 00:00`). By default (`format: as_stored`) it goes back to the source exactly as
written, so a server comparing the filter as text still returns the boundary records. A spec may
ask for a conversion: `iso8601`, `date`, `unix`, `unix_ms` or a strftime pattern (`%3f` writes
milliseconds, `%6f` / `%f` microseconds). `lookback` moves the start back by a duration (`2h`)
for time cursors or by a number (`100`) for numeric ones, keeping the stored value's shape.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from synkro_dagster.errors import UserError

if TYPE_CHECKING:
    from synkro_dagster.specs.models import CursorSpec

AS_STORED = "as_stored"
NAMED_FORMATS = (AS_STORED, "iso8601", "date", "unix", "unix_ms")
EPOCH_FORMATS = {"unix": 1, "unix_ms": 1000}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# An ISO-8601 date-time as sources write it; the groups let a shifted value keep the same shape.
_ISO = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})(?P<sep>[Tt ])(?P<hh>\d{2}):(?P<mm>\d{2})"
    r"(?::(?P<ss>\d{2})(?:(?P<dot>[.,])(?P<frac>\d+))?)?"
    r"(?P<zone>\s*(?:[Zz]|[+-]\d{2}(?::?\d{2})?))?$"
)
_DIGITS_F = re.compile(r"%([1-9])f")


class CursorValueError(UserError, ValueError):
    """A stored cursor that the stream's cursor settings cannot use (the message says why)."""


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `2h`, `1d`, `1w` (also `1.5h`, `500ms`) as a timedelta."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration (e.g. 90s, 15m, 2h, 1d, 1w)")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def is_strftime(fmt: str | None) -> bool:
    return bool(fmt) and "%" in str(fmt)


def check_format(fmt: str) -> str:
    """`fmt` if it is a named format or a strftime pattern, else a ValueError."""
    if fmt in NAMED_FORMATS or is_strftime(fmt):
        return fmt
    raise ValueError(
        f"unknown cursor format {fmt!r}: use {', '.join(NAMED_FORMATS)} or a strftime pattern "
        "such as '%Y-%m-%dT%H:%M:%S.%3fZ'"
    )


def _number(value: str) -> Decimal | None:
    try:
        number = Decimal(value.strip())
    except (InvalidOperation, AttributeError):
        return None
    return number if number.is_finite() else None


def _strptime_pattern(fmt: str) -> str:
    # strptime's %f reads 1 to 6 digits, so %3f / %6f parse with it.
    return _DIGITS_F.sub("%f", fmt)


def parse_iso(value: str) -> datetime | None:
    """A datetime from ISO-8601 text (a date is its midnight), naive if the text has no zone."""
    text = value.strip()
    if len(text) < 10 or text[4:5] != "-":
        return None
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), datetime.min.time())
        else:
            moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment


def as_time(value: Any, fmt: str | None) -> datetime | None:
    """The instant a cursor value stands for (aware, UTC for naive text), or None if it is not a
    time under `fmt`: ISO-8601 text and dates always are; numbers only when `fmt` declares epoch
    seconds (`unix`) or milliseconds (`unix_ms`); other text when it matches a strftime `fmt`."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, datetime.min.time(), tzinfo=UTC)
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    if fmt in EPOCH_FORMATS:
        number = _number(value)
        if number is not None:
            return datetime.fromtimestamp(float(number) / EPOCH_FORMATS[fmt], tz=UTC)
    moment = parse_iso(value)
    if moment is None and is_strftime(fmt):
        try:
            moment = datetime.strptime(value.strip(), _strptime_pattern(str(fmt)))
        except ValueError:
            moment = None
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def strftime(moment: datetime, fmt: str) -> str:
    """`moment.strftime(fmt)` where `%Nf` (N = 1..9) writes N digits of the fraction, cut down."""

    def digits(match: re.Match[str]) -> str:
        n = int(match.group(1))
        return f"{moment.microsecond:06d}{'0' * 3}"[:n]

    return moment.strftime(_DIGITS_F.sub(lambda m: digits(m).replace("%", "%%"), fmt))


def render(value: str, fmt: str | None) -> str:
    """The stored cursor as the request wants it. `as_stored` (the default) sends it unchanged;
    conversions round down, so a `>=` filter never skips a record."""
    if fmt in (None, AS_STORED):
        return value
    if fmt in EPOCH_FORMATS and _number(value) is not None:
        return value  # already epoch numbers in the declared unit
    moment = as_time(value, fmt)
    if moment is None:
        return value  # not a time (an id, a version number): sent as stored
    if fmt == "iso8601":
        utc = moment.astimezone(UTC)
        text = utc.strftime("%Y-%m-%dT%H:%M:%S")
        if utc.microsecond:
            text += f".{utc.microsecond:06d}"
        return text + "Z"
    if fmt == "date":
        return moment.astimezone(UTC).date().isoformat()
    if fmt in EPOCH_FORMATS:
        scale = EPOCH_FORMATS[fmt]
        return str(int(Decimal(str(moment.timestamp())) * scale))
    if is_strftime(fmt):
        # Naive-as-UTC values keep their wall time; aware ones are written in their own zone.
        return strftime(moment, str(fmt))
    return value


def _shift_iso(value: str, delta: timedelta) -> str | None:
    match = _ISO.match(value.strip())
    if match is None:
        text = value.strip()
        if len(text) == 10 and parse_iso(text) is not None:
            # A date moves by whole days, rounded down so the window is never shorter.
            moment = datetime.combine(date.fromisoformat(text), datetime.min.time()) - delta
            return moment.date().isoformat()
        return None
    g = match.groupdict()
    wall = datetime.fromisoformat(
        f"{g['date']}T{g['hh']}:{g['mm']}:{g['ss'] or '00'}"
        + (f".{(g['frac'] or '')[:6].ljust(6, '0')}" if g["frac"] else "")
    )
    # A zone suffix stays as written: subtracting a duration does not change the offset.
    shifted = wall - delta
    text = f"{shifted:%Y-%m-%d}{g['sep']}{shifted:%H:%M}"
    if g["ss"] is not None:
        text += f":{shifted:%S}"
        if g["frac"]:
            width = len(g["frac"])
            text += g["dot"] + f"{shifted.microsecond:06d}{'0' * max(0, width - 6)}"[:width]
    elif shifted.second or shifted.microsecond:
        text += f":{shifted:%S}"
        if shifted.microsecond:
            text += f".{shifted.microsecond:06d}"
    return text + (g["zone"] or "")


def shift_back(value: str, lookback: str | int | float, fmt: str | None) -> str:
    """`value` moved back by `lookback`, written in the same shape as `value`.

    A duration (`2h`) moves a time cursor (ISO text, a date, epoch numbers under `unix` /
    `unix_ms`, text in a strftime `fmt`); a number (`100`) moves a numeric cursor.
    """
    if isinstance(lookback, str) and _DURATION.match(lookback):
        delta = parse_duration(lookback)
        number = _number(value)
        if fmt in EPOCH_FORMATS and number is not None:
            step = Decimal(str(delta.total_seconds())) * EPOCH_FORMATS[fmt]
            return _minus(value, number, step)
        shifted = _shift_iso(value, delta)
        if shifted is not None:
            return shifted
        if is_strftime(fmt):
            try:
                moment = datetime.strptime(value.strip(), _strptime_pattern(str(fmt)))
            except ValueError:
                moment = None
            if moment is not None:
                return strftime(moment - delta, str(fmt))
        raise CursorValueError(
            f"lookback {lookback!r} is a duration, but the stored cursor {value!r} is not a time "
            "(ISO-8601 text, a date, or epoch numbers with format unix / unix_ms); "
            "give a number of cursor units instead"
        )
    units = _number(str(lookback))
    number = _number(value)
    if units is None or number is None:
        raise CursorValueError(
            f"lookback {lookback!r} is a number, but the stored cursor {value!r} is not "
            "(a time cursor takes a duration such as 2h)"
        )
    return _minus(value, number, units)


def _minus(text: str, number: Decimal, step: Decimal) -> str:
    result = number - step
    text = text.strip()
    if "." not in text and "e" not in text.lower():
        # An integer cursor stays an integer; a fractional step rounds down (a wider window).
        whole = int(result.to_integral_value(rounding="ROUND_FLOOR"))
        if text.isdigit() and text.startswith("0") and whole >= 0:
            return f"{whole:0{len(text)}d}"  # zero-padded text keeps its width
        return str(whole)
    exponent = number.as_tuple().exponent  # an int for finite numbers ('n', 'N', 'F' otherwise)
    places = -exponent if isinstance(exponent, int) else 0
    return f"{result.quantize(Decimal(1).scaleb(-places), rounding='ROUND_FLOOR'):f}"


def read_start(cursor: CursorSpec | None, stored: str | None, full_refresh: bool) -> str | None:
    """Where a read starts: the stored cursor moved back by the lookback; on the first sync
    `initial`; on a full refresh nothing (everything is read) unless the spec says
    `initial_applies_to_full_refresh`."""
    if cursor is None:
        return None
    if full_refresh:
        return cursor.initial if cursor.initial_applies_to_full_refresh else None
    if stored is None:
        return cursor.initial
    if cursor.lookback is not None:
        return shift_back(stored, cursor.lookback, cursor.format)
    return stored
