"""The source spec format: one YAML file per external system, validated with pydantic."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from synkro_dagster.specs.files import FilesSourceOptions, FilesStreamOptions
from synkro_dagster.specs.http import HttpSourceOptions, HttpStreamOptions
from synkro_dagster.specs.sql import SqlSourceOptions, SqlStreamOptions

SLUG = re.compile(r"^[a-z][a-z0-9_]{0,40}$")

Engine = Literal["http", "sql", "files"]
WriteMode = Literal["merge", "append", "replace"]
ColumnType = Literal[
    "text",
    "integer",
    "bigint",
    "numeric",
    "double precision",
    "boolean",
    "date",
    "timestamp",
    "timestamptz",
    "jsonb",
]


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class CursorSpec(StrictModel):
    """How a stream is read incrementally."""

    field: str = Field(description="record field holding the cursor value (e.g. updated_at)")
    param: str | None = Field(
        default=None, description="request parameter that receives the stored cursor (http)"
    )
    format: str | None = Field(
        default=None,
        description="how the cursor is written into the request: iso8601 (default), date, unix, "
        "unix_ms, or a strftime pattern",
    )
    initial: str | None = Field(default=None, description="cursor value for the first sync")


class ConfigField(StrictModel):
    """A value an integration must (or may) give in its plain config."""

    description: str = ""
    required: bool = True
    default: str | None = None


class SecretField(StrictModel):
    """A secret an integration gives (token, password): encrypted at rest, never shown."""

    description: str = ""
    required: bool = True


def _secrets_as_mapping(value: Any) -> Any:
    # `secrets: [token]` is shorthand for `secrets: {token: {}}` (all required).
    if isinstance(value, list):
        return {str(name): {} for name in value}
    return value


class StreamSpec(StrictModel):
    name: str
    description: str = ""
    primary_key: Annotated[list[str], BeforeValidator(_as_list)] = Field(default_factory=list)
    cursor: CursorSpec | None = None
    write_mode: WriteMode = "merge"
    table: str | None = Field(default=None, description="target table; default <spec>_<stream>")
    columns: dict[str, ColumnType] = Field(
        default_factory=dict, description="column type hints, overriding inference"
    )
    http: HttpStreamOptions | None = None
    sql: SqlStreamOptions | None = None
    files: FilesStreamOptions | None = None

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not SLUG.match(value):
            raise ValueError("must be lowercase letters, digits and _ (starting with a letter)")
        return value

    @model_validator(mode="after")
    def _keys(self) -> StreamSpec:
        if self.write_mode == "merge" and not self.primary_key:
            raise ValueError("write_mode 'merge' needs a primary_key")
        return self


class SourceSpec(StrictModel):
    name: str
    engine: Engine
    description: str = ""
    target_schema: str = Field(default="public", alias="schema")
    config: dict[str, ConfigField] = Field(
        default_factory=dict,
        description="plain config an integration provides ({name} in templates)",
    )
    secrets: Annotated[dict[str, SecretField], BeforeValidator(_secrets_as_mapping)] = Field(
        default_factory=dict,
        description="secrets an integration provides (auth values); a list of names, or a "
        "mapping name -> {description, required}",
    )
    http: HttpSourceOptions | None = None
    sql: SqlSourceOptions | None = None
    files: FilesSourceOptions | None = None
    streams: list[StreamSpec] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not SLUG.match(value):
            raise ValueError("must be lowercase letters, digits and _ (starting with a letter)")
        return value

    @model_validator(mode="after")
    def _streams(self) -> SourceSpec:
        names = [s.name for s in self.streams]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"duplicate stream names: {', '.join(duplicated)}")
        # Tables are shared by the integrations of a spec, and a load deletes or sweeps the
        # integration's rows of its table: two streams in one table would remove each other's.
        writers: dict[str, str] = {}
        for stream in self.streams:
            table = self.table_for(stream)
            if table in writers:
                raise ValueError(
                    f"streams '{writers[table]}' and '{stream.name}' both write table"
                    f" '{self.target_schema}.{table}'; give one of them its own `table:`"
                )
            writers[table] = stream.name
        for engine in ("http", "sql", "files"):
            if engine != self.engine:
                used = [s.name for s in self.streams if getattr(s, engine) is not None]
                if getattr(self, engine) is not None or used:
                    raise ValueError(f"'{engine}' options given but the engine is '{self.engine}'")
        # Each engine checks what only it understands (placeholders, pagination fields, ...).
        options = getattr(self, self.engine)
        if options is None and self.engine == "files":
            options = FilesSourceOptions()  # every files default is optional; streams still check
        check = getattr(options, "check_spec", None)
        if check is not None:
            check(self)
        return self

    def stream(self, name: str) -> StreamSpec:
        for stream in self.streams:
            if stream.name == name:
                return stream
        raise KeyError(f"spec '{self.name}' has no stream '{name}'")

    def table_for(self, stream: StreamSpec) -> str:
        return stream.table or f"{self.name}_{stream.name}"
