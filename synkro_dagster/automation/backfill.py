"""`synkro backfill`: picks a spec's integrations from the registry and backfills them with Dagster.

It is `dagster job backfill -j sync_<spec> --partitions <ids> --noprompt` with the partition list
taken from the registry (by integration id and/or tenant), so the backfill is recorded in the
Dagster instance (the UI's Runs → Backfills page) and its runs go through the run queue the daemon
drains, exactly as when the Dagster command is typed by hand. It is submitted from this process
(see submit_backfill): Dagster's command would start a code server process for the location first.

Dagster marks a job backfill complete once its runs are *submitted*, whatever they then do; so
`--wait` follows the runs themselves and reports the backfill failed when any run failed.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import click

from synkro_dagster.tags import ALLOW_MASS_DELETE_TAG, FULL_REFRESH_TAG

# `-m synkro` names the code location `synkro`, like workspace.yaml and pyproject.toml do.
DEFAULT_MODULE = "synkro"
BACKFILL_TAG = "dagster/backfill"
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")
ROW_METRICS = ("rows_read", "rows_inserted", "rows_updated", "rows_deleted")


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
    """The `dagster job backfill` command line for these partitions (run with this Python)."""
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

    The daemon launches queued runs from the code location of the same *name*, `synkro`: -w / -m
    when given; else nothing when the current folder names it (workspace.yaml or pyproject.toml's
    [tool.dagster], as at the repository root) or DAGSTER_MODULE_NAME is set; else `-m synkro`.
    """
    if workspace:
        return ["-w", workspace]
    if module:
        return ["-m", module]
    if os.environ.get("DAGSTER_MODULE_NAME") or os.path.exists("workspace.yaml"):
        return []
    if os.path.exists("pyproject.toml"):
        with open("pyproject.toml", encoding="utf-8") as fh:
            if "[tool.dagster]" in fh.read():
                return []
    return ["-m", DEFAULT_MODULE]


def submit_backfill(args: Sequence[str]) -> str:
    """Submit the backfill that `args` (a dagster_backfill_args command) describes; its id.

    The same steps as `dagster job backfill` (a backfill recorded in the instance, one queued run
    per partition, the backfill marked submitted), taken in this process with the code location
    loaded in process where Dagster allows it (one location, this Python), as `dagster
    definitions validate` loads it. Dagster's command always starts a code server process for
    the location and waits for it: 3 to 10 s of the fixed cost of a backfill (docs/performance.md).
    A workspace of gRPC servers (-w, production) is still reached through them.
    """
    from dagster import DagsterInstance, __version__
    from dagster._cli.job import job_backfill_command
    from dagster._cli.workspace.cli_target import (
        RepositoryOpts,
        WorkspaceOpts,
        get_code_location_from_workspace,
        get_remote_job_from_remote_repo,
        get_remote_repository_from_code_location,
        workspace_opts_to_load_target,
    )
    from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
    from dagster._core.execution.job_backfill import submit_backfill_runs
    from dagster._core.utils import make_new_backfill_id
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._time import get_current_timestamp

    # Dagster's own option parsing of the command (and of DAGSTER_MODULE_NAME & co.), not run.
    with job_backfill_command.make_context("backfill", list(args[5:])) as ctx:
        params = dict(ctx.params)
    if params.get("workspace"):
        # An explicit workspace must not clash with the location DAGSTER_MODULE_NAME names.
        params["module_name"] = None
    target = workspace_opts_to_load_target(
        WorkspaceOpts.extract_from_cli_options(params), allow_in_process=True
    )
    where = RepositoryOpts.extract_from_cli_options(params)
    partitions = [p for p in params["partitions"].split(",") if p]
    with (
        DagsterInstance.get() as instance,
        WorkspaceProcessContext(
            instance, version=__version__, read_only=False, workspace_load_target=target
        ) as process,
    ):
        workspace = process.create_request_context()
        location = get_code_location_from_workspace(workspace, where.location)
        repository = get_remote_repository_from_code_location(location, where.repository)
        job = get_remote_job_from_remote_repo(repository, params["job_name"])
        partition_set = next(
            (ps for ps in repository.get_partition_sets() if ps.job_name == job.name), None
        )
        if partition_set is None:
            raise click.UsageError(f"job {job.name} is not partitioned")
        backfill = PartitionBackfill(
            backfill_id=make_new_backfill_id(),
            partition_set_origin=partition_set.get_remote_origin(),
            status=BulkActionStatus.REQUESTED,
            partition_names=partitions,
            from_failure=False,
            reexecution_steps=None,
            tags=json.loads(params["tags"]) if params["tags"] else {},
            backfill_timestamp=get_current_timestamp(),
        )
        try:
            for _ in submit_backfill_runs(instance, lambda: workspace, backfill, partitions):
                pass
        except Exception as exc:
            instance.add_backfill(
                backfill.with_status(BulkActionStatus.FAILED).with_end_timestamp(
                    get_current_timestamp()
                )
            )
            raise click.ClickException(f"backfill of {job.name} failed: {exc}") from exc
        instance.add_backfill(
            backfill.with_status(BulkActionStatus.COMPLETED).with_end_timestamp(
                get_current_timestamp()
            )
        )
    return backfill.backfill_id


