"""The integrations registry (synkro.integrations) and the encryption of integration secrets."""

from synkro_dagster.integrations.registry import (
    IntegrationError,
    IntegrationNotFound,
    IntegrationRegistry,
    RegistryEntry,
    RegistryNotMigrated,
)
from synkro_dagster.integrations.secrets import SecretBox, SecretDecryptError, SecretKeyError

__all__ = [
    "IntegrationError",
    "IntegrationNotFound",
    "IntegrationRegistry",
    "RegistryEntry",
    "RegistryNotMigrated",
    "SecretBox",
    "SecretDecryptError",
    "SecretKeyError",
]
