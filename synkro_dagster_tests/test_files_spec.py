"""The files part of a spec is validated at load time with errors naming stream and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from synkro_dagster.specs import SpecError, load_spec_file
from synkro_dagster.specs.files import FileOptions
from synkro_dagster.specs.models import SourceSpec

BASE = """
name: shop_files
engine: files
files: {decimal: ",", date_format: "%d.%m.%Y"}
streams:
  - name: orders
    primary_key: id
    files: {pattern: "orders_*.csv"}
"""


def _load(tmp_path: Path, text: str) -> SourceSpec:
    path = tmp_path / "shop_files.yaml"
    path.write_text(text, encoding="utf-8")
    return load_spec_file(path)


def test_stream_options_override_source_defaults(tmp_path: Path) -> None:
    text = BASE.replace('{pattern: "orders_*.csv"}', '{pattern: "orders_*.csv", decimal: "."}')
    source = _load(tmp_path, text)
    options = FileOptions.resolve(source, source.stream("orders"))
    assert (options.format, options.decimal, options.date_format) == ("csv", ".", "%d.%m.%Y")
    assert options.matches("ORDERS_2026.CSV") and not options.matches("orders_1.csv.tmp")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("orders_*.csv", "orders_*.dat"), "field 'files.format': cannot tell the format"),
        (('decimal: ","', 'decimal: ",,"'), "field 'files.decimal'"),
        (("{pattern:", "{encoding: klingon, pattern:"), "unknown encoding 'klingon'"),
        (("{pattern:", "{sheet: One, pattern:"), "'sheet' is only for xlsx files"),
        (("{pattern:", "{colour: red, pattern:"), "unknown key"),
        (('"%d.%m.%Y"', '"dd.mm.yyyy"'), "is not a strptime pattern"),
        (('{pattern: "orders_*.csv"}', '{pattern: "in/orders_*.csv"}'), "without folders"),
        (('    files: {pattern: "orders_*.csv"}\n', ""), "needs a 'files:' block"),
    ],
)
def test_broken_files_options_are_named(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    with pytest.raises(SpecError) as caught:
        _load(tmp_path, BASE.replace(*change))
    assert message in str(caught.value)
    assert "shop_files.yaml" in str(caught.value)


@pytest.mark.parametrize(
    ("stream_files", "message"),
    [
        ('{pattern: "orders_*.csv", sheet: One}', "'sheet' is only for xlsx files"),
        ('{pattern: "orders_*.xlsx", records_path: a.b}', "'records_path' is only for json"),
        ('{pattern: "orders_*.csv", rename: {a: x, b: x}}', "two columns the name ['x']"),
    ],
)
def test_stream_options_are_checked_without_source_defaults(
    tmp_path: Path, stream_files: str, message: str
) -> None:
    text = BASE.replace('files: {decimal: ",", date_format: "%d.%m.%Y"}\n', "").replace(
        '{pattern: "orders_*.csv"}', stream_files
    )
    with pytest.raises(SpecError) as caught:
        _load(tmp_path, text)
    assert message in str(caught.value)
    assert "stream 'orders', field 'files'" in str(caught.value)
