"""Column types: inference from Python values, the widening order, and target table DDL.

Inference runs per batch and per column with C-level passes (`set(map(type, values))`, `min`,
`max`); only string columns whose first value looks like an ISO-8601 date are checked value by value.
Types only ever widen: integer -> bigint -> numeric -> text, date -> timestamp -> timestamptz ->
text, anything else that no longer fits -> text. Values are staged as text and cast in the merge,
so a widened column never needs its staged values rewritten.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any

import sqlalchemy as sa
from psycopg import sql

TEXT = "text"
INTEGER = "integer"
BIGINT = "bigint"
NUMERIC = "numeric"
DOUBLE = "double precision"
BOOLEAN = "boolean"
DATE = "date"
TIMESTAMP = "timestamp"
TIMESTAMPTZ = "timestamptz"
JSONB = "jsonb"

_NUMERIC_CHAIN = (INTEGER, BIGINT, NUMERIC)
_TEMPORAL_CHAIN = (DATE, TIMESTAMP, TIMESTAMPTZ)
_NUMBERS = {INTEGER, BIGINT, NUMERIC, DOUBLE}

_INT4 = (-(2**31), 2**31 - 1)
_INT8 = (-(2**63), 2**63 - 1)

_ALIASES = {
    "int": INTEGER,
    "int4": INTEGER,
    "int2": INTEGER,
    "smallint": INTEGER,
    "serial": INTEGER,
    "int8": BIGINT,
    "bigserial": BIGINT,
    "decimal": NUMERIC,
    "real": DOUBLE,
    "float": DOUBLE,
    "float4": DOUBLE,
    "float8": DOUBLE,
    "bool": BOOLEAN,
    "character varying": TEXT,
    "varchar": TEXT,
    "character": TEXT,
    "char": TEXT,
    "bpchar": TEXT,
    "citext": TEXT,
    "timestamp without time zone": TIMESTAMP,
    "timestamp with time zone": TIMESTAMPTZ,
    "json": JSONB,
}
# A type name from a spec or a source reaches SQL as text, so it must look like a type name.
_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_ ]*(\(\s*\d+\s*(,\s*\d+\s*)?\))?[a-z ]*(\[\])?$")
_ISO_DATE_PREFIX = re.compile(r"^\d{4}-\d{2}-\d{2}")

Converter = Callable[[Sequence[Any]], list[Any]]


def canonical_type(name: str) -> str:
    """A PostgreSQL type name in the spelling used here (`int8` -> `bigint`, `varchar(20)` -> `text`)."""
    cleaned = " ".join(name.strip().lower().split())
    if not _TYPE_NAME.match(cleaned):
        return TEXT
    base = re.sub(r"\s*\([^)]*\)", "", cleaned)
    if base in ("numeric", "decimal"):
        return NUMERIC  # unconstrained numeric holds whatever a constrained one held
    if base in ("character varying", "varchar", "character", "char", "bpchar"):
        return TEXT
    if base.startswith("timestamp"):
        return TIMESTAMPTZ if "with time zone" in base or base == "timestamptz" else TIMESTAMP
    return _ALIASES.get(base, cleaned)


_EXACT = re.compile(
    r"^(?P<base>numeric|decimal|character varying|varchar|character|char|bpchar)"
    r"\s*\(\s*(?P<first>\d+)\s*(?:,\s*(?P<second>\d+)\s*)?\)$"
)
MAX_NUMERIC_PRECISION = 1000


def exact_type(name: str) -> str | None:
    """A declared type whose size the target keeps: `numeric(10,2)`, `varchar(40)`; else None.

    `char(n)` lands as `varchar(n)`: a source's fixed-width value keeps its exact text either way,
    and a `char` column would pad shorter values with blanks."""
    cleaned = " ".join(name.strip().lower().split())
    match = _EXACT.match(cleaned)
    if match is None:
        return None
    first, second = int(match["first"]), match["second"]
    if match["base"] in ("numeric", "decimal"):
        scale = int(second) if second is not None else 0
        if not 1 <= first <= MAX_NUMERIC_PRECISION or scale > first:
            return None
        return f"numeric({first},{scale})"
    if second is not None or first < 1:
        return None
    return f"varchar({first})"


def declared_type(name: str) -> str:
    """The type a column is created with: exact when sized (`numeric(10,2)`), else canonical."""
    return exact_type(name) or canonical_type(name)


def _sizes(name: str) -> tuple[int, int] | None:
    match = re.match(r"^(?:numeric|varchar)\((\d+)(?:,(\d+))?\)$", name)
    if match is None:
        return None
    return int(match[1]), int(match[2] or 0)


def join_types(a: str | None, b: str | None) -> str | None:
    """The narrowest type that holds values of both `a` and `b` (None = nothing seen yet)."""
    if a is None:
        return b
    if b is None or a == b:
        return a
    sized_a, sized_b = _sizes(a), _sizes(b)
    if sized_a is not None or sized_b is not None:
        base_a, base_b = canonical_type(a), canonical_type(b)
        if sized_a is not None and sized_b is not None and base_a == base_b:
            if base_a == TEXT:
                return f"varchar({max(sized_a[0], sized_b[0])})"
            # Enough integer digits for either, and the larger scale.
            scale = max(sized_a[1], sized_b[1])
            digits = max(sized_a[0] - sized_a[1], sized_b[0] - sized_b[1])
            if digits + scale <= MAX_NUMERIC_PRECISION:
                return f"numeric({digits + scale},{scale})"
        # A sized type beside anything else: the unsized type of the two holds both.
        return join_types(base_a, base_b)
    for chain in (_NUMERIC_CHAIN, _TEMPORAL_CHAIN):
        if a in chain and b in chain:
            return chain[max(chain.index(a), chain.index(b))]
    if a in _NUMBERS and b in _NUMBERS:
        return NUMERIC
    return TEXT


def type_sql(type_name: str) -> sql.Composable:
    return sql.SQL(declared_type(type_name))


def fits_sql(expression: sql.Composable, type_name: str) -> sql.Composable | None:
    """A condition true when the staged text `expression` fits the sized type without rounding
    or cutting (None for types that need no such check). An explicit cast would silently round
    `1.005` into numeric(10,2) or cut text to varchar(n), so sized columns are checked first."""
    sizes = _sizes(type_name)
    if sizes is None:
        return None
    if type_name.startswith("varchar"):
        return sql.SQL("char_length({}) <= {}").format(expression, sql.Literal(sizes[0]))
    precision, scale = sizes
    return sql.SQL(
        "({0})::numeric = round(({0})::numeric, {1}) and abs(({0})::numeric) < {2}"
    ).format(expression, sql.Literal(scale), sql.SQL(f"1e{precision - scale}"))


def cast(expression: sql.Composable, type_name: str) -> sql.Composable:
    """`expression::type` for a staged text value (no cast for text)."""
    if type_name == TEXT:
        return expression
    return sql.SQL("{}::{}").format(expression, type_sql(type_name))


def alter_table(table: sql.Composable, actions: Iterable[sql.Composable]) -> sql.Composed:
    """One `alter table` statement doing every action (one table rewrite, one lock)."""
    return sql.SQL("alter table {} {}").format(table, sql.SQL(", ").join(actions))


def alter_columns(table: sql.Composable, action: str, names: Iterable[str]) -> sql.Composed:
    """`alter table t alter column a <action>, alter column b <action>, ...` (action: SQL text
    of Synkro's own, such as `drop default`)."""
    return alter_table(
        table,
        (sql.SQL("alter column {} ").format(sql.Identifier(n)) + sql.SQL(action) for n in names),
    )


# --- inference -------------------------------------------------------------------------------


def _int_type(values: Sequence[int]) -> str:
    low, high = min(values), max(values)
    if _INT4[0] <= low and high <= _INT4[1]:
        return INTEGER
    if _INT8[0] <= low and high <= _INT8[1]:
        return BIGINT
    return NUMERIC


def _iso_type(value: str) -> str | None:
    try:
        if len(value) == 10:
            date.fromisoformat(value)
            return DATE
        if len(value) < 13 or value[10] not in "T ":
            return None
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return TIMESTAMP if parsed.tzinfo is None else TIMESTAMPTZ


def _string_type(values: Sequence[str]) -> str:
    # Most text columns fail on their first value, so the per-value parse only runs for columns
    # that really hold dates or timestamps.
    if not _ISO_DATE_PREFIX.match(values[0]):
        return TEXT
    found: str | None = None
    for value in values:
        kind = _iso_type(value)
        if kind is None:
            return TEXT
        found = join_types(found, kind)
    return found or TEXT


_TZINFO = attrgetter("tzinfo")


def _datetime_type(values: Sequence[datetime]) -> str:
    # One aware value makes the column timestamptz; naive ones are then read as UTC.
    return TIMESTAMPTZ if any(map(_TZINFO, values)) else TIMESTAMP


# Types psycopg stages as PostgreSQL reads them back (bool, dict, list and tuple through the
# staging dumpers in load.py); anything else is staged as str(value).
_NATIVE = frozenset({str, int, float, Decimal, bool, date, datetime, dict, list, tuple, bytes})


def _to_text(value: Any) -> Any:
    if value is None or type(value) in _NATIVE:
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def _convert_text(values: Sequence[Any]) -> list[Any]:
    return list(map(_to_text, values))


def _kind_type(kind: type, values: Sequence[Any]) -> str:
    """The type of the non-null `values`, all of Python type `kind`."""
    if kind is str:
        return _string_type(values)
    if kind is bool:
        return BOOLEAN
    if kind is int:
        return _int_type(values)
    if kind is float or kind is Decimal:
        return NUMERIC
    if kind is datetime:
        return _datetime_type(values)
    if kind is date:
        return DATE
    if kind is dict or kind is list or kind is tuple:
        return JSONB
    # Subclasses and foreign scalar types (numpy, pandas, UUID, time, ...).
    if issubclass(kind, bool):
        return BOOLEAN
    if issubclass(kind, int):
        return _int_type([int(v) for v in values])
    if issubclass(kind, float):
        return NUMERIC
    if issubclass(kind, datetime):
        return _datetime_type(values)
    if issubclass(kind, date):
        return DATE
    if issubclass(kind, dict | list | tuple):
        return JSONB
    return TEXT


def infer_column(values: Sequence[Any]) -> tuple[str | None, Converter | None]:
    """The type of one batch column and, if psycopg cannot stage the values as they are, a converter.

    Returns (None, None) for a column that is entirely null in this batch.
    """
    kinds = set(map(type, values))
    has_null = type(None) in kinds
    kinds.discard(type(None))
    if not kinds:
        return None, None
    present = [v for v in values if v is not None] if has_null else values
    convert = None if kinds <= _NATIVE else _convert_text
    if len(kinds) == 1:
        (kind,) = kinds
        return _kind_type(kind, present), convert
    found = None
    for kind in kinds:
        found = join_types(found, _kind_type(kind, [v for v in present if type(v) is kind]))
    return found, convert


# --- target tables ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnInfo:
    """One column of a table as PostgreSQL's catalog has it."""

    name: str
    type: str  # format_type(): e.g. `numeric(12,2)`, `timestamp with time zone`
    not_null: bool
    comment: str | None


def table_columns(conn: sa.Connection, schema: str, table: str) -> list[ColumnInfo]:
    """The columns of `schema.table` in table order (empty if it does not exist)."""
    rows = conn.execute(
        sa.text(
            "select a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,"
            "       col_description(c.oid, a.attnum)"
            " from pg_attribute a"
            " join pg_class c on c.oid = a.attrelid"
            " join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname = :schema and c.relname = :table"
            "   and a.attnum > 0 and not a.attisdropped"
            " order by a.attnum"
        ),
        {"schema": schema, "table": table},
    ).tuples()
    return [
        ColumnInfo(name, type_name, not_null, comment)
        for name, type_name, not_null, comment in rows
    ]


def primary_key_columns(conn: sa.Connection, schema: str, table: str) -> list[str]:
    """The primary key columns of `schema.table` (empty if it has none or does not exist)."""
    rows = conn.execute(
        sa.text(
            "select a.attname from pg_index i"
            " join pg_class c on c.oid = i.indrelid"
            " join pg_namespace n on n.oid = c.relnamespace"
            " join pg_attribute a on a.attrelid = c.oid and a.attnum = any(i.indkey)"
            " where n.nspname = :schema and c.relname = :table and i.indisprimary"
        ),
        {"schema": schema, "table": table},
    )
    return list(rows.scalars())


def existing_columns(conn: sa.Connection, schema: str, table: str) -> dict[str, str] | None:
    """{column: canonical type} of `schema.table`, or None if it does not exist."""
    columns = table_columns(conn, schema, table)
    if not columns:
        exists = conn.execute(
            sa.text(
                "select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace"
                " where n.nspname = :schema and c.relname = :table"
            ),
            {"schema": schema, "table": table},
        ).first()
        return {} if exists else None
    return {column.name: declared_type(column.type) for column in columns}


def not_null_columns(conn: sa.Connection, schema: str, table: str) -> set[str]:
    """The NOT NULL columns of `schema.table` (empty if it does not exist)."""
    return {column.name for column in table_columns(conn, schema, table) if column.not_null}


def column_comments(conn: sa.Connection, schema: str, table: str) -> dict[str, str]:
    """{column: comment} of `schema.table` for the columns that have one."""
    return {
        column.name: column.comment
        for column in table_columns(conn, schema, table)
        if column.comment is not None
    }
