"""Deletes in the data layer against real PostgreSQL: sweeps after complete full reads, delete
markers, the mass-delete guard, and the numbers every mode reports (inserted / updated / deleted /
unchanged)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from synkro_dagster.contracts import BatchesPart, ReadStats, StreamRead
from synkro_dagster.datalayer.deletes import Marker, MassDeleteBlocked
from synkro_dagster.datalayer.resource import DataLayer, LoadContext, LoadStats, TableTarget
from synkro_dagster_tests.test_datalayer import FilePart

TABLE = "shop_items"


@pytest.fixture
def layer(database_url: str) -> DataLayer:
    return DataLayer(database_url=database_url)


def target(mode: str = "merge", pk: list[str] | None = None, **deletes) -> TableTarget:
    return TableTarget(
        schema="public",
        table=TABLE,
        primary_key=["id"] if pk is None else pk,
        write_mode=mode,  # type: ignore[arg-type]
        **deletes,
    )


def context(integration: str = "acme", tenant: str = "A", **flags) -> LoadContext:
    return LoadContext(
        tenant_id=tenant, integration_id=integration, stream="items", run_id="run-1", **flags
    )


def read(records: list[dict], total: int | None = None) -> StreamRead:
    return StreamRead(
        parts=iter([BatchesPart(iter([list(records)]))]), stats=ReadStats(source_total=total)
    )


def items(*ids: int, **fields) -> list[dict]:
    return [{"id": i, "name": f"item {i}", **fields} for i in ids]


def landed(engine: sa.Engine, integration: str = "acme") -> dict[int, bool]:
    """id -> soft-deleted? for the integration's rows."""
    with engine.connect() as conn:
        columns = {
            r[0]
            for r in conn.execute(
                sa.text("select column_name from information_schema.columns where table_name = :t"),
                {"t": TABLE},
            )
        }
        deleted = "_synkro_deleted_at is not null" if "_synkro_deleted_at" in columns else "false"
        found = conn.execute(
            sa.text(f"select id, {deleted} from {TABLE} where integration_id = :i order by id"),
            {"i": integration},
        )
        return {row[0]: row[1] for row in found}


def changes(stats: LoadStats) -> tuple[int, int, int, int]:
    return stats.rows_inserted, stats.rows_updated, stats.rows_deleted, stats.rows_unchanged


# --- what changed, in every mode ------------------------------------------------------------


def test_replace_reports_what_really_changed(layer: DataLayer, engine: sa.Engine) -> None:
    keyed = target("replace")
    assert changes(layer.load(keyed, read(items(1, 2, 3)), context())) == (3, 0, 0, 0)
    # The same rows again: nothing deleted, nothing inserted, nothing rewritten.
    assert changes(layer.load(keyed, read(items(1, 2, 3)), context())) == (0, 0, 0, 3)
    changed = [*items(1, 2), {"id": 3, "name": "renamed"}, *items(4)]
    assert changes(layer.load(keyed, read(changed), context())) == (1, 1, 0, 2)
    assert changes(layer.load(keyed, read(changed[1:]), context())) == (0, 0, 1, 3)
    assert landed(engine) == {2: False, 3: False, 4: False}


def test_replace_without_a_key_compares_whole_rows(layer: DataLayer, engine: sa.Engine) -> None:
    loose = target("replace", pk=[])
    rows = [{"sku": "A", "qty": 1}, {"sku": "A", "qty": 1}, {"sku": "B", "qty": None}]
    assert changes(layer.load(loose, read(rows), context())) == (3, 0, 0, 0)
    assert changes(layer.load(loose, read(rows), context())) == (0, 0, 0, 3)
    # One of the two equal rows goes, one new row comes.
    after = [{"sku": "A", "qty": 1}, {"sku": "B", "qty": None}, {"sku": "C", "qty": 2}]
    assert changes(layer.load(loose, read(after), context())) == (1, 0, 1, 2)
    with engine.connect() as conn:
        landed_rows = conn.exec_driver_sql(f"select sku, qty from {TABLE} order by sku").all()
    assert [tuple(r) for r in landed_rows] == [("A", 1), ("B", None), ("C", 2)]


def test_merge_and_append_report_unchanged_rows(layer: DataLayer) -> None:
    merge = target("merge")
    layer.load(merge, read(items(1, 2, 3)), context())
    again = layer.load(merge, read([*items(1, 2), {"id": 3, "name": "new"}, *items(4)]), context())
    assert changes(again) == (1, 1, 0, 2)
    assert again.as_metadata()["rows_unchanged"] == 2

    append = TableTarget(
        schema="public", table="log", primary_key=[], write_mode="append", cursor_field="at"
    )
    layer.load(append, read([{"at": 1}, {"at": 2}]), context())
    assert changes(layer.load(append, read([{"at": 2}, {"at": 3}]), context())) == (1, 0, 0, 1)


# --- sweeps ----------------------------------------------------------------------------------