def shell_command(args: Sequence[str]) -> str:
    """The command as one would type it: `dagster …`, every argument shell-quoted."""
    return shlex.join(["dagster", *args[3:]])


@dataclass
class PartitionRun:
    """Where one partition of a backfill stands: its latest run, status and landed rows."""

    partition: str
    run_id: str | None = None
    status: str = "NOT LAUNCHED"
    rows: dict[str, int] | None = None


def backfill_runs(instance: Any, backfill_id: str, partitions: Sequence[str]) -> list[PartitionRun]:
    """The latest run of each partition of the backfill (a partition may not have one yet)."""
    import dagster as dg

    latest: dict[str, Any] = {}
    for run in instance.get_runs(filters=dg.RunsFilter(tags={BACKFILL_TAG: backfill_id})):
        partition = run.tags.get("dagster/partition")
        # get_runs returns newest first: keep the newest run (a retry) of each partition.
        if partition and partition not in latest:
            latest[partition] = run
    rows = []
    for partition in partitions:
        run = latest.get(partition)
        if run is None:
            rows.append(PartitionRun(partition))
        else:
            rows.append(PartitionRun(partition, run.run_id, run.status.value))
    return rows


def rows_of_run(instance: Any, run_id: str) -> dict[str, int]:
    """Rows read / inserted / updated / deleted, summed over the run's materializations."""
    import dagster as dg

    totals = dict.fromkeys(ROW_METRICS, 0)
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        materialization = record.dagster_event.event_specific_data.materialization
        for name in ROW_METRICS:
            value = materialization.metadata.get(name)
            raw = getattr(value, "value", value)
            if isinstance(raw, int | float):
                totals[name] += int(raw)
    return totals


def wait_for_backfill(
    instance: Any,
    backfill_id: str,
    partitions: Sequence[str],
    *,
    timeout: float,
    poll: float = 0.5,
    echo: Callable[[str], None] = click.echo,
) -> list[PartitionRun]:
    """Follow the backfill's runs until each partition's run finished; print every change."""
    from dagster._core.execution.backfill import BulkActionStatus

    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    while True:
        rows = backfill_runs(instance, backfill_id, partitions)
        for row in rows:
            if seen.get(row.partition) != row.status:
                previous = seen.get(row.partition)
                change = f"{previous} → {row.status}" if previous else row.status
                echo(
                    f"  {row.partition:<24} {change}"
                    + (f"  (run {row.run_id})" if row.run_id else "")
                )
                seen[row.partition] = row.status
        if all(row.status in FINISHED for row in rows):
            break
        backfill = instance.get_backfill(backfill_id)
        if backfill is not None and backfill.status in (
            BulkActionStatus.FAILED,
            BulkActionStatus.CANCELED,
        ):
            echo(f"backfill {backfill_id} is {backfill.status.value}: no more runs will start")
            break
        if time.monotonic() >= deadline:
            raise click.ClickException(
                f"backfill {backfill_id}: still running after {timeout:g}s "
                f"({', '.join(f'{r.partition} {r.status}' for r in rows)}); "
                "is the Dagster daemon running (`dagster-daemon run` or `dagster dev`)?"
            )
        time.sleep(poll)
    for row in rows:
        if row.run_id:
            row.rows = rows_of_run(instance, row.run_id)
    return rows


