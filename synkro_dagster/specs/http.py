"""The 'http' engine's part of a source spec: base URL, auth, pagination, rate limit, per-stream paths.

A source's `http:` block holds defaults for every stream; a stream's `http:` block says where its
records are and may override auth, pagination, records and total. Templates such as
"{base_url}/api/v1" are filled from the integration's config; auth names secrets the integration
provides. `HttpSourceOptions.check_spec` runs at definitions load and rejects placeholders and
secrets the spec does not declare.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

if TYPE_CHECKING:
    from synkro_dagster.specs.models import SourceSpec

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Filled for partitioned (report) streams: the period's first day and the day after its last.
PARTITION_PLACEHOLDERS = ("partition_date", "partition_end")

ParamValue = str | int | float | bool


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _kinds(union: Any) -> tuple[str, ...]:
    """The `kind` names of a discriminated union's models, in the union's order."""
    models = get_args(get_args(union)[0])
    return tuple(get_args(model.model_fields["kind"].annotation)[0] for model in models)


def _invalid(message: str) -> PydanticCustomError:
    """A validation error whose message reads as written (no "Value error, " prefix)."""
    return PydanticCustomError("invalid", "{message}", {"message": message})


# --- pagination ---------------------------------------------------------------------------------


class PageNumberPagination(_Model):
    """?page=1, 2, 3 ... until an empty page, the last page, or the reported total."""

    kind: Literal["page_number"]
    param: str = Field(default="page", description="request parameter holding the page number")
    start: int = Field(default=1, ge=0, description="number of the first page")
    page_size_param: str | None = Field(
        default=None, description="request parameter holding the page size (e.g. per_page)"
    )
    page_size: int | None = Field(default=None, gt=0, description="records per page to ask for")
    total_pages: str | None = Field(
        default=None, description="body path of the number of pages (e.g. meta.total_pages)"
    )


class OffsetPagination(_Model):
    """?offset=0&limit=100, then offset=100 ... until an empty page or the reported total."""

    kind: Literal["offset"]
    offset_param: str = "offset"
    limit_param: str = "limit"
    limit: int = Field(default=100, gt=0, description="records per page to ask for")
    start: int = Field(default=0, ge=0)


class CursorPagination(_Model):
    """The body names the next page's token; it goes back in a request parameter."""

    kind: Literal["cursor"]
    token: str = Field(description="body path of the next token (e.g. paging.next.after)")
    param: str = Field(description="request parameter receiving the token (e.g. after)")
    page_size_param: str | None = None
    page_size: int | None = Field(default=None, gt=0)


class NextUrlPagination(_Model):
    """The body holds the full URL of the next page."""

    kind: Literal["next_url"]
    path: str = Field(description="body path of the next page's URL (e.g. links.next)")
    page_size_param: str | None = None
    page_size: int | None = Field(default=None, gt=0)


class LinkHeaderPagination(_Model):
    """RFC 8288: the `Link` response header names the next page with rel="next"."""

    kind: Literal["link_header"]
    rel: str = "next"
    page_size_param: str | None = None
    page_size: int | None = Field(default=None, gt=0)


class SinglePage(_Model):
    """One request returns every record."""

    kind: Literal["single"]


Pagination = Annotated[
    PageNumberPagination
    | OffsetPagination
    | CursorPagination
    | NextUrlPagination
    | LinkHeaderPagination
    | SinglePage,
    Field(discriminator="kind"),
]

PAGINATION_KINDS = _kinds(Pagination)


# --- auth ---------------------------------------------------------------------------------------


class _AuthModel(_Model):
    """An auth kind. Fields named `*_secret` name integration secrets (see `auth_secret_names`)."""

    def templates(self) -> list[tuple[str, str]]:
        """(field, template) pairs filled from config; `check_spec` checks their placeholders."""
        return []


class BearerAuth(_AuthModel):
    """Authorization: Bearer <secret>."""

    kind: Literal["bearer"]
    token_secret: str = Field(description="name of the integration secret holding the token")


class ApiKeyAuth(_AuthModel):
    """An API key in a header (default X-API-Key) or a query parameter."""

    kind: Literal["api_key"]
    key_secret: str = Field(description="name of the integration secret holding the key")
    location: Literal["header", "query"] = "header"
    name: str = Field(default="X-API-Key", description="header or query parameter name")
    prefix: str = Field(default="", description="text before the key, e.g. 'Token '")


