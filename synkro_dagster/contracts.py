"""The types that pass between the layers: an integration, a stream read as parts of batches, stats.

Connectors produce a `StreamRead`; the data layer consumes it. Neither imports the other.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

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


def redact(text: str, secret_values: Any) -> str:
    # Longest first, so a secret that contains another is removed whole.
    for value in sorted((str(v) for v in secret_values if v), key=len, reverse=True):
        if len(value) >= 3:
            text = text.replace(value, REDACTED)
    return text


class SourceDataError(Exception):
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


class Part:
    """A unit of source data that lands whole or not at all: one file, or a whole API/SQL stream.

    The data layer COPYs each part's batches inside the load transaction. When `isolated` is true,
    a SourceDataError raised while reading rolls back only this part (a savepoint), `rejected` is
    called, and the load goes on with the next part; otherwise the whole load fails.
    """

    name: str = "stream"
    isolated: bool = False
    # A content hash (files): the data layer records it in synkro.processed_files in the same
    # transaction as the part's rows and skips a part whose identity is already recorded, so a
    # file is loaded exactly once even if moving it after the commit never happened.
    identity: str | None = None

    def batches(self) -> Iterator[Batch]:
        raise NotImplementedError

    def before_commit(self, connection: Any) -> None:
        """Runs inside the load transaction after the part's rows are staged (a SQLAlchemy Connection)."""

    def after_commit(self) -> None:
        """Runs after the transaction committed, also for a part skipped as already loaded
        (e.g. move the file to processed/)."""

    def rejected(self, error: SourceDataError) -> None:
        """Runs after an isolated part was rolled back because of `error` (e.g. quarantine it)."""


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
    # Column types the source itself declares (SQL reflection), as PostgreSQL type names.
    column_types: dict[str, str] = field(default_factory=dict)
