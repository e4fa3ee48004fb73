"""What every connector offers: a session per (run, integration) that reads streams.

Each engine's connector (`specs/engines.py` names them) is a `ConnectorResource`: it implements
`open_session`, and mypy checks that what it opens is a `ConnectorSession`.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

import dagster as dg

from synkro_dagster.contracts import Integration, StreamRead
from synkro_dagster.specs.models import SourceSpec, StreamSpec


class ConnectorSession(Protocol):
    """Open for one run of one integration: pooled clients, auth tokens and rate budget live here."""

    integration: Integration
    """The integration read, its config resolved against the spec."""

    def read(self, stream: StreamSpec, cursor: str | None) -> StreamRead:
        """Read `stream` from `cursor` (None: from the start) as parts of bounded batches.

        Nothing is fetched until the returned parts are iterated."""
        ...


class ConnectorResource(dg.ConfigurableResource):
    """An engine's connector: a Dagster resource whose sessions read one integration's streams."""

    @contextmanager
    def session(self, source: SourceSpec, integration: Integration) -> Iterator[ConnectorSession]:
        """A session for one run of `integration`, closed on exit.

        The engine sees the integration's config as the registry checked it: the spec's `config`
        defaults, overridden by what the integration gives (`SourceSpec.resolve_config`)."""
        resolved = dataclasses.replace(
            integration, config=source.resolve_config(integration.config)
        )
        with self.open_session(source, resolved) as session:
            yield session

    @abstractmethod
    def open_session(
        self, source: SourceSpec, integration: Integration
    ) -> AbstractContextManager[ConnectorSession]:
        """The engine's session for `integration`, whose config is already resolved."""
