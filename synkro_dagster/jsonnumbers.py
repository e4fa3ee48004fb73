"""JSON text in and out with numbers kept exact: decimals parse to `Decimal` and print as numbers.

The standard library's `json` reads `1.10` as the float 1.1 and cannot print a `Decimal` as a
number at all (a `default=str` turns it into the string "1.10"), so a nested price would land in
`jsonb` as a string or rounded. Every engine parses source JSON with `loads` and the data layer
prints nested values with `dumps`, so `{"price": 1.10}` lands as the jsonb number 1.10.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import simplejson

from synkro_dagster.contracts import SourceDataError


def loads(text: str | bytes) -> Any:
    """Parse JSON, non-integer numbers as `Decimal` (exact), integers as `int`."""
    return json.loads(text, parse_float=Decimal)


def dumps(value: Any) -> str:
    """JSON text of `value`; a `Decimal` prints as the number it is, other odd values as text.

    NaN and infinities have no JSON spelling (jsonb refuses them): a SourceDataError.
    """
    try:
        return simplejson.dumps(
            value, use_decimal=True, default=str, ensure_ascii=False, allow_nan=False
        )
    except ValueError as error:
        raise SourceDataError(f"a nested value is not valid JSON: {error}") from None
