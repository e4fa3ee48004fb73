"""End to end with real processes: dagster-webserver and dagster-daemon on PostgreSQL storage.

Integrations are registered with the `synkro` CLI against the local demo API server; the
registry sensor adds their partitions, the scheduling sensor starts runs for the due ones only,
a failing integration's run is alerted to a local webhook, backfills from both CLIs complete,
and runs and events are read back through GraphQL. A headless-Chromium test checks the UI's
asset catalog (docs/images/ is refreshed by test_docs_commands.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from dagster_graphql import DagsterGraphQLClient

from synkro_dagster_tests.dagster_processes import (
    WebhookReceiver,
    free_port,
    instance_and_data_layer_on_postgres,
    log_tail,
    partition_keys,
    wait_for,
    webserver_and_daemon,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODULE = "synkro"  # synkro.py: the code location module
LOCATION = "synkro"  # `-m synkro` names the location `synkro`, as workspace.yaml does
SECRET_KEY = "x4r1cQ1Mv0b8m0cB1U2GkH0d6sZ0QbLw7j8kGmXo4Zs="
WRONG_CRM_SECRET = "wrong-secret-5e1f0c77aa"


# -- helpers ---------------------------------------------------------------------------------


@dataclass
class Stack:
    home: Path
    env: dict[str, str]
    ui_url: str
    port: int
    data_engine: sa.Engine
    api: Any
    webhook: WebhookReceiver
    logs: dict[str, Path]
    shared: dict[str, Any] = field(default_factory=dict)

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = httpx.post(
            f"{self.ui_url}/graphql",
            json={"query": query, "variables": variables or {}},
            timeout=60,
        )
        assert response.status_code == 200, f"GraphQL HTTP {response.status_code}: {response.text}"
        payload = response.json()
        assert "errors" not in payload, payload["errors"]
        return payload["data"]

    def client(self) -> DagsterGraphQLClient:
        return DagsterGraphQLClient("127.0.0.1", port_number=self.port, timeout=60)

    def run_cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(a) for a in args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result

    def runs(self, tags: dict[str, str] | None = None) -> list[dict]:
        data = self.graphql(
            """
            query Runs($filter: RunsFilter) {
              runsOrError(filter: $filter) {
                __typename
                ... on Runs { results { runId jobName status tags { key value } } }
              }
            }
            """,
            {"filter": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}},
        )
        runs = data["runsOrError"]["results"]
        for run in runs:
            run["tags"] = {t["key"]: t["value"] for t in run["tags"]}
        return runs

    def log_tail(self) -> str:
        return log_tail(self.logs, 4000)


def _dagster_yaml(storage_url: str) -> str:
    return f"""
storage:
  postgres:
    postgres_url: "{storage_url}"
run_coordinator:
  module: dagster
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 3
    dequeue_interval_seconds: 1
    # A code server slow to answer (a busy CI machine) delays a run instead of failing it.
    max_user_code_failure_retries: 3
    user_code_failure_retry_delay: 5
    tag_concurrency_limits:
      - key: synkro/integration
        value: {{applyLimitPerUniqueValue: true}}
        limit: 1
      # As in production: integrations of one spec run side by side (first loads of a shared
      # table at once included).
      - key: synkro/spec
        value: {{applyLimitPerUniqueValue: true}}
        limit: 3
sensors:
  use_threads: true
  num_workers: 4
telemetry:
  enabled: false
nux:
  enabled: false
