"""The code location's resources, configured in one place: the data layer, the integrations
registry and every engine's connector.

`definitions.py` binds them; the CLI builds the registry from the same configuration
(`build_registry`), so sensors, runs and commands reach the database by one route. Settings that
hold secrets (the database URL, INTEGRATION_SECRET_KEY) are wired as `EnvVar`s: Dagster reads them
from the environment where the resource is used, and they never appear in run config or the UI.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from synkro_dagster.database import DATABASE_URL_ENV
from synkro_dagster.datalayer.resource import DATALAYER_RESOURCE, DataLayer
from synkro_dagster.integrations.registry import IntegrationRegistry
from synkro_dagster.integrations.resource import INTEGRATIONS_RESOURCE, IntegrationsResource
from synkro_dagster.integrations.secrets import SECRET_KEY_ENV
from synkro_dagster.specs.engines import connector_resources


def _from_env(name: str) -> str | None:
    # An unset variable stays None, so the embedded local default (database, generated key)
    # applies; a set one is wired as an EnvVar, so its value is read where it is used.
    return dg.EnvVar(name) if os.environ.get(name) else None


def _database_resources() -> dict[str, Any]:
    # The one route to the data layer database: one setting for both resources, which share
    # its pooled engine.
    database_url = _from_env(DATABASE_URL_ENV)
    return {
        DATALAYER_RESOURCE: DataLayer(database_url=database_url),
        INTEGRATIONS_RESOURCE: IntegrationsResource(
            database_url=database_url, secret_key=_from_env(SECRET_KEY_ENV)
        ),
    }


def location_resources() -> dict[str, Any]:
    """Every resource of the code location, keyed by resource key."""
    # Every engine's connector (specs/engines.py) is bound under `<engine>_connector`.
    return {**_database_resources(), **connector_resources()}


def build_registry() -> IntegrationRegistry:
    """The registry the code location's `integrations` resource gives, for commands run outside
    Dagster (the CLI): the same configuration, its EnvVars read now."""
    resource = _database_resources()[INTEGRATIONS_RESOURCE]
    with dg.build_resources({INTEGRATIONS_RESOURCE: resource}) as built:
        integrations: IntegrationsResource = getattr(built, INTEGRATIONS_RESOURCE)
    return integrations.get_registry()
