"""Sync assets end to end: dg.materialize on a partition, against the real local API server and
the real PostgreSQL data layer."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from synkro_dagster.assets.factory import build_spec_assets, partitions_def_for
from synkro_dagster.connectors.http import HttpConnector
from synkro_dagster.datalayer.resource import DataLayer
from synkro_dagster.datalayer.state import stream_lock_key
from synkro_dagster.demo.api_server import ApiServer, start_api_server
from synkro_dagster.integrations.registry import IntegrationRegistry
from synkro_dagster.specs import SourceSpec, load_spec_file
from synkro_dagster.specs.loader import specs_dir
from synkro_dagster.tags import FULL_REFRESH_TAG, run_tags
from synkro_dagster_tests.resources import run_resources
from synkro_dagster_tests.testapi import ITEMS, TESTAPI, secrets_for_testapi

FAST = dict(
    backoff_initial=0.05, backoff_max=0.2, max_retries=2, max_retry_wait=5.0, read_timeout=2.0
)
INTEGRATION = "acme-test"
PAGINATION = ["page_number", "offset", "cursor", "next_url", "link_header", "single"]
AUTH = ["bearer", "api_key_header", "api_key_query", "basic", "oauth2"]


@pytest.fixture
def api() -> Iterator[ApiServer]:
    with start_api_server(bench_records=10) as server:
        yield server


@pytest.fixture
def specs_folder(tmp_path: Path, monkeypatch) -> Path:
    """The shipped specs plus the test API spec, so the registry validates against both."""
    folder = tmp_path / "specs"
    folder.mkdir()
    for path in [*specs_dir().glob("*.yaml"), TESTAPI]:
        (folder / path.name).write_text(path.read_text())
    monkeypatch.setenv("SYNKRO_SPECS_DIR", str(folder))
    return folder


@pytest.fixture
def testapi(specs_folder: Path) -> SourceSpec:
    return load_spec_file(specs_folder / "testapi.yaml")


@pytest.fixture
def registry(engine: sa.Engine, specs_folder: Path) -> IntegrationRegistry:
    return IntegrationRegistry(engine)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


class Sync:
    """Materializes one spec's streams for one integration, the way a run of sync_<spec> does."""

    def __init__(self, spec: SourceSpec, instance: dg.DagsterInstance, database_url: str) -> None:
        self.spec = spec
        self.instance = instance
        self.assets = build_spec_assets(spec)
        self.resources = run_resources(database_url, http_connector=HttpConnector(**FAST))

    def __call__(
        self, streams: list[str], integration: str = INTEGRATION, **tags: str
    ) -> dg.ExecuteInProcessResult:
        self.instance.add_dynamic_partitions(partitions_def_for(self.spec.name).name, [integration])
        return dg.materialize(
            [self.assets],
            selection=[f"{self.spec.name}/{s}" for s in streams],
            partition_key=integration,
            instance=self.instance,
            resources=self.resources,
            tags={**run_tags(integration, self.spec.name, "acme"), **tags},
            raise_on_error=False,
        )


def _metadata(result: dg.ExecuteInProcessResult, stream: str) -> dict[str, Any]:
    for event in result.get_asset_materialization_events():
        m = event.event_specific_data.materialization
        if m.asset_key.path[-1] == stream:
            return {k: v.value for k, v in m.metadata.items()}
    raise AssertionError(f"no materialization for {stream}")


def _checks(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], Any]:
    return {
        (e.asset_key.path[-1], e.check_name): e
        for e in (
            ev.event_specific_data
            for ev in result.all_events
            if ev.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        )
    }


def _rows(engine: sa.Engine, table: str, integration: str = INTEGRATION) -> list[dict]:
    with engine.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(
                sa.text(f'select * from public."{table}" where integration_id = :i order by id'),
                {"i": integration},
            )
        ]


def _cursor(engine: sa.Engine, stream: str, integration: str = INTEGRATION) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "select cursor from synkro.sync_state where integration_id = :i and stream = :s"
            ),
            {"i": integration, "s": stream},
        ).scalar()


@pytest.fixture
def sync(testapi, instance, database_url, registry, api) -> Sync:
    registry.add(
        INTEGRATION,
        spec="testapi",
        tenant="acme",
        config={"base_url": api.url},
        secrets=secrets_for_testapi(api),
    )
    return Sync(testapi, instance, database_url)


