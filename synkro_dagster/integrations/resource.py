"""The integrations registry as a Dagster resource: the one route sensors, runs and the CLI take
to synkro.integrations.

It is configured beside the data layer resource (`synkro_dagster/resources.py`), from the same
setting: the data layer database (SYNKRO_DATABASE_URL, else the embedded PostgreSQL), reached
through the same pooled engine (`database.get_engine`). INTEGRATION_SECRET_KEY, which decrypts the
secrets, is wired there as an `EnvVar`, so the key never lands in run config, tags or the UI.
"""

from __future__ import annotations

import dagster as dg

from synkro_dagster.database import get_engine
from synkro_dagster.integrations.registry import IntegrationRegistry

# The resource key; a sensor receives the resource through a parameter of this name.
INTEGRATIONS_RESOURCE = "integrations"


class IntegrationsResource(dg.ConfigurableResource):
    """synkro.integrations in the data layer database. Nothing connects until a registry method
    runs (Definitions load stays database-free)."""

    database_url: str | None = None  # None: SYNKRO_DATABASE_URL, else the embedded server
    secret_key: str | None = None  # None: INTEGRATION_SECRET_KEY read when a secret is first needed

    def get_registry(self) -> IntegrationRegistry:
        """The registry: entries without decryption; secrets decrypted on first use."""
        return IntegrationRegistry(get_engine(self.database_url), secret_key=self.secret_key)