def summary_table(rows: Sequence[PartitionRun]) -> list[str]:
    """The final table: one line per partition with its run, status and rows."""
    header = ("INTEGRATION", "STATUS", "RUN", "READ", "INSERTED", "UPDATED", "DELETED")
    lines: list[tuple[str, ...]] = [header]
    for row in rows:
        counts = row.rows or {}
        lines.append(
            (
                row.partition,
                row.status,
                row.run_id or "-",
                *(str(counts.get(m, "-")) if row.rows is not None else "-" for m in ROW_METRICS),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    ]


def _ensure_partitions(spec: str, ids: Sequence[str]) -> list[str]:
    """Add ids the instance does not know yet (what the registry sensor would add next tick)."""
    from dagster import DagsterInstance

    from synkro_dagster.assets.factory import partitions_name_for

    name = partitions_name_for(spec)
    with DagsterInstance.get() as instance:
        known = set(instance.get_dynamic_partitions(name))
        missing = [i for i in ids if i not in known]
        if missing:
            instance.add_dynamic_partitions(name, missing)
    return missing


# A day on the command line: YYYY-MM-DD.
DAY = click.DateTime(formats=["%Y-%m-%d"])


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
@click.option(
    "--from",
    "date_from",
    type=DAY,
    help="Report streams: first day to load (YYYY-MM-DD); with --to.",
)
@click.option(
    "--to", "date_to", type=DAY, help="Report streams: last day to load (YYYY-MM-DD), inclusive."
)
@click.option(
    "--stream",
    "streams",
    multiple=True,
    help="Report streams: only this partitioned stream (repeatable; default all of SPEC's).",
)
@click.option("-l", "--location", default=None, help="Code location name in the workspace.")
@click.option(
    "--dry-run", is_flag=True, help="Print the selection and the command; submit nothing."
)
@click.option(
    "--wait",
    is_flag=True,
    help="Follow the runs until each integration's run finished; print a table of their status "
    "and rows; exit 1 if any failed.",
)
@click.option(
    "--timeout",
    type=float,
    default=3600.0,
    show_default=True,
    help="With --wait: seconds to wait before giving up (exit 1).",
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
    wait: bool,
    timeout: float,
    date_from: datetime | None = None,
    date_to: datetime | None = None,
    streams: tuple[str, ...] = (),
) -> None:
    """Backfill SPEC's integrations through Dagster (recorded on the UI's Runs → Backfills page).

    With no --integration / --tenant, every enabled integration of SPEC. The runs are queued and
    the Dagster daemon launches them; DAGSTER_HOME must be the instance the daemon uses (the
    repository root locally). The code location is `synkro`, loaded like the daemon loads it.
    """
    from synkro_dagster.assets.factory import job_name_for
    from synkro_dagster.automation.settings import ui_url
    from synkro_dagster.cli import integrations_registry

    entries = integrations_registry().entries(spec=spec)
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
    if (date_from is None) != (date_to is None):
        raise click.UsageError("give both --from and --to (a range of days)")
    if date_from is not None and date_to is not None:
        commands = report_backfills(
            spec, ids, date_from.date(), date_to.date(), streams, tags, module, workspace, location
        )
    else:
        if streams:
            raise click.UsageError("--stream goes with --from/--to (report streams)")
        args = dagster_backfill_args(job_name_for(spec), ids, tags, module, workspace, location)
        commands = [args]
    click.echo(f"backfilling {len(ids)} integration(s) of '{spec}': {', '.join(ids)}")
    if dry_run:
        for args in commands:
            click.echo(shell_command(args))
        click.echo(f"backfills appear at {ui_url()}/runs/backfills")
        return
    if len(commands) > 1 or date_from is not None:
        _submit_all(spec, ids, commands)
        return
    args = commands[0]
    if not os.environ.get("DAGSTER_HOME"):
        raise click.UsageError(
            "DAGSTER_HOME is not set: point it at the instance the Dagster daemon uses "
            "(locally the repository root: `export DAGSTER_HOME=$PWD`), so the backfill's runs "
            "are queued where the daemon launches them"
        )
    added = _ensure_partitions(spec, ids)
    if added:
        click.echo(f"added partition(s) not yet synced from the registry: {', '.join(added)}")
    backfill_id = submit_backfill(args)
    click.echo(f"backfill {backfill_id} submitted; its runs are queued for the daemon")
    click.echo(f"follow it at {ui_url()}/runs/b/{backfill_id}")
    if not wait:
        return

    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        rows = wait_for_backfill(instance, backfill_id, ids, timeout=timeout)
    click.echo("")
    for line in summary_table(rows):
        click.echo(line)
    failed = [r for r in rows if r.status != "SUCCESS"]
    if failed:
        raise click.ClickException(
            f"backfill {backfill_id}: {len(failed)} of {len(rows)} run(s) did not succeed "
            f"({', '.join(f'{r.partition} {r.status}' for r in failed)}); "
            f"see {ui_url()}/runs/b/{backfill_id}"
        )
    click.echo(f"backfill {backfill_id}: all {len(rows)} run(s) succeeded")


def report_backfills(
    spec_name: str,
    ids: Sequence[str],
    first: date,
    last: date,
    streams: Sequence[str],
    tags: dict[str, str],
    module: str | None,
    workspace: str | None,
    location: str | None,
) -> list[list[str]]:
    """One `dagster job backfill` per report stream, over its periods in [first, last] x ids."""
    from synkro_dagster.assets.factory import (
        DATE_DIMENSION,
        report_job_name_for,
        report_partition_key,
        report_partitions_def_for,
    )
    from synkro_dagster.specs import load_specs

    if last < first:
        raise click.UsageError(f"--to {last} is before --from {first}")
    source = load_specs().get(spec_name)
    if source is None:
        raise click.UsageError(f"no spec '{spec_name}'")
    reports = source.partitioned_streams
    unknown = sorted(set(streams) - {s.name for s in reports})
    if unknown or not reports:
        names = ", ".join(s.name for s in reports) or "none"
        raise click.UsageError(
            f"spec '{spec_name}' has no partitioned stream {', '.join(unknown)} "
            f"(its report streams: {names})"
            if unknown
            else f"spec '{spec_name}' has no partitioned (report) stream; --from/--to are for those"
        )
    commands = []
    for stream in reports:
        if streams and stream.name not in streams:
            continue
        dims = {
            d.name: d.partitions_def
            for d in report_partitions_def_for(source, stream).partitions_defs
        }
        periods = [
            key
            for key in dims[DATE_DIMENSION].get_partition_keys()
            if first.isoformat() <= key <= last.isoformat()
        ]
        if not periods:
            raise click.UsageError(
                f"stream '{stream.name}': no closed {stream.partitioned_by} period between "
                f"{first} and {last} (partitions start {stream.partition_start})"
            )
        keys = [str(report_partition_key(p, i)) for p in periods for i in ids]
        commands.append(
            dagster_backfill_args(
                report_job_name_for(spec_name, stream.name), keys, tags, module, workspace, location
            )
        )
    return commands


def _submit_all(spec: str, ids: Sequence[str], commands: list[list[str]]) -> None:
    from synkro_dagster.automation.settings import ui_url

    if not os.environ.get("DAGSTER_HOME"):
        raise click.UsageError(
            "DAGSTER_HOME is not set: point it at the instance the Dagster daemon uses, "
            "so the backfill's runs are queued where the daemon launches them"
        )
    added = _ensure_partitions(spec, ids)
    if added:
        click.echo(f"added partition(s) not yet synced from the registry: {', '.join(added)}")
    for args in commands:
        backfill_id = submit_backfill(args)
        click.echo(f"backfill {backfill_id} submitted ({args[args.index('-j') + 1]})")
        click.echo(f"follow it at {ui_url()}/runs/b/{backfill_id}")