def test_every_pagination_and_auth_kind_lands_exactly_the_source_rows(
    sync: Sync, engine: sa.Engine, api: ApiServer
) -> None:
    streams = PAGINATION + AUTH
    result = sync(streams)
    assert result.success
    expected = sorted(r["id"] for r in api.store.records("test.items"))
    for stream in streams:
        rows = _rows(engine, f"testapi_{stream}")
        assert [r["id"] for r in rows] == expected, stream
        assert {r["tenant_id"] for r in rows} == {"acme"}
        meta = _metadata(result, stream)
        assert meta["rows_read"] == ITEMS and meta["rows_inserted"] == ITEMS
        assert meta["pages"] >= 1 and meta["bytes"] > 0


def test_second_run_fetches_only_changes_and_updates_in_place(
    sync: Sync, engine: sa.Engine, api: ApiServer
) -> None:
    assert sync(["page_number"]).success
    first_cursor = _cursor(engine, "page_number")
    assert first_cursor is not None

    api.store.update("test.items", 5, name="renamed")
    api.store.add("test.items", name="brand new", value=1)
    requests_before = len(api.requests_to("/test/page_number"))
    result = sync(["page_number"])
    assert result.success

    meta = _metadata(result, "page_number")
    # Only the two changed records move, plus the boundary record the cursor pointed at (>=
    # semantics); the merge makes that one a no-op, nothing older comes back.
    assert meta["rows_read"] == 3
    assert (meta["rows_inserted"], meta["rows_updated"]) == (1, 1)
    assert meta["cursor_before"] == first_cursor
    assert meta["cursor_after"] > first_cursor
    sent = api.requests_to("/test/page_number")[requests_before:]
    assert all("updated_since" in r.query for r in sent)
    rows = _rows(engine, "testapi_page_number")
    assert len(rows) == ITEMS + 1
    assert next(r for r in rows if r["id"] == 5)["name"] == "renamed"


def test_failure_after_page_three_changes_nothing_and_a_rerun_is_exact(
    sync: Sync, engine: sa.Engine, api: ApiServer
) -> None:
    assert sync(["page_number"]).success
    before_rows = _rows(engine, "testapi_page_number")
    before_cursor = _cursor(engine, "page_number")
    for i in range(1, 201):  # 200 changed records: 6 pages of 40 from the stored cursor
        api.store.update("test.items", i, value=-i)

    api.fail_after_page("/test/page_number", pages=3, status=503)
    failed = sync(["page_number"])
    assert not failed.success
    # Pages 1-3 were read and staged, then the load rolled back: table and cursor as before.
    assert _rows(engine, "testapi_page_number") == before_rows
    assert _cursor(engine, "page_number") == before_cursor

    api.clear_faults()
    assert sync(["page_number"]).success
    rows = _rows(engine, "testapi_page_number")
    source = {r["id"]: r["value"] for r in api.store.records("test.items")}
    assert {r["id"]: r["value"] for r in rows} == source


def test_full_refresh_tag_ignores_the_stored_cursor(sync: Sync, api: ApiServer) -> None:
    assert sync(["offset"]).success
    incremental = sync(["offset"])
    assert _metadata(incremental, "offset")["rows_read"] < ITEMS
    full = sync(["offset"], **{FULL_REFRESH_TAG: "true"})
    assert full.success
    meta = _metadata(full, "offset")
    assert meta["rows_read"] == ITEMS
    assert meta["rows_inserted"] == 0 and meta["full_refresh"] is True


def test_checks_pass_on_good_data(sync: Sync) -> None:
    result = sync(["offset"])
    checks = _checks(result)
    assert checks[("offset", "no_duplicate_keys_in_load")].passed
    completeness = checks[("offset", "complete_against_source_total")]
    assert completeness.passed
    assert completeness.metadata["source_total"].value == ITEMS


def test_duplicate_keys_from_the_source_warn(sync: Sync, engine: sa.Engine, api: ApiServer) -> None:
    api.duplicate_keys("/test/page_number")
    result = sync(["page_number"])
    assert result.success
    check = _checks(result)[("page_number", "no_duplicate_keys_in_load")]
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["duplicate_records"].value > 0
    assert len(_rows(engine, "testapi_page_number")) == ITEMS  # collapsed, not duplicated


