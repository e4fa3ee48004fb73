"""Type inference, widening and identifier mapping of the data layer (no database needed)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal

import pytest

from synkro_dagster.datalayer.identifiers import column_name, shorten, table_name
from synkro_dagster.datalayer.schema import canonical_type, infer_column, join_types


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, None, 2], "integer"),
        ([1, 2**31], "bigint"),
        ([-(2**63) - 1], "numeric"),
        ([1.5, Decimal("2")], "numeric"),
        ([1, 2.5], "numeric"),
        ([True, None], "boolean"),
        (["a", "b"], "text"),
        (["2024-01-01", "2024-12-31"], "date"),
        (["2024-01-01", "2024-01-01T10:00:00"], "timestamp"),
        (["2024-01-01T10:00:00Z", "2024-01-01 10:00:00"], "timestamptz"),
        (["2024-01-01", "2024-13-01"], "text"),
        (["2024-01-01", "soon"], "text"),
        ([date(2024, 1, 1)], "date"),
        ([datetime(2024, 1, 1)], "timestamp"),
        ([datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1)], "timestamptz"),
        ([date(2024, 1, 1), datetime(2024, 1, 1, tzinfo=UTC)], "timestamptz"),
        ([{"a": 1}, [1]], "jsonb"),
        ([{"a": 1}, "x"], "text"),
        ([True, 1], "text"),
        ([uuid.UUID(int=1), time(1, 2)], "text"),
        ([None, None], None),
    ],
)
def test_batch_column_types(values, expected):
    assert infer_column(values)[0] == expected


def test_only_values_psycopg_cannot_stage_are_converted():
    for natives in ([{"a": 1}, None, [1]], [True, None], [True, "x", {"k": 1}, 2], [1, 2], ["a"]):
        assert infer_column(natives)[1] is None
    mixed = [True, "x", uuid.UUID(int=1), time(1, 2), None]
    found, convert = infer_column(mixed)
    assert found == "text" and convert is not None
    assert convert(mixed) == [True, "x", "00000000-0000-0000-0000-000000000001", "01:02:00", None]


@pytest.mark.parametrize(
    ("a", "b", "joined"),
    [
        ("integer", "bigint", "bigint"),
        ("bigint", "numeric", "numeric"),
        ("integer", "double precision", "numeric"),
        ("numeric", "text", "text"),
        ("date", "timestamptz", "timestamptz"),
        ("timestamp", "date", "timestamp"),
        ("boolean", "integer", "text"),
        ("jsonb", "text", "text"),
        ("uuid", "uuid", "uuid"),
        (None, "date", "date"),
    ],
)
def test_types_only_widen(a, b, joined):
    assert join_types(a, b) == joined
    assert join_types(b, a) == joined


def test_canonical_type_names():
    assert canonical_type("INT8") == "bigint"
    assert canonical_type("character varying(20)") == "text"
    assert canonical_type("numeric(10, 2)") == "numeric"
    assert canonical_type("timestamp with time zone") == "timestamptz"
    assert canonical_type("timestamp(3) without time zone") == "timestamp"
    assert canonical_type("uuid") == "uuid"
    assert canonical_type("int; drop table x") == "text"


def test_long_and_reserved_names():
    assert shorten("a" * 63) == "a" * 63
    long_a, long_b = "x" * 70 + "a", "x" * 70 + "b"
    assert shorten(long_a) != shorten(long_b)
    assert len(shorten(long_a).encode()) == 63
    assert len(shorten("ø" * 40).encode()) <= 63
    assert column_name("tenant_id") == "_source_tenant_id"
    assert column_name("_synkro_run_id") == "_source__synkro_run_id"
    assert column_name("") == "_"
    assert table_name("t" * 80) == shorten("t" * 80)
