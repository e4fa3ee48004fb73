"""SqlConnector: reads tables and queries of any SQLAlchemy-reachable database as bounded batches.

One engine per session (one run of one integration), created from the integration's URL with the
password secret set into it at the last moment and disposed when the session ends. Rows come from
a server-side cursor (``stream_results`` + ``yield_per``): psycopg declares a named cursor,
pymysql switches to its unbuffered ``SSCursor``, sqlite3 and pymssql fetch incrementally anyway,
so memory holds one batch whatever the table size.

Incremental streams filter ``cursor >= :cursor`` ordered by the cursor column; the data layer
computes the next cursor from the landed rows and its merge removes the boundary duplicates the
``>=`` re-reads. Column types are taken from the source's own declarations (reflection for tables,
the driver's result description for queries), mapped to PostgreSQL type names.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import logging
import os
import re
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from pydantic import Field
from sqlalchemy.dialects import mysql as mysql_types
from sqlalchemy.engine import URL, make_url
from sqlalchemy.sql import sqltypes

from synkro_dagster import jsonnumbers
from synkro_dagster.connectors import sql_fast
from synkro_dagster.connectors.base import ConnectorResource
from synkro_dagster.connectors.columns import ColumnShaper
from synkro_dagster.contracts import (
    Batch,
    BatchesPart,
    Integration,
    ReadStats,
    StreamRead,
    redact,
)
from synkro_dagster.database import DATABASE_URL_ENV, get_engine, sqlalchemy_url
from synkro_dagster.errors import SynkroError
from synkro_dagster.specs.cursors import render as render_cursor
from synkro_dagster.specs.models import SourceSpec, StreamSpec
from synkro_dagster.specs.sql import SqlSourceOptions, SqlStreamOptions

# A bare dialect name gets the driver this project installs and tests (psycopg2 and
# mysqlclient need C builds; pyodbc needs a system ODBC driver for SQL Server).
DEFAULT_DRIVERS = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
    "mssql": "mssql+pymssql",
}

DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]",
    "pymysql": "pymysql",
    "pymssql": "pymssql",
    "pyodbc": "pyodbc (plus Microsoft's 'ODBC Driver 18 for SQL Server' on the machine)",
    "mysqldb": "mysqlclient",
    "psycopg2": "psycopg2-binary",
}

Fix = Callable[[Any], Any]

log = logging.getLogger(__name__)


class SqlSourceError(SynkroError, RuntimeError):
    """A sql source cannot be read: names integration, spec, stream and the password-masked URL."""


# ---------------------------------------------------------------------------------------------
# Types: the source's declarations mapped to PostgreSQL type names, and value fixes.


def _hex(value: Any) -> Any:
    # Binary values land as lowercase hex text: readable, lossless and valid in a text column.
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return value


def _to_str(value: Any) -> Any:
    return value if isinstance(value, str) else str(value)


def _to_bool(value: Any) -> Any:
    return bool(value) if isinstance(value, int) else value


def pg_type_for(column_type: sa.types.TypeEngine[Any]) -> str | None:
    """The PostgreSQL type name for a reflected SQLAlchemy column type (None: undeclared).

    MySQL's TINYINT(1) is its BOOLEAN; unsigned integers move one size up so they always fit.
    A column SQLite declares without a type (NullType) is left undeclared for the data layer
    to infer.
    """
    if isinstance(column_type, sa.types.NullType):
        return None
    if isinstance(column_type, sa.Boolean):
        return "boolean"
    if isinstance(column_type, mysql_types.TINYINT) and column_type.display_width == 1:
        return "boolean"
    if isinstance(column_type, mysql_types.BIT):
        return "text"
    if isinstance(column_type, sa.Integer):
        unsigned = bool(getattr(column_type, "unsigned", False))
        if isinstance(column_type, sa.BigInteger):
            return "numeric" if unsigned else "bigint"
        if unsigned and isinstance(column_type, mysql_types.INTEGER):
            return "bigint"
        return "integer"
    if isinstance(column_type, sa.Float):
        return "double precision"
    if isinstance(column_type, sa.Numeric):
        # asdecimal=False is how some dialects spell a float type (e.g. REAL on SQLite).
        return "numeric" if column_type.asdecimal else "double precision"
    if isinstance(column_type, sa.DateTime):
        return "timestamptz" if column_type.timezone else "timestamp"
    if isinstance(column_type, sa.Date):
        return "date"
    if isinstance(column_type, sa.JSON | sa.ARRAY):
        return "jsonb"
    return "text"


def exact_type_for(column_type: sa.types.TypeEngine[Any]) -> str | None:
    """`numeric(p,s)` / `varchar(n)` for a reflected sized column, else None (the plain type).

    Only types whose values land unchanged: DECIMAL/NUMERIC with a precision, and CHAR/VARCHAR
    (and NCHAR/NVARCHAR) with a length, which lands as varchar(n) (no blank padding)."""
    if isinstance(column_type, sa.Float | sa.Integer) or not isinstance(
        column_type, sa.Numeric | sa.String
    ):
        return None
    if isinstance(column_type, sa.Numeric):
        precision, scale = column_type.precision, column_type.scale
        if not column_type.asdecimal or not precision or not 1 <= precision <= 1000:
            return None
        scale = scale or 0
        return f"numeric({precision},{scale})" if 0 <= scale <= precision else None
    if isinstance(column_type, sa.Text | sa.Enum) or type(column_type).__name__ in (
        "TEXT",
        "CLOB",
    ):
        return None
    length = getattr(column_type, "length", None)
    return f"varchar({length})" if isinstance(length, int) and 0 < length <= 10485760 else None


def _fix_for(column_type: sa.types.TypeEngine[Any], pg_type: str | None) -> Fix | None:
    if isinstance(column_type, sa.types._Binary | mysql_types.BIT):
        return _hex
    if pg_type == "boolean" and not isinstance(column_type, sa.Boolean):
        return _to_bool
    # Times, durations and UUIDs land as their text form in a text column.
    if isinstance(column_type, sa.Time | sa.Uuid | sqltypes._AbstractInterval):
        return _to_str
    return None


# psycopg type names (from the OIDs in cursor.description) -> PostgreSQL names used here.
_PSYCOPG_NAMES = {
    "int2": "integer",
    "int4": "integer",
    "int8": "bigint",
    "oid": "bigint",
    "numeric": "numeric",
    "float4": "double precision",
    "float8": "double precision",
    "bool": "boolean",
    "date": "date",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "json": "jsonb",
    "jsonb": "jsonb",
}


def _describe_psycopg(description: Sequence[Any]) -> list[str | None]:
    import psycopg

    names: list[str | None] = []
    for column in description:
        info = psycopg.adapters.types.get(column[1])
        if info is None:
            names.append("text")
        elif getattr(info, "array_oid", None) == column[1] or info.name.endswith("[]"):
            names.append("jsonb")
        else:
            names.append(_PSYCOPG_NAMES.get(info.name, "text"))
    return names


def _describe_pymysql(description: Sequence[Any]) -> list[str | None]:
    from pymysql.constants import FIELD_TYPE as T

    names: list[str | None] = []
    for column in description:
        code, length = column[1], column[3]
        if code == T.TINY and length == 1:
            names.append("boolean")
        elif code in (T.TINY, T.SHORT, T.INT24, T.LONG, T.YEAR):
            # INT UNSIGNED does not fit a PostgreSQL integer and the description cannot tell.
            names.append("bigint" if code == T.LONG else "integer")
        elif code == T.LONGLONG:
            names.append("bigint")
        elif code in (T.DECIMAL, T.NEWDECIMAL):
            names.append("numeric")
        elif code in (T.FLOAT, T.DOUBLE):
            names.append("double precision")
        elif code in (T.DATE, T.NEWDATE):
            names.append("date")
        elif code in (T.DATETIME, T.TIMESTAMP):
            names.append("timestamp")
        elif code == T.JSON:
            names.append("jsonb")
        else:
            names.append("text")
    return names


def _describe_pymssql(description: Sequence[Any]) -> list[str | None]:
    # pymssql reports only coarse DB-API type codes; NUMBER covers int and float alike, so it
    # is left undeclared for the data layer to infer.
    coarse = {1: "text", 2: "text", 4: "timestamp", 5: "numeric"}
    return [coarse.get(column[1]) for column in description]


def describe_result_types(dialect: sa.Dialect, description: Sequence[Any]) -> list[str | None]:
    """PostgreSQL type names of a query's result columns from the driver's cursor.description.

    SQLite reports no types for a query's columns: those stay undeclared (None)."""
    driver = dialect.driver
    if driver == "psycopg":
        return _describe_psycopg(description)
    if driver in ("pymysql", "mysqldb"):
        return _describe_pymysql(description)
    if driver == "pymssql":
        return _describe_pymssql(description)
    return [None for _ in description]


