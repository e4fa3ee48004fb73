"""Encrypts integration secrets at rest with Fernet keys from INTEGRATION_SECRET_KEY.

The variable holds one or more comma-separated Fernet keys. The first key encrypts; every key
decrypts (cryptography's MultiFernet), so a new key can be put in front of the old one, the rows
re-encrypted with `synkro secrets rotate`, and the old key dropped afterwards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from synkro_dagster.errors import UserError

SECRET_KEY_ENV = "INTEGRATION_SECRET_KEY"
_GENERATE_HINT = (
    'generate one with: python -c "from cryptography.fernet import Fernet; '
    'print(Fernet.generate_key().decode())"'
)


class SecretKeyError(UserError, ValueError):
    """INTEGRATION_SECRET_KEY is missing or malformed (the message never contains a key)."""


class SecretDecryptError(UserError, ValueError):
    """A stored token no configured key can decrypt; names the integration, never the token."""


def generate_key() -> str:
    """A new random Fernet key, as text fit for INTEGRATION_SECRET_KEY."""
    return Fernet.generate_key().decode("ascii")


def local_development_key() -> str:
    """The embedded default's key: temp/integration_secret.key, created once (mode 0600)."""
    from filelock import FileLock

    from synkro_dagster.database import temp_dir

    path = temp_dir() / "integration_secret.key"
    with FileLock(str(path) + ".lock", timeout=30):
        if not path.exists():
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(generate_key())
        return path.read_text().strip()


class SecretBox:
    """Encrypts and decrypts one integration's secrets (a str -> str mapping) as one token."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise SecretKeyError(f"{SECRET_KEY_ENV} holds no key; {_GENERATE_HINT}")
        fernets = []
        for position, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key.encode("ascii")))
            except (ValueError, TypeError, UnicodeEncodeError):
                # `from None`: the underlying error could echo the key material.
                raise SecretKeyError(
                    f"{SECRET_KEY_ENV}: key #{position} is not a valid Fernet key "
                    f"(32 url-safe base64-encoded bytes); {_GENERATE_HINT}"
                ) from None
        self._fernet = MultiFernet(fernets)
        self.key_count = len(fernets)

    @classmethod
    def from_env(cls) -> SecretBox:
        """The box for INTEGRATION_SECRET_KEY; SecretKeyError when it is unset or malformed."""
        return cls.from_setting(os.environ.get(SECRET_KEY_ENV))

    @classmethod
    def from_setting(cls, raw: str | None) -> SecretBox:
        """The box for `raw`, the value of INTEGRATION_SECRET_KEY (comma-separated keys).

        Only on the embedded local default (SYNKRO_DATABASE_URL unset too) an unset value falls
        back to a key generated once into temp/, so `./run demo` and `dagster dev` work on a
        fresh machine; a real database always needs the variable.
        """
        raw = raw or ""
        if not raw.strip() and not os.environ.get("SYNKRO_DATABASE_URL"):
            raw = local_development_key()
        if not raw.strip():
            raise SecretKeyError(f"{SECRET_KEY_ENV} is not set; {_GENERATE_HINT}")
        return cls([part.strip() for part in raw.split(",") if part.strip()])

    def __repr__(self) -> str:
        return f"SecretBox(keys={self.key_count})"

    def encrypt(self, secrets: Mapping[str, str]) -> str:
        """One Fernet token holding all `secrets`, encrypted with the first key."""
        payload = json.dumps({str(k): str(v) for k, v in secrets.items()}, sort_keys=True)
        return self._fernet.encrypt(payload.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str, integration_id: str) -> dict[str, str]:
        """The secrets in `token`; SecretDecryptError naming `integration_id` if no key fits."""
        try:
            payload = self._fernet.decrypt(token.encode("ascii"))
            secrets = json.loads(payload.decode("utf-8"))
        except (InvalidToken, UnicodeError, ValueError):
            raise self._undecryptable(integration_id) from None
        if not isinstance(secrets, dict):
            raise self._undecryptable(integration_id)
        return {str(k): str(v) for k, v in secrets.items()}

    def rotate(self, token: str, integration_id: str) -> str:
        """`token` re-encrypted with the first key (decrypted with whichever key fits)."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError):
            raise self._undecryptable(integration_id) from None

    @staticmethod
    def _undecryptable(integration_id: str) -> SecretDecryptError:
        return SecretDecryptError(
            f"integration '{integration_id}': its secrets cannot be decrypted with any key in "
            f"{SECRET_KEY_ENV} (wrong key, or the key that encrypted them was removed)"
        )
