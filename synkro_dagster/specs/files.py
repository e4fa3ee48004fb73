"""The 'files' engine's part of a source spec: file pattern, format, encoding and value formats.

Source-level options are defaults for every stream; a stream's own `files:` block overrides them
field by field. `FileOptions.resolve(source, stream)` gives the effective options for one stream.
"""

from __future__ import annotations

import codecs
import fnmatch
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from synkro_dagster.specs.models import SourceSpec, StreamSpec

FileFormat = Literal["csv", "xlsx", "json", "ndjson"]

# File-name endings that name their format, so most specs need no `format:`.
FORMAT_BY_SUFFIX: dict[str, FileFormat] = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "csv",
    ".xlsx": "xlsx",
    ".json": "json",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
}


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: FileFormat | None = Field(
        default=None, description="csv, xlsx, json or ndjson; default from the pattern's ending"
    )
    encoding: str | None = Field(
        default=None,
        description="text encoding (e.g. utf-8, cp1251); default: detected (BOM, UTF-8, "
        "Windows-1251 ...)",
    )
    delimiter: str | None = Field(
        default=None, description="CSV field separator: ',', ';' or '\\t'; default: sniffed"
    )
    quotechar: str | None = Field(default=None, description="CSV quote character; default '\"'")
    decimal: str | None = Field(
        default=None, description="decimal separator of numeric columns; default '.'"
    )
    thousands: str | None = Field(
        default=None,
        description="thousands separator of numeric columns (e.g. ' '); non-breaking spaces are "
        "treated as spaces",
    )
    date_format: str | None = Field(
        default=None, description="strptime pattern of date columns (e.g. %d.%m.%Y); default ISO"
    )
    datetime_format: str | None = Field(
        default=None,
        description="strptime pattern of timestamp columns (e.g. %d.%m.%Y %H:%M:%S); default ISO",
    )
    skip_rows: int | None = Field(
        default=None, ge=0, description="lines (CSV) or rows (XLSX) before the header row"
    )
    require_manifest: bool | None = Field(
        default=None,
        description="read a file only once its <name>.sha256 manifest is there (and matches)",
    )
    dedupe: Literal["upload", "content"] | None = Field(
        default=None,
        description="which drops count as already loaded: 'upload' (default: the same file name, "
        "export id and content again) or 'content' (the same content under any name; for "
        "append streams whose exports must never add the same rows twice)",
    )
    quoted_empty: Literal["empty", "null"] | None = Field(
        default=None,
        description="CSV: a quoted empty field \"\" lands as an empty string ('empty', the default, "
        "as PostgreSQL's COPY reads it) or as null ('null'); an unquoted empty field is null",
    )

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                codecs.lookup(value)
            except LookupError:
                raise ValueError(
                    f"unknown encoding {value!r} (e.g. utf-8, utf-8-sig, cp1251)"
                ) from None
        return value

    @field_validator("delimiter", "quotechar", "decimal")
    @classmethod
    def _one_character(cls, value: str | None) -> str | None:
        if value is not None and len(value) != 1:
            raise ValueError(f"must be a single character, got {value!r}")
        return value

    @field_validator("date_format", "datetime_format")
    @classmethod
    def _strftime_pattern(cls, value: str | None) -> str | None:
        if value is not None:
            if "%" not in value:
                raise ValueError(f"{value!r} is not a strptime pattern (e.g. %d.%m.%Y)")
            sample = datetime(2026, 11, 27, 13, 45, 30)
            try:
                datetime.strptime(sample.strftime(value), value)
            except ValueError as exc:
                raise ValueError(f"{value!r} does not round-trip a date: {exc}") from None
        return value


class FilesSourceOptions(_Options):
    """Defaults shared by every stream of a files source."""

    def check_spec(self, source: SourceSpec) -> None:
        """Checks across streams that the field validators cannot make (called by SourceSpec)."""
        for stream in source.streams:
            if stream.files is None:
                raise ValueError(
                    f"stream '{stream.name}': a files stream needs a 'files:' block with a "
                    "'pattern' (e.g. files: {pattern: 'orders_*.csv'})"
                )
            options = FileOptions.resolve(source, stream)
            where = f"stream '{stream.name}', field 'files"
            if options.sheet is not None and options.format != "xlsx":
                raise ValueError(f"{where}.sheet': only for xlsx files")
            if options.records_path is not None and options.format != "json":
                raise ValueError(f"{where}.records_path': only for json files")
            if options.decimal is not None and options.decimal == options.thousands:
                raise ValueError(f"{where}.thousands': must differ from the decimal separator")
            renamed = list(stream.files.rename.values())
            duplicated = sorted({n for n in renamed if renamed.count(n) > 1})
            if duplicated:
                raise ValueError(f"{where}.rename': two columns renamed to {duplicated}")


