"""Test support for the file-drop engine: the test spec, dropping files, draining reads, and the
malformed-file corpus (generated, so every bad byte is visible in review)."""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from openpyxl import Workbook

from synkro_dagster.connectors.files import FileDropConnector
from synkro_dagster.contracts import Integration, Record, SourceDataError, StreamRead
from synkro_dagster.specs import load_spec_file
from synkro_dagster.specs.models import SourceSpec

SPECS = Path(__file__).resolve().parents[1] / "files_specs"


def drops_spec() -> SourceSpec:
    return load_spec_file(SPECS / "drops.yaml")


def integration(id: str = "acme", spec: str = "drops") -> Integration:
    return Integration(id=id, tenant="tenant-a", spec=spec)


def drop(inbox: Path, name: str, content: bytes | str, age: float = 60.0) -> Path:
    """Write a file into the inbox as if it arrived `age` seconds ago."""
    inbox.mkdir(parents=True, exist_ok=True)
    path = inbox / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    past = time.time() - age
    os.utime(path, (past, past))
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def xlsx_bytes(sheets: dict[str, list[list[object]]]) -> bytes:
    book = Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


@dataclass
class Drained:
    """What a read gave when each part was landed the way the data layer lands it."""

    records: dict[str, list[Record]] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)

    def all_records(self) -> list[Record]:
        return [r for records in self.records.values() for r in records]


def drain(read: StreamRead, loaded: set[str] | None = None) -> Drained:
    """Land every part like the data layer does, minus the database: an isolated part whose
    batches raise SourceDataError is rejected; a part whose identity is in `loaded` is skipped;
    after_commit runs for loaded and skipped parts."""
    out = Drained()
    for part in read.parts:
        if loaded is not None and part.identity in loaded:
            part.after_commit()
            continue
        try:
            rows = [r for batch in part.batches() for r in batch]
        except SourceDataError as exc:
            assert part.isolated
            part.rejected(exc)
            out.rejected[part.name] = str(exc)
            continue
        out.records[part.name] = rows
        if loaded is not None and part.identity:
            loaded.add(part.identity)
        part.after_commit()
    return out


def read_stream(
    inbox_root: Path, stream: str, source: SourceSpec | None = None, id: str = "acme", **options
) -> tuple[StreamRead, Drained]:
    source = source or drops_spec()
    connector = FileDropConnector(inbox_root=str(inbox_root), stable_seconds=0, **options)
    with connector.session(source, integration(id, source.name)) as session:
        read = session.read(source.stream(stream), None)
        return read, drain(read)


# -- the malformed corpus ------------------------------------------------------------------------


@dataclass(frozen=True)
class BadFile:
    """A malformed file, and what its .error.txt must say."""

    name: str
    content: bytes
    expected: tuple[str, ...]  # substrings of the error


