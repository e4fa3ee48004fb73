"""The CSV pass-through (PostgreSQL's COPY parses the file, SQL converts) lands exactly what the
precise path (Python parses and converts every value) lands: same rows (checksum), same column
types, same cursor, same read stats. A file it refuses falls back to the precise path and lands
the same, or is quarantined with the precise path's own message."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from synkro_dagster.connectors.files import FileDropConnector
from synkro_dagster.connectors.files_copy import PG_ENCODINGS
from synkro_dagster.contracts import StreamRead
from synkro_dagster.database import libpq_url
from synkro_dagster.datalayer.resource import DataLayer, LoadContext, LoadStats, TableTarget
from synkro_dagster.specs.models import SourceSpec
from synkro_dagster_tests.files_corpus import drop, integration
from synkro_dagster_tests.test_datalayer_typed import checksum

ISO: dict[str, Any] = {
    "columns": {
        "id": "integer",
        "amount": "numeric",
        "ordered_on": "date",
        "paid": "boolean",
        "changed_at": "timestamp",
        "seen_at": "timestamptz",
        "note": "text",
    },
    "files": {"encoding": "utf-8"},
    "content": (
        b"id,amount,ordered_on,paid,changed_at,seen_at,note,customer\r\n"
        b'1,1234.50,2026-01-05,true,2026-01-05T10:00:00,2026-01-05 10:00:00+03:00,"a, b",Acme\r\n'
        b'2,-0.5,2025-12-31,false,2026-01-05 10:00,2026-01-05T10:00:00Z,"two\r\nlines",""\r\n'
        b'3,,,,,,,"say ""hi"""\r\n'
        b'4,1e3,2026-02-28,1,2026-01-05,2026-01-05T10:00:00.25,"",\r\n'
        b"5,.5,2026-03-01,F,2026-01-05 23:59:59.123456,,plain,x\r\n"
    ),
}
RUSSIAN: dict[str, Any] = {
    "columns": {
        "id": "integer",
        "amount": "numeric(12,2)",
        "qty": "bigint",
        "ordered_on": "date",
        "paid": "boolean",
        "ratio": "double precision",
    },
    "files": {"delimiter": ";", "decimal": ",", "thousands": " ", "date_format": "%d.%m.%Y"},
    "content": (
        "id;amount;qty;ordered_on;paid;ratio;Клиент\n"
        '1;1 234,50;1 000;05.01.2026;да;0,1;"ООО ""Ромашка""; склад"\n'
        "2;1\u00a0000\u00a0000,00;7;31.12.2025;нет;1e-3;Иван\n"
        "3;-0,5;;29.02.2024;Да;;\n"
        '4;;-12;;;2,5;"Пётр\nИванович"\n'
    ).encode("cp1251"),
}
FORMATS: dict[str, Any] = {
    "columns": {"id": "integer", "at": "timestamp", "on": "date", "code": "varchar(10)"},
    "files": {
        "encoding": "utf-8-sig",
        "date_format": "%d/%m/%Y",
        "datetime_format": "%d.%m.%Y %H:%M:%S",
        "quoted_empty": "null",
    },
    "content": (
        "\ufeffid,at,on,code,extra\n"
        '1,05.01.2026 10:11:12,05/01/2026,"",""\n'
        "2,06/01/2026,28/02/2026,A-1,\n"
        "3,2026-01-07T08:00:00,01/03/2026,B,x\n"
    ).encode(),
}
TABS: dict[str, Any] = {
    "columns": {"id": "integer", "amount": "numeric", "qty": "integer", "ok": "boolean"},
    "files": {"encoding": "cp1252", "delimiter": "\t", "decimal": ",", "thousands": "."},
    "content": (
        "id\tamount\tqty\tok\tname\n"
        "007\t1.234,50\t+5\tyes\tCafé\n"
        '2\t-1.000.000,001\t1.000\tNo\t"tab\tinside"\n'
        "3\t,5\t0\tY\t€\n"
    ).encode("cp1252"),
}
UNTYPED: dict[str, Any] = {
    "columns": {"id": "bigint"},
    "cursor": "code",
    "files": {},
    "content": (b'id,code,empty,comment\n10,b,,"x"\n11,c,,"multi\nline"\n12,a,,\n\n\n'),
}


