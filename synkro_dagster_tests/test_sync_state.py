"""The sync's state model against a real local HTTP source that compares its filter as text and the
real PostgreSQL data layer: the cursor goes back exactly as the source wrote it, never runs ahead
of now + max_future, re-reads a lookback window, a full refresh reads everything, and one writer
per (integration, stream) whatever launched the run."""

from __future__ import annotations

import logging
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
from synkro_dagster.datalayer.resource import DataLayer, LoadContext, LoadStats, TableTarget
from synkro_dagster.integrations.registry import IntegrationRegistry
from synkro_dagster.specs import SourceSpec
from synkro_dagster.tags import FULL_REFRESH_TAG, run_tags
from synkro_dagster_tests.resources import run_resources
from synkro_dagster_tests.textsource import TextSource, serve_text_source, write_text_spec

INTEGRATION = "acme-text"
FAST = dict(backoff_initial=0.05, backoff_max=0.2, max_retries=1, read_timeout=5.0)


@pytest.fixture
def source() -> Iterator[TextSource]:
    with serve_text_source() as server:
        server.define("items", "updated_at")
        server.define("events", "at")
        yield server


@pytest.fixture
def specs_folder(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "specs"
    folder.mkdir()
    monkeypatch.setenv("SYNKRO_SPECS_DIR", str(folder))
    return folder


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


class Syncs:
    """Runs sync_<spec> for one integration the way `dagster asset materialize` does: in process."""

    def __init__(
        self,
        folder: Path,
        source: TextSource,
        instance: dg.DagsterInstance,
        database_url: str,
        engine: sa.Engine,
    ) -> None:
        self.folder, self.source, self.instance = folder, source, instance
        self.database_url, self.engine = database_url, engine
        self.lock_timeout_s = 600.0
        self.spec = self.use()
        IntegrationRegistry(engine).add(
            INTEGRATION, spec="textapi", tenant="acme", config={"base_url": source.url}
        )
        instance.add_dynamic_partitions(partitions_def_for("textapi").name, [INTEGRATION])

    def use(self, **cursor: Any) -> SourceSpec:
        """Change the spec's cursor settings (both streams)."""
        self.spec = write_text_spec(self.folder, **cursor)
        return self.spec

    def __call__(self, *streams: str, **tags: str) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [build_spec_assets(self.spec)],
            selection=[f"textapi/{s}" for s in streams or ("items",)],
            partition_key=INTEGRATION,
            instance=self.instance,
            resources=run_resources(
                DataLayer(
                    database_url=self.database_url, stream_lock_timeout_s=self.lock_timeout_s
                ),
                http_connector=HttpConnector(**FAST),
            ),
            tags={**run_tags(INTEGRATION, "textapi", "acme"), **tags},
            raise_on_error=False,
        )

    def rows(self, table: str = "textapi_items", order: str = "id") -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                dict(r._mapping)
                for r in conn.execute(
                    sa.text(
                        f'select * from public."{table}" where integration_id = :i order by {order}'
                    ),
                    {"i": INTEGRATION},
                )
            ]

    def cursor(self, stream: str = "items") -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.text(
                    "select cursor from synkro.sync_state where integration_id = :i and stream = :s"
                ),
                {"i": INTEGRATION, "s": stream},
            ).scalar()

    def landed(self, stream: str = "items", fields: tuple[str, ...] = ("name",)) -> dict:
        table = f"textapi_{stream}"
        key = "id"
        return {r[key]: tuple(str(r[f]) for f in fields) for r in self.rows(table)}

    def expected(self, stream: str = "items", fields: tuple[str, ...] = ("name",)) -> dict:
        return {r["id"]: tuple(str(r[f]) for f in fields) for r in self.source.records(stream)}


@pytest.fixture
def syncs(specs_folder, source, instance, database_url, engine) -> Syncs:
    return Syncs(specs_folder, source, instance, database_url, engine)


def _check(result: dg.ExecuteInProcessResult, name: str, stream: str = "items") -> Any:
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            data = event.event_specific_data
            if data.check_name == name and data.asset_key.path[-1] == stream:
                return data
    raise AssertionError(f"no {name} check for {stream}")


