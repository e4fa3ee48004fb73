"""`synkro integrations add/update` refuse names the spec does not declare and unsafe tenant ids."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from synkro_dagster.cli import main
from synkro_dagster.integrations import IntegrationError, IntegrationRegistry


@pytest.fixture(autouse=True)
def specs_dir(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "erp.yaml").write_text(
        "name: erp\nengine: http\n"
        "config: {base_url: {}, region: {required: false}}\n"
        "secrets: {token: {}, password: {required: false}}\n"
        "streams: [{name: items, primary_key: id}]\n"
    )
    monkeypatch.setenv("SYNKRO_SPECS_DIR", str(folder))
    return folder


def synkro(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={"ERP_TOKEN": "tok-Zq81"})


ADD = ["integrations", "add", "erp-1", "--spec", "erp", "--tenant", "acme"]
BASE = ["--config", "base_url=https://erp.example", "--secret", "token=@env:ERP_TOKEN"]


def test_a_misspelt_optional_secret_is_rejected_with_the_declared_names(
    database_url: str, engine: sa.Engine
) -> None:
    result = synkro(*ADD, *BASE, "--secret", "pasword=hunter2")
    assert result.exit_code == 1, result.output
    assert "declares no secret 'pasword'" in result.output
    assert "declared secret names: password, token" in result.output
    assert "hunter2" not in result.output
    assert IntegrationRegistry(engine).entries() == []


def test_a_misspelt_config_name_is_rejected_on_add_and_update(
    database_url: str, engine: sa.Engine
) -> None:
    refused = synkro(*ADD, *BASE, "--config", "regoin=eu")
    assert refused.exit_code == 1
    assert "declares no config 'regoin' (declared config names: base_url, region)" in (
        refused.output
    )
    assert synkro(*ADD, *BASE, "--config", "region=eu").exit_code == 0

    update = synkro("integrations", "update", "erp-1", "--config", "regoin=us")
    assert update.exit_code == 1 and "declares no config 'regoin'" in update.output
    update = synkro("integrations", "update", "erp-1", "--secret", "passwd=x")
    assert update.exit_code == 1 and "declares no secret 'passwd'" in update.output
    integration = IntegrationRegistry(engine).get("erp-1")
    assert integration.config == {"base_url": "https://erp.example", "region": "eu"}
    assert set(integration.secrets) == {"token"}
    # Declared names still update, and removing a key is allowed.
    assert synkro("integrations", "update", "erp-1", "--config", "region=").exit_code == 0
    assert synkro("integrations", "update", "erp-1", "--secret", "password=pw").exit_code == 0


UNSAFE_TENANTS = [
    (" acme", "leading or trailing spaces"),
    ("acme ", "leading or trailing spaces"),
    ("ac\nme", "control character(s) U+000A"),
    ("acme\x00", "control character(s) U+0000"),
    ("ac\u200bme", "control character(s) U+200B"),
    ("ac\x1bme", "control character(s) U+001B"),
]


def test_tenant_ids_with_control_characters_or_outer_spaces_are_rejected(
    database_url: str, engine: sa.Engine
) -> None:
    registry = IntegrationRegistry(engine)
    for tenant, message in UNSAFE_TENANTS:
        with pytest.raises(IntegrationError, match=re.escape(message)):
            registry.add(
                "erp-1", spec="erp", tenant=tenant, config={"base_url": "x"}, secrets={"token": "t"}
            )
        result = synkro(*ADD[:-1], tenant, *BASE)
        assert result.exit_code == 1 and message in result.output
    registry.add(
        "erp-1", spec="erp", tenant="acme", config={"base_url": "x"}, secrets={"token": "t"}
    )
    for tenant, _ in UNSAFE_TENANTS:
        with pytest.raises(IntegrationError, match="tenant"):
            registry.update("erp-1", tenant=tenant)
    assert registry.get("erp-1").tenant == "acme"
