"""`synkro backfill`: picks a spec's integrations from the registry and backfills them with Dagster.

It is `dagster job backfill -j sync_<spec> --partitions <ids> --noprompt` with the partition list
taken from the registry (by integration id and/or tenant), so the backfill is recorded in the
Dagster instance (the UI's backfills page) and its runs go through the run queue the daemon
drains, exactly as when the Dagster command is typed by hand.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence

import click

from synkro_dagster.tags import ALLOW_MASS_DELETE_TAG, FULL_REFRESH_TAG

DEFAULT_MODULE = "synkro_dagster.definitions"
_LAUNCHED = re.compile(r"Launched backfill job `([^`]+)`")


def select_integrations(
    entries: Sequence, spec: str, integrations: Sequence[str], tenants: Sequence[str]
) -> tuple[list[str], list[str]]:
    """(ids to backfill, notes) — the named integrations plus those of the named tenants.

    With neither given: every enabled integration of the spec. A named integration that is
    unknown, of another spec or disabled is an error; disabled ones picked by tenant are skipped.
    """
    by_id = {e.id: e for e in entries}
    notes: list[str] = []
    chosen: dict[str, object] = {}
    for integration_id in integrations:
        entry = by_id.get(integration_id)
        if entry is None:
            raise click.UsageError(
                f"integration '{integration_id}' is not an integration of spec '{spec}' "
                f"(see `synkro integrations list --spec {spec}`)"
            )
        if not entry.enabled:
            raise click.UsageError(
                f"integration '{integration_id}' is disabled; enable it first "
                f"(`synkro integrations enable {integration_id}`)"
            )
        chosen[entry.id] = entry
    for tenant in tenants:
        of_tenant = [e for e in entries if e.tenant == tenant]
        if not of_tenant:
            raise click.UsageError(f"tenant '{tenant}' has no integration of spec '{spec}'")
        for entry in of_tenant:
            if entry.enabled:
                chosen[entry.id] = entry
            else:
                notes.append(f"skipped '{entry.id}' (tenant {tenant}): disabled")
    if not integrations and not tenants:
        for entry in entries:
            if entry.enabled:
                chosen[entry.id] = entry
            else:
                notes.append(f"skipped '{entry.id}': disabled")
    return sorted(chosen), notes


def dagster_backfill_args(
    job_name: str,
    partitions: Sequence[str],
    tags: dict[str, str],
    module: str | None,
    workspace: str | None,
    location: str | None,
) -> list[str]:
    """The `dagster job backfill` command line for these partitions."""
    args = [sys.executable, "-m", "dagster", "job", "backfill", "-j", job_name]
    args += ["--partitions", ",".join(partitions), "--noprompt"]
    if tags:
        args += ["--tags", json.dumps(tags)]
    args += code_location_args(module, workspace)
    if location:
        args += ["-l", location]
    return args


def code_location_args(module: str | None, workspace: str | None) -> list[str]:
    """Where `dagster job backfill` loads the code location from.

    The runs are launched by the daemon from the code location of the same *name*, so this must
    match how the daemon was started: -w / -m when given; else, like `dagster dev` and
    `dagster-daemon run` typed in the same folder, workspace.yaml or pyproject.toml's
    [tool.dagster] from the current folder; else -m synkro_dagster.definitions.
    """
    if workspace:
        return ["-w", workspace]
    if module:
        return ["-m", module]
    if os.path.exists("workspace.yaml"):
        return ["-w", "workspace.yaml"]
    if os.path.exists("pyproject.toml"):
        with open("pyproject.toml", encoding="utf-8") as fh:
            if "[tool.dagster]" in fh.read():
                return []
    return ["-m", DEFAULT_MODULE]


def _ensure_partitions(spec: str, ids: Sequence[str]) -> list[str]:
    """Add ids the instance does not know yet (what the registry sensor would add next tick)."""
    from dagster import DagsterInstance

    from synkro_dagster.assets.factory import partitions_def_for

    name = partitions_def_for(spec).name
    with DagsterInstance.get() as instance:
        known = set(instance.get_dynamic_partitions(name))
        missing = [i for i in ids if i not in known]
        if missing:
            instance.add_dynamic_partitions(name, missing)
    return missing


@click.command("backfill")
@click.argument("spec")
@click.option(
    "--integration",
    "-i",
    "integrations",
    multiple=True,
    help="Integration id to backfill (repeatable).",
)
@click.option(
    "--tenant",
    "-t",
    "tenants",
    multiple=True,
    help="Backfill every enabled integration of this tenant (repeatable).",
)
@click.option(
    "--full-refresh",
    is_flag=True,
    help=f"Re-read every stream from scratch (run tag {FULL_REFRESH_TAG}=true).",
)
@click.option(
    "--allow-mass-delete",
    is_flag=True,
    help="Let a replace or deletes sweep remove more than the stream's max_delete_fraction"
    f" (run tag {ALLOW_MASS_DELETE_TAG}=true); only when the source really lost those rows.",
)
@click.option(
    "-m",
    "--module-name",
    "module",
    default=None,
    help="Python module of the Definitions, as given to the daemon (see below for the default).",
)
@click.option(
    "-w",
    "--workspace",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="workspace.yaml to load the code location from (e.g. the gRPC server) instead of -m.",
)
@click.option("-l", "--location", default=None, help="Code location name in the workspace.")
@click.option(
    "--dry-run", is_flag=True, help="Print the selection and the command; submit nothing."
)
def backfill(
    spec: str,
    integrations: tuple[str, ...],
    tenants: tuple[str, ...],
    full_refresh: bool,
    allow_mass_delete: bool,
    module: str | None,
    workspace: str | None,
    location: str | None,
    dry_run: bool,
) -> None:
    """Backfill SPEC's integrations through Dagster (recorded on the UI's backfills page).

    With no --integration / --tenant, every enabled integration of SPEC. The runs are queued and
    the Dagster daemon launches them; DAGSTER_HOME must be the instance the daemon uses, and the
    code location the same as the daemon's (-m / -w; default: workspace.yaml or pyproject.toml
    in the current folder, else -m synkro_dagster.definitions).
    """
    from synkro_dagster.assets.factory import job_name_for
    from synkro_dagster.automation.settings import ui_url
    from synkro_dagster.integrations.registry import IntegrationRegistry

    entries = IntegrationRegistry.from_env().entries(spec=spec)
    if not entries:
        raise click.UsageError(
            f"spec '{spec}' has no integrations (see `synkro integrations list`)"
        )
    ids, notes = select_integrations(entries, spec, integrations, tenants)
    for note in notes:
        click.echo(note)
    if not ids:
        raise click.UsageError(
            f"nothing to backfill: no enabled integration of spec '{spec}' selected"
        )
    tags = {FULL_REFRESH_TAG: "true"} if full_refresh else {}
    if allow_mass_delete:
        tags[ALLOW_MASS_DELETE_TAG] = "true"
    args = dagster_backfill_args(job_name_for(spec), ids, tags, module, workspace, location)
    click.echo(f"backfilling {len(ids)} integration(s) of '{spec}': {', '.join(ids)}")
    if dry_run:
        click.echo(" ".join(args[1:]).replace(sys.executable, "python"))
        return
    if not os.environ.get("DAGSTER_HOME"):
        raise click.UsageError(
            "DAGSTER_HOME is not set: point it at the instance the Dagster daemon uses, "
            "so the backfill's runs are queued where the daemon launches them"
        )
    added = _ensure_partitions(spec, ids)
    if added:
        click.echo(f"added partition(s) not yet synced from the registry: {', '.join(added)}")
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        raise click.ClickException(f"dagster job backfill failed:\n{output}")
    match = _LAUNCHED.search(output)
    if not match:
        raise click.ClickException(f"dagster job backfill did not report a backfill:\n{output}")
    backfill_id = match.group(1)
    click.echo(f"backfill {backfill_id} submitted; its runs are queued for the daemon")
    click.echo(f"follow it at {ui_url()}/runs/b/{backfill_id}")