def test_fewer_rows_than_the_reported_total_fail_completeness(
    sync: Sync, testapi: SourceSpec, instance, database_url
) -> None:
    # The API reports meta.total for every item but the stream's cursor filter is ignored by a
    # client-side drop: seed a cursor newer than some records so fewer land than the total says.
    raw_cursor = "2025-06-01T00:00:00Z"
    spec = testapi.model_copy(
        update={
            "streams": [
                s.model_copy(update={"cursor": s.cursor.model_copy(update={"initial": raw_cursor})})
                if s.name == "unfiltered"
                else s
                for s in testapi.streams
            ]
        }
    )
    result = Sync(spec, instance, database_url)(["unfiltered"])
    check = _checks(result)[("unfiltered", "complete_against_source_total")]
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["rows_missing"].value > 0


def test_no_secret_reaches_the_event_log_or_the_terminal(
    sync: Sync, instance: dg.DagsterInstance, api: ApiServer, registry, capfd
) -> None:
    assert sync(PAGINATION[:1] + AUTH).success
    registry.update(INTEGRATION, secrets={"token": "wrong-token-but-secret-1234"})
    failed = sync(["bearer"])
    assert not failed.success
    secret_values = [*secrets_for_testapi(api).values(), "wrong-token-but-secret-1234"]
    out, err = capfd.readouterr()
    logs = []
    for run in instance.get_runs():
        logs.extend(instance.all_logs(run.run_id))
        logs.append(run)  # run config and tags too
    text = "\n".join(
        json.dumps(dg.serialize_value(e)) if hasattr(e, "__dict__") else str(e) for e in logs
    )
    for value in secret_values:
        assert value not in text
        assert value not in out and value not in err


def test_disabled_and_unknown_integrations_are_refused_clearly(
    sync: Sync, registry: IntegrationRegistry
) -> None:
    registry.disable(INTEGRATION)
    result = sync(["single"])
    assert not result.success
    failure = result.failure_data_for_node("testapi_streams").error
    assert "disabled" in failure.message and INTEGRATION in failure.message

    unknown = sync(["single"], integration="nobody-here")
    assert not unknown.success
    message = unknown.failure_data_for_node("testapi_streams").error.message
    assert "not in the registry" in message


def test_a_dead_source_fails_the_run_fast_with_its_retries_in_the_run_log(
    testapi: SourceSpec, instance: dg.DagsterInstance, database_url: str, registry
) -> None:
    with start_api_server() as down:
        dead_url = down.url
    registry.add(
        "acme-dead",
        spec="testapi",
        tenant="acme",
        config={"base_url": dead_url},
        secrets={"token": "t" * 8, "api_key": "k" * 8, "password": "p" * 8,
                 "client_id": "i" * 8, "client_secret": "s" * 8},
    )  # fmt: skip
    sync = Sync(testapi, instance, database_url)
    sync.resources["http_connector"] = HttpConnector(
        **{**FAST, "max_retries": 10, "max_connection_failures": 3}
    )
    streams = PAGINATION + ["bearer"]  # seven streams against a refused port
    result = sync(streams, integration="acme-dead")
    assert not result.success
    failure = result.failure_data_for_node("testapi_streams").user_failure_data
    failed = failure.metadata["failed_streams"].value.splitlines()
    assert len(failed) == 7
    assert all("ConnectError" in line for line in failed)
    assert sum("not attempted" in line for line in failed) == 6
    messages = [e.message for e in instance.all_logs(result.run_id) if e.message]
    retries = [m for m in messages if "failed (ConnectError" in m and "retrying in" in m]
    assert len(retries) == 2, retries  # attempts 1 and 2; the third opened the circuit
    assert all(dead_url in m and "'page_number'" in m for m in retries)


def test_a_run_launched_without_synkro_tags_gets_integration_tenant_and_spec(
    sync: Sync, instance: dg.DagsterInstance
) -> None:
    # As from the UI or an asset backfill: only the partition is known at launch.
    instance.add_dynamic_partitions(partitions_def_for("testapi").name, [INTEGRATION])
    result = dg.materialize(
        [sync.assets],
        selection=["testapi/single"],
        partition_key=INTEGRATION,
        instance=instance,
        resources=sync.resources,
    )
    assert result.success
    tags = instance.get_run_by_id(result.run_id).tags
    assert tags["synkro/integration"] == INTEGRATION
    assert tags["synkro/tenant"] == "acme"
    assert tags["synkro/spec"] == "testapi"


