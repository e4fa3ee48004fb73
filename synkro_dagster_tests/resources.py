"""The resources a sync run takes, on a test database: the data layer and the integrations
registry reached through it (as `synkro_dagster/resources.py` wires them), plus connectors."""

from __future__ import annotations

from typing import Any

from synkro_dagster.datalayer.resource import DataLayer
from synkro_dagster.integrations.resource import IntegrationsResource


def run_resources(datalayer: DataLayer | str, **connectors: Any) -> dict[str, Any]:
    """`datalayer` (or a DataLayer on that database URL), the registry through it, `connectors`."""
    layer = DataLayer(database_url=datalayer) if isinstance(datalayer, str) else datalayer
    return {
        "datalayer": layer,
        "integrations": IntegrationsResource(database_url=layer.database_url),
        **connectors,
    }