_SA_TYPE_FOR_PG: dict[str, sa.types.TypeEngine[Any]] = {
    "integer": sa.Integer(),
    "bigint": sa.BigInteger(),
    "numeric": sa.Numeric(),
    "double precision": sa.Float(),
    "boolean": sa.Boolean(),
    "date": sa.Date(),
    "timestamp": sa.DateTime(),
    "timestamptz": sa.DateTime(timezone=True),
    "text": sa.String(),
}


def cursor_value(text: str, pg_type: str | None) -> Any:
    """The stored cursor text as the Python value of the cursor column's type.

    Raises ValueError when the text does not parse as that type.
    """
    if pg_type in ("timestamp", "timestamptz"):
        value = dt.datetime.fromisoformat(text.strip().replace(" ", "T", 1))
        if pg_type == "timestamp" and value.tzinfo is not None:
            # A naive source column holds UTC wall times in the data layer's view.
            return value.astimezone(dt.UTC).replace(tzinfo=None)
        if pg_type == "timestamptz" and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value
    if pg_type == "date":
        return dt.date.fromisoformat(text.strip()[:10])
    if pg_type in ("integer", "bigint"):
        try:
            return int(text)
        except ValueError:
            return int(Decimal(text))
    if pg_type == "numeric":
        try:
            return Decimal(text)
        except InvalidOperation:
            raise ValueError(f"not a number: {text!r}") from None
    if pg_type == "double precision":
        return float(text)
    return text


