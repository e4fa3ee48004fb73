"""The file-drop engine reads every format, encoding and value convention a spec can name."""

from __future__ import annotations

import codecs
import json
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from synkro_dagster.specs import load_specs
from synkro_dagster_tests.files_corpus import drop, read_stream, xlsx_bytes

ROWS = [
    ("1", "1234.50", "2026-11-01", "true", "Ромашка"),
    ("2", "7", "2026-11-02", "no", 'Quote "inside", comma\nand a new line'),
]


def _csv(delimiter: str, newline: str = "\n") -> str:
    def cell(value: str) -> str:
        if any(c in value for c in (delimiter, '"', "\n")):
            return '"' + value.replace('"', '""') + '"'
        return value

    header = delimiter.join(["id", "amount", "ordered_on", "paid", "customer"])
    lines = [header] + [delimiter.join(cell(v) for v in row) for row in ROWS]
    return newline.join(lines) + newline


EXPECTED = [
    {
        "id": 1,
        "amount": Decimal("1234.50"),
        "ordered_on": date(2026, 11, 1),
        "paid": True,
        "customer": "Ромашка",
    },
    {
        "id": 2,
        "amount": Decimal("7"),
        "ordered_on": date(2026, 11, 2),
        "paid": False,
        "customer": 'Quote "inside", comma\nand a new line',
    },
]


@pytest.mark.parametrize(
    ("encoding", "prefix"),
    [("utf-8", b""), ("utf-8", codecs.BOM_UTF8), ("cp1251", b"")],
    ids=["utf8", "utf8-bom", "cp1251"],
)
@pytest.mark.parametrize("delimiter", [",", ";", "\t"], ids=["comma", "semicolon", "tab"])
def test_csv_encoding_and_delimiter_are_detected(
    tmp_path: Path, encoding: str, prefix: bytes, delimiter: str
) -> None:
    drop(tmp_path / "acme", "orders_1.csv", prefix + _csv(delimiter).encode(encoding))
    read, out = read_stream(tmp_path, "orders")
    assert out.rejected == {}
    assert out.records["orders_1.csv"] == EXPECTED
    assert (read.stats.files, read.stats.records) == (1, 2)


def test_csv_with_crlf_and_embedded_newlines_keeps_the_newline_in_the_value(
    tmp_path: Path,
) -> None:
    drop(tmp_path / "acme", "orders_1.csv", _csv(",", "\r\n").encode())
    _, out = read_stream(tmp_path, "orders")
    assert out.records["orders_1.csv"][1]["customer"] == 'Quote "inside", comma\nand a new line'


def test_csv_decimal_comma_thousands_and_dotted_dates_as_the_spec_says(tmp_path: Path) -> None:
    text = (
        "Номер;Сумма;Дата;Клиент\r\n"
        "1;1 234 567,89;01.11.2026;ООО «Ромашка»\r\n"
        "2;12\u00a0490,00;31.12.2026;\r\n"
        "3;-0,5;02.01.2027;ИП Иванов\r\n"
    )
    drop(tmp_path / "acme", "ru_1.csv", text.encode("cp1251", errors="replace"))
    _, out = read_stream(tmp_path, "ru_orders")
    assert out.rejected == {}
    records = out.records["ru_1.csv"]
    assert [r["amount"] for r in records] == [
        Decimal("1234567.89"),
        Decimal("12490.00"),
        Decimal("-0.5"),
    ]
    assert [r["ordered_on"] for r in records] == [
        date(2026, 11, 1),
        date(2026, 12, 31),
        date(2027, 1, 2),
    ]
    assert records[0]["customer"] == "ООО «Ромашка»"
    assert records[1]["customer"] is None  # an empty field is null


def test_csv_trailing_delimiter_and_blank_lines_are_tolerated(tmp_path: Path) -> None:
    # 1C ends every line with the delimiter: the unnamed last column is dropped.
    drop(tmp_path / "acme", "orders_1.csv", b"id;amount;paid;\n1;2.5;yes;\n\n2;3;no\n")
    _, out = read_stream(tmp_path, "orders")
    assert out.records["orders_1.csv"] == [
        {"id": 1, "amount": Decimal("2.5"), "paid": True},
        {"id": 2, "amount": Decimal("3"), "paid": False},
    ]


def test_xlsx_named_sheet(tmp_path: Path) -> None:
    content = xlsx_bytes(
        {
            "Summary": [["not", "this"]],
            "Orders": [
                ["id", "amount", "ordered_on", "code", None],
                [1, 1234.5, datetime(2026, 11, 1), 123.0, None],
                [None, None, None, None, None],
                [2, "7,5", "2026-11-02", "00042", None],
            ],
        }
    )
    drop(tmp_path / "acme", "book_1.xlsx", content)
    read, out = read_stream(tmp_path, "sheet_orders")
    assert out.rejected.keys() == {"book_1.xlsx"}  # '7,5' is not a number with decimal '.'
    assert (
        "book_1.xlsx sheet 'Orders' row 4, column 'amount': '7,5' is not a number"
        in (out.rejected["book_1.xlsx"])
    )