class BasicAuth(_AuthModel):
    """HTTP basic auth; the username comes from config (a template) or a secret."""

    kind: Literal["basic"]
    username: str | None = Field(default=None, description="template, e.g. '{username}'")
    username_secret: str | None = None
    password_secret: str

    @model_validator(mode="after")
    def _one_username(self) -> BasicAuth:
        if (self.username is None) == (self.username_secret is None):
            raise _invalid("give exactly one of username (a config template) or username_secret")
        return self

    def templates(self) -> list[tuple[str, str]]:
        return [("http.auth.username", self.username)] if self.username else []


class OAuth2ClientCredentials(_AuthModel):
    """OAuth2 client credentials grant; the token is cached and refreshed on expiry or a 401."""

    kind: Literal["oauth2_client_credentials"]
    token_url: str = Field(description="template, e.g. '{base_url}/oauth/token'")
    client_id_secret: str
    client_secret_secret: str
    scope: str | None = None
    client_auth: Literal["body", "basic"] = Field(
        default="body", description="send client id/secret in the form body or as basic auth"
    )
    default_expires_in: float = Field(
        default=3600, gt=0, description="token lifetime when the token response gives none"
    )

    def templates(self) -> list[tuple[str, str]]:
        return [("http.auth.token_url", self.token_url)]


Auth = Annotated[
    BearerAuth | ApiKeyAuth | BasicAuth | OAuth2ClientCredentials, Field(discriminator="kind")
]

AUTH_KINDS = _kinds(Auth)


def _known_kind(what: str, allowed: tuple[str, ...]) -> Any:
    """A before-validator that turns an unknown `kind` into one readable sentence."""

    def check(value: Any) -> Any:
        if isinstance(value, dict):
            kind = value.get("kind")
            if kind is None:
                raise PydanticCustomError(
                    "missing_kind",
                    "{what} needs a 'kind'; allowed: {allowed}",
                    {"what": what, "allowed": ", ".join(allowed)},
                )
            if kind not in allowed:
                raise PydanticCustomError(
                    "unknown_kind",
                    "unknown {what} kind '{kind}'; allowed: {allowed}",
                    {"what": what, "kind": str(kind), "allowed": ", ".join(allowed)},
                )
        return value

    return BeforeValidator(check)


PaginationField = Annotated[Pagination, _known_kind("pagination", PAGINATION_KINDS)]
AuthField = Annotated[Auth, _known_kind("auth", AUTH_KINDS)]


# --- the rest -------------------------------------------------------------------------------------


class RateLimit(_Model):
    """A client-side request budget shared by every stream of one integration's session."""

    requests_per_second: float | None = Field(default=None, gt=0)
    requests_per_minute: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _some(self) -> RateLimit:
        if self.requests_per_second is None and self.requests_per_minute is None:
            raise _invalid("give requests_per_second and/or requests_per_minute")
        return self

    @property
    def interval(self) -> float:
        """Seconds between two requests that keeps both budgets."""
        per_second = 1 / self.requests_per_second if self.requests_per_second else 0.0
        per_minute = 60 / self.requests_per_minute if self.requests_per_minute else 0.0
        return max(per_second, per_minute)


class Total(_Model):
    """Where the source reports how many records the stream has (for the completeness check)."""

    path: str | None = Field(default=None, description="body path, e.g. meta.total")
    header: str | None = Field(default=None, description="response header, e.g. X-Total-Count")

    @model_validator(mode="after")
    def _one(self) -> Total:
        if (self.path is None) == (self.header is None):
            raise _invalid("give exactly one of path or header")
        return self