def test_soft_sweep_marks_missing_rows_and_clears_them_when_they_return(
    layer: DataLayer, engine: sa.Engine
) -> None:
    soft = target(sweep="soft")
    layer.load(soft, read(items(1, 2, 3, 4)), context())
    layer.load(soft, read(items(1, 2)), context("other"))  # another integration, same table
    stats = layer.load(soft, read(items(1, 2, 3)), context())
    assert changes(stats) == (0, 0, 1, 3)
    assert stats.deletes == "soft sweep: 1 row(s)"
    assert landed(engine) == {1: False, 2: False, 3: False, 4: True}
    assert landed(engine, "other") == {1: False, 2: False}

    # Swept again: an already soft-deleted row is not deleted twice.
    assert changes(layer.load(soft, read(items(1, 2, 3)), context())) == (0, 0, 0, 3)
    back = layer.load(soft, read(items(1, 2, 3, 4)), context())
    assert changes(back) == (0, 1, 0, 3)
    assert landed(engine) == {1: False, 2: False, 3: False, 4: False}


def test_hard_sweep_deletes_missing_rows(layer: DataLayer, engine: sa.Engine) -> None:
    hard = target(sweep="hard")
    layer.load(hard, read(items(1, 2, 3)), context())
    stats = layer.load(hard, read(items(1, 3, 5)), context())
    assert changes(stats) == (1, 0, 1, 2)
    assert landed(engine) == {1: False, 3: False, 5: False}


def test_no_sweep_after_an_incomplete_read(layer: DataLayer, engine: sa.Engine) -> None:
    soft = target(sweep="soft")
    layer.load(soft, read(items(1, 2, 3)), context())

    # The source said it has 3 records but only 2 came: completeness fails, nothing swept.
    short = layer.load(soft, read(items(1, 2), total=3), context())
    assert short.rows_deleted == 0
    assert short.deletes == "soft sweep skipped: read 2 rows of the 3 the source reported"

    # A rejected file: the read is partial, nothing swept.
    good, bad = FilePart("a.csv", [items(1)]), FilePart("b.csv", [items(2), ["bad"]])
    partial = layer.load(soft, StreamRead(parts=iter([good, bad])), context())
    assert (partial.parts_rejected, partial.rows_deleted) == (1, 0)
    assert "1 part(s) rejected" in (partial.deletes or "")

    # A cursor stream's incremental read returns only changes: no sweep; a full read does.
    incremental = TableTarget(
        schema="public", table=TABLE, primary_key=["id"], write_mode="merge",
        cursor_field="id", sweep="soft",
    )  # fmt: skip
    assert layer.load(incremental, read(items(3)), context()).rows_deleted == 0
    assert landed(engine) == {1: False, 2: False, 3: False}
    full = layer.load(incremental, read(items(2, 3)), context(reads_whole_source=True))
    assert full.rows_deleted == 1
    assert landed(engine) == {1: True, 2: False, 3: False}


def test_sweep_keeps_rls_and_the_status_view_working(layer: DataLayer, engine: sa.Engine) -> None:
    soft = target(sweep="soft")
    layer.load(soft, read(items(1, 2)), context("acme", tenant="A"))
    layer.load(soft, read(items(1, 2)), context("bolt", tenant="B"))
    layer.load(soft, read(items(1, 2, 3)), context("acme", tenant="A"))
    layer.load(soft, read(items(1, 3)), context("acme", tenant="A"))

    with engine.begin() as conn:
        conn.exec_driver_sql("set local role authenticated")
        conn.exec_driver_sql(
            "select set_config('request.jwt.claims', '{\"tenant_id\":\"A\"}', true)"
        )
        seen = conn.exec_driver_sql(
            f"select integration_id, id, _synkro_deleted_at is not null from {TABLE} order by id"
        ).all()
        status = conn.exec_driver_sql(
            "select integration_id, stream from public.synkro_sync_status"
        ).all()
    assert [tuple(r) for r in seen] == [("acme", 1, False), ("acme", 2, True), ("acme", 3, False)]
    assert [tuple(r) for r in status] == [("acme", "items")]


# --- markers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("marker", "deleted", "alive"),
    [
        (Marker("status", "deleted"), {"status": "deleted"}, {"status": "active"}),
        (Marker("is_deleted"), {"is_deleted": True}, {"is_deleted": False}),
        (Marker("deleted_at"), {"deleted_at": "2026-01-02T00:00:00Z"}, {"deleted_at": None}),
    ],
)
def test_marker_soft_deletes_by_the_source_flag(
    layer: DataLayer, engine: sa.Engine, marker: Marker, deleted: dict, alive: dict
) -> None:
    marked = TableTarget(
        schema="public", table=TABLE, primary_key=["id"], write_mode="merge",
        cursor_field="updated_at", marker=marker,
    )  # fmt: skip
    layer.load(marked, read(items(1, 2, 3, updated_at=1, **alive)), context())
    # An incremental read: record 2 comes back marked, 1 and 3 are not in it at all.
    stats = layer.load(marked, read(items(2, updated_at=2, **deleted)), context())
    assert changes(stats) == (0, 0, 1, 0)
    assert landed(engine) == {1: False, 2: True, 3: False}
    # Marked again: still one deletion, counted once.
    assert layer.load(marked, read(items(2, updated_at=2, **deleted)), context()).rows_deleted == 0
    # Unmarked in the source: live again.
    back = layer.load(marked, read(items(2, updated_at=3, **alive)), context())
    assert changes(back) == (0, 1, 0, 0)
    assert landed(engine) == {1: False, 2: False, 3: False}