def _spec(case: dict[str, Any]) -> SourceSpec:
    stream: dict[str, Any] = {
        "name": "orders",
        "primary_key": "id",
        "columns": case["columns"],
        "files": {"pattern": "orders_*.csv", **case["files"]},
    }
    if case.get("cursor"):
        stream["cursor"] = {"field": case["cursor"]}
    return SourceSpec.model_validate({"name": "copy", "engine": "files", "streams": [stream]})


def _land(
    database_url: str, root: Path, source: SourceSpec, files: dict[str, bytes], fast: bool
) -> tuple[StreamRead, LoadStats, str]:
    """Drop `files` in a fresh inbox and load them into table orders_fast / orders_records."""
    mode = "fast" if fast else "records"
    inbox = root / mode / "acme"
    for age, (name, content) in enumerate(files.items()):
        drop(inbox, name, content, age=1000 - age)
    stream = source.stream("orders")
    target = TableTarget.for_stream(source, stream)
    target = TableTarget(**{**target.__dict__, "table": f"orders_{mode}"})
    connector = FileDropConnector(inbox_root=str(root / mode), stable_seconds=0, fast_paths=fast)
    with connector.session(source, integration("acme", source.name)) as session:
        read = session.read(stream, None)
        stats = DataLayer(database_url=database_url).load(
            target,
            read,
            LoadContext(tenant_id="t", integration_id="acme", stream=mode, run_id="r"),
        )
    quarantined = sorted((inbox / "quarantine").glob("*.error.txt"))
    errors = "\n".join(p.read_text(encoding="utf-8") for p in quarantined)
    # Everything but when it was quarantined.
    errors = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S*", "<time>", errors)
    return read, stats, errors


def _both(
    database_url: str,
    engine: sa.Engine,
    tmp_path: Path,
    case: dict[str, Any],
    files: dict[str, bytes],
) -> tuple[StreamRead, StreamRead, LoadStats, LoadStats]:
    source = _spec(case)
    fast_read, fast, fast_errors = _land(database_url, tmp_path, source, files, fast=True)
    slow_read, slow, slow_errors = _land(database_url, tmp_path, source, files, fast=False)
    assert checksum(engine, "orders_fast") == checksum(engine, "orders_records")
    assert fast.rows_read == slow.rows_read
    assert fast.cursor_after == slow.cursor_after
    assert (fast.parts_loaded, fast.parts_rejected) == (slow.parts_loaded, slow.parts_rejected)
    assert fast_errors == slow_errors
    for stat in ("files", "files_rejected", "records", "bytes", "rejected", "encodings"):
        assert getattr(fast_read.stats, stat) == getattr(slow_read.stats, stat), stat
    assert slow_read.stats.read_paths == {}
    return fast_read, slow_read, fast, slow


@pytest.mark.parametrize(
    "case",
    [ISO, RUSSIAN, FORMATS, TABS, UNTYPED],
    ids=[
        "utf8-iso-crlf-quoted",
        "cp1251-decimal-comma-dd.mm.yyyy",
        "bom-formats-null",
        "cp1252-tabs-thousands-dot",
        "untyped",
    ],
)
def test_the_pass_through_lands_what_the_precise_path_lands(
    database_url: str, engine: sa.Engine, tmp_path: Path, case: dict[str, Any]
) -> None:
    fast_read, _, fast, _ = _both(
        database_url, engine, tmp_path, case, {"orders_1.csv": case["content"]}
    )
    assert fast_read.stats.read_paths == {"orders_1.csv": "csv_copy"}
    assert fast.rows_read > 2