def test_xlsx_named_sheet_values_are_converted(tmp_path: Path) -> None:
    content = xlsx_bytes(
        {
            "Summary": [["not", "this"]],
            "Orders": [
                ["id", "amount", "ordered_on", "code"],
                [1, 1234.5, datetime(2026, 11, 1), 123.0],
                [],
                [2, "7.5", "2026-11-02", "00042"],
            ],
        }
    )
    drop(tmp_path / "acme", "book_1.xlsx", content)
    _, out = read_stream(tmp_path, "sheet_orders")
    assert out.records["book_1.xlsx"] == [
        {"id": 1, "amount": Decimal("1234.5"), "ordered_on": date(2026, 11, 1), "code": "123"},
        {"id": 2, "amount": Decimal("7.5"), "ordered_on": date(2026, 11, 2), "code": "00042"},
    ]


def test_xlsx_first_sheet_when_none_is_named(tmp_path: Path) -> None:
    content = xlsx_bytes({"Export": [["id", "amount"], [1, 2], [2, 3.25]], "Other": [["x"]]})
    drop(tmp_path / "acme", "first_1.xlsx", content)
    _, out = read_stream(tmp_path, "first_sheet")
    assert out.records["first_1.xlsx"] == [
        {"id": 1, "amount": Decimal("2")},
        {"id": 2, "amount": Decimal("3.25")},
    ]


def test_json_array(tmp_path: Path) -> None:
    body = [{"id": 1, "amount": 10.25, "ordered_on": "2026-11-01", "tags": ["a"]}]
    drop(tmp_path / "acme", "array_1.json", json.dumps(body))
    _, out = read_stream(tmp_path, "json_array")
    assert out.records["array_1.json"] == [
        {"id": 1, "amount": Decimal("10.25"), "ordered_on": date(2026, 11, 1), "tags": ["a"]}
    ]


def test_json_object_with_records_path(tmp_path: Path) -> None:
    body = {"meta": {"total": 2}, "data": {"items": [{"id": 1, "amount": "1"}, {"id": 2}]}}
    drop(tmp_path / "acme", "nested_1.json", codecs.BOM_UTF8 + json.dumps(body).encode())
    _, out = read_stream(tmp_path, "json_nested")
    assert out.records["nested_1.json"] == [
        {"id": 1, "amount": Decimal("1")},
        {"id": 2},
    ]


def test_ndjson_line_by_line(tmp_path: Path) -> None:
    lines = [{"id": i, "at": f"2026-11-01T10:00:0{i}", "payload": {"n": i}} for i in range(3)]
    text = "\n".join(json.dumps(line) for line in lines) + "\n\n"
    drop(tmp_path / "acme", "events_1.ndjson", text)
    _, out = read_stream(tmp_path, "events")
    records = out.records["events_1.ndjson"]
    assert [r["at"] for r in records] == [datetime(2026, 11, 1, 10, 0, i) for i in range(3)]
    assert records[2]["payload"] == {"n": 2}


def test_batches_are_bounded(tmp_path: Path) -> None:
    rows = "".join(f"{i},{i}.5,2026-11-01,true\n" for i in range(1, 2501))
    drop(tmp_path / "acme", "orders_big.csv", "id,amount,ordered_on,paid\n" + rows)
    from synkro_dagster.connectors.files import FileDropConnector
    from synkro_dagster_tests.files_corpus import drops_spec, integration

    source = drops_spec()
    connector = FileDropConnector(inbox_root=str(tmp_path), stable_seconds=0, batch_rows=1000)
    with connector.session(source, integration()) as session:
        (part,) = list(session.read(source.stream("orders"), None).parts)
        assert [len(b) for b in part.batches()] == [1000, 1000, 500]


def test_the_onec_spec_reads_its_samples(tmp_path: Path) -> None:
    import shutil

    samples = Path(__file__).resolve().parents[1] / "synkro_dagster/demo/samples/onec"
    for sample in sorted(samples.iterdir()):
        shutil.copy(sample, tmp_path / sample.name)
        drop(tmp_path / "acme", sample.name, (tmp_path / sample.name).read_bytes())
    source = load_specs()["onec"]
    _, goods = read_stream(tmp_path, "nomenclature", source)
    _, sales = read_stream(tmp_path, "sales", source)
    assert goods.rejected == {} and sales.rejected == {}
    items = goods.records["nomenclature_2026-11-01.csv"]
    assert len(items) == 6
    coffee = next(i for i in items if i["code"] == "00-00000004")
    assert coffee["price"] == Decimal("1249.00") and coffee["is_service"] is False
    assert items[5]["name"].startswith('Набор подарочный "Новогодний"')
    lines = sales.all_records()
    assert len(lines) == 7
    assert {r["doc_date"] for r in lines} == {date(2026, 11, 1), date(2026, 11, 2)}
    assert sum(r["amount"] for r in lines) == Decimal("30085.75")
