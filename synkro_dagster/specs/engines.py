"""The engines a source spec can name (`engine: http | sql | files`), in one map.

Each entry says everything that differs per engine: the models of its spec blocks (the source-level
`<engine>:` block and each stream's), what its streams may do, its connector (the Dagster resource
bound under `<engine>_connector`), and whether its integrations deliver files to an inbox (file-drop
sensors, the rejected-files check and alert). The spec models, the code location's resources, the
asset factory and the automation all read this map; none of them names an engine.

Adding an engine: an entry here, the two option models (`specs/<engine>.py`), the connector
(`connectors/<engine>.py`, a `ConnectorResource`), and the `<engine>` fields on `SourceSpec` and
`StreamSpec` (docs/architecture.md, "Recipes").

The map lives with the spec models, which validate against it; connectors are imported only when
the code location binds them (the connector modules themselves import the spec models).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel

from synkro_dagster.specs.files import FilesSourceOptions, FilesStreamOptions
from synkro_dagster.specs.http import HttpSourceOptions, HttpStreamOptions
from synkro_dagster.specs.sql import SqlSourceOptions, SqlStreamOptions

if TYPE_CHECKING:
    from synkro_dagster.connectors.base import ConnectorResource


@dataclass(frozen=True)
class EngineEntry:
    name: str
    source_options: type[BaseModel]
    """The spec's `<engine>:` block: defaults for every stream; its `check_spec(source)`, if it
    has one, checks what only this engine understands."""
    stream_options: type[BaseModel]
    """A stream's `<engine>:` block."""
    connector: Callable[[], type[ConnectorResource]]
    """The connector resource class (imported on call)."""
    options_optional: bool = False
    """A spec may leave out the source-level block: every option takes its default (and the spec
    is checked with those defaults)."""
    child_requests: bool = False
    """A child stream may be read with one request per parent record (else it needs `unnest`)."""
    unnest: bool = True
    """A child stream may take its records from a list field of its parent's (`unnest`)."""
    partitioned_streams: bool = False
    """Streams may be partitioned by period (`partitioned_by`: report streams)."""
    file_drop: bool = False
    """Integrations drop files into an inbox: file-drop sensors start the runs, a sync evaluates
    the rejected-files check, and rejected files raise an alert. A merge stream without a cursor
    is not swept by default either, since one upload may hold only the day's changes."""


def _http_connector() -> type[ConnectorResource]:
    from synkro_dagster.connectors.http import HttpConnector

    return HttpConnector


def _sql_connector() -> type[ConnectorResource]:
    from synkro_dagster.connectors.sql import SqlConnector

    return SqlConnector


def _files_connector() -> type[ConnectorResource]:
    from synkro_dagster.connectors.files import FileDropConnector

    return FileDropConnector


ENGINES: dict[str, EngineEntry] = {
    entry.name: entry
    for entry in (
        EngineEntry(
            name="http",
            source_options=HttpSourceOptions,
            stream_options=HttpStreamOptions,
            connector=_http_connector,
            child_requests=True,
            partitioned_streams=True,
        ),
        EngineEntry(
            name="sql",
            source_options=SqlSourceOptions,
            stream_options=SqlStreamOptions,
            connector=_sql_connector,
        ),
        EngineEntry(
            name="files",
            source_options=FilesSourceOptions,
            stream_options=FilesStreamOptions,
            connector=_files_connector,
            options_optional=True,
            unnest=False,
            file_drop=True,
        ),
    )
}


def engine(name: str) -> EngineEntry:
    """The entry of engine `name`; KeyError naming the known engines."""
    try:
        return ENGINES[name]
    except KeyError:
        raise KeyError(f"unknown engine '{name}' (engines: {', '.join(ENGINES)})") from None


def connector_resource_key(engine_name: str) -> str:
    """The resource key the engine's connector is bound under (`http_connector`, ...)."""
    return f"{engine_name}_connector"


def connector_resources() -> dict[str, ConnectorResource]:
    """Every engine's connector with its default settings, keyed by its resource key."""
    return {connector_resource_key(name): entry.connector()() for name, entry in ENGINES.items()}