# ---------------------------------------------------------------------------------------------
# The resource and its session.


def _escape_binds(query: str) -> str:
    # sa.text() treats ':name' as a bind parameter; a spec query has none, so every colon that is
    # not part of a PostgreSQL '::' cast is literal ('10:30', JSON paths, ...).
    return re.sub(r"(?<![:\\]):(?!:)", r"\\:", query)


class _Plan:
    """What read() prepared for one stream: the statement, declared types, value fixes."""

    def __init__(
        self,
        statement: sa.Select[Any],
        column_types: dict[str, str],
        fixes: list[tuple[str, Fix]],
    ) -> None:
        self.statement = statement
        self.column_types = column_types
        self.fixes = fixes
        self.not_null: set[str] = set()
        self.comments: dict[str, str] = {}
        # psycopg only: fetch in PostgreSQL's binary format (every result type is known to load).
        self.binary = False
        # The typed fast path chosen for this read (sql_fast.py): its prepared arguments.
        self.copy_columns: list[tuple[str, str]] | None = None
        self.arrow_query: str | None = None
        self.arrow_pre_execution: list[str] = []
        # The result column the rows are ordered by (the cursor's, under its landed name).
        self.order_column: str | None = None

    def shaped(self, stream: StreamSpec, shaper: ColumnShaper) -> None:
        """Apply the stream's column control in the source query: only the fields that land are
        selected, each under its landed name (`columns.select`/`exclude`/`rename`, `naming`).

        Both the typed fast paths and the records path then read the landed columns as they are,
        and the declared types, NOT NULLs and comments follow the names."""
        assert isinstance(self.statement, sa.Select)
        names = list(self.statement.selected_columns.keys())
        kept = [(name, landed) for name in names if (landed := shaper.name(name)) is not None]
        inner = self.statement.order_by(None).subquery("synkro_cols")
        self.statement = sa.select(*(inner.c[name].label(landed) for name, landed in kept))
        if stream.cursor is not None:
            self.statement = self.statement.order_by(inner.c[stream.cursor.field])
            self.order_column = shaper.name(stream.cursor.field)
        landed_of = dict(kept)
        self.column_types = {
            landed_of[n]: t for n, t in self.column_types.items() if n in landed_of
        }
        self.fixes = [(landed_of[n], fix) for n, fix in self.fixes if n in landed_of]
        self.not_null = {landed_of[n] for n in self.not_null if n in landed_of}
        self.comments = {landed_of[n]: c for n, c in self.comments.items() if n in landed_of}


# Built-in PostgreSQL types psycopg loads from the binary format into the same Python values as
# from text. Anything else (enums, domains of unknown types, arrays, extensions) would come back
# as raw bytes in binary, so such a result is fetched as text.
_BINARY_SAFE_TYPES = frozenset(
    {
        "int2", "int4", "int8", "oid", "numeric", "float4", "float8", "bool", "text", "varchar",
        "bpchar", "name", "date", "timestamp", "timestamptz", "json", "jsonb", "uuid", "bytea",
    }
)  # fmt: skip


def _binary_safe(description: Sequence[Any]) -> bool:
    import psycopg

    for column in description:
        info = psycopg.adapters.types.get(column[1])
        if info is None or info.name not in _BINARY_SAFE_TYPES or info.oid != column[1]:
            return False
    return True


