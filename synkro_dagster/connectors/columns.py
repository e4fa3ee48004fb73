"""Applies a stream's column control to its records: select/exclude, rename/naming and hashing.

It sits between any connector and the data layer, so every engine gets the same behaviour. A
hashed field lands as HMAC-SHA256 keyed by the integration's salt secret (hex, 64 characters): the
same value gives the same hash within one integration, so the column still joins and groups, while
the value itself never reaches the database. Neither the salt nor a hashed value's source is ever
logged or put in an error message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

from synkro_dagster.contracts import Batch, Integration, Part, Record, SourceDataError, StreamRead
from synkro_dagster.specs.models import SourceSpec, StreamSpec


class ColumnShaper:
    """One stream's column control, compiled for one integration (the salt is its secret)."""

    def __init__(self, source: SourceSpec, stream: StreamSpec, integration: Integration) -> None:
        self.source = source
        self.stream = stream
        self.control = stream.column_control
        self.naming = source.naming_for(stream)
        self.active = not self.control.is_empty or self.naming != "as_is"
        self._names: dict[str, str | None] = {}  # source field -> landed name (None: dropped)
        self._owners: dict[str, str] = {}  # landed name -> source field, to catch collisions
        self._hashed = frozenset(self.control.hash)
        self._salt = b""
        if self._hashed:
            salt = integration.secrets.get(source.hash_salt_secret)
            if not salt:
                raise SourceDataError(
                    f"integration '{integration.id}', stream '{stream.name}': secret "
                    f"'{source.hash_salt_secret}' (the salt for columns.hash) is not set; add it "
                    f"with `synkro integrations set-secret {integration.id} "
                    f"{source.hash_salt_secret}`"
                )
            self._salt = str(salt).encode()

    @property
    def hashes(self) -> bool:
        """Some field lands hashed (a value computed in Python)."""
        return bool(self._hashed)

    def name(self, field: str) -> str | None:
        """The landed column of a source field, or None when the field does not land."""
        try:
            return self._names[field]
        except KeyError:
            pass
        landed: str | None = None
        if self.control.keeps(field):
            landed = self.source.landed(self.stream, field)
            owner = self._owners.setdefault(landed, field)
            if owner != field:
                raise SourceDataError(
                    f"stream '{self.stream.name}': source fields '{owner}' and '{field}' would "
                    f"both land in column '{landed}' (naming: {self.naming}); rename one of them "
                    "under columns.rename"
                )
        self._names[field] = landed
        return landed

    def value(self, field: str, value: Any) -> Any:
        """The value as it lands: hashed when the field is listed in columns.hash."""
        if field not in self._hashed or value is None:
            return value
        if isinstance(value, str):
            data = value.encode()
        elif isinstance(value, dict | list):
            data = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
        else:
            data = str(value).encode()
        return hmac.new(self._salt, data, hashlib.sha256).hexdigest()

    def record(self, record: Record) -> Record:
        if not self.active:
            return record
        shaped: Record = {}
        for field, value in record.items():
            landed = self.name(field)
            if landed is not None:
                shaped[landed] = self.value(field, value)
        return shaped

    def batch(self, batch: Batch) -> Batch:
        if not self.active:
            return batch
        return [self.record(r) for r in batch]

    def column_types(self, declared: dict[str, str]) -> dict[str, str]:
        """Types the source declares, by landed name (hashed columns are text)."""
        if not self.active:
            return declared
        out: dict[str, str] = {}
        for field, kind in declared.items():
            landed = self.name(field)
            if landed is not None:
                out[landed] = "text" if field in self._hashed else kind
        return out


class _ShapedPart(Part):
    """A part whose batches pass through a shaper; identity and hooks stay the original's."""

    def __init__(self, part: Part, shaper: ColumnShaper) -> None:
        self._part = part
        self._shaper = shaper
        self.name = part.name
        self.isolated = part.isolated
        self.identity = part.identity

    def batches(self) -> Iterator[Batch]:
        for batch in self._part.batches():
            yield self._shaper.batch(batch)

    def before_commit(self, connection: Any) -> None:
        self._part.before_commit(connection)

    def after_commit(self) -> None:
        self._part.after_commit()

    def rejected(self, error: SourceDataError) -> None:
        self._part.rejected(error)


def shape_read(read: StreamRead, shaper: ColumnShaper) -> StreamRead:
    """`read` with the stream's column control applied (unchanged when there is none)."""
    if not shaper.active:
        return read
    # `replace` keeps whatever else a connector put on its read.
    return dataclasses.replace(
        read,
        parts=(_ShapedPart(part, shaper) for part in read.parts),
        column_types=shaper.column_types(dict(read.column_types)),
        not_null=frozenset(
            name for field in read.not_null if (name := shaper.name(field)) is not None
        ),
        column_comments={
            name: text
            for field, text in read.column_comments.items()
            if (name := shaper.name(field)) is not None
        },
    )
