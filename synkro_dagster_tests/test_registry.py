"""The integrations registry against a real PostgreSQL: round trip, validation, state cleanup."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from synkro_dagster.integrations import (
    IntegrationError,
    IntegrationNotFound,
    IntegrationRegistry,
    RegistryEntry,
    RegistryNotMigrated,
)
from synkro_dagster.specs import load_spec_file

SHOP_SPEC = """\
name: shop
engine: http
secrets: [token]
config: {base_url: {}, page_size: {default: "100"}, region: {required: false}}
streams: [{name: orders, primary_key: id}]
"""


@pytest.fixture(autouse=True)
def specs_dir(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "shop.yaml").write_text(SHOP_SPEC)
    monkeypatch.setenv("SYNKRO_SPECS_DIR", str(folder))
    return folder


@pytest.fixture
def registry(engine: sa.Engine) -> IntegrationRegistry:
    return IntegrationRegistry(engine)


def add_shop(registry: IntegrationRegistry, id: str = "acme-shop", **overrides):
    arguments = {
        "spec": "shop",
        "tenant": "acme",
        "config": {"base_url": "https://shop.example.com"},
        "secrets": {"token": "tok-123456"},
        "schedule": "*/15 * * * *",
    }
    arguments.update(overrides)
    return registry.add(id, **arguments)


def test_spec_fixture_is_a_valid_spec(specs_dir: Path) -> None:
    spec = load_spec_file(specs_dir / "shop.yaml")
    assert list(spec.secrets) == ["token"]
    assert spec.config["base_url"].required


def test_add_get_entries_enable_disable_remove_round_trip(registry: IntegrationRegistry) -> None:
    added = add_shop(registry)
    assert added.secrets == {"token": "tok-123456"}

    got = registry.get("acme-shop")
    assert got == added
    assert got.config == {"base_url": "https://shop.example.com"}
    assert got.secrets == {"token": "tok-123456"}
    assert got.schedule == "*/15 * * * *" and got.enabled

    [entry] = registry.entries()
    assert isinstance(entry, RegistryEntry)
    assert (entry.id, entry.tenant, entry.spec, entry.schedule, entry.enabled) == (
        "acme-shop",
        "acme",
        "shop",
        "*/15 * * * *",
        True,
    )
    assert entry.updated_at is not None

    registry.disable("acme-shop")
    assert not registry.get("acme-shop").enabled
    assert registry.entries()[0].updated_at >= entry.updated_at
    registry.enable("acme-shop")
    assert registry.get("acme-shop").enabled

    registry.remove("acme-shop")
    assert registry.entries() == []
    with pytest.raises(IntegrationNotFound, match="acme-shop"):
        registry.get("acme-shop")


def test_entries_filter_by_spec_and_are_sorted(registry: IntegrationRegistry, specs_dir) -> None:
    (specs_dir / "erp.yaml").write_text(
        "name: erp\nengine: http\nstreams: [{name: items, primary_key: id}]\n"
    )
    add_shop(registry, "b-shop")
    add_shop(registry, "a-shop")
    registry.add("erp-1", spec="erp", tenant="acme")
    assert [e.id for e in registry.entries()] == ["a-shop", "b-shop", "erp-1"]
    assert [e.id for e in registry.entries(spec="shop")] == ["a-shop", "b-shop"]
    assert registry.entries(spec="nothing") == []


def test_entries_is_one_query_and_needs_no_secret_key(
    registry: IntegrationRegistry, engine: sa.Engine, monkeypatch
) -> None:
    for number in range(30):
        add_shop(registry, f"shop-{number:02d}")
    monkeypatch.delenv("INTEGRATION_SECRET_KEY")
    statements: list[str] = []

    def record(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        entries = IntegrationRegistry(engine).entries()
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert len(entries) == 30
    assert len(statements) == 1
    assert "secrets" not in statements[0]


def test_remove_deletes_sync_state_and_processed_files_but_not_other_integrations(
    registry: IntegrationRegistry, engine: sa.Engine
) -> None:
    add_shop(registry, "gone")
    add_shop(registry, "kept")
    with engine.begin() as conn:
        for integration_id in ("gone", "kept"):
            conn.execute(
                sa.text(
                    "insert into synkro.sync_state (integration_id, stream, tenant_id, cursor)"
                    " values (:i, 'orders', 'acme', '2026-01-01')"
                ),
                {"i": integration_id},
            )
            conn.execute(
                sa.text(
                    "insert into synkro.processed_files"
                    " (integration_id, content_hash, stream, file_name)"
                    " values (:i, 'h1', 'orders', 'orders.csv')"
                ),
                {"i": integration_id},
            )
    registry.remove("gone")
    with engine.connect() as conn:
        states = conn.execute(sa.text("select integration_id from synkro.sync_state")).scalars()
        assert list(states) == ["kept"]
        files = conn.execute(sa.text("select integration_id from synkro.processed_files")).scalars()
        assert list(files) == ["kept"]
    with pytest.raises(IntegrationNotFound, match="'gone' not found"):
        registry.remove("gone")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"id": "Acme Shop"}, "'Acme Shop' is not a slug"),
        ({"id": "-acme"}, "is not a slug"),
        ({"id": "a" * 64}, "is not a slug"),
        ({"tenant": ""}, "integration 'acme-shop': tenant must not be empty"),
        ({"tenant": "  "}, "tenant must not be empty"),
        ({"schedule": "*/15 * * *"}, "schedule '\\*/15 \\* \\* \\*' is not a valid cron"),
        ({"schedule": "61 * * * *"}, "is not a valid cron"),
        ({"spec": "nope"}, "integration 'acme-shop': unknown spec 'nope' \\(known specs: shop\\)"),
        ({"config": {}}, "integration 'acme-shop': spec 'shop' requires config 'base_url'"),
        ({"config": {"base_url": " "}}, "requires config 'base_url'"),
        ({"secrets": {}}, "integration 'acme-shop': spec 'shop' requires secret 'token'"),
    ],
)
def test_invalid_integrations_are_rejected_with_a_clear_error(
    registry: IntegrationRegistry, overrides: dict, message: str
) -> None:
    integration_id = overrides.pop("id", "acme-shop")
    with pytest.raises(IntegrationError, match=message):
        add_shop(registry, integration_id, **overrides)
    assert registry.entries() == []


def test_duplicate_id_is_a_clear_error(registry: IntegrationRegistry) -> None:
    add_shop(registry)
    with pytest.raises(IntegrationError, match="integration 'acme-shop' already exists"):
        add_shop(registry, tenant="other")
    assert registry.get("acme-shop").tenant == "acme"


def test_optional_secrets_may_be_left_out(registry: IntegrationRegistry, specs_dir) -> None:
    (specs_dir / "erp.yaml").write_text(
        "name: erp\nengine: http\nsecrets: {token: {required: false}}\n"
        "streams: [{name: items, primary_key: id}]\n"
    )
    registry.add("erp-1", spec="erp", tenant="acme")
    assert registry.get("erp-1").secrets == {}


def test_cron_aliases_and_no_schedule_are_accepted(registry: IntegrationRegistry) -> None:
    add_shop(registry, "hourly", schedule="@hourly")
    add_shop(registry, "manual", schedule=None)
    assert registry.get("hourly").schedule == "@hourly"
    assert registry.get("manual").schedule is None


def test_any_spec_is_accepted_while_the_specs_folder_is_empty(
    registry: IntegrationRegistry, tmp_path: Path, monkeypatch
) -> None:
    empty = tmp_path / "no-specs"
    empty.mkdir()
    monkeypatch.setenv("SYNKRO_SPECS_DIR", str(empty))
    registry.add("legacy-1", spec="not_written_yet", tenant="acme")
    assert registry.get("legacy-1").spec == "not_written_yet"


def test_update_merges_config_and_secrets_and_keeps_sync_state(
    registry: IntegrationRegistry, engine: sa.Engine
) -> None:
    add_shop(registry, config={"base_url": "https://old", "region": "eu"})
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "insert into synkro.sync_state (integration_id, stream, tenant_id, cursor)"
                " values ('acme-shop', 'orders', 'acme', 'c1')"
            )
        )
    registry.update(
        "acme-shop",
        config={"base_url": "https://new", "region": None},
        secrets={"token": "tok-new-999"},
        schedule="",
    )
    got = registry.get("acme-shop")
    assert got.config == {"base_url": "https://new"}
    assert got.secrets == {"token": "tok-new-999"}
    assert got.schedule is None
    with engine.connect() as conn:
        assert conn.execute(sa.text("select cursor from synkro.sync_state")).scalar() == "c1"

    with pytest.raises(IntegrationError, match="requires config 'base_url'"):
        registry.update("acme-shop", config={"base_url": None})
    with pytest.raises(IntegrationNotFound):
        registry.update("missing", tenant="x")


def test_a_database_without_migrations_says_run_db_migrate(empty_database_url: str) -> None:
    engine = sa.create_engine(empty_database_url)
    try:
        with pytest.raises(RegistryNotMigrated, match="run `synkro db migrate` first"):
            IntegrationRegistry(engine).entries()
    finally:
        engine.dispose()