def test_hard_marker_deletes_and_judges_the_latest_version(
    layer: DataLayer, engine: sa.Engine
) -> None:
    marked = TableTarget(
        schema="public", table=TABLE, primary_key=["id"], write_mode="merge",
        cursor_field="updated_at", marker=Marker("status", "deleted", hard=True),
    )  # fmt: skip
    layer.load(marked, read(items(1, 2, 3, status="active", updated_at=1)), context())
    page = [
        *items(1, status="deleted", updated_at=2),
        *items(2, status="deleted", updated_at=2),
        *items(2, status="active", updated_at=3),  # restored after its deletion: it stays
        *items(9, status="deleted", updated_at=3),  # deleted before it was ever landed
    ]
    stats = layer.load(marked, read(page), context())
    assert (stats.rows_deleted, stats.rows_inserted, stats.rows_updated) == (1, 0, 1)
    assert landed(engine) == {2: False, 3: False}


# --- the mass-delete guard -------------------------------------------------------------------


def state(engine: sa.Engine) -> tuple:
    with engine.connect() as conn:
        cursor = conn.exec_driver_sql(
            "select cursor, last_run_id from synkro.sync_state where integration_id = 'acme'"
        ).one()
        count = conn.exec_driver_sql(
            f"select count(*) from {TABLE} where integration_id = 'acme'"
        ).scalar()
    return tuple(cursor), count


def test_an_empty_read_never_wipes_a_replace_table(layer: DataLayer, engine: sa.Engine) -> None:
    replace = target("replace")
    layer.load(replace, read(items(1, 2, 3, 4)), context())
    before = state(engine)
    with pytest.raises(MassDeleteBlocked) as blocked:
        layer.load(replace, read([]), context(full_refresh=True))
    message = str(blocked.value)
    assert "stream 'items' (integration acme, table public.shop_items)" in message
    assert "remove 4 of 4 rows (100%)" in message and "max_delete_fraction 0.5" in message
    assert "synkro/allow_mass_delete=true" in message
    assert state(engine) == before
    # Three of four rows gone is too many as well; two of four is not.
    with pytest.raises(MassDeleteBlocked):
        layer.load(replace, read(items(1)), context())
    assert changes(layer.load(replace, read(items(1, 2)), context())) == (0, 0, 2, 2)

    # The explicit override, or a stream that allows it, lets the wipe through.
    assert layer.load(replace, read([]), context(allow_mass_delete=True)).rows_deleted == 2
    layer.load(replace, read(items(1, 2)), context())
    unlimited = target("replace", max_delete_fraction=1.0)
    assert layer.load(unlimited, read([]), context()).rows_deleted == 2


def test_a_sweep_removing_too_much_changes_nothing(layer: DataLayer, engine: sa.Engine) -> None:
    soft = target(sweep="soft")
    layer.load(soft, read(items(1, 2, 3, 4)), context())
    before = state(engine)
    for records in ([], items(1), items(1, 5, 6, 7)):
        with pytest.raises(MassDeleteBlocked, match="soft sweep would remove"):
            layer.load(soft, read(records), context())
        assert state(engine) == before
        assert landed(engine) == {1: False, 2: False, 3: False, 4: False}
    stats = layer.load(soft, read([]), context(allow_mass_delete=True))
    assert stats.rows_deleted == 4
    assert landed(engine) == {1: True, 2: True, 3: True, 4: True}


def test_replace_compares_values_as_the_declared_type_stores_them(layer: DataLayer) -> None:
    sized = target("replace", column_hints={"price": "numeric(8,2)"})
    rows = [{"id": 1, "price": "1.1"}, {"id": 2, "price": "2.50"}]
    layer.load(sized, read(rows), context())
    assert changes(layer.load(sized, read(rows), context())) == (0, 0, 0, 2)


def test_history_closes_deleted_keys_only_after_a_complete_read_within_the_guard(
    layer: DataLayer, engine: sa.Engine
) -> None:
    history = target("history")

    def current() -> list[int]:
        with engine.connect() as conn:
            found = conn.exec_driver_sql(
                f"select id from {TABLE} where _synkro_is_current order by id"
            ).all()
        return [row[0] for row in found]

    layer.load(history, read(items(1, 2, 3, 4)), context())
    # The source said 4 but only 3 came: no key is closed.
    assert layer.load(history, read(items(1, 2, 3), total=4), context()).rows_deleted == 0
    assert current() == [1, 2, 3, 4]
    # A cut-short answer would close 3 of 4 keys: refused, nothing changes.
    with pytest.raises(MassDeleteBlocked, match="close of deleted keys would remove 3 of 4"):
        layer.load(history, read(items(1)), context())
    assert current() == [1, 2, 3, 4]
    assert layer.load(history, read(items(1, 2, 3)), context()).rows_deleted == 1
    assert current() == [1, 2, 3]