"""


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory, admin_engine: sa.Engine, pg_server_url: str, migrated_template: str
) -> Iterator[Stack]:
    from synkro_dagster.demo.api_server import start_api_server

    home = tmp_path_factory.mktemp("e2e_dagster_home")
    with ExitStack() as cleanup:
        data_url = cleanup.enter_context(
            instance_and_data_layer_on_postgres(
                admin_engine, pg_server_url, migrated_template, "synkro_e2e", home, _dagster_yaml
            )
        )

        api = start_api_server()
        cleanup.callback(api.stop)
        webhook = WebhookReceiver()
        cleanup.callback(webhook.close)
        port = free_port()
        ui_url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "SYNKRO_DATABASE_URL": data_url,
            "INTEGRATION_SECRET_KEY": SECRET_KEY,
            "SYNKRO_TEMP_DIR": str(home / "temp"),
            "SYNKRO_AUTOMATION_INTERVAL_SECONDS": "5",
            # Dagster's 60 s gRPC deadline is tight when CI runs other suites beside this one.
            "DAGSTER_GRPC_TIMEOUT_SECONDS": "180",
            "DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS": "180",
            "SYNKRO_AUTOMATION_DEFAULT_STATUS": "running",
            "SYNKRO_ALERT_WEBHOOK_URL": webhook.url,
            "SYNKRO_ALERT_WEBHOOK_FORMAT": "generic",
            "SYNKRO_UI_URL": ui_url,
            "PYTHONUNBUFFERED": "1",
        }
        data_engine = sa.create_engine(data_url)
        cleanup.callback(data_engine.dispose)
        logs = cleanup.enter_context(
            webserver_and_daemon(
                env, home, home, port=port, location_args=("-m", MODULE), timeout=90
            )
        )
        result = Stack(home, env, ui_url, port, data_engine, api, webhook, logs)
        try:
            yield result
        except BaseException:
            print(result.log_tail())
            raise


def _register_integrations(stack: Stack) -> None:
    synkro = BIN / "synkro"
    api, creds = stack.api, stack.api.credentials
    base = ("--config", f"base_url={api.url}")
    shop_token = ("--secret", f"api_token={creds.bearer_token}")
    crm_ok = (
        "--secret",
        f"client_id={creds.client_id}",
        "--secret",
        f"client_secret={creds.client_secret}",
        "--secret",
        "hash_salt=e2e-salt-31f7",
    )
    crm_bad = (
        "--secret",
        f"client_id={creds.client_id}",
        "--secret",
        f"client_secret={WRONG_CRM_SECRET}",
        "--secret",
        "hash_salt=e2e-salt-31f7",
    )
    every_minute = ("--schedule", "* * * * *")
    add = (synkro, "integrations", "add")
    stack.run_cli(
        *add, "acme-shop", "--spec", "shop", "--tenant", "acme", *base, *shop_token, *every_minute
    )
    # Disabled from the start: added enabled and disabled a moment later, a schedule tick in
    # between may rightly start it (its partition exists at once since `integrations add`).
    stack.run_cli(
        *add, "paused-shop", "--spec", "shop", "--tenant", "beta", *base, *shop_token,
        *every_minute, "--disabled",
    )  # fmt: skip
    stack.run_cli(*add, "manual-shop", "--spec", "shop", "--tenant", "gamma", *base, *shop_token)
    stack.run_cli(*add, "acme-crm", "--spec", "crm", "--tenant", "acme", *base, *crm_ok)
    stack.run_cli(
        *add, "broken-crm", "--spec", "crm", "--tenant", "beta", *base, *crm_bad, *every_minute
    )


def _finished(stack: Stack, tags: dict[str, str]) -> list[dict]:
    return [r for r in stack.runs(tags) if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]


def _rows(stack: Stack, table: str, integration: str) -> int:
    with stack.data_engine.connect() as conn:
        return conn.execute(
            sa.text(f'select count(*) from public."{table}" where integration_id = :i'),
            {"i": integration},
        ).scalar_one()


def _sensor_ticks(stack: Stack, sensor: str) -> list[dict]:
    data = stack.graphql(
        """
        query Sensor($selector: SensorSelector!) {
          sensorOrError(sensorSelector: $selector) {
            __typename
            ... on Sensor { sensorState { status ticks(limit: 20) { status error { message } } } }
          }
        }
        """,
        {
            "selector": {
                "repositoryName": "__repository__",
                "repositoryLocationName": LOCATION,
                "sensorName": sensor,
            }
        },
    )
    state = data["sensorOrError"]["sensorState"]
    assert state["status"] == "RUNNING", (sensor, state["status"])
    return state["ticks"]


# -- the scenario ----------------------------------------------------------------------------


def test_schedules_alerts_and_backfills_through_the_daemon(stack: Stack):
    _register_integrations(stack)

    # The registry sensor makes each spec's partitions equal to the registry.
    wait_for(
        "the registry sensor to add the shop and crm partitions",
        lambda: (
            partition_keys(stack.graphql, ["shop", "orders"])
            == ["acme-shop", "manual-shop", "paused-shop"]
            and partition_keys(stack.graphql, ["crm", "contacts"]) == ["acme-crm", "broken-crm"]
        ),
        timeout=60,
    )

    # Both backfill routes, submitted while the schedules wait for the next minute.
    out = stack.run_cli(
        BIN / "dagster",
        "job",
        "backfill",
        "-j",
        "sync_shop",
        "--partitions",
        "manual-shop",
        "--noprompt",
        "-m",
        MODULE,
    ).stdout
    dagster_backfill = out.split("Launched backfill job `")[1].split("`")[0]
    out = stack.run_cli(
        BIN / "synkro", "backfill", "crm", "--tenant", "acme", "--full-refresh", "-m", MODULE
    ).stdout
    assert "backfilling 1 integration(s) of 'crm': acme-crm" in out
    synkro_backfill = [line for line in out.splitlines() if line.endswith("queued for the daemon")][
        0
    ].split()[1]

    # The every-minute integrations start at the next minute boundary. Once each has its run,
    # its schedule is removed so later minutes do not pile runs onto this small machine.
    for integration in ("acme-shop", "broken-crm"):
        wait_for(
            f"the schedule to start a run of {integration}",
            lambda i=integration: stack.runs({"synkro/integration": i}),
            timeout=120,
        )
        stack.run_cli(BIN / "synkro", "integrations", "update", integration, "--schedule", "")

    [scheduled] = wait_for(
        "the scheduled run of acme-shop to finish",
        # The spec's streams; the same cron also starts the daily report's own job.
        lambda: _finished(
            stack,
            {
                "synkro/integration": "acme-shop",
                "dagster/sensor_name": "shop_integration_schedules",
            },
        ),
        timeout=240,
    )[:1]
    failed = wait_for(
        "the scheduled run of broken-crm to fail",
        lambda: _finished(stack, {"synkro/integration": "broken-crm"}),
        timeout=240,
    )
    assert scheduled["status"] == "SUCCESS", stack.log_tail()
    assert scheduled["tags"]["synkro/tenant"] == "acme"
    assert scheduled["tags"]["synkro/spec"] == "shop"
    assert scheduled["tags"]["dagster/partition"] == "acme-shop"
    assert scheduled["tags"]["dagster/sensor_name"] == "shop_integration_schedules"
    assert scheduled["tags"]["dagster/run_key"].startswith("acme-shop:")
    assert {r["status"] for r in failed} == {"FAILURE"}
    assert stack.client().get_run_status(scheduled["runId"]).value == "SUCCESS"
    stack.shared["run_id"] = scheduled["runId"]

    # Disabled and unscheduled integrations are never started by the schedules.
    assert stack.runs({"synkro/integration": "paused-shop"}) == []
    assert stack.runs({"dagster/partition": "paused-shop"}) == []
    # manual-shop has no schedule: its only runs are the backfill's (tagged by its partition).
    assert all(
        "dagster/backfill" in run["tags"]
        for run in stack.runs({"synkro/integration": "manual-shop"})
    )

    # The alert names the failing integration, without its secret, with a link to the run.
    alert = wait_for(
        "the failure alert at the webhook",
        lambda: [b for b in stack.webhook.bodies if b.get("integration") == "broken-crm"],
        timeout=60,
    )[0]
    assert (alert["spec"], alert["tenant"], alert["job"]) == ("crm", "beta", "sync_crm")
    assert alert["run_id"] in {r["runId"] for r in failed}
    assert alert["url"] == f"{stack.ui_url}/runs/{alert['run_id']}"
    assert alert["error"]
    assert WRONG_CRM_SECRET not in json.dumps(stack.webhook.bodies)
    assert stack.api.credentials.client_secret not in json.dumps(stack.webhook.bodies)
    assert not [b for b in stack.webhook.bodies if b.get("integration") != "broken-crm"]

    # Both backfills ran through the queue and succeeded; the synkro one is a full refresh.
    for backfill_id, integration in (
        (dagster_backfill, "manual-shop"),
        (synkro_backfill, "acme-crm"),
    ):
        runs = wait_for(
            f"backfill {backfill_id} to finish",
            lambda b=backfill_id: _finished(stack, {"dagster/backfill": b}),
            timeout=240,
        )
        assert [(r["status"], r["tags"]["dagster/partition"]) for r in runs] == [
            ("SUCCESS", integration)
        ], stack.log_tail()
        # Backfill runs carry the tags the run queue limits on, like sensor runs.
        assert runs[0]["tags"]["synkro/integration"] == integration
    [crm_run] = stack.runs({"dagster/backfill": synkro_backfill})
    assert crm_run["tags"]["synkro/full_refresh"] == "true"
    backfills = stack.graphql(
        """
        { partitionBackfillsOrError { ... on PartitionBackfills {
            results { id status partitionNames tags { key value } } } } }
        """
    )["partitionBackfillsOrError"]["results"]
    assert {b["id"]: b["partitionNames"] for b in backfills} == {
        dagster_backfill: ["manual-shop"],
        synkro_backfill: ["acme-crm"],
    }

    # The tables filled for every integration that ran, and only for them.
    assert _rows(stack, "shop_orders", "acme-shop") > 0
    assert _rows(stack, "shop_customers", "manual-shop") > 0
    assert _rows(stack, "shop_orders", "paused-shop") == 0
    assert _rows(stack, "crm_contacts", "acme-crm") > 0
    assert _rows(stack, "crm_contacts", "broken-crm") == 0

    # Run history: the materializations and their numeric metadata, read back over GraphQL.
    events = stack.graphql(
        """
        query Logs($runId: ID!) {
          logsForRun(runId: $runId) {
            __typename
            ... on EventConnection { events { __typename
              ... on MaterializationEvent { assetKey { path } partition
                metadataEntries { label __typename } } } }
          }
        }
        """,
        {"runId": scheduled["runId"]},
    )["logsForRun"]["events"]
    materialized = {
        "/".join(e["assetKey"]["path"]): e
        for e in events
        if e["__typename"] == "MaterializationEvent"
    }
    assert {"shop/customers", "shop/products", "shop/orders"} <= set(materialized)
    orders = materialized["shop/orders"]
    assert orders["partition"] == "acme-shop"
    numeric = {
        m["label"]
        for m in orders["metadataEntries"]
        if m["__typename"] in ("IntMetadataEntry", "FloatMetadataEntry")
    }
    assert numeric, orders["metadataEntries"]

    # A failing run stopped nothing: every sensor is still running and its ticks did not fail.
    for sensor in (
        "integrations_registry_sensor",
        "shop_integration_schedules",
        "crm_integration_schedules",
        "run_failure_alert",
        "freshness_against_schedules",
    ):
        failures = [t for t in _sensor_ticks(stack, sensor) if t["status"] == "FAILURE"]
        assert not failures, (sensor, failures)


# -- the UI in a real browser ----------------------------------------------------------------


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _browse(stack: Stack, url: str, *extra: str) -> subprocess.CompletedProcess:
    binary = _chromium()
    profile = stack.home / f"chromium-{uuid.uuid4().hex[:8]}"
    profile.mkdir()
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            # The UI renders after its GraphQL calls return; give it virtual time to settle.
            "--virtual-time-budget=20000",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_ui_asset_catalog_lists_the_synkro_assets(stack: Stack):
    if _chromium() is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    url = f"{stack.ui_url}/assets"
    dom = wait_for(
        "the asset catalog to render the shop assets",
        lambda: (lambda out: out if "orders" in out and "shop" in out else "")(
            # The catalog is a virtualized list: a tall window renders every row.
            _browse(stack, url, "--window-size=1400,8000", "--dump-dom").stdout
        ),
        timeout=120,
        every=2,
    )
    for text in ("shop", "crm", "orders", "customers", "contacts", "deals"):
        assert text in dom, f"'{text}' not on the asset catalog page"

    # The screenshots in docs/images/ come from test_docs_commands.py (SYNKRO_UPDATE_SCREENSHOTS=1),
    # taken on the stack the documented commands drove.
