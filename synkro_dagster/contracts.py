"""The types that pass between the layers: an integration, a stream read as parts of batches, stats.

Connectors produce a `StreamRead`; the data layer consumes it. Neither imports the other.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

from synkro_dagster.errors import SynkroError

Record = dict[str, Any]
Batch = list[Record]

REDACTED = "***"


@dataclass(frozen=True)
class Integration:
    """One client's connection to one spec, with its secrets decrypted (never printed)."""

    id: str
    tenant: str
    spec: str
    config: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    schedule: str | None = None
    enabled: bool = True

    def redact(self, text: str) -> str:
        """`text` with every secret value of this integration replaced by ***."""
        return redact(text, self.secrets.values())


# Below this length a secret cannot be told apart from ordinary text (ids, numbers, words), so
# it is replaced only where it stands as a whole token; see docs/security.md, "Redaction".
MIN_SUBSTRING_SECRET = 8
# Shorter secrets than this are not redacted in free text at all (they would blank "a", "42").
MIN_TOKEN_SECRET = 4
# Ordinary words a weak secret may equal: replacing them would blank out the very error text that
# explains a failure ("wrong bearer token" -> "wrong bearer ***"). A secret that is one of these
# (case-insensitive) is never redacted in free text; structural redaction (auth headers, key query
# parameters, URL passwords) still hides it where its position is known.
COMMON_WORDS = frozenset(
    [
        "access",
        "account",
        "admin",
        "administrator",
        "apikey",
        "auth",
        "bearer",
        "changeme",
        "client",
        "credential",
        "credentials",
        "database",
        "default",
        "demo",
        "guest",
        "hello",
        "internal",
        "key",
        "letmein",
        "login",
        "master",
        "null",
        "pass",
        "passwd",
        "password",
        "postgres",
        "private",
        "public",
        "root",
        "secret",
        "server",
        "service",
        "system",
        "test",
        "testing",
        "token",
        "unknown",
        "user",
        "username",
        "welcome",
    ]
)


def secret_forms(value: str) -> set[str]:
    """The ways `value` shows up in text: as is, percent-encoded (both hex cases, space as %20 or
    +), base64 (standard and URL-safe, with and without padding) and JSON-escaped."""
    forms = {value}
    for quoted in (quote(value, safe=""), quote_plus(value, safe=""), quote(value)):
        forms.add(quoted)
        forms.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quoted))
    raw = value.encode("utf-8")
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = encoded.decode("ascii")
        forms.update((text, text.rstrip("=")))
    for escaped in (json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]):
        forms.update((escaped, escaped.replace("/", "\\/")))
    return {form for form in forms if form}


def redaction_mode(value: str) -> str:
    """How a secret is redacted: 'substring' (anywhere), 'token' (only as a whole token, not
    touching a letter or digit) or 'none' (too short or an ordinary word to find in free text)."""
    if len(value) < MIN_TOKEN_SECRET or value.lower() in COMMON_WORDS:
        return "none"
    if len(value) < MIN_SUBSTRING_SECRET:
        # A short all-letter value is most likely a word: blanking it would garble messages.
        return "none" if value.isalpha() else "token"
    return "substring"


@functools.lru_cache(maxsize=256)
def _redactor(values: tuple[str, ...]) -> re.Pattern[str] | None:
    substrings: set[str] = set()
    tokens: set[str] = set()
    for value in values:
        mode = redaction_mode(value)
        if mode != "none":
            (substrings if mode == "substring" else tokens).update(secret_forms(value))
    tokens -= substrings
    # Longest first, so a secret that contains another is removed whole.
    alternatives = [re.escape(f) for f in sorted(substrings, key=len, reverse=True)]
    if tokens:
        words = "|".join(re.escape(f) for f in sorted(tokens, key=len, reverse=True))
        alternatives.append(rf"(?<![A-Za-z0-9])(?:{words})(?![A-Za-z0-9])")
    return re.compile("|".join(alternatives)) if alternatives else None


def redact(text: str, secret_values: Any) -> str:
    """`text` with each secret value, and its encoded forms, replaced by ***."""
    values = tuple(sorted({str(v) for v in secret_values if v}))
    pattern = _redactor(values) if values else None
    return pattern.sub(REDACTED, text) if pattern is not None else text


class SourceDataError(SynkroError):
    """Bad source data: the message says what is wrong and where (file, line, column, value)."""


@dataclass
class ReadStats:
    """What a connector saw while reading; the data layer and the checks report it."""

    pages: int = 0
    bytes: int = 0
    files: int = 0
    files_rejected: int = 0
    records: int = 0
    source_total: int | None = None  # a total the source reported (body field, header, manifest)
    # Files set aside by this read: (file name, the first line of the reason), in order.
    rejected: list[tuple[str, str]] = field(default_factory=list)
    # Text encodings detected (not declared) per file: "cp1251 (confidence 0.98)".
    encodings: dict[str, str] = field(default_factory=dict)
    # How each file was read, where a fast path was possible: "csv_copy", or "records" with why.
    read_paths: dict[str, str] = field(default_factory=dict)