class SqlSession:
    """One engine for one run of one integration; `read` streams a table or query."""

    def __init__(
        self, connector: SqlConnector, source: SourceSpec, integration: Integration
    ) -> None:
        self._connector = connector
        self._source = source
        self.integration = integration
        self._options = source.sql or SqlSourceOptions()
        self._url = self._build_url()
        self.safe_url = self._url.render_as_string(hide_password=True)
        self.engine = self._create_engine()

    # -- setup -------------------------------------------------------------------------------

    def _secrets(self) -> list[str]:
        values = [str(v) for v in self.integration.secrets.values() if v]
        inline = getattr(self, "_inline_password", None)
        if inline:
            values.append(inline)
        return values

    def _error(self, stream: StreamSpec | None, problem: str) -> SqlSourceError:
        where = f"sql integration '{self.integration.id}' (spec '{self._source.name}')"
        if stream is not None:
            where += f", stream '{stream.name}'"
        url = getattr(self, "safe_url", None)
        if url:
            where += f", database {url}"
        return SqlSourceError(redact(f"{where}: {problem}", self._secrets()))

    def _build_url(self) -> URL:
        key = self._options.url_config
        # Resolved by ConnectorResource.session: the spec's `config` defaults apply, as in the
        # registry.
        raw = self.integration.config.get(key)
        if not raw:
            raise self._error(None, f"the integration's config has no '{key}' (a SQLAlchemy URL)")
        try:
            url = make_url(str(raw))
        except Exception:
            # The raw text may hold a password: it is not echoed.
            raise self._error(
                None,
                f"config '{key}' is not a SQLAlchemy URL "
                "(e.g. mysql+pymysql://user@host:3306/db, postgresql+psycopg://user@host/db, "
                "sqlite:///path/to/file.db)",
            ) from None
        self._inline_password = url.password if isinstance(url.password, str) else None
        if url.drivername in DEFAULT_DRIVERS:
            url = url.set(drivername=DEFAULT_DRIVERS[url.drivername])
        secret = self._options.password_secret
        password = self.integration.secrets.get(secret) if secret else None
        # SQLite has no password; a secret the registry holds anyway must not break the URL.
        if password and url.get_backend_name() != "sqlite":
            url = url.set(password=password)
        return url

    def _create_engine(self) -> sa.Engine:
        connector = self._connector
        backend = self._url.get_backend_name()
        driver = self._url.get_driver_name()
        connect_args: dict[str, Any] = {}
        kwargs: dict[str, Any] = {"pool_size": 2, "max_overflow": 2}
        timeout_s = connector.statement_timeout_seconds
        if backend == "postgresql":
            connect_args["connect_timeout"] = connector.connect_timeout_seconds
            options = ["-c default_transaction_read_only=on"] if connector.read_only else []
            if timeout_s:
                options.append(f"-c statement_timeout={int(timeout_s * 1000)}")
            if options:
                connect_args["options"] = " ".join(options)
            connect_args["application_name"] = "synkro"
        elif backend in ("mysql", "mariadb"):
            connect_args["connect_timeout"] = connector.connect_timeout_seconds
        elif backend == "mssql":
            if driver == "pymssql":
                connect_args["login_timeout"] = connector.connect_timeout_seconds
                if timeout_s:
                    connect_args["timeout"] = timeout_s
            elif driver == "pyodbc":
                connect_args["timeout"] = connector.connect_timeout_seconds
        elif backend == "sqlite":
            kwargs = {}  # sqlite's own pool; a file connection is cheap
        if backend in ("postgresql", "mysql", "mariadb", "mssql", "sqlite"):
            # json columns parse with exact decimals, so nested numbers land in jsonb unchanged.
            kwargs["json_deserializer"] = jsonnumbers.loads
        try:
            engine = sa.create_engine(self._url, connect_args=connect_args, **kwargs)
        except ModuleNotFoundError as exc:
            package = DRIVER_PACKAGES.get(driver, exc.name or driver)
            raise self._error(
                None, f"the database driver '{driver}' is not installed (pip install {package})"
            ) from None
        except (sa.exc.NoSuchModuleError, sa.exc.ArgumentError) as exc:
            raise self._error(None, f"unsupported database URL: {exc}") from None
        sa.event.listen(engine, "connect", self._on_connect)
        return engine

    def _on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        """Per-connection session settings that have no connect argument."""
        connector = self._connector
        backend = self._url.get_backend_name()
        timeout_s = connector.statement_timeout_seconds
        if backend in ("mysql", "mariadb"):
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("select version()")
                is_mariadb = "mariadb" in str(cursor.fetchone()[0]).lower()
                if timeout_s:
                    if is_mariadb:
                        cursor.execute(f"set session max_statement_time = {float(timeout_s)}")
                    else:
                        cursor.execute(f"set session max_execution_time = {int(timeout_s * 1000)}")
                if connector.read_only:
                    cursor.execute("set session transaction read only")
            finally:
                cursor.close()
        elif backend == "sqlite" and connector.read_only:
            dbapi_connection.execute("pragma query_only = on")
        elif backend == "mssql" and self._url.get_driver_name() == "pyodbc" and timeout_s:
            dbapi_connection.timeout = timeout_s

    def close(self) -> None:
        self.engine.dispose()

    def _refuse_datalayer(self, conn: sa.Connection) -> None:
        """Refuse a PostgreSQL source that is the data-layer database: by its URL (same host
        addresses, port and database) or, through any alias, by the cluster's system identifier
        and the database name. A query there could copy the registry and every tenant's rows
        into this tenant's table."""
        if getattr(self, "_datalayer_checked", False):
            return
        allowed = self._connector.allow_datalayer_database or self._options.allow_datalayer_database
        if allowed or self._url.get_backend_name() != "postgresql":
            self._datalayer_checked = True
            return
        target = self._connector.datalayer_url or os.environ.get(DATABASE_URL_ENV)
        if not target:
            self._datalayer_checked = True
            return
        datalayer = sqlalchemy_url(target)
        same = _same_endpoint(self._url, datalayer)
        if not same:
            try:
                source_id = conn.execute(sa.text(_IDENTITY_SQL)).one()
            except sa.exc.DBAPIError:
                conn.rollback()  # an old server or a locked-down role: the URL check stands
            else:
                same = tuple(source_id) == _database_identity(
                    datalayer.render_as_string(hide_password=False)
                )
        if same:
            raise self._error(
                None,
                "this is Synkro's own data-layer database; a query here could copy the registry "
                "and every tenant's rows into this tenant's table, so it is refused (if that is "
                "really meant, set sql.allow_datalayer_database: true in the spec)",
            )
        self._datalayer_checked = True

    # -- planning ----------------------------------------------------------------------------

    def _stream_options(self, stream: StreamSpec) -> SqlStreamOptions:
        if stream.sql is None:
            raise self._error(stream, "the stream has no 'sql:' options (a table or a query)")
        return stream.sql

    def _initial_cursor(self, stream: StreamSpec, cursor: str | None) -> str | None:
        # `cursor` is where this read starts; the data layer resolved initial and lookback.
        if stream.cursor is None:
            return None
        return cursor

    def _cursor_value(self, stream: StreamSpec, text: str, pg_type: str | None) -> Any:
        assert stream.cursor is not None
        if pg_type in (None, "text"):
            # A text column compares as text: the value as stored, or the spec's conversion.
            return render_cursor(text, stream.cursor.format)
        try:
            return cursor_value(text, pg_type)
        except ValueError:
            raise self._error(
                stream,
                f"the stored cursor {text!r} is not a valid {pg_type} for cursor column "
                f"'{stream.cursor.field}' (fix cursor.initial or reset the stream's sync state)",
            ) from None

    def _plan_table(
        self, conn: sa.Connection, stream: StreamSpec, options: SqlStreamOptions, cursor: str | None
    ) -> _Plan:
        assert options.table is not None
        schema = options.db_schema or self._options.db_schema
        qualified = f"{schema}.{options.table}" if schema else options.table
        try:
            table = sa.Table(options.table, sa.MetaData(), schema=schema, autoload_with=conn)
        except sa.exc.NoSuchTableError:
            raise self._error(
                stream, f"table '{qualified}' does not exist (or this user cannot see it)"
            ) from None
        available = [c.name for c in table.columns]
        wanted = list(options.columns or available)
        if stream.cursor is not None and stream.cursor.field not in wanted:
            wanted.append(stream.cursor.field)
        missing = [name for name in wanted if name not in table.c]
        if missing:
            raise self._error(
                stream,
                f"table '{qualified}' has no column {', '.join(repr(m) for m in missing)}; "
                f"it has: {', '.join(available)}",
            )
        columns = [table.c[name] for name in wanted]
        column_types: dict[str, str] = {}
        fixes: list[tuple[str, Fix]] = []
        for column in columns:
            pg_type = pg_type_for(column.type)
            if pg_type is not None:
                column_types[column.name] = pg_type
            fix = _fix_for(column.type, pg_type)
            if fix is not None:
                fixes.append((column.name, fix))
        statement = sa.select(*map(_exact, columns))
        stored = self._initial_cursor(stream, cursor)
        if stream.cursor is not None:
            cursor_column = table.c[stream.cursor.field]
            if stored is not None:
                value = self._cursor_value(stream, stored, column_types.get(cursor_column.name))
                statement = statement.where(cursor_column >= value)
            statement = statement.order_by(cursor_column)
        plan = _Plan(statement, column_types, fixes)
        # What the source declares beyond the type name lands too: numeric(10,2), varchar(40),
        # NOT NULL and the column's comment (the data layer keeps them only where safe).
        for column in columns:
            sized = exact_type_for(column.type)
            if sized is not None and column.name in column_types:
                plan.column_types[column.name] = sized
            if column.nullable is False:
                plan.not_null.add(column.name)
            if column.comment:
                plan.comments[column.name] = str(column.comment)
        return plan

    def _plan_query(
        self, conn: sa.Connection, stream: StreamSpec, options: SqlStreamOptions, cursor: str | None
    ) -> _Plan:
        assert options.query is not None
        query = sa.text(_escape_binds(options.query))
        # A zero-row probe gives the result's names and the driver's types without reading data.
        probe: sa.Select[Any] = sa.select(sa.literal_column("*")).select_from(
            query.columns().subquery("q")
        )
        result = conn.execute(probe.where(sa.false()))
        names = list(result.keys())
        description = result.cursor.description if result.cursor is not None else None
        result.close()
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise self._error(
                stream,
                f"the query returns column(s) {', '.join(duplicated)} more than once; alias them",
            )
        types = describe_result_types(self.engine.dialect, description or [])
        column_types = {n: t for n, t in zip(names, types, strict=False) if t is not None}
        # Undeclared and text columns may carry bytes (BLOBs): those become hex text.
        fixes: list[tuple[str, Fix]] = [
            (n, _hex) for n in names if column_types.get(n) in (None, "text")
        ]
        subquery = query.columns(*[sa.column(n) for n in names]).subquery("q")
        statement = sa.select(subquery)
        if stream.cursor is not None:
            field = stream.cursor.field
            if field not in names:
                raise self._error(
                    stream,
                    f"cursor column '{field}' is not among the query's columns: {', '.join(names)}",
                )
            stored = self._initial_cursor(stream, cursor)
            if stored is not None:
                pg_type = column_types.get(field)
                value = self._cursor_value(stream, stored, pg_type)
                bind = sa.bindparam("cursor", value, type_=_SA_TYPE_FOR_PG.get(pg_type or ""))
                statement = statement.where(subquery.c[field] >= bind)
            statement = statement.order_by(subquery.c[field])
        return _Plan(statement, column_types, fixes)

    def _describe_db_error(self, exc: sa.exc.SQLAlchemyError) -> str:
        orig = getattr(exc, "orig", None)
        message = str(orig if orig is not None else exc).strip()
        statement = getattr(exc, "statement", None)
        if statement and not isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
            message += f" [SQL: {' '.join(str(statement).split())[:500]}]"
        return message[:2000]

    # -- reading -----------------------------------------------------------------------------

    def read_shaped(
        self, stream: StreamSpec, cursor: str | None, shaper: ColumnShaper
    ) -> StreamRead | None:
        """`read` with the stream's column control done by the source query (see `_Plan.shaped`),
        so the typed fast paths serve such streams too; None when a field is hashed (HMAC is
        computed in Python, on the records path)."""
        if shaper.hashes:
            return None
        return self.read(stream, cursor, shaper=shaper)

    def read(
        self, stream: StreamSpec, cursor: str | None, shaper: ColumnShaper | None = None
    ) -> StreamRead:
        """Read `stream` from `cursor` (None: everything), the stored text bound as the cursor
        column's type (a text column gets the text exactly as stored).

        Reflects the table (or probes the query) now, so a missing table, column or a bad query
        fails here with a clear error; rows are fetched only when the part's batches are iterated.
        """
        options = self._stream_options(stream)
        batch_size = options.batch_size or self._options.batch_size or self._connector.batch_size
        try:
            with self.engine.connect() as conn:
                self._refuse_datalayer(conn)
                if options.table is not None:
                    plan = self._plan_table(conn, stream, options, cursor)
                else:
                    plan = self._plan_query(conn, stream, options, cursor)
                if stream.cursor is not None:
                    plan.order_column = stream.cursor.field
                if shaper is not None and shaper.active:
                    plan.shaped(stream, shaper)
                if self.engine.dialect.driver == "psycopg":
                    assert isinstance(plan.statement, sa.Select)
                    probe = conn.execute(plan.statement.where(sa.false()))
                    plan.binary = _binary_safe(probe.cursor.description or [])
                    # A text form (uuid) is what the merge's cast gives too; other fixes are not.
                    text_fixes = all(_FIX_KINDS.get(fix) == "str" for _, fix in plan.fixes)
                    if self._connector.fast_paths and plan.binary and text_fixes:
                        plan.copy_columns = sql_fast.pg_copy_columns(probe.cursor.description)
                    probe.close()
                elif self._connector.fast_paths:
                    self._plan_arrow(conn, stream, plan)
        except SqlSourceError:
            raise
        except sa.exc.SQLAlchemyError as exc:
            what = "cannot read the table" if options.table else "the query failed"
            raise self._error(stream, f"{what}: {self._describe_db_error(exc)}") from None
        stats = ReadStats()
        part = _SqlPart(self, stream, plan, batch_size, stats)
        return StreamRead(
            parts=iter([part]),
            stats=stats,
            column_types=dict(plan.column_types),
            not_null=frozenset(plan.not_null),
            column_comments=dict(plan.comments),
        )

    def _plan_arrow(self, conn: sa.Connection, stream: StreamSpec, plan: _Plan) -> None:
        """Prepare the connectorx read of a MySQL/MariaDB stream (sql_fast.py), if possible."""
        if self._url.get_backend_name() not in ("mysql", "mariadb"):
            return
        if not sql_fast.connectorx_available():
            return
        assert isinstance(plan.statement, sa.Select)
        kinds = {name: _FIX_KINDS.get(fix, "") for name, fix in plan.fixes}
        statement = sql_fast.mysql_fast_statement(
            plan.statement,
            plan.column_types,
            kinds,
            plan.order_column,
        )
        compiled = statement.compile(
            dialect=self.engine.dialect, compile_kwargs={"literal_binds": True}
        )
        plan.arrow_query = str(compiled)
        timeout_s = self._connector.statement_timeout_seconds
        version = str(conn.execute(sa.text("select version()")).scalar())
        if timeout_s:
            if "mariadb" in version.lower():
                plan.arrow_pre_execution.append(
                    f"set session max_statement_time = {float(timeout_s)}"
                )
            else:
                plan.arrow_pre_execution.append(
                    f"set session max_execution_time = {int(timeout_s * 1000)}"
                )
        if self._connector.read_only:
            plan.arrow_pre_execution.append("set session transaction read only")

    def _fast_batches(
        self, stream: StreamSpec, plan: _Plan, batch_size: int, stats: ReadStats
    ) -> Iterator[Any] | None:
        """Typed batches for the fast paths (sql_fast.py), or None for the records path."""

        def counted(rows: int) -> None:
            stats.pages += 1
            stats.records += rows

        def translated(exc: BaseException) -> BaseException | None:
            if isinstance(exc, sa.exc.SQLAlchemyError):
                return self._error(stream, f"reading rows failed: {self._describe_db_error(exc)}")
            if _is_driver_error(exc):
                return self._error(stream, f"reading rows failed: {str(exc).strip()[:2000]}")
            return None

        if plan.copy_columns is not None:
            assert isinstance(plan.statement, sa.Select)
            return sql_fast.pg_copy_batches(
                self.engine.connect, plan.statement, plan.copy_columns, counted, translated
            )
        if plan.arrow_query is not None:
            url = self._url.set(drivername="mysql").render_as_string(hide_password=False)
            try:
                batches = sql_fast.connectorx_batches(
                    url, plan.arrow_query, batch_size, plan.arrow_pre_execution, counted
                )
                first = next(batches, None)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # connectorx reports with a Rust panic (BaseException)
                # connectorx could not start (an auth plugin, a type it does not map): the records
                # path reads the same rows.
                first_line = (str(exc).strip().splitlines() or [repr(exc)])[0][:500]
                log.warning(
                    "%s",
                    self._error(stream, f"fast read unavailable, reading records: {first_line}"),
                )
                return None
            return self._hex_binary(stream, first, batches)
        return None

    def _hex_binary(self, stream: StreamSpec, first: Any, batches: Iterator[Any]) -> Iterator[Any]:
        # Binary values land as lowercase hex text, as the records path lands them.
        import pyarrow as pa

        try:
            batch = first
            while batch is not None:
                for position, field in enumerate(batch.schema):
                    if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
                        hexed = pa.array(
                            [
                                None if v is None else v.hex()
                                for v in batch.column(position).to_pylist()
                            ],
                            pa.large_string(),
                        )
                        batch = batch.set_column(position, field.name, hexed)
                yield batch
                batch = next(batches, None)
        except (KeyboardInterrupt, SystemExit, GeneratorExit, SqlSourceError):
            raise
        except BaseException as exc:  # connectorx reports with a Rust panic (BaseException)
            message = (str(exc).strip().splitlines() or [repr(exc)])[0][:2000]
            raise self._error(stream, f"reading rows failed: {message}") from None

    def _batches(
        self, stream: StreamSpec, plan: _Plan, batch_size: int, stats: ReadStats
    ) -> Iterator[Batch]:
        conn: sa.Connection | None = None
        try:
            conn = self.engine.connect()
            fixes = plan.fixes
            for keys, rows in self._fetch(conn, plan, batch_size):
                batch = [dict(zip(keys, row, strict=False)) for row in rows]
                if fixes:
                    for record in batch:
                        for name, fix in fixes:
                            value = record[name]
                            if value is not None:
                                record[name] = fix(value)
                stats.pages += 1
                stats.records += len(batch)
                yield batch
        except sa.exc.SQLAlchemyError as exc:
            raise self._error(
                stream, f"reading rows failed: {self._describe_db_error(exc)}"
            ) from None
        except Exception as exc:
            if not _is_driver_error(exc):
                raise
            raise self._error(stream, f"reading rows failed: {str(exc).strip()[:2000]}") from None
        finally:
            if conn is not None:
                # Closing a half-read cursor after the session ended (the consumer stopped
                # early): nothing left to save, and the original outcome matters more.
                with suppress(Exception):
                    conn.close()

    def _fetch(
        self, conn: sa.Connection, plan: _Plan, batch_size: int
    ) -> Iterator[tuple[list[str], Sequence[Sequence[Any]]]]:
        """(column names, rows) per fetch of at most `batch_size` rows, from a server-side cursor."""
        if plan.binary:
            # psycopg's named cursor in binary format: the same rows, parsed with less CPU
            # than text (SQLAlchemy has no switch for the format of its server-side cursors).
            compiled = plan.statement.compile(dialect=self.engine.dialect)
            driver_connection = conn.connection.driver_connection
            assert driver_connection is not None
            with driver_connection.cursor(
                name=f"synkro_{uuid.uuid4().hex[:12]}", binary=True
            ) as cur:
                cur.itersize = batch_size
                cur.execute(str(compiled), compiled.params)
                keys = [column.name for column in cur.description or []]
                while rows := cur.fetchmany(batch_size):
                    yield keys, rows
            return
        result = conn.execution_options(yield_per=batch_size).execute(plan.statement)
        keys = list(result.keys())
        for rows in result.partitions():
            yield keys, rows
        result.close()


