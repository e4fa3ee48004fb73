"""Column control for every engine: select/exclude, rename and `naming: snake_case`, and salted
hashes of PII fields — through the real local API server, a real PostgreSQL source database and
real files, into the real PostgreSQL data layer."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from synkro_dagster.connectors.columns import ColumnShaper
from synkro_dagster.connectors.files import FileDropConnector
from synkro_dagster.connectors.http import HttpConnector
from synkro_dagster.connectors.sql import SqlConnector
from synkro_dagster.connectors.streams import read_stream
from synkro_dagster.contracts import Integration, SourceDataError
from synkro_dagster.datalayer.resource import DataLayer, LoadContext, LoadStats, TableTarget
from synkro_dagster.demo.api_server import ApiServer, start_api_server
from synkro_dagster.specs import load_specs
from synkro_dagster.specs.columns import snake_case
from synkro_dagster.specs.models import SourceSpec
from synkro_dagster_tests.files_corpus import drop

# The scratch source database fixture lives beside the SQL connector tests.
from synkro_dagster_tests.test_sql_connector import pg_source_url  # noqa: F401

SALT = "pepper-salt-8d1f4a"
FAST = dict(backoff_initial=0.05, backoff_max=0.2, max_retries=2, read_timeout=2.0)


def _hash(value: str, salt: str = SALT) -> str:
    return hmac.new(salt.encode(), value.encode(), hashlib.sha256).hexdigest()


def _sync(
    layer: DataLayer, spec: SourceSpec, stream: str, integration: Integration, session: Any
) -> LoadStats:
    """What a sync does for one stream: read it from its cursor (column control applied), land it."""
    s = spec.stream(stream)
    read = read_stream(session, spec, s, integration, layer.get_cursor(integration.id, stream))
    return layer.load(
        TableTarget.for_stream(spec, s),
        read,
        LoadContext(
            tenant_id=integration.tenant, integration_id=integration.id, stream=stream, run_id="r1"
        ),
    )


def _columns(engine: sa.Engine, table: str) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "select column_name, data_type from information_schema.columns"
                " where table_schema = 'public' and table_name = :t"
            ),
            {"t": table},
        )
        return dict(rows.all())


def _rows(engine: sa.Engine, query: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text(query))]


@pytest.fixture
def api() -> Iterator[ApiServer]:
    with start_api_server(bench_records=10) as server:
        yield server


def test_snake_case_names() -> None:
    assert snake_case("InvoiceId") == "invoice_id"
    assert snake_case("firstName") == "first_name"
    assert snake_case("HTTPStatus") == "http_status"
    assert snake_case("orderID") == "order_id"
    assert snake_case("Customer Name") == "customer_name"
    assert snake_case("already_snake") == "already_snake"
    assert snake_case("v2Total") == "v2_total"


def test_http_camel_case_api_lands_snake_case_with_hashed_email_and_selected_columns(
    api: ApiServer, database_url: str, engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    spec = load_specs()["crm"]  # the shipped demo spec: naming snake_case, hash, select, rename
    c = api.credentials
    integration = Integration(
        "acme-crm",
        "acme",
        "crm",
        {"base_url": api.url},
        {"client_id": c.client_id, "client_secret": c.client_secret, "hash_salt": SALT},
    )
    layer = DataLayer(database_url=database_url)
    caplog.set_level(logging.DEBUG)
    with HttpConnector(**FAST).session(spec, integration) as session:
        contacts = _sync(layer, spec, "contacts", integration, session)
        _sync(layer, spec, "companies", integration, session)

    source = api.store.records("crm.contacts")
    assert contacts.rows_inserted == len(source)
    columns = _columns(engine, "crm_contacts")
    assert {"first_name", "last_name", "company_id", "updated_at", "email"} <= set(columns)
    assert not {"firstName", "updatedAt", "companyId"} & set(columns)
    assert columns["updated_at"] == "timestamp with time zone"  # the hint follows the rename
    landed = {r["id"]: r for r in _rows(engine, "select * from crm_contacts")}
    for record in source:
        row = landed[record["id"]]
        assert row["email"] == _hash(record["email"])  # HMAC-SHA256(salt, value), hex
        assert row["first_name"] == record["firstName"]
    # The cursor is kept under the landed name and advances as before.
    newest = max(r["updatedAt"] for r in source)
    assert layer.get_cursor("acme-crm", "contacts").startswith(newest[:19])

    companies = _columns(engine, "crm_companies")
    assert set(companies) >= {"id", "name", "website_domain", "updated_at"}
    assert "employees" not in companies and "domain" not in companies

    # Neither the salt nor a raw e-mail reached a log line or the database.
    assert SALT not in caplog.text
    assert not any(r["email"] in caplog.text for r in source)
    with engine.connect() as conn:
        dump = conn.execute(sa.text("select string_agg(t::text, '|') from crm_contacts t")).scalar()
    assert "@" not in dump and SALT not in dump


def test_sql_source_select_rename_naming_and_hash(
    pg_source_url: str,  # noqa: F811
    database_url: str,
    engine: sa.Engine,
) -> None:
    source = sa.create_engine(pg_source_url)
    with source.begin() as conn:
        conn.exec_driver_sql(
            'create table invoices ("InvoiceId" integer primary key, "CustomerEmail" text,'
            ' "Amount" numeric(10,2), "InternalNote" text, "UpdatedAt" timestamp)'
        )
        conn.exec_driver_sql(
            "insert into invoices values"
            " (1, 'ann@example.com', 10.50, 'secret note', '2026-01-01 10:00'),"
            " (2, 'bob@example.com', 99.99, 'another', '2026-01-02 10:00'),"
            " (3, null, 5.00, null, '2026-01-03 10:00')"
        )
    source.dispose()
    spec = SourceSpec.model_validate(
        {
            "name": "ledger",
            "engine": "sql",
            "naming": "snake_case",
            "config": {"url": {}},
            "secrets": ["hash_salt"],
            "sql": {"url_config": "url", "password_secret": None},
            "streams": [
                {
                    "name": "invoices",
                    "primary_key": "InvoiceId",
                    "cursor": {"field": "UpdatedAt"},
                    "columns": {
                        "exclude": ["InternalNote"],
                        "rename": {"InvoiceId": "invoice_no"},
                        "hash": ["CustomerEmail"],
                    },
                    "sql": {"table": "invoices"},
                }
            ],
        }
    )
    integration = Integration(
        "acme-ledger", "acme", "ledger", {"url": pg_source_url}, {"hash_salt": SALT}
    )
    layer = DataLayer(database_url=database_url)
    with SqlConnector().session(spec, integration) as session:
        stats = _sync(layer, spec, "invoices", integration, session)
    assert stats.rows_inserted == 3
    columns = _columns(engine, "ledger_invoices")
    assert {"invoice_no", "customer_email", "amount", "updated_at"} <= set(columns)
    assert "internal_note" not in columns and "InternalNote" not in columns
    # The source's declared type follows the renamed column; the hashed one is text.
    assert columns["amount"] == "numeric"
    assert columns["customer_email"] == "text"
    rows = _rows(engine, "select * from ledger_invoices order by invoice_no")
    assert [(r["invoice_no"], r["amount"]) for r in rows] == [
        (1, Decimal("10.50")),
        (2, Decimal("99.99")),
        (3, Decimal("5.00")),
    ]
    assert rows[0]["customer_email"] == _hash("ann@example.com")
    assert rows[2]["customer_email"] is None  # a null stays null
    with engine.connect() as conn:
        pk = conn.execute(
            sa.text(
                "select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid"
                " and a.attnum = any(i.indkey) where i.indrelid = 'ledger_invoices'::regclass"
                " and i.indisprimary order by a.attname"
            )
        ).scalars()
        assert list(pk) == ["integration_id", "invoice_no"]
    # A typed source column: the cursor is the column's value as PostgreSQL writes it.
    cursor = layer.get_cursor("acme-ledger", "invoices")
    assert cursor is not None
    assert dt.datetime.fromisoformat(cursor).replace(tzinfo=None) == dt.datetime(2026, 1, 3, 10)


def test_files_source_select_rename_and_hash(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    spec = SourceSpec.model_validate(
        {
            "name": "hr",
            "engine": "files",
            "secrets": {"salt": {}},
            "hash_salt_secret": "salt",
            "streams": [
                {
                    "name": "staff",
                    "primary_key": "EmployeeNo",
                    "columns": {
                        "select": ["EmployeeNo", "FullName", "Email", "Salary"],
                        "rename": {"EmployeeNo": "employee_no", "FullName": "name"},
                        "hash": ["Email"],
                        "Salary": "numeric",
                    },
                    "files": {"pattern": "staff_*.csv"},
                }
            ],
        }
    )
    drop(
        tmp_path / "acme",
        "staff_2026-01-01.csv",
        "EmployeeNo,FullName,Email,Salary,BankAccount\n"
        "7,Ada Ng,ada@example.com,5100.50,DE001\n"
        "8,Ben Ortiz,ben@example.com,4800,DE002\n",
    )
    integration = Integration("acme", "acme", "hr", {}, {"salt": SALT})
    layer = DataLayer(database_url=database_url)
    connector = FileDropConnector(inbox_root=str(tmp_path), stable_seconds=0)
    with connector.session(spec, integration) as session:
        stats = _sync(layer, spec, "staff", integration, session)
    assert stats.rows_inserted == 2
    columns = _columns(engine, "hr_staff")
    assert set(columns) - {
        "tenant_id",
        "integration_id",
        "_synkro_synced_at",
        "_synkro_run_id",
    } == {
        "employee_no",
        "name",
        "Email",
        "Salary",
    }
    assert columns["Salary"] == "numeric"
    rows = _rows(engine, "select * from hr_staff order by employee_no")
    assert [(r["name"], r["Email"], r["Salary"]) for r in rows] == [
        ("Ada Ng", _hash("ada@example.com"), Decimal("5100.50")),
        ("Ben Ortiz", _hash("ben@example.com"), Decimal("4800")),
    ]


def _crm_integration(**secrets: str) -> Integration:
    return Integration("acme-crm", "acme", "crm", {"base_url": "http://127.0.0.1:9"}, secrets)


def test_a_missing_salt_fails_before_reading_and_names_the_secret() -> None:
    spec = load_specs()["crm"]
    with pytest.raises(SourceDataError, match="secret 'hash_salt'") as error:
        ColumnShaper(spec, spec.stream("contacts"), _crm_integration(client_id="x"))
    assert "contacts" in str(error.value)


def test_two_fields_landing_in_one_column_fail_loudly() -> None:
    spec = load_specs()["crm"]
    shaper = ColumnShaper(spec, spec.stream("deals"), _crm_integration(hash_salt=SALT))
    with pytest.raises(SourceDataError, match="'companyId' and 'company_id' would both land"):
        shaper.batch([{"id": 1, "companyId": 2, "company_id": 3}])


def test_the_same_value_hashes_differently_under_another_salt() -> None:
    spec = load_specs()["crm"]
    stream = spec.stream("contacts")
    one = ColumnShaper(spec, stream, _crm_integration(hash_salt=SALT))
    two = ColumnShaper(spec, stream, _crm_integration(hash_salt="another-salt"))
    record = {"id": 1, "email": "ann@example.com"}
    assert one.record(record)["email"] == _hash("ann@example.com")
    assert one.record(record)["email"] != two.record(record)["email"]
    assert one.record({"id": 2, "email": None})["email"] is None


def _spec_error(columns: dict[str, Any], secrets: list[str] | None = None, **stream: Any) -> str:
    raw = {
        "name": "legacy",
        "engine": "sql",
        "config": {"url": {}},
        "secrets": secrets or [],
        "sql": {"password_secret": None},
        "streams": [
            {
                "name": "things",
                "primary_key": "id",
                "cursor": {"field": "updated_at"},
                "columns": columns,
                "sql": {"table": "things"},
                **stream,
            }
        ],
    }
    with pytest.raises(ValidationError) as error:
        SourceSpec.model_validate(raw)
    return str(error.value)


def test_column_control_mistakes_are_named_at_load() -> None:
    assert "not both" in _spec_error({"select": ["id"], "exclude": ["x"]})
    assert "'primary_key': 'id' is left out" in _spec_error({"exclude": ["id"]})
    assert "'cursor.field': 'updated_at' is left out" in _spec_error({"select": ["id"]})
    assert "cannot be hashed" in _spec_error({"hash": ["updated_at"]}, secrets=["hash_salt"])
    assert "salt secret 'hash_salt' is not declared" in _spec_error({"hash": ["email"]})
    assert "two fields renamed to x" in _spec_error({"rename": {"a": "x", "b": "x"}})
    assert "columns.select leaves out email" in _spec_error(
        {"select": ["id", "updated_at"], "hash": ["email"]}, secrets=["hash_salt"]
    )


def test_a_field_named_like_a_control_key_is_still_a_type_hint() -> None:
    spec = SourceSpec.model_validate(
        {
            "name": "legacy",
            "engine": "sql",
            "config": {"url": {}},
            "sql": {"password_secret": None},
            "streams": [
                {
                    "name": "things",
                    "primary_key": "id",
                    "columns": {"hash": "text", "rename": "jsonb", "exclude": ["junk"]},
                    "sql": {"table": "things"},
                }
            ],
        }
    )
    stream = spec.stream("things")
    assert stream.columns == {"hash": "text", "rename": "jsonb"}
    assert stream.column_control.exclude == ["junk"]