class FilesStreamOptions(_Options):
    """Per-stream files options: which files (pattern) and how to read them."""

    pattern: str = Field(
        description="glob of the file names this stream reads in the integration's inbox, "
        "e.g. 'sales_*.csv' (matched case-insensitively)"
    )
    sheet: str | None = Field(default=None, description="XLSX sheet name; default the first")
    records_path: str | None = Field(
        default=None,
        description="JSON: dotted path to the records array in a top-level object "
        "(e.g. 'data.items'); default: the file is an array",
    )
    rename: dict[str, str] = Field(
        default_factory=dict,
        description="header name in the file -> column name (e.g. 'Код': code)",
    )

    @model_validator(mode="after")
    def _options_fit_the_format(self) -> FilesStreamOptions:
        # Checked here as well as in check_spec: SourceSpec calls check_spec only when the
        # source has a top-level `files:` block. The format is known here unless it comes
        # from the source defaults, which check_spec then checks.
        fmt = self.format or format_for_pattern(self.pattern)
        if self.sheet is not None and fmt not in (None, "xlsx"):
            raise ValueError("'sheet' is only for xlsx files")
        if self.records_path is not None and fmt not in (None, "json"):
            raise ValueError("'records_path' is only for json files")
        renamed = list(self.rename.values())
        duplicated = sorted({n for n in renamed if renamed.count(n) > 1})
        if duplicated:
            raise ValueError(f"'rename' gives two columns the name {duplicated}")
        return self

    @field_validator("pattern")
    @classmethod
    def _plain_glob(cls, value: str) -> str:
        if not value.strip() or "/" in value or "\\" in value:
            raise ValueError("must be a file-name glob without folders, e.g. 'sales_*.csv'")
        if value.endswith((".tmp", ".sha256")):
            raise ValueError("must not match the upload protocol's .tmp / .sha256 files")
        return value


@dataclass(frozen=True)
class FileOptions:
    """The effective options of one files stream (stream overrides over source defaults)."""

    pattern: str
    format: FileFormat
    encoding: str | None = None
    delimiter: str | None = None
    quotechar: str = '"'
    decimal: str = "."
    thousands: str | None = None
    date_format: str | None = None
    datetime_format: str | None = None
    skip_rows: int = 0
    require_manifest: bool = False
    dedupe: Literal["upload", "content"] = "upload"
    quoted_empty: Literal["empty", "null"] = "empty"
    sheet: str | None = None
    records_path: str | None = None
    rename: dict[str, str] = field(default_factory=dict)

    @classmethod
    def resolve(cls, source: SourceSpec, stream: StreamSpec) -> FileOptions:
        own = stream.files
        if own is None:
            raise ValueError(f"stream '{stream.name}' has no 'files:' options")
        defaults = source.files or FilesSourceOptions()

        def pick(name: str, fallback: object) -> object:
            value = getattr(own, name)
            if value is None:
                value = getattr(defaults, name)
            return fallback if value is None else value

        fmt = pick("format", None) or format_for_pattern(own.pattern)
        if fmt is None:
            raise ValueError(
                f"stream '{stream.name}', field 'files.format': cannot tell the format from "
                f"pattern {own.pattern!r}; set format: csv, xlsx, json or ndjson"
            )
        return cls(
            pattern=own.pattern,
            format=fmt,  # type: ignore[arg-type]
            encoding=pick("encoding", None),  # type: ignore[arg-type]
            delimiter=pick("delimiter", None),  # type: ignore[arg-type]
            quotechar=pick("quotechar", '"'),  # type: ignore[arg-type]
            decimal=pick("decimal", "."),  # type: ignore[arg-type]
            thousands=pick("thousands", None),  # type: ignore[arg-type]
            date_format=pick("date_format", None),  # type: ignore[arg-type]
            datetime_format=pick("datetime_format", None),  # type: ignore[arg-type]
            skip_rows=pick("skip_rows", 0),  # type: ignore[arg-type]
            require_manifest=pick("require_manifest", False),  # type: ignore[arg-type]
            dedupe=pick("dedupe", "upload"),  # type: ignore[arg-type]
            quoted_empty=pick("quoted_empty", "empty"),  # type: ignore[arg-type]
            sheet=own.sheet,
            records_path=own.records_path,
            rename=dict(own.rename),
        )

    def matches(self, file_name: str) -> bool:
        """Whether `file_name` belongs to this stream (case-insensitive: Windows exports vary)."""
        return fnmatch.fnmatch(file_name.lower(), self.pattern.lower())


def format_for_pattern(pattern: str) -> FileFormat | None:
    lowered = pattern.lower()
    for suffix, fmt in FORMAT_BY_SUFFIX.items():
        if lowered.endswith(suffix):
            return fmt
    return None
