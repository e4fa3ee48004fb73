"""Reads one stream of a spec for the data layer: plain streams, child streams, column control.

A child stream (`parent: orders`) is read through its parent: the parent is read from the child's
own stored cursor (so only parents changed since the child's last sync are visited), and for each
parent record either its nested list (`unnest: lines`) becomes the child's records, or (http) the
child endpoint `/orders/{id}/lines` is read with the placeholders filled from the parent record.
Each child row carries the parent's key and cursor columns; the parent's cursor column is the
child's cursor, so the data layer advances it exactly as for any stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

from synkro_dagster.connectors.columns import ColumnShaper, shape_read
from synkro_dagster.contracts import (
    Batch,
    BatchesPart,
    Integration,
    ReadStats,
    Record,
    SourceDataError,
    StreamRead,
)
from synkro_dagster.specs.models import SourceSpec, StreamSpec

NESTED_INDEX = "_nested_index"
PARTITION_COLUMN = "partition_date"  # a report stream's period (its first day), in every row  # position of an unnested record in its parent's list


def read_stream(
    session: Any,
    source: SourceSpec,
    stream: StreamSpec,
    integration: Integration,
    cursor: str | None,
    partition: str | None = None,
) -> StreamRead:
    """The stream's records as the data layer lands them (landed names, hashed values).

    A partitioned stream needs `partition`, the first day of its period (ISO date)."""
    if stream.partitioned_by is not None:
        return _read_period(session, source, stream, integration, partition)
    if stream.parent is None:
        shaper = ColumnShaper(source, stream, integration)
        # An engine that can apply column control in its own query (sql) keeps its typed paths.
        read_shaped = getattr(session, "read_shaped", None)
        if shaper.active and read_shaped is not None:
            shaped = read_shaped(stream, cursor, shaper)
            if shaped is not None:
                return shaped
        return shape_read(session.read(stream, cursor), shaper)
    return _read_child(session, source, stream, integration, cursor)


def _dig(record: Any, path: str) -> Any:
    value = record
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _read_child(
    session: Any,
    source: SourceSpec,
    stream: StreamSpec,
    integration: Integration,
    cursor: str | None,
) -> StreamRead:
    parent = source.stream(stream.parent or "")
    parent_shaper = ColumnShaper(source, parent, integration)
    child_shaper = ColumnShaper(source, stream, integration)
    key_columns = source.parent_key_columns(stream)
    parent_read: StreamRead = session.read(parent, cursor)
    stats = ReadStats()

    def parent_batches() -> Iterator[Batch]:
        for part in parent_read.parts:
            yield from part.batches()

    def keys_of(raw: Record) -> dict[str, Any]:
        values = {}
        for field, column in key_columns.items():
            if field not in raw:
                raise SourceDataError(
                    f"integration '{integration.id}', stream '{stream.name}': a record of the "
                    f"parent stream '{parent.name}' has no field '{field}' to land as "
                    f"'{column}'"
                )
            values[column] = parent_shaper.value(field, raw[field])
        return values

    def unnested(raw: Record) -> list[Record]:
        found = _dig(raw, stream.unnest or "")
        if found is None:
            return []
        if not isinstance(found, list):
            raise SourceDataError(
                f"integration '{integration.id}', stream '{stream.name}': field "
                f"'{stream.unnest}' of a '{parent.name}' record is a {type(found).__name__}, "
                "not a list"
            )
        rows = []
        for index, item in enumerate(found):
            row = dict(item) if isinstance(item, dict) else {"value": item}
            row[NESTED_INDEX] = index
            rows.append(row)
        return rows

    def batches() -> Iterator[Batch]:
        if stream.unnest is not None:
            pairs: Iterator[tuple[Record, list[Record]]] = (
                (raw, unnested(raw)) for batch in parent_batches() for raw in batch
            )
        else:
            pairs = session.read_children(stream, parent_batches(), stats)
        out: Batch = []
        for raw, children in pairs:
            keys = keys_of(raw)
            for child in children:
                row = child_shaper.record(child)
                row.update(keys)
                out.append(row)
            if len(out) >= 1000:
                stats.records += len(out)
                yield out
                out = []
        if out:
            stats.records += len(out)
            yield out
        # The parent's pages (and bytes) are part of what reading the child cost.
        stats.pages += parent_read.stats.pages
        stats.bytes += parent_read.stats.bytes

    # A read of its own: nothing the parent's read says about completeness or totals holds here.
    return StreamRead(parts=iter([BatchesPart(batches(), name=stream.name)]), stats=stats)


def period_end(start: date, partitioned_by: str) -> date:
    """The day after the last day of the period starting at `start`."""
    if partitioned_by == "daily":
        return start + timedelta(days=1)
    if partitioned_by == "weekly":
        return start + timedelta(days=7)
    return (start.replace(day=1) + timedelta(days=32)).replace(day=1)


def _read_period(
    session: Any,
    source: SourceSpec,
    stream: StreamSpec,
    integration: Integration,
    partition: str | None,
) -> StreamRead:
    if partition is None:
        raise SourceDataError(
            f"stream '{stream.name}' is partitioned by {stream.partitioned_by}: a run reads one "
            "period; materialize one partition (date x integration)"
        )
    start = date.fromisoformat(partition)
    values = {
        "partition_date": start.isoformat(),
        "partition_end": period_end(start, stream.partitioned_by or "daily").isoformat(),
    }
    read = shape_read(
        session.read(stream, None, values=values), ColumnShaper(source, stream, integration)
    )

    def tagged(part: Any) -> Iterator[Batch]:
        for batch in part.batches():
            for record in batch:
                record[PARTITION_COLUMN] = values["partition_date"]
            yield batch

    parts = [BatchesPart(tagged(part), name=part.name) for part in read.parts]
    return StreamRead(parts=iter(parts), stats=read.stats, column_types=read.column_types)