def _metadata(result: dg.ExecuteInProcessResult, stream: str = "items") -> dict[str, Any]:
    for event in result.get_asset_materialization_events():
        m = event.event_specific_data.materialization
        if m.asset_key.path[-1] == stream:
            return {k: v.value for k, v in m.metadata.items()}
    raise AssertionError(f"no materialization for {stream}")


def _item(i: int, at: str, name: str | None = None) -> dict[str, Any]:
    return {"id": i, "updated_at": at, "name": name or f"item {i}"}


# --- 1. the cursor goes back exactly as the source wrote it -------------------------------------


def test_boundary_rows_are_read_when_the_server_compares_the_cursor_as_text(
    syncs: Syncs, source: TextSource
) -> None:
    boundary = "2025-12-22T00:00:00"  # as the source writes it: no zone
    for i, at in enumerate(["2025-12-20T10:00:00", "2025-12-21T10:00:00", boundary], start=1):
        source.put("items", _item(i, at))
    assert syncs().success
    assert syncs.cursor() == boundary

    # At the boundary instant: the boundary row changes and a new row arrives.
    source.put("items", _item(3, boundary, "renamed at the boundary"))
    source.put("items", _item(4, boundary, "new at the boundary"))
    assert syncs().success
    assert source.sent("items")[-1]["since"] == boundary
    assert syncs.landed() == syncs.expected()
    assert syncs.cursor() == boundary


def test_a_conversion_is_applied_only_when_the_spec_asks_for_it(
    syncs: Syncs, source: TextSource
) -> None:
    # The source writes milliseconds and compares text: a strftime with %3f says so exactly.
    syncs.use(format="%Y-%m-%dT%H:%M:%S.%3fZ")
    source.put("items", _item(1, "2025-12-22T08:30:15.120Z"))
    source.put("items", _item(2, "2025-12-22T08:30:15.125Z"))
    assert syncs().success
    source.put("items", _item(3, "2025-12-22T08:30:15.125Z"))
    assert syncs().success
    assert source.sent("items")[-1]["since"] == "2025-12-22T08:30:15.125Z"
    assert syncs.landed() == syncs.expected()

    syncs.use(format="unix")
    assert syncs().success
    assert source.sent("items")[-1]["since"] == "1766392215"  # rounded down: never skips


# --- 2. a future-dated record never freezes the stream -----------------------------------------


def test_a_record_dated_2999_lands_but_does_not_move_the_cursor(
    syncs: Syncs, source: TextSource
) -> None:
    source.put("items", _item(1, "2025-12-20T10:00:00"))
    source.put("items", _item(2, "2999-01-01T00:00:00", "from a broken clock"))
    source.put("items", _item(3, "2025-12-21T10:00:00"))
    result = syncs()
    assert result.success
    assert syncs.landed() == syncs.expected()  # the future record still lands
    assert syncs.cursor() == "2025-12-21T10:00:00"
    check = _check(result, "no_records_beyond_max_future")
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "'id': 2" in check.description and "2999-01-01T00:00:00" in check.description
    assert check.metadata["example_record"].value == {
        "id": 2,
        "updated_at": "2999-01-01T00:00:00",
    }

    # Later changes are still read.
    source.put("items", _item(1, "2025-12-23T10:00:00", "changed later"))
    assert syncs().success
    assert syncs.landed() == syncs.expected()
    assert syncs.cursor() == "2025-12-23T10:00:00"


def test_a_record_within_max_future_moves_the_cursor(syncs: Syncs, source: TextSource) -> None:
    syncs.use(max_future="3650d")
    source.put("items", _item(1, "2030-01-01T00:00:00"))
    result = syncs()
    assert result.success and syncs.cursor() == "2030-01-01T00:00:00"
    assert _check(result, "no_records_beyond_max_future").passed


# --- 3. lookback re-reads a window -------------------------------------------------------------


