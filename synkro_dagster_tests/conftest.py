"""Shared fixtures: a real PostgreSQL (local server when reachable, else embedded), one fresh
migrated database per test, and a scratch DAGSTER_HOME."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from synkro_dagster.database import embedded_database_url, sqlalchemy_url
from synkro_dagster.datalayer.migrations import migrate
from synkro_dagster.integrations.resource import IntegrationsResource

# A sync failing with a transient error is retried after 15 s, 30 s, 60 s in production; tests
# that expect a failure want it at once. Set before any Definitions are built (at collection).
# The retry tests turn it on with short delays (test_assets.py).
os.environ.setdefault("SYNKRO_SYNC_MAX_RETRIES", "0")

LOCAL_SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TEMPLATE_DB = f"synkro_tpl_{os.getpid()}"


def _local_server_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            pass
        engine = sa.create_engine(LOCAL_SERVER_URL)
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


def _database_url(server_url: str, database: str) -> str:
    return sqlalchemy_url(server_url).set(database=database).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """Admin URL of the PostgreSQL server the tests use."""
    override = os.environ.get("SYNKRO_TEST_SERVER_URL")
    if override:
        return sqlalchemy_url(override).render_as_string(hide_password=False)
    if _local_server_reachable():
        return LOCAL_SERVER_URL
    return sqlalchemy_url(embedded_database_url()).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def admin_engine(pg_server_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def migrated_template(admin_engine: sa.Engine, pg_server_url: str) -> Iterator[str]:
    """A database with every migration applied, cloned for each test (CREATE DATABASE ... TEMPLATE)."""
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'drop database if exists "{TEMPLATE_DB}"')
        conn.exec_driver_sql(f'create database "{TEMPLATE_DB}"')
    engine = sa.create_engine(_database_url(pg_server_url, TEMPLATE_DB))
    migrate(engine)
    engine.dispose()
    yield TEMPLATE_DB
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'drop database if exists "{TEMPLATE_DB}" with (force)')


def _create_database(admin_engine: sa.Engine, template: str | None) -> str:
    name = f"synkro_t_{uuid.uuid4().hex[:12]}"
    clause = f' template "{template}"' if template else ""
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'create database "{name}"{clause}')
    return name


def _drop_database(admin_engine: sa.Engine, name: str) -> None:
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def database_url(
    admin_engine: sa.Engine, pg_server_url: str, migrated_template: str, monkeypatch
) -> Iterator[str]:
    """A fresh, migrated database for this test; SYNKRO_DATABASE_URL points at it."""
    name = _create_database(admin_engine, migrated_template)
    url = _database_url(pg_server_url, name)
    monkeypatch.setenv("SYNKRO_DATABASE_URL", url)
    yield url
    from synkro_dagster.database import _engine

    _engine.cache_clear()
    _drop_database(admin_engine, name)


@pytest.fixture
def empty_database_url(admin_engine: sa.Engine, pg_server_url: str) -> Iterator[str]:
    """A fresh database with no migrations applied."""
    name = _create_database(admin_engine, None)
    yield _database_url(pg_server_url, name)
    _drop_database(admin_engine, name)


@pytest.fixture
def integrations(database_url: str) -> IntegrationsResource:
    """The `integrations` resource on this test's database, as sensors and runs receive it."""
    return IntegrationsResource(database_url=database_url)


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def _scratch_dagster_home(tmp_path_factory, monkeypatch) -> None:
    """Every test gets an empty DAGSTER_HOME: `./run test` exports the repository root (the local
    instance), which commands under test (`synkro integrations add`) would otherwise write to."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path_factory.mktemp("dagster_home")))
    monkeypatch.delenv("DAGSTER_MODULE_NAME", raising=False)


@pytest.fixture(autouse=True)
def _secret_key(monkeypatch) -> None:
    """A fixed Fernet key so tests never depend on the developer's environment."""
    monkeypatch.setenv("INTEGRATION_SECRET_KEY", "x4r1cQ1Mv0b8m0cB1U2GkH0d6sZ0QbLw7j8kGmXo4Zs=")


@pytest.fixture
def tiny_specs_dir(tmp_path: Path, monkeypatch) -> Path:
    """SYNKRO_SPECS_DIR holding one minimal spec, `shop` (secret `token`, config `base_url`)."""
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "shop.yaml").write_text(
        "name: shop\nengine: http\nsecrets: [token]\nconfig: {base_url: {}}\n"
        "streams: [{name: orders, primary_key: id}]\n"
    )
    monkeypatch.setenv("SYNKRO_SPECS_DIR", str(folder))
    return folder
