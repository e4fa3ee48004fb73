"""What every connector offers: a session per (run, integration) that reads streams."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from synkro_dagster.contracts import Integration, StreamRead
from synkro_dagster.specs.models import SourceSpec, StreamSpec


class ConnectorSession(Protocol):
    """Open for one run of one integration: pooled clients, auth tokens and rate budget live here."""

    def read(self, stream: StreamSpec, cursor: str | None) -> StreamRead:
        """Read `stream` from `cursor` (None: from the start) as parts of bounded batches.

        Nothing is fetched until the returned parts are iterated."""
        ...


class Connector(Protocol):
    def session(
        self, source: SourceSpec, integration: Integration
    ) -> AbstractContextManager[ConnectorSession]: ...