def test_checks_are_per_integration(
    sync: Sync, instance: dg.DagsterInstance, registry, api: ApiServer
) -> None:
    with start_api_server(bench_records=10) as clean_api:
        registry.add(
            "beta-test",
            spec="testapi",
            tenant="beta",
            config={"base_url": clean_api.url},
            secrets=secrets_for_testapi(clean_api),
        )
        api.duplicate_keys("/test/page_number")
        failing = sync(["page_number"])
        passing = sync(["page_number"], integration="beta-test")
    assert failing.success and passing.success
    failed = _checks(failing)[("page_number", "no_duplicate_keys_in_load")]
    passed = _checks(passing)[("page_number", "no_duplicate_keys_in_load")]
    assert (failed.partition, failed.passed) == (INTEGRATION, False)
    assert (passed.partition, passed.passed) == ("beta-test", True)
    # Every result names its integration, also where a reader sees no partition.
    assert failed.metadata["integration"].value == INTEGRATION
    assert failed.description.startswith(f"integration '{INTEGRATION}': ")
    assert passed.description.startswith("integration 'beta-test': ")

    # The later success of beta-test leaves acme-test's result failed: one status per partition.
    key = dg.AssetCheckKey(dg.AssetKey(["testapi", "page_number"]), "no_duplicate_keys_in_load")
    infos = instance.event_log_storage.get_asset_check_partition_info([key])
    status = {i.partition_key: i.latest_execution_status.value for i in infos}
    assert status == {INTEGRATION: "FAILED", "beta-test": "SUCCEEDED"}


def test_every_materialization_reports_the_tables_columns_and_the_integrations_row_count(
    sync: Sync, engine: sa.Engine, api: ApiServer, registry: IntegrationRegistry
) -> None:
    registry.add(
        "acme-second",
        spec="testapi",
        tenant="acme",
        config={"base_url": api.url},
        secrets=secrets_for_testapi(api),
    )
    assert sync(["page_number"], integration="acme-second").success
    api.store.add("test.items", name="only for the first", value=7)
    result = sync(["page_number"])
    assert result.success
    meta = _metadata(result, "page_number")

    # The row count is this integration's rows, not the shared table's.
    assert meta["dagster/row_count"] == ITEMS + 1
    assert len(_rows(engine, "testapi_page_number", "acme-second")) == ITEMS

    # The column schema is the landed table as PostgreSQL has it, in column order.
    with engine.connect() as conn:
        landed = conn.execute(
            sa.text(
                "select column_name, is_nullable = 'YES' from information_schema.columns"
                " where table_schema = 'public' and table_name = 'testapi_page_number'"
                " order by ordinal_position"
            )
        ).all()
    schema: dg.TableSchema = meta["dagster/column_schema"]
    assert [(c.name, c.constraints.nullable) for c in schema.columns] == [tuple(r) for r in landed]
    columns = {c.name: c for c in schema.columns}
    assert columns["id"].type == "integer" and not columns["id"].constraints.nullable
    assert columns["id"].description == "primary key"
    assert columns["updated_at"].description == "cursor"
    assert columns["updated_at"].type.startswith("timestamp")
    assert "tenant" in columns["tenant_id"].description
    assert columns["name"].type == "text" and columns["name"].description is None

    # What the event log stores is what the UI's asset page reads.
    recorded = sync.instance.get_latest_materialization_event(
        dg.AssetKey(["testapi", "page_number"])
    )
    stored = recorded.asset_materialization.metadata
    assert stored["dagster/row_count"].value == ITEMS + 1
    assert [c.name for c in stored["dagster/column_schema"].value.columns] == [r[0] for r in landed]


def _step_events(result: dg.ExecuteInProcessResult, kind: dg.DagsterEventType) -> list:
    return [e for e in result.all_events if e.event_type == kind]


