"""File drops behave like a client's real exports, against real PostgreSQL: a drop is an upload
(the latest export wins, even with old bytes), files of a run land oldest export first, any error
a file's content causes quarantines that file alone with a one-line reason, quoted empty strings
stay empty strings, and a guessed encoding is refused instead of misread."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from synkro_dagster.connectors.files import FileDropConnector
from synkro_dagster.connectors.files_inbox import split_reason
from synkro_dagster.contracts import StreamRead
from synkro_dagster.datalayer.load import LoadStats
from synkro_dagster.datalayer.resource import DataLayer, LoadContext, TableTarget
from synkro_dagster.specs.models import SourceSpec
from synkro_dagster_tests.files_corpus import (
    corpus,
    drop,
    drops_spec,
    good_files,
    integration,
    sha256,
)


def _sync(
    database_url: str, root: Path, stream: str, source: SourceSpec | None = None, run: str = "r1"
) -> tuple[StreamRead, LoadStats]:
    source = source or drops_spec()
    connector = FileDropConnector(inbox_root=str(root), stable_seconds=0)
    spec = source.stream(stream)
    with connector.session(source, integration("acme", source.name)) as session:
        read = session.read(spec, None)
        stats = DataLayer(database_url=database_url).load(
            TableTarget.for_stream(source, spec),
            read,
            LoadContext(tenant_id="tenant-a", integration_id="acme", stream=stream, run_id=run),
        )
    return read, stats


def _rows(engine: sa.Engine, query: str) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(query))]


def _with_stream_files(stream: str, **files: Any) -> SourceSpec:
    raw = drops_spec().model_dump(by_alias=True, exclude_none=True)
    for item in raw["streams"]:
        if item["name"] == stream:
            item["files"].update(files)
    return SourceSpec.model_validate(raw)


def _error_txt(inbox: Path, name: str) -> str:
    return (inbox / "quarantine" / f"{name}.error.txt").read_text(encoding="utf-8")


# -- 1. identity: an upload, not a content ------------------------------------------------------


def test_a_re_export_with_the_bytes_of_an_older_export_loads_and_the_latest_export_wins(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    inbox = tmp_path / "acme"
    export_a = b"id,amount\n1,0.1\n"
    drop(inbox, "orders_a.csv", export_a)
    _sync(database_url, tmp_path, "orders", run="r1")
    drop(inbox, "orders_b.csv", b"id,amount\n1,0.2\n")
    _sync(database_url, tmp_path, "orders", run="r2")
    assert _rows(engine, "select amount from public.drops_orders") == [(Decimal("0.2"),)]

    # The stock level went back: export C has exactly the bytes of A, under its own name.
    drop(inbox, "orders_c.csv", export_a)
    _, stats = _sync(database_url, tmp_path, "orders", run="r3")

    assert (stats.parts_loaded, stats.parts_skipped) == (1, 0)
    assert _rows(engine, "select amount from public.drops_orders") == [(Decimal("0.1"),)]
    assert _rows(
        engine, "select file_name, content_hash from synkro.processed_files order by file_name"
    ) == [
        ("orders_a.csv", sha256(export_a)),
        ("orders_b.csv", sha256(b"id,amount\n1,0.2\n")),
        ("orders_c.csv", sha256(export_a)),
    ]


def test_the_same_upload_arriving_twice_is_skipped(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    inbox = tmp_path / "acme"
    drop(inbox, "events_1.ndjson", '{"id": 1}\n{"id": 2}\n')
    _sync(database_url, tmp_path, "events", run="r1")
    drop(inbox, "events_1.ndjson", '{"id": 1}\n{"id": 2}\n')  # the sender retried
    _, stats = _sync(database_url, tmp_path, "events", run="r2")
    assert (stats.parts_loaded, stats.parts_skipped) == (0, 1)
    assert _rows(engine, "select count(*) from public.drops_events") == [(2,)]
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == [
        "events_1.1.ndjson",
        "events_1.ndjson",
    ]


def test_the_manifest_export_id_is_part_of_the_upload(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    inbox = tmp_path / "acme"
    content = b'{"id": 1}\n'
    for run, export in (("r1", "2026-11-27/1"), ("r2", "2026-11-28/1"), ("r3", "2026-11-28/1")):
        drop(inbox, "events_daily.ndjson", content)
        drop(inbox, "events_daily.ndjson.sha256", f"{sha256(content)}\n# export_id: {export}\n")
        _, stats = _sync(database_url, tmp_path, "events", run=run)
        # Same name and bytes: a new export id is a new export; the same one again is a repeat.
        assert stats.parts_loaded == (0 if run == "r3" else 1)
    assert _rows(engine, "select count(*) from public.drops_events") == [(2,)]
    assert _rows(engine, "select export_id from synkro.processed_files order by processed_at") == [
        ("2026-11-27/1",),
        ("2026-11-28/1",),
    ]


def test_an_append_stream_can_opt_in_to_dedupe_by_content(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    inbox = tmp_path / "acme"
    source = _with_stream_files("events", dedupe="content")
    drop(inbox, "events_1.ndjson", '{"id": 1}\n{"id": 2}\n')
    _sync(database_url, tmp_path, "events", source, run="r1")
    drop(inbox, "events_1_resent.ndjson", '{"id": 1}\n{"id": 2}\n')
    _, stats = _sync(database_url, tmp_path, "events", source, run="r2")
    assert (stats.parts_loaded, stats.parts_skipped) == (0, 1)
    assert _rows(engine, "select count(*) from public.drops_events") == [(2,)]

    # Without the option the re-sent content is a new upload and appends again.
    drop(inbox, "events_1_again.ndjson", '{"id": 1}\n{"id": 2}\n')
    _, stats = _sync(database_url, tmp_path, "events", run="r3")
    assert stats.parts_loaded == 1
    assert _rows(engine, "select count(*) from public.drops_events") == [(4,)]


# -- 2. order -------------------------------------------------------------------------------------


def test_several_files_of_a_run_land_oldest_export_first(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    inbox = tmp_path / "acme"
    # Modification times in the opposite order (a copy tool set them): the names decide.
    drop(inbox, "orders_2026-11-01.csv", b"id,amount\n1,1\n2,1\n", age=10)
    drop(inbox, "orders_2026-11-02.csv", b"id,amount\n1,2\n", age=20)
    drop(inbox, "orders_2026-11-03.csv", b"id,amount\n1,3\n", age=30)
    _, stats = _sync(database_url, tmp_path, "orders")
    assert stats.parts_loaded == 3
    assert _rows(engine, "select id, amount from public.drops_orders order by id") == [
        (1, Decimal("3")),
        (2, Decimal("1")),
    ]


def test_manifest_export_timestamps_order_the_files_of_a_run(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    inbox = tmp_path / "acme"
    exports = {
        "orders_z.csv": ("2026-11-01T08:00:00Z", b"id,amount\n1,1\n"),
        "orders_a.csv": ("2026-11-03T08:00:00Z", b"id,amount\n1,3\n"),
        "orders_m.csv": ("2026-11-02T08:00:00Z", b"id,amount\n1,2\n"),
    }
    for name, (stamp, content) in exports.items():
        drop(inbox, name, content)
        drop(inbox, f"{name}.sha256", f"{sha256(content)}  {name}\n# exported_at: {stamp}\n")
    _sync(database_url, tmp_path, "orders")
    assert _rows(engine, "select amount from public.drops_orders") == [(Decimal("3"),)]


# -- 4. one bad file stays alone ----------------------------------------------------------------

STREAM_STOPPERS = [
    pytest.param(
        "orders",
        "orders_nul.csv",
        b"id,amount,note\n1,2.5,ok\n2,3.5,bad\x00byte\n",
        ["orders_nul.csv line 3, column 'note'", "'bad\\x00byte'", "NUL character"],
        id="nul-byte-in-a-value",
    ),
    pytest.param(
        "orders",
        "orders_overflow.csv",
        b"id,amount\n1,2.5\n99999999999,3.5\n",
        ["orders_overflow.csv line 3, column 'id'", "'99999999999'", "out of range for integer"],
        id="integer-overflow",
    ),
    pytest.param(
        "orders",
        "orders_widefield.csv",
        b"id,amount," + b"x" * 1_100_000 + b"\n1,2.5,3\n",
        ["orders_widefield.csv line 1", "a field longer than 1048576 characters"],
        id="csv-header-field-over-the-field-limit",
    ),
    pytest.param(
        "json_array",
        "array_deep.json",
        b'[{"id": 1, "amount": 1}, {"id": 2, "amount": 2, "tree": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}]",
        ["array_deep.json", "JSON nested more than 100 levels deep", "item.tree"],
        id="json-nested-too-deep",
    ),
]


@pytest.mark.parametrize(("stream", "name", "content", "expected"), STREAM_STOPPERS)
def test_a_file_that_used_to_stop_the_stream_is_quarantined_alone(
    database_url: str,
    engine: sa.Engine,
    tmp_path: Path,
    stream: str,
    name: str,
    content: bytes,
    expected: list[str],
) -> None:
    inbox = tmp_path / "acme"
    good = "orders_good.csv" if stream == "orders" else "array_good.json"
    good_content = b"id,amount\n7,1.5\n" if stream == "orders" else b'[{"id": 7, "amount": 1.5}]'
    drop(inbox, name, content)
    drop(inbox, good, good_content)

    read, stats = _sync(database_url, tmp_path, stream)

    assert (stats.parts_loaded, stats.parts_rejected) == (1, 1)
    table = "drops_orders" if stream == "orders" else "drops_json_array"
    assert _rows(engine, f"select id, amount from public.{table}") == [(7, Decimal("1.5"))]
    report = _error_txt(inbox, name)
    for text in expected:
        assert text in report, f"{text!r} not in\n{report}"
    assert (inbox / "processed" / good).exists()
    assert [n for n, _ in read.stats.rejected] == [name]


def test_values_postgresql_rejects_at_merge_and_copy_quarantine_their_file_alone(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    inbox = tmp_path / "acme"
    # A number PostgreSQL's numeric cannot hold (cast at merge time) ...
    drop(inbox, "array_1.json", b'[{"id": 1, "amount": 1}, {"id": 2, "amount": 1e200000}]')
    # ... a NUL inside a nested object (jsonb refuses \u0000 at merge time) ...
    drop(inbox, "array_2.json", b'[{"id": 3, "amount": 1, "meta": {"note": "a\\u0000b"}}]')
    # ... and a NUL in a plain string (refused while COPYing) ...
    drop(inbox, "array_3.json", b'[{"id": 4, "amount": 1, "name": "x\\u0000y"}]')
    drop(inbox, "array_4.json", b'[{"id": 5, "amount": 4.5, "name": "fine"}]')

    read, stats = _sync(database_url, tmp_path, "json_array")

    assert (stats.parts_loaded, stats.parts_rejected) == (1, 3)
    assert _rows(engine, "select id, amount, name from public.drops_json_array") == [
        (5, Decimal("4.5"), "fine")
    ]
    numeric = _error_txt(inbox, "array_1.json")
    assert "error: array_1.json record 2, column 'amount': '1E+200000' (numeric)" in numeric
    assert "PostgreSQL rejected a value for the column's type: value overflows numeric" in numeric
    nested = _error_txt(inbox, "array_2.json")
    assert "error: array_2.json record 1, column 'meta': '{\"note\": \"a\\\\u0000b\"}'" in nested
    assert "unsupported Unicode escape sequence\ndetails:\n  \\u0000 cannot be" in nested
    plain = _error_txt(inbox, "array_3.json")
    assert "error: array_3.json record 1, column 'name': 'x\\x00y' contains a NUL" in plain
    assert [n for n, _ in read.stats.rejected] == ["array_1.json", "array_2.json", "array_3.json"]
    # Only the loaded file is recorded: a rejected file's claim was rolled back with its rows.
    assert _rows(engine, "select file_name from synkro.processed_files") == [("array_4.json",)]


def test_the_malformed_corpus_lands_through_postgresql_with_only_the_good_files(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    inbox = tmp_path / "acme"
    bad = corpus()
    for item in bad:
        drop(inbox, item.name, item.content)
    drop(inbox, "orders_manifest.csv.sha256", f"{'0' * 64}  orders_manifest.csv\n")
    for name, content in good_files().items():
        drop(inbox, name, content)

    rejected: dict[str, str] = {}
    for stream in drops_spec().streams:
        read, stats = _sync(database_url, tmp_path, stream.name)
        assert stats.parts_loaded == 1, stream.name  # one good file per stream
        rejected.update(read.stats.rejected)

    assert set(rejected) == {item.name for item in bad}
    for item in bad:
        report = _error_txt(inbox, item.name)
        for expected in item.expected:
            assert expected in report, f"{item.name}: {expected!r} not in\n{report}"
        error = next(line for line in report.splitlines() if line.startswith("error: "))
        assert error.count("(") == error.count(")"), error
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == sorted(good_files())
    assert _rows(engine, "select count(*) from synkro.processed_files") == [(len(good_files()),)]


# -- 6. quoted empty strings ----------------------------------------------------------------------

QUOTED = b'id,amount,note,code\n1,2.5,"",\n2,"",,""\n3,1,"say ""hi""",x\n'