def test_values_come_out_as_the_spec_says(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    """Not only equal to the precise path: right (a spot check of the conversions)."""
    _both(database_url, engine, tmp_path, RUSSIAN, {"orders_1.csv": RUSSIAN["content"]})
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            'select id, amount::text, qty, ordered_on::text, paid, ratio, "Клиент"'
            " from orders_fast order by id"
        ).all()
    assert rows[0] == (1, "1234.50", 1000, "2026-01-05", True, 0.1, 'ООО "Ромашка"; склад')
    assert rows[1][:2] == (2, "1000000.00")
    assert rows[2][1:5] == ("-0.50", None, "2024-02-29", True)
    assert rows[3][6] == "Пётр\nИванович"


SHARED = {"columns": {"id": "integer", "n": "integer"}, "files": {"decimal": ","}}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"id,n,seen_on\n1,2,2026-01-05\n", "do not have their columns' shapes"),
        (b'id,n,note\n1,2,ab"c\n2,3,a""b\n', "do not have their columns' shapes"),
        (b"id,n\n1,5\n2,\n3,7\n", None),  # control: this one passes through
        (b'id,n\n1,"5,0"\n', "pass-through refused"),  # 5,0 is 5 to the precise path
        (b"id,n\n1,5\n\n2,6\n", "pass-through refused"),  # a blank line between rows
        (b"id,n,note\n1,5,C:\\.\n", "NUL byte or \\. in the data"),
        (b"id,n,\n1,5,\n", "unnamed or fewer than two columns"),  # a trailing delimiter
    ],
)
def test_a_refused_file_falls_back_and_lands_the_same(
    database_url: str, engine: sa.Engine, tmp_path: Path, content: bytes, reason: str | None
) -> None:
    # A clean file after it: the fallback leaves nothing behind for the next file.
    files = {"orders_1.csv": content, "orders_2.csv": b"id,n\n100,1\n101,2\n"}
    fast_read, _, fast, _ = _both(database_url, engine, tmp_path, SHARED, files)
    assert fast.parts_loaded == 2
    paths = fast_read.stats.read_paths
    assert paths["orders_2.csv"] == "csv_copy"
    if reason is None:
        assert paths["orders_1.csv"] == "csv_copy"
    else:
        assert paths["orders_1.csv"].startswith("records (")
        assert reason in paths["orders_1.csv"]


