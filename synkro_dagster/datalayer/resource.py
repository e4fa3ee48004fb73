"""The data layer as a Dagster resource: where the destination database is and how streams land."""

from __future__ import annotations

import dagster as dg
import sqlalchemy as sa

from synkro_dagster.contracts import StreamRead
from synkro_dagster.database import get_engine
from synkro_dagster.datalayer.catalog import TableCatalog, read_table_catalog
from synkro_dagster.datalayer.load import (
    DEFAULT_LOCK_TIMEOUT_S,
    LoadContext,
    LoadStats,
    ReadFrom,
    TableTarget,
    load_stream,
    stored_cursor,
)
from synkro_dagster.datalayer.state import StreamBusy

__all__ = [
    "DataLayer",
    "LoadContext",
    "LoadStats",
    "ReadFrom",
    "StreamBusy",
    "TableCatalog",
    "TableTarget",
]


DATALAYER_RESOURCE = "datalayer"  # the resource key


class DataLayer(dg.ConfigurableResource):
    """The destination PostgreSQL. Nothing connects until a method is called (Definitions load
    stays database-free)."""

    database_url: str | None = None  # None: SYNKRO_DATABASE_URL, else the embedded server
    batch_rows: int = 10_000  # larger source batches are inferred and COPYed in slices this size
    # How long a run waits for another run of the same (integration, stream) before failing.
    stream_lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S

    def get_engine(self) -> sa.Engine:
        """The pooled SQLAlchemy engine (psycopg 3) for the data layer database."""
        return get_engine(self.database_url)

    def sync(self, target: TableTarget, read: ReadFrom, context: LoadContext) -> LoadStats:
        """Sync one stream under its lock: read the cursor, call `read(start)`, land the rows
        and commit the new cursor, all in one transaction."""
        return self.load(target, read, context)

    def load(
        self, target: TableTarget, read: StreamRead | ReadFrom, context: LoadContext
    ) -> LoadStats:
        """Land a stream read in `target`: one transaction for rows, schema changes and cursor,
        under the (integration, stream) lock."""
        return load_stream(
            self.get_engine(),
            target,
            read,
            context,
            batch_rows=self.batch_rows,
            lock_timeout_s=self.stream_lock_timeout_s,
        )

    def get_cursor(self, integration_id: str, stream: str) -> str | None:
        """The stream's committed cursor (None before the first sync)."""
        return stored_cursor(self.get_engine(), integration_id, stream)

    def table_catalog(self, target: TableTarget, integration_id: str) -> TableCatalog:
        """The landed table's columns and the integration's row count, for the asset catalog."""
        return read_table_catalog(self.get_engine(), target, integration_id)