def test_a_quoted_empty_string_lands_as_an_empty_string_and_an_unquoted_one_as_null(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    drop(tmp_path / "acme", "orders_1.csv", QUOTED)
    _sync(database_url, tmp_path, "orders")
    assert _rows(engine, "select id, amount, note, code from public.drops_orders order by id") == [
        (1, Decimal("2.5"), "", None),
        (2, None, None, ""),  # a typed column has no empty value: "" is null there
        (3, Decimal("1"), 'say "hi"', "x"),
    ]


def test_a_spec_can_read_quoted_empty_strings_as_null(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    drop(tmp_path / "acme", "orders_1.csv", QUOTED)
    _sync(database_url, tmp_path, "orders", _with_stream_files("orders", quoted_empty="null"))
    assert _rows(engine, "select id, note, code from public.drops_orders order by id") == [
        (1, None, None),
        (2, None, None),
        (3, 'say "hi"', "x"),
    ]


# -- 7. encodings ---------------------------------------------------------------------------------


def test_an_uncertain_encoding_is_quarantined_instead_of_guessed(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    inbox = tmp_path / "acme"
    euro = "id,amount,note\n1,10,price in €\n".encode("cp1252")
    drop(inbox, "orders_euro.csv", euro)
    drop(inbox, "orders_ru.csv", "id,amount,note\n2,5,Ромашка ООО\n".encode("cp1251"))
    read, stats = _sync(database_url, tmp_path, "orders")
    assert (stats.parts_loaded, stats.parts_rejected) == (1, 1)
    assert "its text encoding is uncertain" in _error_txt(inbox, "orders_euro.csv")
    assert "set files.encoding in the spec" in _error_txt(inbox, "orders_euro.csv")
    assert _rows(engine, "select note from public.drops_orders") == [("Ромашка ООО",)]
    assert read.stats.encodings["orders_ru.csv"] == "cp1251 (detected, confidence 1.00)"

    # Declared, the encoding wins and nothing is detected.
    drop(inbox, "orders_euro.csv", euro)
    read, _ = _sync(
        database_url, tmp_path, "orders", _with_stream_files("orders", encoding="cp1252")
    )
    assert _rows(engine, "select note from public.drops_orders where id = 1") == [("price in €",)]
    assert read.stats.encodings == {}


# -- 8. one readable line --------------------------------------------------------------------------


def test_every_reason_is_one_line_with_balanced_parentheses_and_details_below(
    database_url: str, tmp_path: Path
) -> None:
    inbox = tmp_path / "acme"
    drop(inbox, "array_bad.json", b'[{"id": 1, "amount": 2},\n {"id": 2, "amount": }]')
    _sync(database_url, tmp_path, "json_array")
    report = _error_txt(inbox, "array_bad.json")
    error = next(line for line in report.splitlines() if line.startswith("error: "))
    assert error.startswith("error: array_bad.json: not valid JSON after record 1")
    assert error.count("(") == error.count(")")


@pytest.mark.parametrize(
    ("reason", "head", "details"),
    [
        (
            "a.json: not valid JSON (parse error: premature EOF\n  [{\n  (right here) ------^",
            "a.json: not valid JSON",
            "parse error: premature EOF\n  [{\n  (right here) ------^",
        ),
        (
            "a.csv line 2, column 'x': 'y' is not a number (decimal ',')",
            "a.csv line 2, column 'x': 'y' is not a number (decimal ',')",
            "",
        ),
        (
            "a.json record 1: PostgreSQL rejected it\n\\u0000 cannot be converted to text.",
            "a.json record 1: PostgreSQL rejected it",
            "\\u0000 cannot be converted to text.",
        ),
    ],
)
def test_a_reason_splits_into_one_balanced_line_and_details(
    reason: str, head: str, details: str
) -> None:
    assert split_reason(reason) == (head, details)
