"""Auth kinds of the HTTP connector: one class per kind of a spec's `auth:` block, joined in one map.

An `Authenticator` adds its credentials to each request (`apply`) and renews them when the server
answers 401 (`refresh`). `register_auth(Model)` joins a spec model (synkro_dagster/specs/http.py)
to the class that implements it in one map; `authenticator_for` is the one place a session turns a spec's
auth block into behaviour. Every value a kind learns at run time (a token, an encoded pair) is
handed to the session's redaction, and every query parameter that carries a secret is named in
`secret_params` so no URL shown in a log or an error carries it.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import httpx
from pydantic import BaseModel

from synkro_dagster.connectors.http_errors import HttpSourceError
from synkro_dagster.connectors.http_kinds import KindMap
from synkro_dagster.specs.http import ApiKeyAuth, BasicAuth, BearerAuth, OAuth2ClientCredentials

logger = logging.getLogger(__name__)


class AuthSession(Protocol):
    """What an auth kind may use of its session: secrets, config templates, redaction, requests."""

    def secret(self, name: str) -> str: ...

    def render(self, template: str, where: str) -> str: ...

    def add_runtime_secret(self, value: str) -> None: ...

    def describe(self, stream: str, method: str, url: httpx.URL | str) -> str: ...

    def send(
        self,
        stream: str,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        basic: httpx.BasicAuth | None = None,
    ) -> httpx.Response: ...


class Authenticator:
    """Adds no credentials; each auth kind is a subclass registered with `register_auth`."""

    # Query parameters that carry a secret: removed from every URL shown and from a request that
    # leaves the origin.
    secret_params: frozenset[str] = frozenset()

    def apply(self, headers: dict[str, str], params: dict[str, Any]) -> None:
        """Add this kind's credentials to one request's headers and query parameters."""

    def refresh(self) -> bool:
        """Renew the credentials after a 401; True when the request is worth sending again."""
        return False


NO_AUTH = Authenticator()

_AUTHENTICATORS: KindMap[Callable[[Any, AuthSession], Authenticator]] = KindMap(
    "auth", "synkro_dagster.connectors.http_auth.register_auth"
)
# Class decorator: the class implements the auth kind of a spec model, built as
# `cls(spec, session)` once per session and distinct auth block.
register_auth = _AUTHENTICATORS.register
registered_auth_models = _AUTHENTICATORS.models


def authenticator_for(spec: BaseModel, session: AuthSession) -> Authenticator:
    """The authenticator for one spec auth block; its secrets are read from `session` now."""
    return _AUTHENTICATORS.implementation(spec)(spec, session)


class StaticAuth(Authenticator):
    """Credentials fixed for the session: the same headers and query parameters on every request."""

    def __init__(self, headers: dict[str, str], params: dict[str, str]) -> None:
        self.headers = headers
        self.params = params
        self.secret_params = frozenset(params)

    def apply(self, headers: dict[str, str], params: dict[str, Any]) -> None:
        headers.update(self.headers)
        params.update(self.params)


@register_auth(BearerAuth)
class Bearer(StaticAuth):
    """Authorization: Bearer <token secret>."""

    def __init__(self, spec: BearerAuth, session: AuthSession) -> None:
        super().__init__({"Authorization": f"Bearer {session.secret(spec.token_secret)}"}, {})


@register_auth(ApiKeyAuth)
class ApiKey(StaticAuth):
    """The key (after its prefix) in a header or a query parameter."""

    def __init__(self, spec: ApiKeyAuth, session: AuthSession) -> None:
        value = spec.prefix + session.secret(spec.key_secret)
        if spec.location == "header":
            super().__init__({spec.name: value}, {})
        else:
            super().__init__({}, {spec.name: value})


@register_auth(BasicAuth)
class Basic(StaticAuth):
    """Authorization: Basic base64(username:password)."""

    def __init__(self, spec: BasicAuth, session: AuthSession) -> None:
        if spec.username_secret:
            username = session.secret(spec.username_secret)
        else:
            username = session.render(spec.username or "", "http.auth.username")
        pair = f"{username}:{session.secret(spec.password_secret)}".encode()
        encoded = base64.b64encode(pair).decode("ascii")
        super().__init__({"Authorization": f"Basic {encoded}"}, {})
        # The encoded pair is as secret as the password itself.
        session.add_runtime_secret(encoded)


@register_auth(OAuth2ClientCredentials)
class OAuth2(Authenticator):
    """Client credentials grant: a token fetched on first use, renewed shortly before it expires
    and after a 401, shared by every thread of the session."""

    def __init__(self, spec: OAuth2ClientCredentials, session: AuthSession) -> None:
        self._session = session
        self._spec = spec
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = threading.Lock()

    def apply(self, headers: dict[str, str], params: dict[str, Any]) -> None:
        with self._lock:
            if self._token is None or time.monotonic() >= self._refresh_at:
                self._fetch()
            headers["Authorization"] = f"Bearer {self._token}"

    def refresh(self) -> bool:
        with self._lock:
            self._fetch()
        return True

    def _fetch(self) -> None:
        spec, session = self._spec, self._session
        client_id = session.secret(spec.client_id_secret)
        client_secret = session.secret(spec.client_secret_secret)
        form = {"grant_type": "client_credentials"}
        if spec.scope:
            form["scope"] = spec.scope
        headers = {"Accept": "application/json"}
        basic = None
        if spec.client_auth == "basic":
            basic = httpx.BasicAuth(client_id, client_secret)
        else:
            form.update(client_id=client_id, client_secret=client_secret)
        url = session.render(spec.token_url, "http.auth.token_url")
        response = session.send(
            "oauth2 token", "POST", url, headers=headers, data=form, basic=basic
        )
        try:
            body = response.json()
            token = body["access_token"]
        except (ValueError, KeyError, TypeError):
            raise HttpSourceError(
                session.describe("oauth2 token", "POST", url)
                + ": the token response has no access_token"
            ) from None
        session.add_runtime_secret(token)
        expires_in = float(body.get("expires_in") or spec.default_expires_in)
        # Refresh a little early so a token does not expire between check and use.
        self._refresh_at = time.monotonic() + expires_in - min(60.0, expires_in * 0.1)
        self._token = token
        logger.debug("%s: fetched an OAuth2 token", session.describe("oauth2 token", "POST", url))
