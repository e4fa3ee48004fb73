"""Applies supabase/migrations/*.sql in order, recorded the way the Supabase CLI records them."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
import sqlparse

from synkro_dagster.errors import UserError

MIGRATIONS_DIR_ENV = "SYNKRO_MIGRATIONS_DIR"
_FILE_NAME = re.compile(r"^(?P<version>\d{14})_(?P<name>[A-Za-z0-9_\-]+)\.sql$")
# Any constant works; it keeps two processes from migrating the same database at once.
_ADVISORY_LOCK_KEY = 0x53594E4B52

_HISTORY_DDL = """
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
    version text not null primary key,
    statements text[],
    name text
);
"""


class MigrationError(UserError, RuntimeError):
    """A migration file is malformed or failed; the message names the file."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    def statements(self) -> list[str]:
        text = self.path.read_text(encoding="utf-8")
        return [s.strip() for s in sqlparse.split(text) if s.strip()]


def default_migrations_dir() -> Path:
    configured = os.environ.get(MIGRATIONS_DIR_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "supabase" / "migrations"


def discover(directory: Path | None = None) -> list[Migration]:
    directory = directory or default_migrations_dir()
    if not directory.is_dir():
        raise MigrationError(f"migrations folder not found: {directory}")
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(
                f"{path.name}: migration files must be named <14-digit timestamp>_<name>.sql"
            )
        found.append(Migration(match["version"], match["name"], path))
    return found


def migrate(engine: sa.Engine, directory: Path | None = None) -> list[Migration]:
    """Apply pending migrations, each in its own transaction; return the ones applied.

    Stops at the first failing file with a MigrationError naming it; earlier files stay applied.
    """
    migrations = discover(directory)
    applied: list[Migration] = []
    with engine.connect() as conn:
        with conn.begin():
            conn.exec_driver_sql(f"select pg_advisory_lock({_ADVISORY_LOCK_KEY})")
        try:
            with conn.begin():
                conn.exec_driver_sql(_HISTORY_DDL)
                done: set[str] = set(
                    conn.exec_driver_sql(
                        "select version from supabase_migrations.schema_migrations"
                    )
                    .scalars()
                    .all()
                )
            for migration in migrations:
                if migration.version in done:
                    continue
                statements = migration.statements()
                try:
                    with conn.begin():
                        for statement in statements:
                            conn.exec_driver_sql(statement.replace("%", "%%"))
                        conn.execute(
                            sa.text(
                                "insert into supabase_migrations.schema_migrations"
                                " (version, statements, name) values (:v, :s, :n)"
                            ),
                            {"v": migration.version, "s": statements, "n": migration.name},
                        )
                except sa.exc.DBAPIError as exc:
                    reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
                    raise MigrationError(
                        f"migration {migration.path.name} failed: {reason}"
                    ) from None
                applied.append(migration)
        finally:
            with conn.begin():
                conn.exec_driver_sql(f"select pg_advisory_unlock({_ADVISORY_LOCK_KEY})")
    return applied
