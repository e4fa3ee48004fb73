"""`synkro demo`: the main job on a fresh machine — every engine synced end to end, locally.

Migrates the data layer (embedded PostgreSQL unless SYNKRO_DATABASE_URL is set), starts the local
shop/CRM API, seeds a scratch ERP database (SQLite) and drops 1C-style export files into an inbox,
registers one integration per source, syncs them all through the same Dagster jobs the daemon
runs, and prints what landed. Running it again is incremental: only what changed moves.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa

DEMO_TENANT = "demo-retail"
SAMPLES = Path(__file__).resolve().parent / "samples"


@dataclass
class DemoIntegration:
    id: str
    spec: str
    config: dict[str, Any]
    secrets: dict[str, str] = field(default_factory=dict)
    schedule: str | None = None


# Set to the URL of a demo API that outlives the demo (`python -m synkro_dagster.demo.api_server`):
# the demo then syncs against it and schedules demo-shop and demo-crm like real integrations.
DEMO_API_URL_ENV = "SYNKRO_DEMO_API_URL"


def _demo_integrations(
    api_url: str, credentials: Any, erp_url: str, api_stays: bool
) -> list[DemoIntegration]:
    # The API the demo starts itself stops when the demo ends: scheduled integrations would then
    # fail every few minutes in a `dagster dev` left running, so they get no schedule.
    return [
        DemoIntegration(
            "demo-shop",
            "shop",
            {"base_url": api_url},
            {"api_token": credentials.bearer_token},
            "*/15 * * * *" if api_stays else None,
        ),
        DemoIntegration(
            "demo-crm",
            "crm",
            {"base_url": api_url},
            {
                "client_id": credentials.client_id,
                "client_secret": credentials.client_secret,
                "hash_salt": "demo-salt-5c2e91",
            },
            "0 * * * *" if api_stays else None,
        ),
        DemoIntegration("demo-erp", "erp", {"url": erp_url}, {}, "30 2 * * *"),
        DemoIntegration("demo-onec", "onec", {}, {}, None),
    ]


def _register(registry: Any, integration: DemoIntegration) -> str:
    from synkro_dagster.integrations.registry import IntegrationNotFound

    try:
        registry.get(integration.id)
    except IntegrationNotFound:
        registry.add(
            integration.id,
            spec=integration.spec,
            tenant=DEMO_TENANT,
            config=integration.config,
            secrets=integration.secrets,
            schedule=integration.schedule,
        )
        return "registered"
    # The local API listens on a new port each time: keep the stored config current, and drop a
    # schedule an earlier demo set against an API that is gone now.
    registry.update(
        integration.id,
        config=integration.config,
        secrets=integration.secrets,
        schedule=integration.schedule or "",
    )
    registry.enable(integration.id)
    return "updated"


def _drop_sample_files(inbox: Path) -> int:
    """Deliver the sample exports the way scripts/Send-SynkroExport.ps1 does: the SHA-256
    manifest first, then the data file as <name>.tmp renamed into place."""
    inbox.mkdir(parents=True, exist_ok=True)
    copied = 0
    for sample in sorted((SAMPLES / "onec").glob("*.csv")):
        digest = hashlib.sha256(sample.read_bytes()).hexdigest()
        manifest = inbox / f"{sample.name}.sha256"
        manifest.with_name(manifest.name + ".tmp").write_text(f"{digest}  {sample.name}\n")
        manifest.with_name(manifest.name + ".tmp").rename(manifest)
        partial = inbox / f"{sample.name}.tmp"
        shutil.copyfile(sample, partial)
        partial.rename(inbox / sample.name)
        copied += 1
    return copied


def _sync(defs: Any, instance: Any, integration: DemoIntegration) -> tuple[bool, list[dict]]:
    from synkro_dagster.tags import run_tags

    job = defs.resolve_job_def(f"sync_{integration.spec}")
    result = job.execute_in_process(
        partition_key=integration.id,
        instance=instance,
        tags=run_tags(integration.id, integration.spec, DEMO_TENANT),
        raise_on_error=False,
        # The run's full event log is in the instance (and the UI); keep the terminal readable.
        run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
    )
    rows = []
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        meta = {k: v.value for k, v in materialization.metadata.items()}
        rows.append({"asset": materialization.asset_key.to_user_string(), **meta})
    return result.success, rows


def _table_counts(engine: sa.Engine, specs: dict, integration: DemoIntegration) -> list[str]:
    from synkro_dagster.datalayer.identifiers import table_name

    spec = specs[integration.spec]
    quote = engine.dialect.identifier_preparer.quote
    lines = []
    with engine.connect() as conn:
        for stream in spec.streams:
            schema, table = spec.target_schema, table_name(spec.table_for(stream))
            qualified = f"{quote(schema)}.{quote(table)}"
            if not conn.execute(sa.text("select to_regclass(:t)"), {"t": qualified}).scalar():
                continue
            count = conn.execute(
                sa.text(f"select count(*) from {qualified} where integration_id = :id"),  # noqa: S608
                {"id": integration.id},
            ).scalar()
            lines.append(f"{schema}.{table}: {count} rows")
    return lines


@click.command("demo")
@click.option("--erp-rows", default=200, show_default=True, help="customers in the demo ERP")
def demo(erp_rows: int) -> None:
    """Sync demo integrations of every engine end to end on this machine and print what landed."""
    import dagster as dg

    from synkro_dagster.connectors.files_inbox import inbox_dir, resolve_inbox_root
    from synkro_dagster.database import get_engine, resolve_database_url, safe_url, temp_dir
    from synkro_dagster.datalayer.migrations import migrate
    from synkro_dagster.definitions import build_definitions
    from synkro_dagster.demo.api_server import Credentials, start_api_server
    from synkro_dagster.demo.erp_source import create_demo_erp, touch_demo_erp
    from synkro_dagster.resources import build_registry
    from synkro_dagster.specs import load_specs

    started = time.monotonic()
    url = resolve_database_url()
    engine = get_engine(url)
    applied = migrate(engine)
    click.echo(f"data layer   {safe_url(url)}")
    click.echo(f"migrations   {len(applied)} applied" if applied else "migrations   up to date")

    demo_dir = temp_dir() / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    erp_path = demo_dir / "erp.sqlite"
    erp_url = f"sqlite:///{erp_path}"
    if erp_path.exists():
        touched = touch_demo_erp(erp_url)
        click.echo(f"ERP source   {erp_path} (changed: {touched})")
    else:
        counts = create_demo_erp(erp_url, rows=erp_rows)
        click.echo(f"ERP source   {erp_path} (created: {counts})")

    specs = load_specs()
    defs = build_definitions(specs)
    instance = dg.DagsterInstance.get()
    registry = build_registry()  # as the code location's `integrations` resource reaches it
    failures = 0
    external_api = os.environ.get(DEMO_API_URL_ENV, "").strip().rstrip("/")
    with contextlib.ExitStack() as stack:
        if external_api:
            api_url, credentials = external_api, Credentials()
            click.echo(f"demo API     {api_url} ({DEMO_API_URL_ENV}; it stays up: scheduled)")
        else:
            api = stack.enter_context(start_api_server())
            # Something changes in the APIs between demo runs, so a rerun shows an incremental sync.
            api.store.update("shop.customers", 1, name="Ada Lovelace")
            api.store.add(
                "shop.orders",
                customer_id=1,
                status="paid",
                currency="EUR",
                total="42.00",
                line_items=[
                    {"product_id": 1, "sku": "SKU-0001", "quantity": 1, "unit_price": "42.00"}
                ],
            )
            api.store.update("crm.deals", 1, stage="won")
            api_url, credentials = api.url, api.credentials
            click.echo(f"local API    {api_url} (stops with the demo: shop and crm unscheduled)")

        integrations = _demo_integrations(api_url, credentials, erp_url, bool(external_api))
        for integration in integrations:
            state = _register(registry, integration)
            instance.add_dynamic_partitions(f"{integration.spec}__integrations", [integration.id])
            click.echo(f"integration  {integration.id} ({integration.spec}) {state}")
        files = _drop_sample_files(inbox_dir(resolve_inbox_root(), "demo-onec"))
        click.echo(
            f"file drop    {files} export files → {inbox_dir(resolve_inbox_root(), 'demo-onec')}"
        )

        click.echo("")
        for integration in integrations:
            ok, materializations = _sync(defs, instance, integration)
            failures += 0 if ok else 1
            click.echo(f"{'✔' if ok else '✘'} sync_{integration.spec} [{integration.id}]")
            for m in materializations:
                click.echo(
                    f"    {m['asset']:<24} read {m.get('rows_read', 0):>6}  "
                    f"inserted {m.get('rows_inserted', 0):>6}  updated {m.get('rows_updated', 0):>6}"
                    f"  cursor {m.get('cursor_after') or '-'}"
                )

    click.echo("\nWhat landed (rows per table for the demo integrations):")
    for integration in integrations:
        for line in _table_counts(engine, specs, integration):
            click.echo(f"    {line}")
    click.echo(
        f"\nDone in {time.monotonic() - started:.1f} s. Runs, materializations and their metadata "
        f"are in the Dagster instance at {instance.root_directory}.\n"
        "See them in the UI (from the repository root):\n"
        "    . .venv/bin/activate && dagster dev\n"
        "then open http://127.0.0.1:3000 → Assets (groups shop, crm, erp, onec) → Runs.\n"
        "Run `./run demo` again: the second sync is incremental."
    )
    if failures:
        raise click.ClickException(f"{failures} demo sync(s) failed; see the output above")
