"""Nested JSON decimals land as exact JSON numbers in every engine: `{"price": 1.10}` is the jsonb
number 1.10 (not the string "1.10", not 1.1), read from a real HTTP server, real JSON/NDJSON
files and real json columns of PostgreSQL and MariaDB."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa

from synkro_dagster.connectors.files import FileDropConnector
from synkro_dagster.connectors.http import HttpConnector
from synkro_dagster.connectors.sql import SqlConnector
from synkro_dagster.contracts import Integration
from synkro_dagster.datalayer.resource import DataLayer, LoadContext, TableTarget
from synkro_dagster.specs.models import SourceSpec
from synkro_dagster_tests.files_corpus import drop

# The source database fixtures live beside the connector tests; importing registers them here.
from synkro_dagster_tests.test_sql_connector import (  # noqa: F401, F811
    mariadb_skip_reason,
    mariadb_source_url,
    pg_source_url,
    source_url,
)

# Written by hand: 1.10 keeps its trailing zero, 0.1 + 0.2 style values stay decimal, and a
# number with more digits than a float holds keeps them all.
BODY = (
    b'{"data": [{"id": 1, "item": {"price": 1.10, "qty": 2, "big": 12345678901234567890.123456789},'
    b' "parts": [{"price": 0.30}, {"price": 19.90}]}]}'
)
RECORD_JSON = BODY.decode().removeprefix('{"data": [').removesuffix("]}")


def _assert_exact(engine: sa.Engine, table: str) -> None:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "select jsonb_typeof(item->'price'), item->>'price', item->'price' = '1.10'::jsonb,"
                " item->>'big', item->>'qty', jsonb_typeof(parts->0->'price'), parts->1->>'price',"
                " (item->>'price')::numeric * 3"
                f" from public.{table}"
            )
        ).one()
    assert tuple(row) == (
        "number",
        "1.10",
        True,
        "12345678901234567890.123456789",
        "2",
        "number",
        "19.90",
        Decimal("3.30"),
    )


def _load(database_url: str, source: SourceSpec, session, stream: str) -> None:
    spec = source.stream(stream)
    DataLayer(database_url=database_url).load(
        TableTarget.for_stream(source, spec),
        session.read(spec, None),
        LoadContext(tenant_id="acme", integration_id="acme", stream=stream, run_id="run-1"),
    )


class _RawJson(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


@pytest.fixture
def raw_json_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RawJson)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_nested_decimals_land_as_exact_json_numbers(
    database_url: str, engine: sa.Engine, raw_json_server: str
) -> None:
    source = SourceSpec.model_validate(
        {
            "name": "prices",
            "engine": "http",
            "config": {"base_url": {}},
            "http": {"base_url": "{base_url}", "records": "data"},
            "streams": [{"name": "items", "primary_key": "id", "http": {"path": "/items"}}],
        }
    )
    integration = Integration(
        id="acme", tenant="acme", spec="prices", config={"base_url": raw_json_server}
    )
    with HttpConnector(max_retries=0).session(source, integration) as session:
        _load(database_url, source, session, "items")
    _assert_exact(engine, "prices_items")


@pytest.mark.parametrize(
    ("name", "content"),
    [("items_1.json", f"[{RECORD_JSON}]"), ("items_1.ndjson", f"{RECORD_JSON}\n")],
)
def test_files_nested_decimals_land_as_exact_json_numbers(
    database_url: str, engine: sa.Engine, tmp_path: Path, name: str, content: str
) -> None:
    source = SourceSpec.model_validate(
        {
            "name": "prices",
            "engine": "files",
            "streams": [
                {"name": "items", "primary_key": "id", "files": {"pattern": f"items_*{name[7:]}"}}
            ],
        }
    )
    drop(tmp_path / "acme", name, content)
    integration = Integration(id="acme", tenant="acme", spec="prices")
    connector = FileDropConnector(inbox_root=str(tmp_path), stable_seconds=0)
    with connector.session(source, integration) as session:
        _load(database_url, source, session, "items")
    _assert_exact(engine, "prices_items")


def test_sql_json_column_decimals_land_as_exact_json_numbers(
    database_url: str,
    engine: sa.Engine,
    source_url: str,  # noqa: F811
) -> None:
    item = RECORD_JSON.split('"item": ')[1].split(', "parts"')[0]
    parts = RECORD_JSON.split('"parts": ')[1].removesuffix("}")
    json_type = "jsonb" if source_url.startswith("postgresql") else "json"
    source_engine = sa.create_engine(source_url)
    with source_engine.begin() as conn:
        conn.exec_driver_sql(f"create table items (id integer primary key, item {json_type},"
                             f" parts {json_type})")  # fmt: skip
        conn.execute(
            sa.text("insert into items values (1, :item, :parts)"), {"item": item, "parts": parts}
        )
    source_engine.dispose()
    source = SourceSpec.model_validate(
        {
            "name": "prices",
            "engine": "sql",
            "config": {"url": {}},
            "sql": {"password_secret": None},
            "streams": [
                {
                    "name": "items",
                    "primary_key": "id",
                    # MariaDB's JSON is text to a client; the hint makes it jsonb on landing.
                    "columns": {"item": "jsonb", "parts": "jsonb"},
                    "sql": {"table": "items"},
                }
            ],
        }
    )
    integration = Integration(id="acme", tenant="acme", spec="prices", config={"url": source_url})
    with SqlConnector().session(source, integration) as session:
        _load(database_url, source, session, "items")
    _assert_exact(engine, "prices_items")