def corpus() -> list[BadFile]:
    ru_header = "Номер;Сумма;Дата;Клиент\r\n"
    nested_ok = {"data": {"items": [{"id": 1, "amount": 1}]}}
    xlsx_ok = xlsx_bytes({"Orders": [["id", "amount"], [1, 2]]})
    return [
        BadFile(
            "utf8_latin1.csv",
            "id,amount,name\n1,2.5,ok\n2,3.5,Café\n".encode("latin-1"),
            ("utf8_latin1.csv line 3", "e9", "not valid utf-8", "set by the spec"),
        ),
        BadFile(
            "orders_ragged.csv",
            b"id,amount,ordered_on,paid\n1,2.5,2026-11-01,true\n2,3.5,2026-11-02\n",
            ("orders_ragged.csv line 3", "3 fields, the header has 4"),
        ),
        BadFile(
            "orders_nokey.csv",
            b"number,amount\n1,2.5\n",
            ("orders_nokey.csv line 1", "primary-key column 'id' is not in the header"),
        ),
        BadFile("orders_empty.csv", b"", ("orders_empty.csv", "empty (no header row)")),
        BadFile(
            "orders_number.csv",
            b"id,amount\n1,2.5\n2,12;3\n",
            ("orders_number.csv line 3, column 'amount'", "'12;3' is not a number"),
        ),
        BadFile(
            "ru_decimal.csv",
            (ru_header + "1;12,5;01.11.2026;А\r\n2;12,3,4;02.11.2026;Б\r\n").encode("cp1251"),
            ("ru_decimal.csv line 3, column 'amount': '12,3,4' is not a number (decimal ','",),
        ),
        BadFile(
            "ru_date.csv",
            (ru_header + "1;12,5;31.02.2026;А\r\n").encode("cp1251"),
            (
                "ru_date.csv line 2, column 'ordered_on': '31.02.2026' is not a date "
                "(format %d.%m.%Y)",
            ),
        ),
        BadFile(
            "orders_dupheader.csv",
            b"id,amount,amount\n1,2,3\n",
            ("orders_dupheader.csv line 1", "duplicate column names", "'amount'"),
        ),
        BadFile(
            "orders_emptykey.csv",
            b"id,amount\n1,2.5\n,3.5\n",
            ("orders_emptykey.csv line 3", "primary key 'id' is empty"),
        ),
        BadFile(
            "orders_quote.csv",
            b'id,amount\n1,"2.5"x\n',
            ("orders_quote.csv line 2", "malformed CSV"),
        ),
        BadFile(
            "orders_bool.csv",
            b"id,amount,paid\n1,2.5,maybe\n",
            ("orders_bool.csv line 2, column 'paid': 'maybe' is not a boolean",),
        ),
        BadFile(
            "book_broken.xlsx",
            xlsx_ok[: len(xlsx_ok) // 2],
            ("book_broken.xlsx", "not a valid XLSX workbook"),
        ),
        BadFile(
            "book_nosheet.xlsx",
            xlsx_bytes({"Sheet1": [["id", "amount"], [1, 2]]}),
            ("book_nosheet.xlsx", "no sheet 'Orders'", "'Sheet1'"),
        ),
        BadFile(
            "book_badvalue.xlsx",
            xlsx_bytes({"Orders": [["id", "amount"], [1, 2], [2, "n/a"]]}),
            ("book_badvalue.xlsx sheet 'Orders' row 3, column 'amount': 'n/a' is not a number",),
        ),
        BadFile(
            "array_invalid.json",
            b'[{"id": 1, "amount": 2}, {"id": 2, "amount": }]',
            ("array_invalid.json", "not valid JSON after record 1"),
        ),
        BadFile(
            "array_object.json",
            json.dumps({"items": [{"id": 1}]}).encode(),
            ("array_object.json", "the top level is an object", "records_path"),
        ),
        BadFile(
            "nested_nopath.json",
            json.dumps({"data": {"rows": nested_ok["data"]["items"]}}).encode(),
            ("nested_nopath.json", "records path 'data.items' is not in the file"),
        ),
        BadFile(
            "array_notrecord.json",
            b'[{"id": 1, "amount": 2}, 5]',
            ("array_notrecord.json record 2", "not an object"),
        ),
        BadFile(
            "events_badline.ndjson",
            b'{"id": 1, "at": "2026-11-01T10:00:00"}\n{"id": 2, "at": \n',
            ("events_badline.ndjson line 2", "not valid JSON"),
        ),
        BadFile(
            "events_badtime.ndjson",
            b'{"id": 1, "at": "2026-11-01T10:00:00"}\n\n{"id": 2, "at": "yesterday"}\n',
            ("events_badtime.ndjson line 3, column 'at': 'yesterday' is not a timestamp",),
        ),
        # The four that used to stop the whole stream instead of quarantining one file:
        BadFile(
            "orders_nul.csv",
            b"id,amount,note\n1,2.5,ok\n2,3.5,bad\x00byte\n",
            ("orders_nul.csv line 3, column 'note': 'bad\\x00byte' contains a NUL character",),
        ),
        BadFile(
            "orders_overflow.csv",
            b"id,amount\n1,2.5\n99999999999,3.5\n",
            ("orders_overflow.csv line 3, column 'id': '99999999999' is out of range for integer",),
        ),
        BadFile(
            "orders_widefield.csv",
            b"id,amount," + b"x" * 1_100_000 + b"\n1,2.5,3\n",
            ("orders_widefield.csv line 1: a field longer than 1048576 characters",),
        ),
        BadFile(
            "array_deep.json",
            b'[{"id": 1, "amount": 1}, {"id": 2, "amount": 2, "tree": '
            + b"[" * 100_000
            + b"]" * 100_000
            + b"}]",
            ("array_deep.json: JSON nested more than 100 levels deep",),
        ),
        BadFile(
            "orders_manifest.csv",
            b"id,amount\n1,2.5\n",
            ("orders_manifest.csv", "does not match its manifest orders_manifest.csv.sha256"),
        ),
    ]


def good_files() -> dict[str, bytes]:
    """One valid file per stream of the drops spec, dropped beside the corpus."""
    return {
        "orders_good.csv": b"id,amount,ordered_on,paid\n1,2.5,2026-11-01,true\n",
        "ru_good.csv": "Номер;Сумма;Дата;Клиент\r\n7;1 234,50;01.11.2026;Ромашка\r\n".encode(
            "cp1251"
        ),
        "utf8_good.csv": codecs.BOM_UTF8 + "id,amount,name\n1,1.5,Café\n".encode(),
        "book_good.xlsx": xlsx_bytes({"Orders": [["id", "amount"], [1, 2.5]]}),
        "first_good.xlsx": xlsx_bytes({"Any": [["id", "amount"], [1, 2.5]]}),
        "array_good.json": b'[{"id": 1, "amount": 2.5}]',
        "nested_good.json": b'{"data": {"items": [{"id": 1, "amount": 2.5}]}}',
        "events_good.ndjson": b'{"id": 1, "at": "2026-11-01T10:00:00"}\n',
    }
