"""Auth kinds of the HTTP connector, each on its own: what it adds to a request and how it renews.

No server: the OAuth2 token endpoint's answers are recorded `httpx.Response`s handed out by a
session stand-in through the same interface the real session offers (`AuthSession`). The
server-backed tests (test_http_connector.py, test_security_http.py) cover the same kinds end to end.
"""

from __future__ import annotations

import base64
import typing
from collections.abc import Mapping
from typing import Any

import httpx
import pytest

from synkro_dagster.connectors.http_auth import (
    NO_AUTH,
    Authenticator,
    authenticator_for,
    register_auth,
    registered_auth_models,
)
from synkro_dagster.connectors.http_errors import HttpSourceError
from synkro_dagster.specs.http import (
    AUTH_KINDS,
    ApiKeyAuth,
    Auth,
    BasicAuth,
    BearerAuth,
    OAuth2ClientCredentials,
    RateLimit,
)


class TokenEndpoint:
    """An `AuthSession` whose requests are answered from a list of recorded responses."""

    def __init__(self, responses: list[httpx.Response] | None = None, **secrets: str) -> None:
        self.secrets = secrets
        self.config = {"username": "ada", "base_url": "https://api.test"}
        self.responses = list(responses or [])
        self.sent: list[dict[str, Any]] = []
        self.runtime_secrets: list[str] = []

    def secret(self, name: str) -> str:
        return self.secrets[name]

    def render(self, template: str, where: str) -> str:
        return template.format(**self.config)

    def add_runtime_secret(self, value: str) -> None:
        self.runtime_secrets.append(value)

    def describe(self, stream: str, method: str, url: httpx.URL | str) -> str:
        return f"stream '{stream}': {method} {url}"

    def send(
        self,
        stream: str,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        basic: httpx.BasicAuth | None = None,
    ) -> httpx.Response:
        self.sent.append({"url": url, "data": dict(data or {}), "basic": basic})
        return self.responses.pop(0)


def _token(value: str, expires_in: float | None = 3600) -> httpx.Response:
    body: dict[str, Any] = {"access_token": value, "token_type": "bearer"}
    if expires_in is not None:
        body["expires_in"] = expires_in
    return httpx.Response(200, json=body)


def _applied(auth: Authenticator) -> tuple[dict[str, str], dict[str, Any]]:
    headers: dict[str, str] = {}
    params: dict[str, Any] = {}
    auth.apply(headers, params)
    return headers, params


def _oauth2(**fields: Any) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials(
        kind="oauth2_client_credentials",
        token_url="{base_url}/oauth/token",
        client_id_secret="client_id",
        client_secret_secret="client_secret",
        **fields,
    )


def test_every_auth_kind_of_the_spec_has_exactly_one_implementation() -> None:
    models = typing.get_args(typing.get_args(Auth)[0])
    assert set(models) == registered_auth_models()
    assert len(AUTH_KINDS) == len(models)


def test_an_auth_model_without_an_implementation_is_refused_by_kind() -> None:
    with pytest.raises(HttpSourceError, match="auth kind 'RateLimit' has no implementation"):
        authenticator_for(RateLimit(requests_per_second=1), TokenEndpoint())


def test_registering_a_second_implementation_of_one_kind_fails() -> None:
    with pytest.raises(ValueError, match="BearerAuth is registered twice"):
        register_auth(BearerAuth)(type("AnotherBearer", (Authenticator,), {}))


def test_no_auth_adds_nothing_and_never_renews() -> None:
    assert _applied(NO_AUTH) == ({}, {})
    assert NO_AUTH.refresh() is False


def test_bearer_sends_the_token_secret_in_the_authorization_header() -> None:
    auth = authenticator_for(
        BearerAuth(kind="bearer", token_secret="token"), TokenEndpoint(token="s3cret")
    )
    assert _applied(auth) == ({"Authorization": "Bearer s3cret"}, {})
    assert auth.secret_params == frozenset()
    assert auth.refresh() is False