class HttpSourceOptions(_Model):
    """Defaults shared by every stream of an http source."""

    base_url: str = Field(description="template, e.g. '{base_url}/api/v1'")
    headers: dict[str, str] = Field(default_factory=dict, description="templates")
    params: dict[str, ParamValue] = Field(default_factory=dict, description="sent on every request")
    auth: AuthField | None = None
    pagination: PaginationField = Field(default_factory=lambda: SinglePage(kind="single"))
    records: str = Field(
        default="$", description="path of the record list in the body: data, result.items, or $"
    )
    total: Total | None = None
    rate_limit: RateLimit | None = None
    timeout: float | None = Field(default=None, gt=0, description="seconds per request")
    follow_redirects: Literal["same_origin", "any", "none"] = Field(
        default="same_origin",
        description="same_origin: follow redirects within the origin (scheme, host, port) and "
        "refuse others; any: follow every redirect, dropping all credentials once it leaves the "
        "origin; none: never follow (a 3xx fails the stream)",
    )
    max_response_bytes: int | None = Field(
        default=None,
        gt=0,
        description="largest response body read (default SYNKRO_HTTP_MAX_RESPONSE_BYTES or 64 MiB)",
    )
    max_json_depth: int | None = Field(
        default=None,
        gt=0,
        le=10_000,
        description="deepest nesting of arrays/objects in a page (default SYNKRO_JSON_MAX_DEPTH "
        "or 100)",
    )

    def check_spec(self, source: SourceSpec) -> None:
        """Reject placeholders not declared in `config:` and secrets not declared in `secrets:`."""
        declared = set(source.config)
        problems: list[str] = []

        def templates(
            where: str,
            options: HttpSourceOptions | HttpStreamOptions,
            child: bool = False,
            partitioned: bool = False,
        ) -> None:
            found: list[tuple[str, str]] = []
            if isinstance(options, HttpSourceOptions):
                found.append(("http.base_url", options.base_url))
            else:
                found.append(("http.path", options.path))
            found += [(f"http.headers.{k}", v) for k, v in options.headers.items()]
            found += [
                (f"http.params.{k}", v) for k, v in options.params.items() if isinstance(v, str)
            ]
            auth = options.auth
            if auth is not None:
                found += auth.templates()
            from_parent = []
            for field, text in found:
                for name in PLACEHOLDER.findall(text):
                    if partitioned and name in PARTITION_PLACEHOLDERS and name not in declared:
                        continue
                    if (
                        child
                        and name not in declared
                        and field.startswith(("http.path", "http.params"))
                    ):
                        # A child stream's path and params take the parent record's fields.
                        from_parent.append(name)
                        continue
                    if name not in declared:
                        allowed = ", ".join(sorted(declared)) or "none declared"
                        problems.append(
                            f"{where}field '{field}': placeholder '{{{name}}}' is not declared "
                            f"in the spec's config: (declared: {allowed})"
                        )
            if child and not from_parent:
                problems.append(
                    f"{where}field 'http.path': a child stream needs a placeholder naming a field "
                    "of its parent's records (e.g. /orders/{id}/lines), else every parent record "
                    "would read the same URL"
                )
            for field, secret in _auth_secrets(auth):
                if secret not in source.secrets:
                    allowed = ", ".join(source.secrets) or "none declared"
                    problems.append(
                        f"{where}field 'http.auth.{field}': secret '{secret}' is not declared "
                        f"in the spec's secrets: (declared: {allowed})"
                    )

        templates("", self)
        for stream in source.streams:
            if stream.unnest is not None:
                continue  # read from its parent's records, not from an endpoint of its own
            if stream.http is None:
                problems.append(f"stream '{stream.name}': field 'http': required (path, ...)")
                continue
            templates(
                f"stream '{stream.name}', ",
                stream.http,
                child=stream.parent is not None,
                partitioned=stream.partitioned_by is not None,
            )
        if problems:
            # A custom error keeps pydantic's "Value error, " prefix off the message.
            raise PydanticCustomError("http_spec", "{problems}", {"problems": "\n".join(problems)})


class HttpStreamOptions(_Model):
    """Where one stream's records are, and what it overrides from the source defaults."""

    method: Literal["GET", "POST"] = "GET"
    path: str = Field(
        description="template appended to base_url, e.g. '/accounts/{account_id}/orders'"
    )
    params: dict[str, ParamValue] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: dict[str, Any] | None = Field(
        default=None, alias="json", description="JSON body for POST"
    )
    records: str | None = Field(default=None, description="overrides the source's records path")
    pagination: PaginationField | None = None
    auth: AuthField | None = None
    total: Total | None = None
    concurrency: int = Field(
        default=4,
        ge=1,
        le=32,
        description="child streams: parent records whose child endpoint is read at once "
        "(all requests share the source's rate budget)",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _auth_secrets(auth: Any) -> list[tuple[str, str]]:
    """(field, secret name) pairs an auth block reads."""
    if auth is None:
        return []
    pairs = [
        (name, getattr(auth, name))
        for name in type(auth).model_fields
        if name.endswith("_secret") and getattr(auth, name)
    ]
    return pairs


def auth_secret_names(auth: Any) -> list[str]:
    """The integration secrets an auth block needs."""
    return [secret for _, secret in _auth_secrets(auth)]