class Part:
    """A unit of source data that lands whole or not at all: one file, or a whole API/SQL stream.

    The data layer COPYs each part's batches inside the load transaction. When `isolated` is true,
    a SourceDataError raised while reading rolls back only this part (a savepoint), `rejected` is
    called, and the load goes on with the next part; otherwise the whole load fails.
    """

    name: str = "stream"
    isolated: bool = False
    # A content hash (files): the data layer records it with the part's name in
    # synkro.processed_files in the same transaction as the part's rows and skips an upload that
    # is already recorded, so a file is loaded exactly once even if moving it never happened.
    identity: str | None = None
    # With an identity: the export id a manifest gave, and what counts as already loaded —
    # "upload" (the same name, export id and content hash) or "content" (the hash alone).
    export_id: str | None = None
    dedupe: str = "upload"

    def batches(self) -> Iterator[Batch]:
        raise NotImplementedError

    def locate(self, index: int) -> str | None:
        """Where record `index` (0-based) of the part is, e.g. "line 57", for error messages."""
        return None

    def typed_batches(self) -> Iterator[Any]:
        """The batches the data layer stages: `batches()` unless the part can hand typed batches
        (a `pyarrow.RecordBatch`, a `CopyBatch`), which the data layer stages by binary COPY.

        Every other consumer reads `batches()`, so records stay the contract."""
        return self.batches()

    def fall_back(self, error: BaseException) -> bool:
        """The part's typed batches failed to load (PostgreSQL refused a COPY or a cast, a check
        failed): True when the part now hands its records instead, so the data layer rolls back
        to the part's savepoint and loads it again; False (the default) rejects it."""
        return False

    def again(self) -> None:
        """The data layer undid the part (rolled back to its savepoint) and reads it again from
        the start, on the same path: its typed batches begin anew and its read stats are taken
        back."""

    def before_commit(self, connection: Any) -> None:
        """Runs inside the load transaction after the part's rows are staged (a SQLAlchemy Connection)."""

    def after_commit(self) -> None:
        """Runs after the transaction committed, also for a part skipped as already loaded
        (e.g. move the file to processed/)."""

    def rejected(self, error: SourceDataError) -> None:
        """Runs after an isolated part was rolled back because of `error` (e.g. quarantine it)."""


@dataclass
class CopyBatch:
    """Rows as PostgreSQL binary COPY data, passed through to the data layer's staging unchanged.

    A PostgreSQL source yields this (its `COPY (query) TO STDOUT (FORMAT binary)` stream) when no
    value needs converting. `columns` are (name, exact PostgreSQL type) in the stream's order;
    the data layer sets `rows` once the COPY is done.
    """

    columns: list[tuple[str, str]]
    chunks: Iterator[bytes]
    rows: int = 0


@dataclass
class CsvColumn:
    """One column of a `CsvCopyBatch`.

    `stage_type` is the type COPY reads the field as (the connector checked that PostgreSQL reads
    it as its records path would); `convert`, for a text column, turns the staged text (a SQL
    expression) into the text the target type reads, as the records path would have converted it
    (decimal comma, dd.mm.yyyy, ...). `declared` is the column's declared type; without one
    (`None`) the records path infers it from the values.
    """

    name: str
    declared: str | None = None
    convert: Callable[[Any], Any] | None = None
    stage_type: str = "text"


@dataclass
class CsvCopyBatch:
    """A clean CSV file's data lines (header skipped), for a server-side text COPY.

    `chunks` are the file's bytes as they are; PostgreSQL parses them (FORMAT csv) and converts
    them from `encoding` (its name for it, e.g. WIN1251). `force_null`: columns whose quoted empty
    value ("") is null too. The data layer sets `rows` once the COPY is done.
    """

    columns: list[CsvColumn]
    chunks: Iterator[bytes]
    encoding: str
    delimiter: str
    quote: str
    force_null: list[str] = field(default_factory=list)
    rows: int = 0


class BatchesPart(Part):
    """A part made from any iterator of batches (HTTP pages, SQL fetches)."""

    def __init__(self, batches: Iterator[Batch], name: str = "stream") -> None:
        self._batches = batches
        self.name = name

    def batches(self) -> Iterator[Batch]:
        return self._batches


@dataclass
class StreamRead:
    """A connector's answer to "read this stream from this cursor": parts, declared types, stats."""

    parts: Iterator[Part]
    stats: ReadStats = field(default_factory=ReadStats)
    # Column types the source itself declares (SQL reflection), as PostgreSQL type names
    # (sized where the source says: numeric(10,2), varchar(40)).
    column_types: dict[str, str] = field(default_factory=dict)
    # Columns the source declares NOT NULL, and the source's column comments (SQL reflection).
    not_null: frozenset[str] = frozenset()
    column_comments: dict[str, str] = field(default_factory=dict)