def test_lookback_reads_late_commits_and_append_does_not_reappend(
    syncs: Syncs, source: TextSource
) -> None:
    syncs.use(lookback="2h")
    source.put("items", _item(1, "2025-12-22T10:00:00"))
    source.put("events", {"id": 1, "at": "2025-12-22T09:00:00", "name": "e1"})
    source.put("events", {"id": 2, "at": "2025-12-22T10:00:00", "name": "e2"})
    assert syncs("items", "events").success

    # Committed late, dated before the stored cursor but inside the 2h window.
    source.put("items", _item(2, "2025-12-22T09:15:00", "late"))
    source.put("items", _item(1, "2025-12-22T09:30:00", "late update"))
    source.put("events", {"id": 3, "at": "2025-12-22T09:30:00", "name": "late event"})
    result = syncs("items", "events")
    assert result.success
    assert source.sent("items")[-1]["since"] == "2025-12-22T08:00:00"  # the same shape
    assert syncs.landed() == syncs.expected()
    assert syncs.cursor() == "2025-12-22T10:00:00"  # never backwards
    events = syncs.rows("textapi_events", order="id")
    assert [e["id"] for e in events] == [1, 2, 3]  # re-read, but not re-appended

    assert syncs("items", "events").success
    assert [e["id"] for e in syncs.rows("textapi_events", order="id")] == [1, 2, 3]
    assert _metadata(result, "events")["rows_inserted"] == 1


def test_numeric_lookback(syncs: Syncs, source: TextSource) -> None:
    syncs.use(lookback=100)
    # Zero-padded so the text comparison of this server orders them as numbers.
    for i in range(1, 6):
        source.put("items", {"id": i, "updated_at": f"{i * 1000:06d}", "name": "x"})
    assert syncs().success
    assert syncs.cursor() == "005000"
    assert syncs().success
    assert source.sent("items")[-1]["since"] == "004900"


# --- 8. a full refresh reads everything --------------------------------------------------------


def test_full_refresh_ignores_cursor_initial_unless_the_spec_says_otherwise(
    syncs: Syncs, source: TextSource
) -> None:
    syncs.use(initial="2025-06-01T00:00:00")
    source.put("items", _item(1, "2025-01-01T00:00:00", "older than initial"))
    source.put("items", _item(2, "2025-07-01T00:00:00"))
    assert syncs().success
    assert list(syncs.landed()) == [2]

    full = syncs(**{FULL_REFRESH_TAG: "true"})
    assert full.success
    assert "since" not in source.sent("items")[-1]
    assert syncs.landed() == syncs.expected()

    syncs.use(initial="2025-06-01T00:00:00", initial_applies_to_full_refresh=True)
    assert syncs(**{FULL_REFRESH_TAG: "true"}).success
    assert source.sent("items")[-1]["since"] == "2025-06-01T00:00:00"


# --- 6. one writer per (integration, stream) ---------------------------------------------------


