# ruff: noqa: F811 - pytest fixtures imported from test_assets are parameters here
"""Deletes end to end: a sync run (dg.materialize on a partition) against the real local API server
and the real PostgreSQL data layer — source deletions propagate, an empty answer never wipes a
table, and a sweep never follows a read that failed."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from synkro_dagster.demo.api_server import ApiServer
from synkro_dagster.specs import SourceSpec
from synkro_dagster.specs.models import DeleteMarker
from synkro_dagster.tags import ALLOW_MASS_DELETE_TAG, FULL_REFRESH_TAG
from synkro_dagster_tests.test_assets import (  # noqa: F401 - fixtures
    INTEGRATION,
    Sync,
    _cursor,
    _metadata,
    api,
    instance,
    registry,
    specs_folder,
    sync,
    testapi,
)
from synkro_dagster_tests.testapi import ITEMS


def _with(spec: SourceSpec, stream: str, **changes: Any) -> SourceSpec:
    return spec.model_copy(
        update={
            "streams": [
                s.model_copy(update=changes) if s.name == stream else s for s in spec.streams
            ]
        }
    )


def _landed(engine: sa.Engine, table: str) -> dict[int, bool]:
    """id -> soft-deleted? for the integration's rows."""
    with engine.connect() as conn:
        has_flag = conn.execute(
            sa.text(
                "select 1 from information_schema.columns"
                " where table_name = :t and column_name = '_synkro_deleted_at'"
            ),
            {"t": table},
        ).first()
        flag = "_synkro_deleted_at is not null" if has_flag else "false"
        return {
            row[0]: row[1]
            for row in conn.execute(
                sa.text(f'select id, {flag} from public."{table}" where integration_id = :i'),
                {"i": INTEGRATION},
            )
        }


def _failure(result: dg.ExecuteInProcessResult) -> str:
    """The failed streams' messages of a failed sync run."""
    failure = result.failure_data_for_node("testapi_streams").user_failure_data
    return str(failure.metadata["failed_streams"].value)


@pytest.fixture
def run(testapi: SourceSpec, instance, database_url, registry, sync) -> Any:
    """Sync with a changed testapi spec: run(spec_changes)(streams, **tags)."""

    def with_spec(stream: str, **changes: Any) -> Sync:
        return Sync(_with(testapi, stream, **changes), instance, database_url)

    return with_spec


def test_an_empty_answer_never_wipes_a_replace_table(
    run,
    engine: sa.Engine,
    api: ApiServer,
) -> None:
    job = run("single", cursor=None, write_mode="replace")
    assert job(["single"]).success
    assert len(_landed(engine, "testapi_single")) == ITEMS
    cursor = _cursor(engine, "single")

    # The API now answers 200 with an empty list.
    api.store.delete("test.items", *[r["id"] for r in api.store.records("test.items")])
    for tags in ({}, {FULL_REFRESH_TAG: "true"}):
        failed = job(["single"], **tags)
        assert not failed.success
        message = _failure(failed)
        assert "would remove 253 of 253 rows (100%)" in message
        assert "max_delete_fraction 0.5" in message and ALLOW_MASS_DELETE_TAG in message
        assert len(_landed(engine, "testapi_single")) == ITEMS
        assert _cursor(engine, "single") == cursor

    allowed = job(["single"], **{ALLOW_MASS_DELETE_TAG: "true"})
    assert allowed.success
    assert _metadata(allowed, "single")["rows_deleted"] == ITEMS
    assert _landed(engine, "testapi_single") == {}


def test_a_replace_reports_only_what_changed(run, engine: sa.Engine, api: ApiServer) -> None:
    job = run("single", cursor=None, write_mode="replace")
    assert job(["single"]).success
    api.store.update("test.items", 3, name="renamed")
    api.store.delete("test.items", 4)
    meta = _metadata(job(["single"]), "single")
    assert (meta["rows_inserted"], meta["rows_updated"], meta["rows_deleted"]) == (0, 1, 1)
    assert meta["rows_unchanged"] == ITEMS - 2


def test_a_source_deletion_is_soft_deleted_and_comes_back(
    sync: Sync,
    engine: sa.Engine,
    api: ApiServer,
) -> None:
    # `bearer` is a merge stream without cursor: `deletes: soft` by default. Its first load goes
    # straight into the new table; the sweep after it has nothing to remove.
    first = _metadata(sync(["bearer"]), "bearer")
    assert first["load_path"] == "direct" and first["deletes"] == "soft sweep: 0 row(s)"
    api.store.delete("test.items", 5, 6)
    result = sync(["bearer"])
    meta = _metadata(result, "bearer")
    assert meta["rows_deleted"] == 2 and meta["rows_unchanged"] == ITEMS - 2
    assert meta["deletes"] == "soft sweep: 2 row(s)"
    landed = _landed(engine, "testapi_bearer")
    assert sorted(i for i, deleted in landed.items() if deleted) == [5, 6]

    # A client app of the tenant sees the flag through RLS; the status view still answers.
    with engine.begin() as conn:
        conn.exec_driver_sql("set local role authenticated")
        conn.exec_driver_sql(
            "select set_config('request.jwt.claims', '{\"tenant_id\":\"acme\"}', true)"
        )
        live = conn.exec_driver_sql(
            "select count(*) from testapi_bearer where _synkro_deleted_at is null"
        ).scalar()
        status = conn.exec_driver_sql(
            "select stream from public.synkro_sync_status where stream = 'bearer'"
        ).all()
    assert live == ITEMS - 2 and len(status) == 1

    api.store.upsert("test.items", {"id": 5, "name": "back", "value": 1})
    back = _metadata(sync(["bearer"]), "bearer")
    assert back["rows_updated"] == 1 and back["rows_deleted"] == 0
    assert sorted(i for i, d in _landed(engine, "testapi_bearer").items() if d) == [6]


def test_no_sweep_after_a_read_that_failed(run, engine: sa.Engine, api: ApiServer) -> None:
    job = run("page_number", cursor=None, deletes="hard")
    first = _metadata(job(["page_number"]), "page_number")
    assert first["load_path"] == "direct" and first["deletes"] == "hard sweep: 0 row(s)"
    api.store.delete("test.items", 1, 2, 3)
    api.fail_after_page("/test/page_number", pages=3, status=503)
    assert not job(["page_number"]).success
    assert len(_landed(engine, "testapi_page_number")) == ITEMS
    api.clear_faults()
    meta = _metadata(job(["page_number"]), "page_number")
    assert meta["rows_deleted"] == 3
    assert len(_landed(engine, "testapi_page_number")) == ITEMS - 3


def test_a_delete_marker_removes_rows_of_an_incremental_stream(
    run,
    engine: sa.Engine,
    api: ApiServer,
) -> None:
    marker = DeleteMarker(marker="status=deleted", mode="hard")
    job = run("page_number", deletes=marker)
    assert job(["page_number"]).success
    api.store.update("test.items", 7, status="deleted")
    api.store.update("test.items", 8, status="active")
    meta = _metadata(job(["page_number"]), "page_number")
    assert (meta["rows_deleted"], meta["rows_updated"]) == (1, 1)
    landed = _landed(engine, "testapi_page_number")
    assert 7 not in landed and 8 in landed and len(landed) == ITEMS - 1
