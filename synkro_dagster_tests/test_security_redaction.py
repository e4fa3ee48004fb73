"""Redaction removes every encoded form of a secret, and leaves ordinary words alone."""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import quote, quote_plus

import pytest

from synkro_dagster.automation.alerts import redact_secrets
from synkro_dagster.contracts import Integration, redact, redaction_mode

KEY = "k3y/Zq81+&=secret value"


@pytest.mark.parametrize(
    "form",
    [
        KEY,
        quote(KEY, safe=""),
        re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(KEY, safe="")),
        quote_plus(KEY),
        quote(KEY),
        base64.b64encode(KEY.encode()).decode(),
        base64.urlsafe_b64encode(KEY.encode()).decode().rstrip("="),
        json.dumps(KEY)[1:-1],
        json.dumps(KEY)[1:-1].replace("/", "\\/"),
    ],
)
def test_every_encoded_form_of_a_secret_is_redacted(form: str) -> None:
    text = f'HTTP 400: {{"error": "invalid key", "echo": "/items?api_key={form}&page=2"}}'
    cleaned = redact(text, [KEY])
    assert form not in cleaned
    assert "/items?api_key=***&page=2" in cleaned
    assert Integration("i", "t", "s", secrets={"k": KEY}).redact(text) == cleaned
    assert form not in redact_secrets(text, [KEY])


def test_json_escaped_non_ascii_secret_is_redacted() -> None:
    secret = 'pä"ss\\wörd-9'
    body = json.dumps({"password": secret})
    assert redact(body, [secret]) == '{"password": "***"}'
    assert redact(json.dumps({"p": secret}, ensure_ascii=False), [secret]) == '{"p": "***"}'


@pytest.mark.parametrize(
    ("secret", "text", "expected"),
    [
        # A common word as a (weak) secret never blanks the message that explains the failure.
        ("token", "wrong bearer token", "wrong bearer token"),
        ("password", "wrong password for user erp", "wrong password for user erp"),
        ("Secret", "the secret is wrong", "the secret is wrong"),
        # Shorter than 4 characters: cannot be told apart from ordinary text.
        ("42", "42 rows read", "42 rows read"),
        # A short all-letter value is most likely a word.
        ("orders", "stream orders failed", "stream orders failed"),
        # A short value with digits or symbols: only where it stands as a whole token.
        (
            "ab12",
            "key ab12 refused; xab12y and ab123 stay",
            "key *** refused; xab12y and ab123 stay",
        ),
        ("p%1x", "sent p%251x", "sent ***"),
        # 8 characters or more: everywhere, also inside other text.
        ("Zq81-tok", "url?k=Zq81-tok&x=Zq81-tokZq81-tok", "url?k=***&x=******"),
    ],
)
def test_no_over_redaction_of_ordinary_words(secret: str, text: str, expected: str) -> None:
    assert redact(text, [secret]) == expected


def test_redaction_modes_follow_the_documented_rule() -> None:
    assert redaction_mode("abc") == "none"
    assert redaction_mode("token") == "none"
    assert redaction_mode("PASSWORD") == "none"
    assert redaction_mode("hunter") == "none"
    assert redaction_mode("hunter2") == "token"
    assert redaction_mode("tttttttt") == "substring"
    assert redaction_mode("correcthorse") == "substring"


def test_the_longest_secret_wins_when_one_contains_another() -> None:
    assert redact("a-long-secret-value", ["long-secret", "a-long-secret-value"]) == "***"
