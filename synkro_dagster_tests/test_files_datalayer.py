"""Files land through the real data layer exactly once: a file left in the inbox after its commit
is skipped by its hash, a crash before the commit loses nothing, bad files are quarantined while
the good ones of the same drop load."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from synkro_dagster.connectors.files import FileDropConnector, FilePart
from synkro_dagster.contracts import StreamRead
from synkro_dagster.datalayer.resource import DataLayer, LoadContext, TableTarget
from synkro_dagster.specs import load_specs
from synkro_dagster.specs.models import SourceSpec
from synkro_dagster_tests.files_corpus import drop, drops_spec, integration

SAMPLES = Path(__file__).resolve().parents[1] / "synkro_dagster/demo/samples/onec"


def _sync(
    database_url: str, root: Path, source: SourceSpec, stream: str, run_id: str = "run-1"
) -> tuple[StreamRead, object]:
    connector = FileDropConnector(inbox_root=str(root), stable_seconds=0)
    spec = source.stream(stream)
    with connector.session(source, integration("acme", source.name)) as session:
        read = session.read(spec, None)
        stats = DataLayer(database_url=database_url).load(
            TableTarget.for_stream(source, spec),
            read,
            LoadContext(tenant_id="tenant-a", integration_id="acme", stream=stream, run_id=run_id),
        )
    return read, stats


def _rows(engine: sa.Engine, query: str) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(query))]


def test_onec_samples_land_and_a_bad_file_is_quarantined(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    inbox = tmp_path / "acme"
    for age, sample in enumerate(sorted(SAMPLES.iterdir(), reverse=True), start=1):
        drop(inbox, sample.name, sample.read_bytes(), age=100 * age)
    bad = "НомерДокумента;ДатаДокумента;НомерСтроки\r\nРТ-1;32.11.2026;1\r\n".encode("cp1251")
    drop(inbox, "sales_2026-11-03.csv", bad, age=10)
    source = load_specs()["onec"]

    _, goods = _sync(database_url, tmp_path, source, "nomenclature")
    read, sales = _sync(database_url, tmp_path, source, "sales")

    assert goods.rows_inserted == 6
    assert (sales.parts_loaded, sales.parts_rejected) == (2, 1)
    assert (read.stats.files, read.stats.files_rejected, read.stats.records) == (2, 1, 7)
    # sales_2026-11-02 corrects line 2 of РТ-000101; it is newer, so it wins.
    assert _rows(
        engine,
        "select quantity, amount, comment from public.onec_sales "
        "where doc_number = 'РТ-000101' and line_no = 2",
    ) == [(Decimal("10"), Decimal("645.00"), "исправлено: 10 шт")]
    assert _rows(engine, "select count(*), sum(amount) from public.onec_sales") == [
        (6, Decimal("29311.75"))
    ]
    assert _rows(
        engine, "select data_type from information_schema.columns where column_name = 'doc_date'"
    ) == [("date",)]
    report = (inbox / "quarantine" / "sales_2026-11-03.csv.error.txt").read_text("utf-8")
    assert "line 2, column 'doc_date': '32.11.2026' is not a date (format %d.%m.%Y)" in report
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == sorted(
        p.name for p in SAMPLES.iterdir()
    )
    recorded = _rows(
        engine, "select file_name, rows_loaded from synkro.processed_files order by file_name"
    )
    assert recorded == [
        ("nomenclature_2026-11-01.csv", 6),
        ("sales_2026-11-01.csv", 4),
        ("sales_2026-11-02.csv", 3),
    ]


def test_a_file_left_in_the_inbox_after_its_commit_is_not_loaded_twice(
    database_url: str, engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = drops_spec()  # 'events' is an append stream: a second load would duplicate rows
    inbox = tmp_path / "acme"
    drop(inbox, "events_1.ndjson", '{"id": 1, "at": "2026-11-01T10:00:00"}\n{"id": 2}\n')
    # The process dies after the commit, before the file is moved.
    monkeypatch.setattr(FilePart, "after_commit", lambda self: None)
    _, first = _sync(database_url, tmp_path, source, "events", "run-1")
    assert first.rows_inserted == 2
    assert (inbox / "events_1.ndjson").exists()
    monkeypatch.undo()

    _, rerun = _sync(database_url, tmp_path, source, "events", "run-2")
    assert (rerun.parts_skipped, rerun.rows_inserted) == (1, 0)
    assert _rows(engine, "select count(*) from public.drops_events") == [(2,)]
    assert not (inbox / "events_1.ndjson").exists()
    assert (inbox / "processed" / "events_1.ndjson").exists()

    # The same upload (name and content) arriving again is a duplicate: skipped.
    drop(inbox, "events_1.ndjson", '{"id": 1, "at": "2026-11-01T10:00:00"}\n{"id": 2}\n')
    _, again = _sync(database_url, tmp_path, source, "events", "run-3")
    assert (again.parts_skipped, again.rows_inserted) == (1, 0)
    assert _rows(engine, "select count(*) from public.drops_events") == [(2,)]


def test_repeated_syncs_with_no_new_files_change_nothing(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    source = drops_spec()
    drop(tmp_path / "acme", "events_1.ndjson", '{"id": 1}\n{"id": 2}\n')
    _sync(database_url, tmp_path, source, "events", "run-1")
    for run in ("run-2", "run-3"):
        _, stats = _sync(database_url, tmp_path, source, "events", run)
        assert (stats.parts_loaded, stats.parts_skipped, stats.rows_inserted) == (0, 0, 0)
    assert _rows(engine, "select count(*) from public.drops_events") == [(2,)]


def test_a_crash_before_the_commit_loses_nothing(
    database_url: str, engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = drops_spec()
    inbox = tmp_path / "acme"
    drop(inbox, "events_1.ndjson", '{"id": 1}\n', age=20)
    drop(inbox, "events_2.ndjson", '{"id": 2}\n', age=10)
    original = FilePart.batches

    def dies_on_the_second_file(self):
        if self.name == "events_2.ndjson":
            raise ConnectionResetError("the share went away")
        yield from original(self)

    monkeypatch.setattr(FilePart, "batches", dies_on_the_second_file)
    with pytest.raises(ConnectionResetError):
        _sync(database_url, tmp_path, source, "events", "run-1")
    monkeypatch.undo()
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == [
        "events_1.ndjson",
        "events_2.ndjson",
    ]
    assert _rows(engine, "select count(*) from synkro.processed_files") == [(0,)]

    _, stats = _sync(database_url, tmp_path, source, "events", "run-2")
    assert (stats.parts_loaded, stats.rows_inserted) == (2, 2)
    assert _rows(engine, "select id from public.drops_events order by id") == [(1,), (2,)]


def test_a_half_written_file_is_not_read_until_it_is_renamed(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    source = drops_spec()
    inbox = tmp_path / "acme"
    partial = drop(inbox, "events_1.ndjson.tmp", '{"id": 1}\n{"id": 2, "at": "2026-1')
    _, stats = _sync(database_url, tmp_path, source, "events")
    assert (stats.parts_loaded, stats.parts_rejected) == (0, 0)
    assert partial.exists()
    with partial.open("a") as handle:
        handle.write('1-01T10:00:00"}\n')
    shutil.move(partial, inbox / "events_1.ndjson")
    _, stats = _sync(database_url, tmp_path, source, "events", "run-2")
    assert (stats.parts_loaded, stats.rows_inserted) == (1, 2)