_IDENTITY_SQL = (
    "select (select system_identifier from pg_control_system())::text, current_database()"
)


@functools.lru_cache(maxsize=8)
def _database_identity(url: str) -> tuple[str, str]:
    """(cluster system identifier, database name) of the data layer, asked once per process."""
    with get_engine(url).connect() as conn:
        row = conn.execute(sa.text(_IDENTITY_SQL)).one()
    return str(row[0]), str(row[1])


def _addresses(host: str | None) -> frozenset[str]:
    if not host or host.startswith("/"):
        return frozenset({f"socket:{host or ''}"})
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return frozenset({host.lower()})
    found = set()
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        # 127.0.0.1, ::1 and localhost all reach this machine's server.
        found.add("loopback" if address.is_loopback else str(address))
    return frozenset(found)


def _same_endpoint(a: URL, b: URL) -> bool:
    """Same server (any shared address; unix sockets by folder), port and database."""
    host_a = a.host or a.query.get("host")
    host_b = b.host or b.query.get("host")
    if isinstance(host_a, tuple) or isinstance(host_b, tuple):
        return False
    return (
        (a.port or 5432) == (b.port or 5432)
        and (a.database or "") == (b.database or "")
        and bool(_addresses(host_a) & _addresses(host_b))
    )


class _SqlPart(BatchesPart):
    """The stream as one part: records from `batches()`, typed batches for the data layer."""

    def __init__(
        self,
        session: SqlSession,
        stream: StreamSpec,
        plan: _Plan,
        batch_size: int,
        stats: ReadStats,
    ) -> None:
        super().__init__(iter(()), name=stream.name)
        self._args = (stream, plan, batch_size, stats)
        self._session = session

    def batches(self) -> Iterator[Batch]:
        return self._session._batches(*self._args)

    def typed_batches(self) -> Iterator[Any]:
        fast = self._session._fast_batches(*self._args)
        return fast if fast is not None else self.batches()