def _log_messages(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> list[str]:
    return [e.user_message for e in instance.all_logs(result.run_id)]


def _sync_outside_dagster(syncs: Syncs, run_id: str, streams: tuple[str, ...]) -> list[LoadStats]:
    """Another launcher of the same streams (a CLI, a second code server): no Dagster involved,
    only the data layer, so only the data layer can keep the two apart."""
    layer = DataLayer(database_url=syncs.database_url)
    integration = IntegrationRegistry(syncs.engine).get(INTEGRATION)
    stats = []
    with HttpConnector(**FAST).session(syncs.spec, integration) as session:
        for name in streams:
            stream = syncs.spec.stream(name)
            stats.append(
                layer.sync(
                    TableTarget.for_stream(syncs.spec, stream),
                    lambda start, stream=stream: session.read(stream, start),
                    LoadContext(
                        tenant_id="acme", integration_id=INTEGRATION, stream=name, run_id=run_id
                    ),
                )
            )
    return stats


def test_two_runs_at_once_take_turns_append_not_doubled_cursor_never_back(
    syncs: Syncs, source: TextSource, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(1, 301):
        at = f"2025-12-{1 + i // 20:02d}T00:00:00"
        source.put("events", {"id": i, "at": at, "name": f"e{i}"})
        source.put("items", _item(i, at))
    source.delay = 0.3  # 7 requests per stream: the first run holds each stream ~2 s
    # `dagster asset materialize` style: in process, no run queue in front of it.
    first: list[dg.ExecuteInProcessResult] = []
    thread = threading.Thread(target=lambda: first.append(syncs("events", "items")))
    thread.start()
    deadline = time.monotonic() + 60
    while not source.sent("events") and time.monotonic() < deadline:
        time.sleep(0.01)
    source.put("items", _item(7, "2025-12-20T00:00:00", "changed while the first run reads"))
    # A second launcher of the same integration while the first is reading.
    with caplog.at_level(logging.WARNING, logger="synkro_dagster.datalayer.state"):
        second = _sync_outside_dagster(syncs, "run-B", ("events", "items"))
    thread.join(timeout=120)
    assert first and first[0].success

    events = syncs.rows("textapi_events", order="id")
    assert len(events) == 300 and len({e["id"] for e in events}) == 300  # not appended twice
    assert second[0].rows_inserted == 0
    assert syncs.landed() == syncs.expected()  # the change made mid-run is not lost
    assert syncs.cursor() == "2025-12-20T00:00:00"
    waited = [r.getMessage() for r in caplog.records if "is being synced by run" in r.getMessage()]
    assert waited and first[0].run_id in waited[0] and "run-B waits" in waited[0]
    # The waiting run read from the cursor the first run committed, not from the start.
    assert second[0].cursor_before == _metadata(first[0], "events")["cursor_after"]


def test_a_run_that_waits_too_long_fails_naming_the_run_that_holds_the_stream(
    syncs: Syncs, source: TextSource, engine: sa.Engine
) -> None:
    source.put("items", _item(1, "2025-12-20T00:00:00"))
    syncs.lock_timeout_s = 1.0
    with engine.connect() as holder:
        holder.execute(
            sa.text("select set_config('application_name', 'synkro run holder-1', true)")
        )
        holder.execute(
            sa.text("select pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": f"synkro.stream:{INTEGRATION}/items"},
        )
        started = time.monotonic()
        result = syncs()
        waited = time.monotonic() - started
        holder.rollback()
    assert not result.success
    assert 1.0 <= waited < 30
    failure = result.failure_data_for_node("textapi_streams").error
    text = failure.message + str(result.failure_data_for_node("textapi_streams"))
    assert "holder-1" in text and "gave up" in text
    assert syncs.cursor() is None  # nothing read, nothing written
    assert source.sent("items") == []
    # Once the other run is gone the stream syncs normally.
    assert syncs().success
    assert syncs.landed() == syncs.expected()


def test_sql_text_cursor_is_bound_exactly_as_stored(database_url: str, empty_database_url: str):
    """A varchar cursor column compares as text in the source database: the stored cursor must be
    the source's own `2025-12-22 00:00:00`, not a re-formatted `2025-12-22T00:00:00`."""
    from synkro_dagster.connectors.sql import SqlConnector
    from synkro_dagster.contracts import Integration

    source = sa.create_engine(empty_database_url)
    with source.begin() as conn:
        conn.execute(
            sa.text("create table items (id int primary key, changed varchar(30), v text)")
        )
        conn.execute(
            sa.text(
                "insert into items values (1, '2025-12-21 10:00:00', 'a'),"
                " (2, '2025-12-22 00:00:00', 'b')"
            )
        )
    spec = SourceSpec.model_validate(
        {
            "name": "legacy",
            "engine": "sql",
            "streams": [
                {
                    "name": "items",
                    "primary_key": "id",
                    "cursor": {"field": "changed"},
                    "sql": {"table": "items"},
                }
            ],
        }
    )
    stream = spec.streams[0]
    layer = DataLayer(database_url=database_url)
    integration = Integration("legacy-1", "acme", "legacy", {"url": empty_database_url})

    def sync(run_id: str) -> LoadStats:
        with SqlConnector().session(spec, integration) as session:
            return layer.sync(
                TableTarget.for_stream(spec, stream),
                lambda start: session.read(stream, start),
                LoadContext(
                    tenant_id="acme", integration_id="legacy-1", stream="items", run_id=run_id
                ),
            )

    assert sync("run-1").cursor_after == "2025-12-22 00:00:00"
    with source.begin() as conn:
        conn.execute(sa.text("update items set v = 'b2' where id = 2"))
        conn.execute(sa.text("insert into items values (3, '2025-12-22 00:00:00', 'c')"))
    second = sync("run-2")
    assert second.rows_read == 2  # the boundary row and the new one at the same instant
    with sa.create_engine(database_url).connect() as conn:
        landed = conn.execute(sa.text("select id, v from public.legacy_items order by id")).all()
    assert [tuple(r) for r in landed] == [(1, "a"), (2, "b2"), (3, "c")]
    source.dispose()
