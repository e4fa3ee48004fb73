"""Hostile files are refused before they take the run's memory, each quarantined with a reason
naming the file, the place and the limit (and how to raise it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from synkro_dagster.connectors.files import FileDropConnector
from synkro_dagster.datalayer.resource import DataLayer, LoadContext, TableTarget
from synkro_dagster_tests.files_corpus import drop, drops_spec, integration, read_stream, xlsx_bytes
from synkro_dagster_tests.hostile import (
    csv_one_long_line,
    deep_json,
    xlsx_ratio_bomb,
    xlsx_shared_strings_bomb,
)


def _rejected(root: Path, stream: str, name: str) -> str:
    _, drained = read_stream(root, stream)
    assert name in drained.rejected, drained
    note = (root / "acme" / "quarantine" / f"{name}.error.txt").read_text()
    assert "error: " in note
    return drained.rejected[name]


def test_an_xlsx_shared_strings_bomb_is_quarantined_before_parsing(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("SYNKRO_XLSX_MAX_SHARED_STRINGS_BYTES", "1000000")
    inbox = tmp_path / "acme"
    inbox.mkdir()
    bomb = xlsx_shared_strings_bomb(inbox / "book_1.xlsx", 3_000_000)
    assert bomb.stat().st_size < 100_000  # tiny on disk, 3 MB unpacked
    reason = _rejected(tmp_path, "sheet_orders", "book_1.xlsx")
    assert "shared-strings table xl/sharedStrings.xml unpacks to" in reason
    assert "more than 1000000" in reason and "SYNKRO_XLSX_MAX_SHARED_STRINGS_BYTES" in reason


def test_an_xlsx_part_with_a_bomb_ratio_or_total_is_quarantined(tmp_path: Path, monkeypatch):
    inbox = tmp_path / "acme"
    inbox.mkdir()
    xlsx_ratio_bomb(inbox / "first_1.xlsx", 8 * 1024 * 1024)
    reason = _rejected(tmp_path, "first_sheet", "first_1.xlsx")
    assert "part xl/worksheets/sheet1.xml unpacks" in reason and "SYNKRO_XLSX_MAX_RATIO" in reason

    monkeypatch.setenv("SYNKRO_XLSX_MAX_RATIO", "100000")
    monkeypatch.setenv("SYNKRO_XLSX_MAX_UNCOMPRESSED_BYTES", "4000000")
    xlsx_ratio_bomb(inbox / "first_2.xlsx", 8 * 1024 * 1024)
    reason = _rejected(tmp_path, "first_sheet", "first_2.xlsx")
    assert "more than the 4000000 an XLSX file may" in reason
    assert "SYNKRO_XLSX_MAX_UNCOMPRESSED_BYTES" in reason


def test_an_ordinary_xlsx_still_loads(tmp_path: Path) -> None:
    drop(tmp_path / "acme", "first_1.xlsx", xlsx_bytes({"S": [["id", "amount"], [1, 2.5]]}))
    _, drained = read_stream(tmp_path, "first_sheet")
    assert drained.rejected == {} and len(drained.all_records()) == 1


def test_a_csv_with_an_endless_line_is_quarantined_naming_line_and_limit(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("SYNKRO_CSV_MAX_LINE_BYTES", "1000000")
    inbox = tmp_path / "acme"
    inbox.mkdir()
    csv_one_long_line(inbox / "orders_1.csv", 3_000_000, header="id,amount\n")
    reason = _rejected(tmp_path, "orders", "orders_1.csv")
    assert "orders_1.csv line 2: longer than 1000000 bytes" in reason
    assert "SYNKRO_CSV_MAX_LINE_BYTES" in reason
    # An endless header line too.
    (inbox / "orders_2.csv").write_bytes(b"id," * 1_000_000)
    assert "orders_2.csv line 1: longer than" in _rejected(tmp_path, "orders", "orders_2.csv")


def test_the_csv_field_limit_is_named_and_configurable(tmp_path: Path, monkeypatch) -> None:
    long_text = "y" * 200_000  # beyond the csv module's own 131,072 default: now it loads
    drop(tmp_path / "acme", "orders_1.csv", f'id,amount,note\n1,2,"{long_text}"\n')
    _, drained = read_stream(tmp_path, "orders")
    assert drained.rejected == {}
    assert drained.all_records()[0]["note"] == long_text

    monkeypatch.setenv("SYNKRO_CSV_MAX_FIELD_CHARS", "1000")
    drop(tmp_path / "acme", "orders_2.csv", f'id,amount,note\n1,2,ok\n2,3,"{"z" * 5000}"\n')
    reason = _rejected(tmp_path, "orders", "orders_2.csv")
    assert "orders_2.csv line 3: a field longer than 1000 characters" in reason
    assert "SYNKRO_CSV_MAX_FIELD_CHARS" in reason


@pytest.mark.parametrize(
    ("stream", "name", "content", "where"),
    [
        ("json_array", "array_1.json", '[{"id": 1},\n {"id": 2, "x": "a\\udc00"}]', "line 2, column 19"),
        ("events", "events_1.ndjson", '{"id": 1}\n{"id": 2, "x": "\\ud800"}\n', "line 2, column 17"),
    ],
)  # fmt: skip
def test_a_lone_surrogate_in_a_json_file_is_named_not_turned_into_a_question_mark(
    tmp_path: Path, stream: str, name: str, content: str, where: str
) -> None:
    drop(tmp_path / "acme", name, content)
    reason = _rejected(tmp_path, stream, name)
    assert f"{name} {where}: a lone UTF-16 surrogate escape" in reason


def test_deep_json_and_bare_values_in_files_are_clear_errors(tmp_path: Path, monkeypatch):
    drop(tmp_path / "acme", "array_1.json", deep_json(100_000))
    assert "nested more than 100 levels deep" in _rejected(tmp_path, "json_array", "array_1.json")
    drop(tmp_path / "acme", "events_1.ndjson", '{"id": 1}\n"just text"\n')
    reason = _rejected(tmp_path, "events", "events_1.ndjson")
    assert "events_1.ndjson line 2: is a str, not an object" in reason
    monkeypatch.setenv("SYNKRO_JSON_MAX_DEPTH", "10")
    drop(tmp_path / "acme", "array_2.json", deep_json(20))
    reason = _rejected(tmp_path, "json_array", "array_2.json")
    assert "more than 10 levels deep" in reason and "SYNKRO_JSON_MAX_DEPTH" in reason


def test_a_hostile_file_is_quarantined_and_the_good_ones_land(
    database_url: str, engine: sa.Engine, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("SYNKRO_CSV_MAX_LINE_BYTES", "100000")
    inbox = tmp_path / "acme"
    drop(inbox, "orders_1.csv", "id,amount\n1,10\n")
    csv_one_long_line(inbox / "orders_2.csv", 500_000, header="id,amount\n")
    source = drops_spec()
    stream = source.stream("orders")
    connector = FileDropConnector(inbox_root=str(tmp_path), stable_seconds=0)
    with connector.session(source, integration("acme")) as session:
        stats = DataLayer(database_url=database_url).load(
            TableTarget.for_stream(source, stream),
            session.read(stream, None),
            LoadContext(tenant_id="tenant-a", integration_id="acme", stream="orders", run_id="r"),
        )
    assert stats.parts_rejected == 1 and stats.parts_loaded == 1
    with engine.connect() as conn:
        assert conn.exec_driver_sql("select id from drops_orders").scalars().all() == [1]
    assert (inbox / "quarantine" / "orders_2.csv").is_file()
