"""The source spec format: one YAML file per external system, validated with pydantic."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from synkro_dagster.specs.columns import ColumnControl, Naming, landed_name, split_columns
from synkro_dagster.specs.cursors import AS_STORED, check_format, parse_duration
from synkro_dagster.specs.engines import ENGINES, EngineEntry
from synkro_dagster.specs.files import FilesSourceOptions, FilesStreamOptions
from synkro_dagster.specs.http import HttpSourceOptions, HttpStreamOptions
from synkro_dagster.specs.sql import SqlSourceOptions, SqlStreamOptions

SLUG = re.compile(r"^[a-z][a-z0-9_]{0,40}$")

WriteMode = Literal["merge", "append", "replace", "history"]
COLUMN_TYPES = (
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
)
# Sized types land exactly as declared: numeric(10,2), numeric(12), varchar(40).
_SIZED_TYPE = re.compile(r"^(numeric\(\s*\d{1,4}\s*(,\s*\d{1,4}\s*)?\)|varchar\(\s*\d{1,8}\s*\))$")


def _column_type(value: Any) -> Any:
    if isinstance(value, str):
        cleaned = " ".join(value.strip().lower().split())
        if cleaned in COLUMN_TYPES or _SIZED_TYPE.match(cleaned):
            return (
                cleaned.replace(" ", "")
                if cleaned.startswith(("numeric(", "varchar("))
                else cleaned
            )
    raise ValueError(
        f"unknown column type {value!r}; allowed: {', '.join(COLUMN_TYPES)}, "
        "numeric(precision,scale), varchar(length)"
    )


ColumnType = Annotated[str, BeforeValidator(_column_type)]


def base_type(column_type: str) -> str:
    """The unsized type of a spec column type: numeric(10,2) -> numeric, varchar(40) -> text."""
    if column_type.startswith("numeric("):
        return "numeric"
    if column_type.startswith("varchar("):
        return "text"
    return column_type


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class CursorSpec(StrictModel):
    """How a stream is read incrementally (see docs/specs.md, "How incremental syncs work")."""

    field: str = Field(description="record field holding the cursor value (e.g. updated_at)")
    param: str | None = Field(
        default=None, description="request parameter that receives the stored cursor (http)"
    )
    format: str = Field(
        default=AS_STORED,
        description="how the cursor is written into the request: as_stored (default: exactly as "
        "the source wrote it), iso8601, date, unix, unix_ms, or a strftime pattern (%3f writes "
        "milliseconds); unix / unix_ms also declare that numeric cursor values are epoch times",
    )
    initial: str | None = Field(default=None, description="cursor value for the first sync")
    initial_applies_to_full_refresh: bool = Field(
        default=False,
        description="a full refresh also starts at `initial` (default: it reads everything)",
    )
    lookback: str | int | float | None = Field(
        default=None,
        description="re-read this much before the stored cursor on every sync: a duration "
        "(2h, 30m, 1d) for time cursors, a number (100) for numeric ones",
    )
    max_future: str | None = Field(
        default="1d",
        description="the cursor never advances beyond now + this duration (null: no limit); "
        "records dated later still land and a check warns",
    )

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        return check_format(value)

    @field_validator("lookback")
    @classmethod
    def _lookback(cls, value: str | int | float | None) -> str | int | float | None:
        if isinstance(value, bool):
            raise ValueError("must be a duration (2h) or a number (100)")
        if isinstance(value, str):
            text = value.strip()
            try:
                float(text)
                return text
            except ValueError:
                parse_duration(text)
        elif value is not None and value < 0:
            raise ValueError("must not be negative")
        return value

    @field_validator("max_future")
    @classmethod
    def _max_future(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _lookback_fits_format(self) -> CursorSpec:
        duration = isinstance(self.lookback, str) and not _is_number(self.lookback)
        if self.lookback is not None and not duration and self.format != AS_STORED:
            # Every conversion (iso8601, date, unix, unix_ms, strftime) makes this a time cursor.
            raise ValueError(
                f"lookback {self.lookback!r} is a number but format '{self.format}' makes "
                "this a time cursor: give a duration such as 2h"
            )
        return self


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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


def _hints_and_control(data: Any) -> Any:
    # `columns:` holds type hints and the column-control keys (select, exclude, rename, hash);
    # the model keeps them apart so every engine reads `columns` as plain type hints.
    if isinstance(data, dict) and "columns" in data and "column_control" not in data:
        hints, control = split_columns(data["columns"])
        data = {**data, "columns": hints, "column_control": control}
    return data


DeleteMode = Literal["soft", "hard"]


class DeleteMarker(StrictModel):
    """Deletions the source marks on the record itself: `marker: is_deleted`, `status=deleted`."""

    marker: str = Field(
        description="`field` (deleted when the value is anything but null, false, 0, no or empty:"
        " is_deleted, deleted_at) or `field=value` (deleted when the field's text is exactly"
        " value: status=deleted)"
    )
    mode: DeleteMode = Field(
        default="soft", description="soft: set _synkro_deleted_at; hard: delete the row"
    )

    @field_validator("marker")
    @classmethod
    def _marker(cls, value: str) -> str:
        if not value.split("=", 1)[0].strip():
            raise ValueError("needs a field name: `is_deleted` or `status=deleted`")
        return value

    @property
    def field(self) -> str:
        return self.marker.split("=", 1)[0].strip()

    @property
    def value(self) -> str | None:
        """The value that marks a deletion, or None: any value but null/false/0/no/empty does."""
        _, equals, value = self.marker.partition("=")
        return value.strip() if equals else None


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
    column_control: ColumnControl = Field(
        default_factory=ColumnControl,
        description="select/exclude/rename/hash, given as reserved keys of `columns:`",
    )
    naming: Naming | None = Field(
        default=None, description="overrides the spec's naming for this stream"
    )
    partitioned_by: Literal["daily", "weekly", "monthly"] | None = Field(
        default=None,
        description="a report stream: one run loads one day (week, month) of one integration "
        "and replaces exactly that period's rows; {partition_date} / {partition_end} in the "
        "http path and params",
    )
    partition_start: date | None = Field(
        default=None, description="first partition (ISO date) of a partitioned stream"
    )
    track_columns: list[str] | None = Field(
        default=None,
        description="write_mode history: the fields whose change opens a new version (default "
        "all); a change of another field updates the current version in place",
    )
    parent: str | None = Field(
        default=None,
        description="a stream of the same spec: this stream is read once per parent record "
        "(http path placeholders from the parent's fields) or unnested from it (`unnest`)",
    )
    unnest: str | None = Field(
        default=None,
        description="field (dotted path) of the parent record holding this stream's records",
    )
    parent_columns: dict[str, str] = Field(
        default_factory=dict,
        description="parent field -> column in this stream's table; default <parent>_<field> "
        "for the parent's primary key and cursor fields",
    )
    http: HttpStreamOptions | None = None
    sql: SqlStreamOptions | None = None
    files: FilesStreamOptions | None = None
    deletes: Literal["soft", "hard", "ignore"] | DeleteMarker | None = Field(
        default=None,
        description="how source deletions reach the table: soft / hard (sweep the rows a complete"
        " full read did not return), {marker: field[=value], mode: soft|hard}, or ignore;"
        " default soft for http/sql merge streams without a cursor, else ignore",
    )
    max_delete_fraction: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="a replace or sweep that would remove more than this share of the"
        " integration's rows fails instead (1.0: no limit); the run tag"
        " synkro/allow_mass_delete=true lets one run through",
    )

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not SLUG.match(value):
            raise ValueError("must be lowercase letters, digits and _ (starting with a letter)")
        return value

    @model_validator(mode="before")
    @classmethod
    def _split_columns(cls, data: Any) -> Any:
        return _hints_and_control(data)

    @model_validator(mode="after")
    def _keys(self) -> StreamSpec:
        if self.write_mode in ("merge", "history") and not self.primary_key:
            raise ValueError(f"write_mode '{self.write_mode}' needs a primary_key")
        if self.partitioned_by is not None:
            if self.partition_start is None:
                raise ValueError("partitioned_by needs a partition_start (e.g. 2026-01-01)")
            if self.write_mode != "replace":
                raise ValueError(
                    "a partitioned stream replaces one period's rows per run: set "
                    "write_mode: replace"
                )
            if self.cursor is not None or self.parent is not None:
                raise ValueError("a partitioned stream has no cursor and no parent")
        if self.track_columns is not None and self.write_mode != "history":
            raise ValueError("track_columns is for write_mode 'history'")
        if self.deletes not in (None, "ignore") and self.write_mode != "merge":
            what = "a marker" if isinstance(self.deletes, DeleteMarker) else f"'{self.deletes}'"
            raise ValueError(
                f"deletes {what} needs write_mode 'merge' (rows are matched by primary key);"
                f" {self.write_mode} streams take `deletes: ignore`"
                + (" (a replace already removes what the read no longer has)"
                   if self.write_mode == "replace" else "")
            )  # fmt: skip
        return self


class SourceSpec(StrictModel):
    name: str
    engine: str = Field(description="the engine that reads the source: " + ", ".join(ENGINES))
    description: str = ""
    target_schema: str = Field(default="public", alias="schema")
    naming: Naming = Field(
        default="as_is",
        description="as_is (default) or snake_case: how source field names become columns",
    )
    hash_salt_secret: str = Field(
        default="hash_salt",
        description="integration secret whose value salts the columns listed in columns.hash",
    )
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

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, value: str) -> str:
        if value not in ENGINES:
            raise ValueError(f"unknown engine {value!r}; engines: {', '.join(ENGINES)}")
        return value

    @property
    def engine_entry(self) -> EngineEntry:
        """What the spec's engine is and may do (`specs/engines.py`)."""
        return ENGINES[self.engine]

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
        for engine in ENGINES:
            if engine != self.engine:
                used = [s.name for s in self.streams if getattr(s, engine) is not None]
                if getattr(self, engine) is not None or used:
                    raise ValueError(f"'{engine}' options given but the engine is '{self.engine}'")
        self._check_columns_and_children()
        # Each engine checks what only it understands (placeholders, pagination fields, ...).
        options = getattr(self, self.engine)
        if options is None and self.engine_entry.options_optional:
            options = self.engine_entry.source_options()  # all defaults; streams still check
        check = getattr(options, "check_spec", None)
        if check is not None:
            check(self)
        return self

    def _check_columns_and_children(self) -> None:
        problems: list[str] = []
        by_name = {s.name: s for s in self.streams}
        entry = self.engine_entry
        for stream in self.streams:
            where = f"stream '{stream.name}'"
            control = stream.column_control
            if control.hash and self.hash_salt_secret not in self.secrets:
                problems.append(
                    f"{where}, field 'columns.hash': the salt secret '{self.hash_salt_secret}' "
                    "is not declared in the spec's secrets: (add it, or set hash_salt_secret)"
                )
            parent_columns = set(self.parent_key_columns(stream).values()) if stream.parent else ()
            for key in stream.primary_key:
                if key not in parent_columns and not control.keeps(key):
                    problems.append(
                        f"{where}, field 'primary_key': '{key}' is left out by columns.select/exclude"
                    )
            if stream.cursor is not None:
                if not control.keeps(stream.cursor.field):
                    problems.append(
                        f"{where}, field 'cursor.field': '{stream.cursor.field}' is left out by "
                        "columns.select/exclude"
                    )
                if stream.cursor.field in control.hash:
                    problems.append(
                        f"{where}, field 'columns.hash': the cursor field "
                        f"'{stream.cursor.field}' cannot be hashed"
                    )
            if stream.partitioned_by is not None and not entry.partitioned_streams:
                problems.append(
                    f"{where}, field 'partitioned_by': not supported for {self.engine} streams"
                )
            if stream.parent is None:
                if stream.unnest is not None or stream.parent_columns:
                    problems.append(f"{where}: 'unnest' and 'parent_columns' need a 'parent'")
                continue
            parent = by_name.get(stream.parent)
            if parent is None or parent is stream:
                problems.append(
                    f"{where}, field 'parent': '{stream.parent}' is not another stream of this "
                    f"spec (streams: {', '.join(by_name)})"
                )
                continue
            if parent.parent is not None:
                problems.append(
                    f"{where}, field 'parent': '{parent.name}' is itself a child of "
                    f"'{parent.parent}'; one level of parents is supported"
                )
            if stream.cursor is not None:
                problems.append(
                    f"{where}, field 'cursor': a child stream follows its parent's cursor "
                    f"(it reads the children of the parent records changed since its last sync); "
                    "remove it"
                )
            if stream.unnest is None and not entry.child_requests:
                problems.append(
                    f"{where}: a child stream of a {self.engine} spec needs 'unnest' (the parent "
                    "field holding its records); reading one request per parent is for "
                    + ", ".join(name for name, e in ENGINES.items() if e.child_requests)
                    + " specs only"
                )
            if stream.unnest is not None and not entry.unnest:
                problems.append(f"{where}, field 'unnest': not supported for {self.engine} streams")
            if stream.unnest is not None and getattr(stream, self.engine) is not None:
                problems.append(
                    f"{where}: an unnested child stream is read from its parent; remove its "
                    f"'{self.engine}' block"
                )
            if not parent.primary_key:
                problems.append(
                    f"{where}, field 'parent': the parent '{parent.name}' has no primary_key "
                    "to land in the child's rows"
                )
        if problems:
            raise ValueError("\n".join(problems))

    @property
    def partitioned_streams(self) -> list[StreamSpec]:
        return [s for s in self.streams if s.partitioned_by is not None]

    @property
    def integration_streams(self) -> list[StreamSpec]:
        """The streams partitioned by integration only (the spec's sync_<spec> job)."""
        return [s for s in self.streams if s.partitioned_by is None]

    def naming_for(self, stream: StreamSpec) -> Naming:
        return stream.naming or self.naming

    def resolve_config(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """An integration's config as every engine and the registry see it: the spec's `config`
        defaults, overridden by what the integration gives."""
        resolved: dict[str, Any] = {
            name: field.default for name, field in self.config.items() if field.default is not None
        }
        resolved.update(given)
        return resolved

    def missing_config(self, given: Mapping[str, Any]) -> list[str]:
        """The required config names still blank after the spec's defaults are applied."""
        resolved = self.resolve_config(given)
        return [
            name
            for name, field in self.config.items()
            if field.required and (resolved.get(name) is None or str(resolved[name]).strip() == "")
        ]

    def landed(self, stream: StreamSpec, field: str) -> str:
        """The column the source field `field` of `stream` lands in (rename, naming)."""
        return landed_name(field, stream.column_control, self.naming_for(stream))

    def parent_key_columns(self, stream: StreamSpec) -> dict[str, str]:
        """Parent source field -> column of the child table, for the parent's primary key and
        cursor fields (plus any extra `parent_columns`)."""
        if stream.parent is None:
            return {}
        parent = next((s for s in self.streams if s.name == stream.parent), None)
        if parent is None:
            return {}
        fields = list(parent.primary_key)
        if parent.cursor is not None:
            fields.append(parent.cursor.field)
        mapping = {
            field: stream.parent_columns.get(field)
            or landed_name(
                f"{parent.name}_{self.landed(parent, field)}",
                ColumnControl(),
                self.naming_for(stream),
            )
            for field in fields
        }
        for field, column in stream.parent_columns.items():
            mapping.setdefault(field, column)
        return mapping

    def landed_primary_key(self, stream: StreamSpec) -> list[str]:
        parent_columns = set(self.parent_key_columns(stream).values())
        return [k if k in parent_columns else self.landed(stream, k) for k in stream.primary_key]

    def landed_cursor(self, stream: StreamSpec) -> str | None:
        """The column holding the stream's cursor: its own, or for a child its parent's."""
        if stream.cursor is not None:
            return self.landed(stream, stream.cursor.field)
        if stream.parent is not None:
            parent = self.stream(stream.parent)
            if parent.cursor is not None:
                return self.parent_key_columns(stream)[parent.cursor.field]
        return None

    def landed_hints(self, stream: StreamSpec) -> dict[str, str]:
        """Type hints by landed column (hashed columns are text whatever the hint says)."""
        hints = {self.landed(stream, field): kind for field, kind in stream.columns.items()}
        for field in stream.column_control.hash:
            hints[self.landed(stream, field)] = "text"
        if stream.partitioned_by is not None:
            hints["partition_date"] = "date"
        if stream.parent is not None:
            parent = self.stream(stream.parent)
            parent_hints = self.landed_hints(parent)
            for field, column in self.parent_key_columns(stream).items():
                kind = parent_hints.get(self.landed(parent, field))
                if kind is not None:
                    hints.setdefault(column, kind)
        return hints

    def stream(self, name: str) -> StreamSpec:
        for stream in self.streams:
            if stream.name == name:
                return stream
        raise KeyError(f"spec '{self.name}' has no stream '{name}'")

    def deletes_for(self, stream: StreamSpec) -> Literal["soft", "hard", "ignore"] | DeleteMarker:
        """The stream's delete handling, defaults resolved.

        A merge stream read whole every time (no cursor) of an API or a database sweeps softly by
        default; a files stream does not, since an upload may hold only the day's changes, nor
        does a child stream, which is read only for the parents that changed.
        """
        if stream.deletes is not None:
            return stream.deletes
        if (
            not self.engine_entry.file_drop
            and stream.write_mode == "merge"
            and stream.cursor is None
            and stream.parent is None
        ):
            return "soft"
        return "ignore"

    def table_for(self, stream: StreamSpec) -> str:
        return stream.table or f"{self.name}_{stream.name}"