def test_api_key_in_a_header_carries_its_prefix() -> None:
    spec = ApiKeyAuth(kind="api_key", key_secret="key", name="Authorization", prefix="Token ")
    auth = authenticator_for(spec, TokenEndpoint(key="k-1"))
    assert _applied(auth) == ({"Authorization": "Token k-1"}, {})


def test_api_key_in_the_query_names_its_parameter_as_secret() -> None:
    spec = ApiKeyAuth(kind="api_key", key_secret="key", location="query", name="api_key")
    auth = authenticator_for(spec, TokenEndpoint(key="k-1"))
    assert _applied(auth) == ({}, {"api_key": "k-1"})
    # URLs shown in logs and errors, and requests leaving the origin, drop this parameter.
    assert auth.secret_params == frozenset({"api_key"})


def test_basic_with_a_config_username_registers_the_encoded_pair_as_a_secret() -> None:
    session = TokenEndpoint(password="pw")
    spec = BasicAuth(kind="basic", username="{username}", password_secret="password")
    auth = authenticator_for(spec, session)
    encoded = base64.b64encode(b"ada:pw").decode()
    assert _applied(auth) == ({"Authorization": f"Basic {encoded}"}, {})
    assert session.runtime_secrets == [encoded]


def test_basic_with_a_secret_username() -> None:
    spec = BasicAuth(kind="basic", username_secret="user", password_secret="password")
    auth = authenticator_for(spec, TokenEndpoint(user="bob", password="pw"))
    assert _applied(auth)[0]["Authorization"] == "Basic " + base64.b64encode(b"bob:pw").decode()


def test_oauth2_fetches_one_token_and_reuses_it_until_renewed() -> None:
    session = TokenEndpoint(
        [_token("first"), _token("second")], client_id="id-1", client_secret="cs-1"
    )
    auth = authenticator_for(_oauth2(scope="read"), session)
    assert session.sent == []  # nothing is fetched before the first request
    assert _applied(auth) == ({"Authorization": "Bearer first"}, {})
    assert _applied(auth) == ({"Authorization": "Bearer first"}, {})
    assert len(session.sent) == 1
    assert session.sent[0]["url"] == "https://api.test/oauth/token"
    assert session.sent[0]["data"] == {
        "grant_type": "client_credentials",
        "scope": "read",
        "client_id": "id-1",
        "client_secret": "cs-1",
    }
    assert session.runtime_secrets == ["first"]

    assert auth.refresh() is True  # after a 401
    assert _applied(auth) == ({"Authorization": "Bearer second"}, {})
    assert session.runtime_secrets == ["first", "second"]


def test_oauth2_renews_a_token_that_is_about_to_expire() -> None:
    # A nanosecond of life, renewed 10% early: due again by the next request.
    session = TokenEndpoint([_token("a", 1e-9), _token("b")], client_id="i", client_secret="s")
    auth = authenticator_for(_oauth2(), session)
    assert _applied(auth)[0]["Authorization"] == "Bearer a"
    assert _applied(auth)[0]["Authorization"] == "Bearer b"
    assert len(session.sent) == 2


def test_oauth2_basic_client_auth_keeps_the_client_secret_out_of_the_form() -> None:
    session = TokenEndpoint([_token("t", None)], client_id="id-1", client_secret="cs-1")
    auth = authenticator_for(_oauth2(client_auth="basic"), session)
    _applied(auth)
    sent = session.sent[0]
    assert sent["data"] == {"grant_type": "client_credentials"}
    assert isinstance(sent["basic"], httpx.BasicAuth)


def test_a_token_response_without_access_token_fails_without_showing_the_secret() -> None:
    session = TokenEndpoint(
        [httpx.Response(200, json={"error": "cs-1 rejected"})], client_id="i", client_secret="cs-1"
    )
    auth = authenticator_for(_oauth2(), session)
    with pytest.raises(HttpSourceError) as raised:
        _applied(auth)
    assert str(raised.value) == (
        "stream 'oauth2 token': POST https://api.test/oauth/token: the token response has no "
        "access_token"
    )
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
