"""A SQL integration cannot read Synkro's own data-layer database (the registry and every
tenant's rows) unless the spec explicitly allows it."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from synkro_dagster.connectors.sql import SqlConnector, SqlSourceError
from synkro_dagster.contracts import Integration
from synkro_dagster.specs.models import SourceSpec

COPY_EVERYTHING = "select id, tenant, config::text as config from synkro.integrations"


def _spec(allow: bool = False) -> SourceSpec:
    return SourceSpec.model_validate(
        {
            "name": "legacy",
            "engine": "sql",
            "config": {"url": {}},
            "secrets": {"password": {"required": False}},
            "sql": {"allow_datalayer_database": allow} if allow else {},
            "streams": [
                {"name": "loot", "primary_key": "id", "sql": {"query": COPY_EVERYTHING}},
            ],
        }
    )


def _read(url: str, datalayer_url: str, allow: bool = False) -> list[dict]:
    spec = _spec(allow)
    integration = Integration("mallory", "mallory", "legacy", {"url": url})
    with SqlConnector(datalayer_url=datalayer_url).session(spec, integration) as session:
        read = session.read(spec.stream("loot"), None)
        return [row for part in read.parts for batch in part.batches() for row in batch]


@pytest.fixture
def registry_row(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "insert into synkro.integrations (id, tenant, spec, config, enabled)"
            " values ('victim', 'victim-tenant', 'shop', '{\"base_url\": \"https://v\"}', true)"
        )


def _aliases(database_url: str) -> list[str]:
    url = make_url(database_url)
    aliases = [
        database_url,
        url.set(host="localhost").render_as_string(hide_password=False),
        url.set(drivername="postgresql").render_as_string(hide_password=False),
    ]
    if Path("/var/run/postgresql/.s.PGSQL.5432").exists() and (url.port or 5432) == 5432:
        # Through the unix socket the URL shares nothing with the data layer's: only the
        # cluster's system identifier and the database name tell it is the same database.
        aliases.append(
            f"postgresql+psycopg://{url.username}@/{url.database}?host=/var/run/postgresql"
        )
    return aliases


def test_a_source_url_pointing_at_the_data_layer_is_refused(
    database_url: str, registry_row: None
) -> None:
    for alias in _aliases(database_url):
        with pytest.raises(SqlSourceError) as refused:
            _read(alias, database_url)
        message = str(refused.value)
        assert "this is Synkro's own data-layer database" in message, alias
        assert "sql.allow_datalayer_database: true" in message


def test_the_data_layer_url_comes_from_the_environment(
    database_url: str, registry_row: None, monkeypatch
) -> None:
    monkeypatch.setenv("SYNKRO_DATABASE_URL", database_url)
    spec = _spec()
    integration = Integration("mallory", "mallory", "legacy", {"url": database_url})
    with SqlConnector().session(spec, integration) as session, pytest.raises(SqlSourceError):
        session.read(spec.stream("loot"), None)


def test_an_explicit_allow_reads_it_and_another_database_on_the_same_server_is_fine(
    database_url: str, empty_database_url: str, registry_row: None
) -> None:
    rows = _read(database_url, database_url, allow=True)
    assert [(r["id"], r["tenant"]) for r in rows] == [("victim", "victim-tenant")]
    # Same cluster, another database: PostgreSQL cannot query across databases, so it is allowed.
    with sa.create_engine(empty_database_url).begin() as conn:
        conn.exec_driver_sql("create schema synkro")
        conn.exec_driver_sql(
            "create table synkro.integrations (id text primary key, tenant text, config jsonb)"
        )
    assert _read(empty_database_url, database_url) == []