def test_a_column_type_without_a_conversion_takes_the_precise_path(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    case = {"columns": {"id": "integer", "doc": "jsonb"}, "files": {}}
    files = {"orders_1.csv": b'id,doc\n1,"{""a"": 1.10}"\n'}
    fast_read, *_ = _both(database_url, engine, tmp_path, case, files)
    assert fast_read.stats.read_paths == {"orders_1.csv": "records (column 'doc' is jsonb)"}


@pytest.mark.parametrize(
    "content",
    [
        "Номер;Дата\n1;32.11.2026\n".encode("cp1251"),  # no such day: PostgreSQL refuses the cast
        "Номер;Дата\n1;5.11.2026\n2;05.11.26\n".encode("cp1251"),  # not dd.mm.yyyy: shape
        b"id;n\n1;99999999999\n",  # beyond integer
        b"id;n\n1;2\n;3\n",  # an empty primary key
    ],
    ids=["impossible-date", "short-date", "integer-range", "empty-key"],
)
def test_a_bad_file_is_quarantined_with_the_precise_message(
    database_url: str, engine: sa.Engine, tmp_path: Path, content: bytes
) -> None:
    case = {
        "columns": {"id": "integer", "n": "integer", "d": "date"},
        "files": {
            "delimiter": ";",
            "date_format": "%d.%m.%Y",
            "rename": {"Номер": "id", "Дата": "d"},
        },
    }
    files = {"orders_1.csv": content, "orders_2.csv": b"id;n\n100;1\n"}
    fast_read, slow_read, fast, _ = _both(database_url, engine, tmp_path, case, files)
    assert (fast.parts_loaded, fast.parts_rejected) == (1, 1)
    assert fast_read.stats.rejected == slow_read.stats.rejected
    assert "orders_1.csv line " in fast_read.stats.rejected[0][1]
    assert fast_read.stats.read_paths["orders_1.csv"].startswith("records (pass-through refused")


def test_a_fast_file_is_loaded_once(database_url: str, engine: sa.Engine, tmp_path: Path) -> None:
    """The file's identity is recorded with its rows: dropped again, it is skipped."""
    source = _spec(ISO)
    files: dict[str, bytes] = {"orders_1.csv": ISO["content"]}
    _, first, _ = _land(database_url, tmp_path, source, files, fast=True)
    shutil.rmtree(tmp_path / "fast" / "acme" / "processed")
    read, again, _ = _land(database_url, tmp_path, source, files, fast=True)
    assert (first.parts_loaded, again.parts_loaded, again.parts_skipped) == (1, 0, 1)
    assert read.stats.records == 0


@pytest.mark.parametrize("codec", sorted(PG_ENCODINGS))
def test_postgresql_reads_every_byte_of_an_encoding_as_python_does(
    database_url: str, codec: str
) -> None:
    """The pass-through lets PostgreSQL decode; the precise path lets Python decode."""
    data = bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
    pieces = [bytes([b]) for b in data]
    with psycopg.connect(libpq_url(database_url)) as conn:
        for piece in pieces:
            try:
                mine: str | None = piece.decode(codec)
            except UnicodeDecodeError:
                mine = None
            with conn.transaction(force_rollback=True):
                try:
                    row = conn.execute(
                        "select convert_from(%s, %s)", (piece, PG_ENCODINGS[codec])
                    ).fetchone()
                    theirs = None if row is None else row[0]
                except psycopg.DataError:
                    theirs = None
            if codec != "utf-8-sig" or piece != b"":
                assert (piece, mine) == (piece, theirs)


def test_a_shape_chosen_from_the_first_chunk_is_still_checked_on_every_row(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    """yes/no words of the first chunk are staged as booleans by COPY; a да after it does not
    fit that shape, so the file lands through the precise path instead."""
    case: dict[str, Any] = {"columns": {"id": "integer", "paid": "boolean"}, "files": {}}
    rows = [f"{i},{'yes' if i % 2 else 'N'},padding padding padding" for i in range(60_000)]
    content = "id,paid,note\n" + "\n".join(rows) + "\n60000,да,late\n"
    fast_read, *_ = _both(
        database_url, engine, tmp_path, case, {"orders_1.csv": content.encode("utf-8")}
    )
    assert "do not have their columns' shapes" in fast_read.stats.read_paths["orders_1.csv"]
    with engine.connect() as conn:
        assert conn.exec_driver_sql("select paid from orders_fast where id = 60000").scalar()


def test_a_field_over_the_field_limit_is_refused_as_the_precise_path_refuses_it(
    database_url: str, engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNKRO_CSV_MAX_FIELD_CHARS", str(512 * 1024))
    long = "x" * (600 * 1024)
    files = {
        "orders_1.csv": f'id,n,note\n1,2,"{long}"\n'.encode(),
        "orders_2.csv": b"id,n,note\n100,1,short\n",
    }
    fast_read, *_ = _both(database_url, engine, tmp_path, SHARED, files)
    assert "a field longer than 524288 characters" in fast_read.stats.rejected[0][1]
    assert fast_read.stats.read_paths["orders_2.csv"] == "csv_copy"


def test_a_header_over_the_line_limit_is_not_read_by_the_pass_through(
    database_url: str, engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNKRO_CSV_MAX_LINE_BYTES", "1000")
    files = {
        "orders_1.csv": b"id,n," + b"x" * 2000 + b"\n1,2,3\n",
        "orders_2.csv": b"id,n\n100,1\n",
    }
    fast_read, *_ = _both(database_url, engine, tmp_path, SHARED, files)
    assert "longer than 1000 bytes" in fast_read.stats.rejected[0][1]
    assert "header line longer" in fast_read.stats.read_paths["orders_1.csv"]