def _release_after_first_retry(
    instance: dg.DagsterInstance, release: Any, limit_s: float = 60.0
) -> threading.Thread:
    """Calls `release` once a run of `instance` is up for retry (or after `limit_s`), so the held
    lock is certainly met by the first attempt and gone for a later one, however slow the host."""

    def watch() -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            for run in instance.get_runs():
                if any(
                    e.dagster_event and e.dagster_event.event_type_value == "STEP_UP_FOR_RETRY"
                    for e in instance.all_logs(run.run_id)
                ):
                    release()
                    return
            time.sleep(0.05)
        release()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_busy_stream_is_retried_with_backoff_and_the_sync_then_lands(
    sync: Sync, engine: sa.Engine, database_url: str, monkeypatch
) -> None:
    monkeypatch.setenv("SYNKRO_SYNC_MAX_RETRIES", "6")
    monkeypatch.setenv("SYNKRO_SYNC_RETRY_DELAY_SECONDS", "0.2")
    retrying = Sync(sync.spec, sync.instance, database_url)
    # Another session holds the stream's lock until the first retry; the data layer waits 200 ms
    # for it, then fails with StreamBusy (a transient error): the retry policy tries again later.
    retrying.resources["datalayer"] = DataLayer(
        database_url=database_url, stream_lock_timeout_s=0.2
    )
    holder = engine.connect()
    key = stream_lock_key(INTEGRATION, "single")
    holder.exec_driver_sql("select pg_advisory_lock(hashtextextended(%s, 0))", (key,))

    def release() -> None:
        holder.exec_driver_sql("select pg_advisory_unlock_all()")
        holder.close()

    watcher = _release_after_first_retry(sync.instance, release)
    try:
        result = retrying(["single"])
    finally:
        watcher.join()
    assert result.success
    retries = _step_events(result, dg.DagsterEventType.STEP_UP_FOR_RETRY)
    assert retries, "the busy stream should have been retried"
    assert len(_step_events(result, dg.DagsterEventType.STEP_RESTARTED)) == len(retries)
    assert _metadata(result, "single")["rows_read"] == ITEMS


def test_a_real_lock_timeout_in_the_load_is_retried(
    sync: Sync, engine: sa.Engine, database_url: str, monkeypatch
) -> None:
    assert sync(["single"]).success  # the table exists
    monkeypatch.setenv("SYNKRO_SYNC_MAX_RETRIES", "6")
    monkeypatch.setenv("SYNKRO_SYNC_RETRY_DELAY_SECONDS", "0.2")
    retrying = Sync(sync.spec, sync.instance, database_url)
    # The data layer gives up on a held table lock after 200 ms: PostgreSQL's 55P03.
    retrying.resources["datalayer"] = DataLayer(
        database_url=f"{database_url}?options=-c%20lock_timeout%3D200"
    )
    holder = engine.connect()
    holder.exec_driver_sql("begin; lock table public.testapi_single in access exclusive mode")
    watcher = _release_after_first_retry(sync.instance, lambda: (holder.rollback(), holder.close()))
    try:
        result = retrying(["single"], **{FULL_REFRESH_TAG: "true"})
    finally:
        watcher.join()
    assert result.success
    assert _step_events(result, dg.DagsterEventType.STEP_UP_FOR_RETRY)
    assert _metadata(result, "single")["rows_read"] == ITEMS


def test_a_permanent_failure_fails_at_once_despite_the_retry_policy(
    sync: Sync, api: ApiServer, database_url: str, registry: IntegrationRegistry, monkeypatch
) -> None:
    monkeypatch.setenv("SYNKRO_SYNC_MAX_RETRIES", "3")
    monkeypatch.setenv("SYNKRO_SYNC_RETRY_DELAY_SECONDS", "30")  # a retry would time the test out
    retrying = Sync(sync.spec, sync.instance, database_url)
    assert retrying.assets.op.retry_policy is not None
    api.fail_after_page("/test/page_number", pages=1, status=404)
    started = time.monotonic()
    failed = retrying(["page_number"])
    assert not failed.success
    assert not _step_events(failed, dg.DagsterEventType.STEP_UP_FOR_RETRY)
    message = failed.failure_data_for_node("testapi_streams").user_failure_data.description
    assert "say what to fix" in message

    registry.disable(INTEGRATION)
    disabled = retrying(["single"])
    assert not disabled.success
    assert not _step_events(disabled, dg.DagsterEventType.STEP_UP_FOR_RETRY)
    assert time.monotonic() - started < 25