def _exact(column: sa.Column[Any]) -> Any:
    # MySQL's DOUBLE/FLOAT reflect as Float(asdecimal=True), whose result processor rounds every
    # value to 10 decimals; the driver's own float is the stored value.
    if isinstance(column.type, sa.Float) and column.type.asdecimal:
        return sa.type_coerce(column, sa.Float(asdecimal=False)).label(column.name)
    return column


_FIX_KINDS: dict[Fix, str] = {_hex: "hex", _to_str: "str", _to_bool: "bool"}


def _is_driver_error(exc: BaseException) -> bool:
    # DB-API errors raised outside SQLAlchemy (the psycopg binary path) all derive from the
    # module's Error class; their type lives in the driver package.
    return type(exc).__module__.split(".")[0] in ("psycopg", "psycopg_binary")


class SqlConnector(ConnectorResource):
    """Reads the streams of `engine: sql` specs from any SQLAlchemy URL.

    The URL comes from the integration's config (key `sql.url_config`, default `url`), the password
    from its secrets (`sql.password_secret`, default `password`). Drivers: PostgreSQL `psycopg`,
    MySQL/MariaDB `pymysql`, SQL Server `pymssql` (or `pyodbc` with Microsoft's ODBC driver),
    SQLite built in; a bare `postgresql://`, `mysql://`, `mariadb://` or `mssql://` gets those.
    """

    batch_size: int = Field(default=10_000, gt=0, description="rows fetched and yielded per batch")
    statement_timeout_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="server-side limit per statement (0: none). PostgreSQL applies it per fetch "
        "of the server-side cursor; MySQL/MariaDB to the whole streamed SELECT.",
    )
    connect_timeout_seconds: int = Field(default=15, gt=0, description="connection timeout")
    datalayer_url: str | None = Field(
        default=None,
        description="the data layer's URL (default SYNKRO_DATABASE_URL): a PostgreSQL source that "
        "is this same database is refused",
    )
    allow_datalayer_database: bool = Field(
        default=False,
        description="allow sources that are the data-layer database itself (every spec); a spec "
        "can allow it for itself with sql.allow_datalayer_database",
    )
    fast_paths: bool = Field(
        default=True,
        description="read PostgreSQL sources by binary COPY pass-through and MySQL/MariaDB sources "
        "by connectorx into Arrow batches where no value needs converting (sql_fast.py); off: "
        "every source is read as Python records",
    )
    read_only: bool = Field(
        default=True,
        description="open read-only sessions (PostgreSQL default_transaction_read_only, MySQL "
        "transaction read only, SQLite query_only) so a spec query can never change the source",
    )

    @contextmanager
    def open_session(self, source: SourceSpec, integration: Integration) -> Iterator[SqlSession]:
        """One engine for this integration for the duration of the block, disposed at exit."""
        session = SqlSession(self, source, integration)
        try:
            yield session
        finally:
            session.close()


__all__ = [
    "SqlConnector",
    "SqlSession",
    "SqlSourceError",
    "cursor_value",
    "describe_result_types",
    "pg_type_for",
]
