"""The integrations registry: rows of synkro.integrations, validated, with secrets encrypted."""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from croniter import croniter
from sqlalchemy.dialects.postgresql import JSONB

from synkro_dagster.contracts import Integration
from synkro_dagster.errors import UserError
from synkro_dagster.integrations.secrets import SecretBox

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# Aliases that both croniter and Dagster's schedules understand.
_CRON_ALIASES = {"@hourly", "@daily", "@weekly", "@monthly"}
# undefined_table, invalid_schema_name: the migrations have not been applied to this database.
_SCHEMA_MISSING_SQLSTATES = {"42P01", "3F000"}

_metadata = sa.MetaData(schema="synkro")
integrations_table = sa.Table(
    "integrations",
    _metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("tenant", sa.Text, nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("config", JSONB, nullable=False),
    sa.Column("secrets", sa.Text),
    sa.Column("schedule", sa.Text),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)
_sync_state = sa.Table("sync_state", _metadata, sa.Column("integration_id", sa.Text))
_processed_files = sa.Table("processed_files", _metadata, sa.Column("integration_id", sa.Text))


class IntegrationNotFound(UserError, LookupError):
    """No integration with that id."""


class IntegrationError(UserError, ValueError):
    """An integration is invalid or conflicts with another; the message names it and the field."""


class RegistryNotMigrated(UserError, RuntimeError):
    """The database has no synkro.integrations table yet."""


@dataclass(frozen=True)
class RegistryEntry:
    """What sensors and schedules need of an integration: no config, no secrets."""

    id: str
    tenant: str
    spec: str
    schedule: str | None
    enabled: bool
    updated_at: datetime


def validate_id(integration_id: str) -> None:
    if not isinstance(integration_id, str) or not ID_PATTERN.match(integration_id):
        raise IntegrationError(
            f"integration id {integration_id!r} is not a slug: use lowercase letters, digits, "
            "'-' and '_', starting with a letter or digit, at most 63 characters"
        )


def validate_schedule(integration_id: str, schedule: str | None) -> None:
    """A five-field cron expression (UTC) or @hourly/@daily/@weekly/@monthly; None = no schedule."""
    if schedule is None:
        return
    text = schedule.strip()
    valid = text in _CRON_ALIASES or (len(text.split()) == 5 and croniter.is_valid(text))
    if not valid:
        raise IntegrationError(
            f"integration '{integration_id}': schedule {schedule!r} is not a valid cron expression "
            "(five fields, e.g. '*/15 * * * *', or @hourly/@daily/@weekly/@monthly)"
        )


def validate_against_spec(
    integration_id: str,
    spec: str,
    config: Mapping[str, Any],
    secrets: Mapping[str, str] | None,
    *,
    given_config: Iterable[str] | None = None,
    given_secrets: Iterable[str] | None = None,
) -> None:
    """The spec exists, the integration gives its required config and declared secrets, and
    every name given (`given_config`/`given_secrets`; default: all of `config`/`secrets`) is one
    the spec declares.

    While the specs folder holds no spec at all, any spec name is accepted (nothing to check).
    `secrets=None` skips the secrets check (stored secrets that are not being changed).
    """
    from synkro_dagster.specs import load_specs

    specs = load_specs()
    if not specs:
        return
    source = specs.get(spec)
    if source is None:
        known = ", ".join(sorted(specs))
        raise IntegrationError(
            f"integration '{integration_id}': unknown spec '{spec}' (known specs: {known})"
        )
    # A typo in an optional name would otherwise be stored and silently never used.
    _check_declared(
        integration_id,
        spec,
        "config",
        config if given_config is None else given_config,
        source.config,
    )
    if secrets is not None or given_secrets is not None:
        _check_declared(
            integration_id,
            spec,
            "secret",
            (secrets or {}) if given_secrets is None else given_secrets,
            source.secrets,
        )
    # The same resolution the engines apply: a spec default satisfies a required name.
    missing = source.missing_config(config)
    if missing:
        raise IntegrationError(
            f"integration '{integration_id}': spec '{spec}' requires config '{missing[0]}' "
            f"(--config {missing[0]}=...)"
        )
    if secrets is None:
        return
    for name, secret in source.secrets.items():
        if secret.required and _blank(secrets.get(name)):
            raise IntegrationError(
                f"integration '{integration_id}': spec '{spec}' requires secret '{name}' "
                f"(--secret {name}=...)"
            )


def _check_declared(
    integration_id: str, spec: str, kind: str, given: Iterable[str], declared: Mapping[str, Any]
) -> None:
    unknown = sorted(str(name) for name in given if name not in declared)
    if unknown:
        names = ", ".join(repr(n) for n in unknown)
        allowed = ", ".join(sorted(declared)) or "none"
        raise IntegrationError(
            f"integration '{integration_id}': spec '{spec}' declares no {kind} {names} "
            f"(declared {kind} names: {allowed})"
        )


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


class IntegrationRegistry:
    """Reads and writes synkro.integrations in the data layer database."""

    def __init__(
        self,
        engine: sa.Engine,
        secret_box: SecretBox | None = None,
        *,
        secret_key: str | None = None,
    ) -> None:
        """The registry in `engine`'s database. Secrets are decrypted with `secret_box`, else with
        a box made on first use from `secret_key` (INTEGRATION_SECRET_KEY's value) or, without
        one, from the environment (`SecretBox.from_setting`)."""
        self.engine = engine
        self._secret_box = secret_box
        self._secret_key = secret_key

    @property
    def secret_box(self) -> SecretBox:
        # Created on first use so that readers of entries() never need INTEGRATION_SECRET_KEY.
        if self._secret_box is None:
            self._secret_box = (
                SecretBox.from_setting(self._secret_key)
                if self._secret_key
                else SecretBox.from_env()
            )
        return self._secret_box

    def __repr__(self) -> str:
        from synkro_dagster.database import safe_url

        return f"IntegrationRegistry({safe_url(self.engine.url)})"

    # -- reading -----------------------------------------------------------------------------

    def entries(self, spec: str | None = None) -> list[RegistryEntry]:
        """Every integration (of `spec`, if given), ordered by id: one query, no decryption."""
        t = integrations_table
        query = sa.select(t.c.id, t.c.tenant, t.c.spec, t.c.schedule, t.c.enabled, t.c.updated_at)
        if spec is not None:
            query = query.where(t.c.spec == spec)
        with self._connect() as conn:
            rows = conn.execute(query.order_by(t.c.id)).tuples().all()
        return [RegistryEntry(*row) for row in rows]

    def entry(self, id: str) -> RegistryEntry:
        """One integration's registry entry (no decryption); IntegrationNotFound."""
        t = integrations_table
        query = sa.select(
            t.c.id, t.c.tenant, t.c.spec, t.c.schedule, t.c.enabled, t.c.updated_at
        ).where(t.c.id == id)
        with self._connect() as conn:
            row = conn.execute(query).tuples().one_or_none()
        if row is None:
            raise _not_found(id)
        return RegistryEntry(*row)

    def get(self, id: str) -> Integration:
        """The integration with its secrets decrypted; IntegrationNotFound if there is none."""
        with self._connect() as conn:
            row = conn.execute(
                sa.select(integrations_table).where(integrations_table.c.id == id)
            ).one_or_none()
        if row is None:
            raise _not_found(id)
        return self._integration(row)

    # -- writing -----------------------------------------------------------------------------

    def add(
        self,
        id: str,
        *,
        spec: str,
        tenant: str,
        config: Mapping[str, Any] | None = None,
        secrets: Mapping[str, str] | None = None,
        schedule: str | None = None,
        enabled: bool = True,
    ) -> Integration:
        """Validate and store a new integration; IntegrationError if invalid or the id is taken."""
        config = dict(config or {})
        secrets = {str(k): str(v) for k, v in (secrets or {}).items()}
        schedule = schedule.strip() if schedule and schedule.strip() else None
        validate_id(id)
        _validate_tenant(id, tenant)
        validate_schedule(id, schedule)
        validate_against_spec(id, spec, config, secrets)
        token = self.secret_box.encrypt(secrets) if secrets else None
        try:
            with self._connect() as conn, conn.begin():
                conn.execute(
                    sa.insert(integrations_table).values(
                        id=id,
                        tenant=tenant,
                        spec=spec,
                        config=config,
                        secrets=token,
                        schedule=schedule,
                        enabled=enabled,
                    )
                )
        except sa.exc.IntegrityError as exc:
            if getattr(exc.orig, "sqlstate", None) == "23505":
                raise IntegrationError(
                    f"integration '{id}' already exists (use `synkro integrations show {id}`)"
                ) from None
            raise IntegrationError(f"integration '{id}': {_first_line(exc)}") from None
        return Integration(
            id=id,
            tenant=tenant,
            spec=spec,
            config=config,
            secrets=secrets,
            schedule=schedule,
            enabled=enabled,
        )

    def update(
        self,
        id: str,
        *,
        config: Mapping[str, Any] | None = None,
        secrets: Mapping[str, str] | None = None,
        schedule: str | None = None,
        tenant: str | None = None,
    ) -> Integration:
        """Merge the given config and secrets into the integration's (a None value removes a key).

        `schedule=""` removes the schedule; None leaves any argument unchanged. The result is
        validated against the spec like `add`.
        """
        t = integrations_table
        with self._connect() as conn, conn.begin():
            row = conn.execute(sa.select(t).where(t.c.id == id).with_for_update()).one_or_none()
            if row is None:
                raise _not_found(id)
            current = self._integration(row) if secrets else None
            new_config = _merge(row.config or {}, config)
            new_secrets = _merge(current.secrets, secrets) if current is not None else None
            new_schedule = row.schedule
            if schedule is not None:
                new_schedule = schedule.strip() or None
            new_tenant = row.tenant if tenant is None else tenant
            _validate_tenant(id, new_tenant)
            validate_schedule(id, new_schedule)
            # Unchanged secrets are not decrypted: they were checked when they were stored.
            validate_against_spec(
                id,
                row.spec,
                new_config,
                new_secrets,
                given_config=[k for k, v in (config or {}).items() if v is not None],
                given_secrets=[k for k, v in (secrets or {}).items() if v is not None],
            )
            values: dict[str, Any] = {
                "config": new_config,
                "schedule": new_schedule,
                "tenant": new_tenant,
                "updated_at": sa.func.now(),
            }
            if new_secrets is not None:
                values["secrets"] = self.secret_box.encrypt(new_secrets) if new_secrets else None
            conn.execute(sa.update(t).where(t.c.id == id).values(**values))
        return Integration(
            id=id,
            tenant=new_tenant,
            spec=row.spec,
            config=new_config,
            secrets=new_secrets if new_secrets is not None else {},
            schedule=new_schedule,
            enabled=row.enabled,
        )

    def enable(self, id: str) -> None:
        self._set_enabled(id, True)

    def disable(self, id: str) -> None:
        self._set_enabled(id, False)

    def remove(self, id: str) -> None:
        """Delete the integration with its sync state and processed-file records.

        The rows it landed in the data tables stay: removing a connection is not deleting data.
        """
        t = integrations_table
        with self._connect() as conn, conn.begin():
            deleted = conn.execute(sa.delete(t).where(t.c.id == id)).rowcount
            if not deleted:
                raise _not_found(id)
            conn.execute(sa.delete(_sync_state).where(_sync_state.c.integration_id == id))
            conn.execute(sa.delete(_processed_files).where(_processed_files.c.integration_id == id))

    def rotate_secrets(self) -> int:
        """Re-encrypt every stored secret with the first key, all in one transaction.

        Returns how many integrations were re-encrypted. If one row cannot be decrypted, nothing
        changes and SecretDecryptError names that integration.
        """
        t = integrations_table
        box = self.secret_box
        with self._connect() as conn, conn.begin():
            rows = (
                conn.execute(
                    sa.select(t.c.id, t.c.secrets)
                    .where(t.c.secrets.is_not(None))
                    .order_by(t.c.id)
                    .with_for_update()
                )
                .tuples()
                .all()
            )
            for integration_id, token in rows:
                conn.execute(
                    sa.update(t)
                    .where(t.c.id == integration_id)
                    .values(secrets=box.rotate(token, integration_id), updated_at=sa.func.now())
                )
        return len(rows)

    # -- helpers -----------------------------------------------------------------------------

    def _set_enabled(self, id: str, enabled: bool) -> None:
        t = integrations_table
        with self._connect() as conn, conn.begin():
            changed = conn.execute(
                sa.update(t).where(t.c.id == id).values(enabled=enabled, updated_at=sa.func.now())
            ).rowcount
        if not changed:
            raise _not_found(id)

    def _integration(self, row: sa.Row) -> Integration:
        secrets = self.secret_box.decrypt(row.secrets, row.id) if row.secrets else {}
        return Integration(
            id=row.id,
            tenant=row.tenant,
            spec=row.spec,
            config=dict(row.config or {}),
            secrets=secrets,
            schedule=row.schedule,
            enabled=row.enabled,
        )

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sa.Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except sa.exc.ProgrammingError as exc:
            if getattr(exc.orig, "sqlstate", None) in _SCHEMA_MISSING_SQLSTATES:
                from synkro_dagster.database import safe_url

                raise RegistryNotMigrated(
                    f"the database {safe_url(self.engine.url)} has no synkro.integrations table: "
                    "run `synkro db migrate` first"
                ) from None
            raise


def _validate_tenant(integration_id: str, tenant: str | None) -> None:
    # The tenant id is what row-level security compares with the JWT claim: a stray space or an
    # invisible control character would make a tenant whose rows no client can ever read.
    if not isinstance(tenant, str) or not tenant.strip():
        raise IntegrationError(f"integration '{integration_id}': tenant must not be empty")
    if tenant != tenant.strip():
        raise IntegrationError(
            f"integration '{integration_id}': tenant {tenant!r} has leading or trailing spaces"
        )
    bad = [c for c in tenant if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]
    if bad:
        raise IntegrationError(
            f"integration '{integration_id}': tenant {tenant!r} contains control character(s) "
            f"{', '.join(f'U+{ord(c):04X}' for c in bad)}"
        )


def _merge(current: Mapping[str, Any], changes: Mapping[str, Any] | None) -> dict[str, Any]:
    merged = dict(current)
    for key, value in (changes or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _not_found(integration_id: str) -> IntegrationNotFound:
    return IntegrationNotFound(
        f"integration '{integration_id}' not found (see `synkro integrations list`)"
    )


def _first_line(exc: sa.exc.DBAPIError) -> str:
    # Only the driver's first line: SQLAlchemy's full text repeats the bound parameters.
    text = str(exc.orig) if exc.orig is not None else exc.__class__.__name__
    return text.strip().splitlines()[0] if text.strip() else exc.__class__.__name__
