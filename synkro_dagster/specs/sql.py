"""The 'sql' engine's part of a source spec: where the database URL comes from, and each stream's
table or query."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from synkro_dagster.specs.models import SourceSpec


class _SqlModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SqlSourceOptions(_SqlModel):
    """Defaults shared by every stream of a sql source.

    The integration's plain config holds a SQLAlchemy URL without the password
    (``mysql+pymysql://erp_reader@erp.example:3306/erp``); the password is a secret, set into the
    URL only when the engine is created, so it never appears in config, logs or errors.
    """

    url_config: str = Field(
        default="url", description="integration config key holding the SQLAlchemy URL"
    )
    password_secret: str | None = Field(
        default="password",
        description="integration secret holding the database password (absent or empty: none)",
    )
    db_schema: str | None = Field(
        default=None,
        alias="schema",
        description="schema of table streams that name none (default: the connection's default)",
    )
    batch_size: int | None = Field(
        default=None, gt=0, description="rows per batch; default: the SqlConnector's batch_size"
    )
    allow_datalayer_database: bool = Field(
        default=False,
        description="read from Synkro's own data-layer database (same cluster and database); "
        "refused by default, as a query could copy every tenant's rows into one tenant's table",
    )

    def check_spec(self, source: SourceSpec) -> None:
        """Checks across fields that only the sql engine understands (called by SourceSpec)."""
        if self.url_config not in source.config:
            raise ValueError(
                f"sql.url_config is '{self.url_config}' but the spec's config declares no "
                f"'{self.url_config}' (add it under config:)"
            )
        if self.password_secret and self.password_secret not in source.secrets:
            raise ValueError(
                f"sql.password_secret is '{self.password_secret}' but the spec's secrets do not "
                f"list it (add it under secrets:, or set password_secret: null)"
            )
        for stream in source.streams:
            where = f"stream '{stream.name}'"
            if stream.unnest is not None:
                continue  # read from its parent's records
            if stream.sql is None:
                raise ValueError(
                    f"{where}: a sql stream needs 'sql: {{table: ...}}' or 'sql: {{query: ...}}'"
                )
            if stream.cursor is not None and stream.cursor.param is not None:
                raise ValueError(
                    f"{where}: cursor.param is for http streams; a sql stream filters "
                    f"'{stream.cursor.field} >= <stored cursor>' itself"
                )
            selected = stream.sql.columns
            if selected:
                needed = list(stream.primary_key)
                if stream.cursor is not None:
                    needed.append(stream.cursor.field)
                missing = [c for c in needed if c not in selected]
                if missing:
                    raise ValueError(
                        f"{where}: sql.columns must include the primary key and cursor columns; "
                        f"missing: {', '.join(missing)}"
                    )


class SqlStreamOptions(_SqlModel):
    """One stream read from a table (optionally some of its columns) or from a SELECT query."""

    table: str | None = Field(
        default=None, description="table (or view) name, as the source spells it"
    )
    db_schema: str | None = Field(
        default=None, alias="schema", description="the table's schema (default: the source's)"
    )
    columns: list[str] | None = Field(
        default=None, description="read only these columns of the table (default: all)"
    )
    query: str | None = Field(
        default=None,
        description="a SELECT; with a cursor it is wrapped: select * from (<query>) q "
        "where q.<cursor> >= :cursor order by q.<cursor>",
    )
    batch_size: int | None = Field(default=None, gt=0, description="rows per batch for this stream")

    @field_validator("query")
    @classmethod
    def _query(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # A trailing semicolon would break the subquery the cursor filter wraps it in.
        cleaned = value.strip().rstrip(";").strip()
        if not cleaned:
            raise ValueError("must be a SELECT statement, got an empty string")
        return cleaned

    @model_validator(mode="after")
    def _one_source(self) -> SqlStreamOptions:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        if self.query is not None and (self.columns is not None or self.db_schema is not None):
            raise ValueError(
                "'columns' and 'schema' go with 'table'; a query selects its own columns"
            )
        if self.columns is not None and not self.columns:
            raise ValueError("'columns' must list at least one column (or be left out for all)")
        return self
