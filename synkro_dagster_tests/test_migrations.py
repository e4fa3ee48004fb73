"""Migrations: applied in order, recorded as the Supabase CLI records them, idempotent, and a
broken file stops the run with its name."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from synkro_dagster.datalayer.migrations import MigrationError, discover, migrate


def test_migrate_is_idempotent_and_records_supabase_rows(empty_database_url: str) -> None:
    engine = sa.create_engine(empty_database_url)
    first = migrate(engine)
    assert [m.version for m in first] == [m.version for m in discover()]
    assert migrate(engine) == []
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "select version, name, statements from supabase_migrations.schema_migrations"
            " order by version"
        ).all()
        assert [(r.version, r.name) for r in rows] == [(m.version, m.name) for m in first]
        assert all(isinstance(r.statements, list) and r.statements for r in rows)
        assert conn.exec_driver_sql("select to_regclass('synkro.integrations')").scalar()
        assert conn.exec_driver_sql("select to_regprocedure('auth.jwt()')").scalar()
    engine.dispose()


def test_broken_migration_stops_with_its_name(empty_database_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "20260101000000_good.sql").write_text("create table good_one (id int);")
    (folder / "20260101000100_broken.sql").write_text(
        "create table half_done (id int);\ncreate tabel oops (id int);"
    )
    (folder / "20260101000200_later.sql").write_text("create table later (id int);")
    engine = sa.create_engine(empty_database_url)
    with pytest.raises(MigrationError, match="20260101000100_broken.sql"):
        migrate(engine, folder)
    with engine.connect() as conn:
        versions = (
            conn.exec_driver_sql("select version from supabase_migrations.schema_migrations")
            .scalars()
            .all()
        )
        assert versions == ["20260101000000"]
        # The broken file ran in one transaction: its first statement did not stay behind.
        assert conn.exec_driver_sql("select to_regclass('half_done')").scalar() is None
        assert conn.exec_driver_sql("select to_regclass('later')").scalar() is None
    engine.dispose()


def test_badly_named_migration_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "add_things.sql").write_text("select 1;")
    with pytest.raises(MigrationError, match="add_things.sql"):
        discover(tmp_path)
