"""HttpConnector: reads the streams of an `http` source spec page by page, as bounded batches.

One session per (run, integration) owns one pooled `httpx.Client`, the auth state (an OAuth2 token
is fetched once and refreshed on expiry or a 401) and the client-side rate budget every stream of
the session shares. Each request is retried with exponential backoff and jitter on 429, 5xx,
timeouts and connection errors (tenacity), waiting at least as long as a `Retry-After` header
asks, within a bounded total wait. Every retry writes a log line (attempt, wait, reason, URL
without secrets) to the Dagster run log. Connection errors share one budget per session: once a
host has refused `max_connection_failures` connections in a row, every later request to it fails
at once with the same reason (a circuit breaker), so a dead source fails a run in seconds, not one
retry budget per stream. Each page's records are handed on as one batch as soon as the
page arrives, so memory holds one page. A server that repeats a page fails instead of looping.

Each auth kind is a class in `http_auth.py` and each pagination kind one in `http_paging.py`,
joined to its spec model by `register_auth` / `register_paginator`; this module owns the requests.

Secrets never leave the session: error messages and httpx's own log lines pass through the
integration's redaction, and query parameters that carry a key are dropped from any URL shown.
"""

from __future__ import annotations

import functools
import logging
import random
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from itertools import chain
from typing import Any
from urllib.parse import quote

import dagster as dg
import httpx
from pydantic import Field
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from synkro_dagster import jsonnumbers, limits
from synkro_dagster.connectors.base import ConnectorResource
from synkro_dagster.connectors.http_auth import NO_AUTH, Authenticator, authenticator_for
from synkro_dagster.connectors.http_errors import (
    ForbiddenDestinationError,
    HttpSourceError,
    RedirectRefusedError,
    ResponseTooLargeError,
    SourceUnreachableError,
)
from synkro_dagster.connectors.http_errors import (
    PaginationLoopError as PaginationLoopError,
)
from synkro_dagster.connectors.http_guard import (
    DestinationRefused,
    check_url,
    guarded_transport,
    same_origin,
)
from synkro_dagster.connectors.http_paging import (
    Page,
    PageRequest,
    PagingContext,
    paginator_for,
    select,
)
from synkro_dagster.contracts import (
    Batch,
    BatchesPart,
    Integration,
    ReadStats,
    Record,
    SourceDataError,
    StreamRead,
    redact,
)
from synkro_dagster.specs.cursors import render as render_cursor
from synkro_dagster.specs.http import (
    PLACEHOLDER,
    HttpSourceOptions,
    HttpStreamOptions,
    Total,
    auth_secret_names,
)
from synkro_dagster.specs.models import SourceSpec, StreamSpec

logger = logging.getLogger(__name__)
# Retry lines go through Dagster's logger so they reach the run's event log while a run is live.
retry_logger = dg.get_dagster_logger("synkro.http")


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Building a context loads the CA bundle (~0.1-0.2 s); one shared context keeps sessions cheap.
    return httpx.create_ssl_context()


# Hops followed for one request before giving up, like browsers and httpx (20).
MAX_REDIRECTS = 20
# Headers that carry credentials whoever added them; dropped when a redirect leaves the origin.
_CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie")


class _Retryable(Exception):
    """A response worth retrying (429 / 5xx); carries when the server said to come back."""

    def __init__(self, response: httpx.Response, not_before: float | None) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response
        self.not_before = not_before


@dataclass(frozen=True)
class _Request:
    """One logical request as its caller asked for it; every attempt adds the credentials anew."""

    stream: str
    method: str
    url: str
    params: Mapping[str, Any] | None = None
    headers: Mapping[str, str] | None = None
    json: Any = None
    data: Mapping[str, str] | None = None
    auth: Authenticator = NO_AUTH
    basic: httpx.BasicAuth | None = None


# ---------------------------------------------------------------------------------------------
# Small pure helpers


def _without_params(url: httpx.URL, names: Collection[str]) -> httpx.URL:
    """The URL without the query parameters `names`; the others keep their order."""
    kept = httpx.QueryParams([(k, v) for k, v in url.params.multi_items() if k not in names])
    return url.copy_with(query=None).copy_merge_params(kept)


def retry_after_deadline(value: str | None, now: float | None = None) -> float | None:
    """The `time.time()` before which a retry must not happen, from Retry-After seconds or HTTP-date."""
    if not value:
        return None
    now = time.time() if now is None else now
    text = value.strip()
    try:
        return now + max(0.0, float(text))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(now, moment.timestamp())


def parse_time(value: Any) -> datetime | None:
    """An aware datetime from ISO-8601 text (naive means UTC), or None for anything else."""
    if not isinstance(value, str) or len(value) < 10 or value[4:5] != "-":
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def cursor_filter(threshold: str) -> Callable[[Any], bool]:
    """A test 'is this record's cursor value >= threshold' for APIs that ignore the filter.

    Values that cannot be compared (missing, another type) are kept: the merge dedupes them."""
    moment = parse_time(threshold)
    if moment is not None:

        def keep_time(value: Any) -> bool:
            other = parse_time(value)
            return other is None or other >= moment

        return keep_time
    try:
        number = float(threshold)
    except ValueError:
        return lambda value: value is None or str(value) >= threshold

    def keep_number(value: Any) -> bool:
        try:
            return value is None or float(value) >= number
        except (TypeError, ValueError):
            return True

    return keep_number


class RateBudget:
    """Spaces requests at least `interval` seconds apart; shared by every stream of a session."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if self.interval <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


# Errors that mean "the host is not there": refused, unresolvable, no answer to the handshake.
CONNECTION_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout)


class ConnectionBreaker:
    """One budget of connection failures per host, shared by every stream of a session.

    After `threshold` connection errors in a row to a host, the circuit is open: `check` raises at
    once with the last reason instead of letting each remaining stream spend its own retries.
    A response from the host closes it again.
    """

    def __init__(self, threshold: int) -> None:
        self.threshold = max(threshold, 1)
        self._failures: dict[str, int] = {}
        self._reason: dict[str, str] = {}
        self._lock = threading.Lock()

    @staticmethod
    def host_of(url: httpx.URL | str) -> str:
        parsed = httpx.URL(str(url))
        return f"{parsed.scheme}://{parsed.host}" + (f":{parsed.port}" if parsed.port else "")

    def failed(self, url: httpx.URL | str, reason: str) -> None:
        host = self.host_of(url)
        with self._lock:
            self._failures[host] = self._failures.get(host, 0) + 1
            self._reason[host] = reason

    def succeeded(self, url: httpx.URL | str) -> None:
        host = self.host_of(url)
        with self._lock:
            self._failures.pop(host, None)
            self._reason.pop(host, None)

    def open_reason(self, url: httpx.URL | str) -> str | None:
        """The last connection error to the URL's host when its circuit is open, else None."""
        host = self.host_of(url)
        with self._lock:
            if self._failures.get(host, 0) >= self.threshold:
                return self._reason.get(host, "connection failed")
        return None


class _RedactingFilter(logging.Filter):
    """Rewrites log records of a logger (httpx logs full URLs) with the session's secrets removed."""

    def __init__(self, redactor: Callable[[str], str]) -> None:
        super().__init__()
        self._redact = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self._redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


# ---------------------------------------------------------------------------------------------
# The resource and its session


class HttpConnector(ConnectorResource):
    """Reads `http` source specs. One session per run and integration; see `session`."""

    connect_timeout: float = Field(default=10.0, description="seconds to open a connection")
    read_timeout: float = Field(
        default=60.0, description="seconds to wait for response data (a spec's timeout overrides)"
    )
    max_retries: int = Field(default=5, description="retries per request after the first try")
    backoff_initial: float = Field(default=1.0, description="first backoff wait, seconds")
    backoff_max: float = Field(default=60.0, description="longest single backoff wait, seconds")
    max_retry_wait: float = Field(
        default=300.0, description="most seconds one request may spend waiting between retries"
    )
    max_connection_failures: int = Field(
        default=5,
        description="connection errors in a row to one host, across all streams of a run, "
        "before every further request to it fails at once",
    )
    page_size: int = Field(
        default=100, description="page size when a pagination names a size parameter but no size"
    )
    max_pages: int = Field(default=1_000_000, description="pages per stream before giving up")
    max_connections: int = Field(default=10, description="connection pool size per session")
    body_excerpt_chars: int = Field(default=300, description="body text shown in errors")
    user_agent: str = "synkro-dagster/0.1"

    @contextmanager
    def open_session(self, source: SourceSpec, integration: Integration) -> Iterator[HttpSession]:
        """A session for one run of `integration`; closes its connections on exit."""
        session = HttpSession(self, source, integration)
        try:
            yield session
        finally:
            session.close()


class HttpSession:
    """One integration's open connection to its API: client pool, auth state and rate budget."""

    def __init__(self, connector: HttpConnector, source: SourceSpec, integration: Integration):
        if source.engine != "http" or source.http is None:
            raise HttpSourceError(f"spec '{source.name}' is not an http spec")
        self.connector = connector
        self.source = source
        self.options: HttpSourceOptions = source.http
        self.integration = integration
        self._runtime_secrets: list[str] = []
        self.config = self._resolve_config()
        self._check_secrets()
        rate = self.options.rate_limit
        self.budget = RateBudget(rate.interval if rate else 0.0)
        read = self.options.timeout or connector.read_timeout
        self.max_response_bytes = limits.HTTP_RESPONSE_BYTES.value(self.options.max_response_bytes)
        self.max_json_depth = limits.JSON_DEPTH.value(self.options.max_json_depth)
        self.client = httpx.Client(
            timeout=httpx.Timeout(
                connect=connector.connect_timeout, read=read, write=read, pool=read
            ),
            # Every connection resolves and checks its address (no link-local / metadata).
            transport=guarded_transport(
                verify=_ssl_context(),
                limits=httpx.Limits(
                    max_connections=connector.max_connections,
                    max_keepalive_connections=connector.max_connections,
                ),
            ),
            headers={"User-Agent": connector.user_agent, "Accept": "application/json"},
            # Redirects are followed by `_exchange`, which decides what credentials may go along.
            follow_redirects=False,
            # The environment's proxies and .netrc must not change where secrets are sent.
            trust_env=False,
        )
        self._auths: dict[str, Authenticator] = {}
        self.breaker = ConnectionBreaker(connector.max_connection_failures)
        # The request the current thread is sending, for the retry log line and the breaker's stop.
        self._current = threading.local()
        self._retrying, self._nested_retrying = (
            Retrying(
                retry=retry_if_exception_type(
                    (_Retryable, httpx.TimeoutException, httpx.TransportError)
                ),
                wait=self._wait,
                stop=self._stop,
                before_sleep=self._log_retry,
                reraise=True,
            )
            for _ in range(2)
        )
        self._log_filter = _RedactingFilter(self.redact)
        logging.getLogger("httpx").addFilter(self._log_filter)
        logging.getLogger("httpcore").addFilter(self._log_filter)

    def close(self) -> None:
        self.client.close()
        logging.getLogger("httpx").removeFilter(self._log_filter)
        logging.getLogger("httpcore").removeFilter(self._log_filter)

    # -- config, secrets, redaction

    def _resolve_config(self) -> dict[str, Any]:
        config = self.source.resolve_config(self.integration.config)
        missing = self.source.missing_config(self.integration.config)
        if missing:
            raise HttpSourceError(
                f"integration '{self.integration.id}': config {', '.join(map(repr, missing))} "
                f"required by spec '{self.source.name}' is not set"
            )
        return config

    def _check_secrets(self) -> None:
        needed = set(auth_secret_names(self.options.auth))
        for stream in self.source.streams:
            if stream.http is not None:
                needed.update(auth_secret_names(stream.http.auth))
        missing = sorted(n for n in needed if not self.integration.secrets.get(n))
        if missing:
            raise HttpSourceError(
                f"integration '{self.integration.id}': secret(s) {', '.join(map(repr, missing))} "
                f"needed by spec '{self.source.name}' are not set"
            )

    def secret(self, name: str) -> str:
        return str(self.integration.secrets[name])

    def add_runtime_secret(self, value: str) -> None:
        """A value learned while running (an access token) that must be redacted too."""
        self._runtime_secrets.append(value)

    def redact(self, text: str) -> str:
        return redact(text, [*self.integration.secrets.values(), *self._runtime_secrets])

    def render(self, template: str, where: str, parent: Mapping[str, Any] | None = None) -> str:
        """Fill {placeholders} from the integration's config, then (child streams) from the
        parent record's fields, URL-quoted so a value cannot change the path."""

        def value(match: Any) -> str:
            name = match.group(1)
            if parent is not None and name not in self.config:
                if parent.get(name) is None:
                    raise SourceDataError(
                        f"integration '{self.integration.id}': a parent record has no value for "
                        f"'{name}' (used in {where} of spec '{self.source.name}')"
                    )
                text = str(parent[name])
                # In a path the value is one segment; a query parameter is encoded by httpx.
                return quote(text, safe="") if where == "http.path" else text
            if name not in self.config or self.config[name] is None:
                raise HttpSourceError(
                    f"integration '{self.integration.id}': config '{name}' (used in {where} of "
                    f"spec '{self.source.name}') is not set"
                )
            return str(self.config[name])

        return PLACEHOLDER.sub(value, template)

    def safe_url(self, url: httpx.URL | str) -> str:
        """The URL with auth query parameters removed and secret values masked."""
        parsed = httpx.URL(str(url))
        hidden: set[str] = set()
        for auth in self._auths.values():
            hidden |= auth.secret_params
        if hidden and parsed.query:
            parsed = _without_params(parsed, hidden)
        return self.redact(str(parsed))

    def describe(self, stream: str, method: str, url: httpx.URL | str) -> str:
        return (
            f"integration '{self.integration.id}', stream '{stream}': {method} {self.safe_url(url)}"
        )

    def _excerpt(self, response: httpx.Response) -> str:
        limit = self.connector.body_excerpt_chars
        text = response.content[: limit * 4].decode("utf-8", errors="replace")
        text = self.redact(" ".join(text.split()))
        return text[:limit] + ("..." if len(text) > limit else "")

    # -- auth

    def _auth(self, spec: Any) -> Authenticator:
        """The session's one authenticator for an auth block (an OAuth2 token is shared)."""
        if spec is None:
            return NO_AUTH
        key = spec.model_dump_json()
        auth = self._auths.get(key)
        if auth is None:
            auth = self._auths[key] = authenticator_for(spec, self)
        return auth

    # -- one request, retried

    def _wait(self, state: RetryCallState) -> float:
        c = self.connector
        exponential = min(c.backoff_max, c.backoff_initial * 2 ** (state.attempt_number - 1))
        # Equal jitter: at least half the exponential step, so retries spread but never rush.
        wait = exponential / 2 + random.uniform(0, exponential / 2)
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _Retryable) and error.not_before is not None:
            # A tiny margin so the next request lands after, not at, the requested moment.
            wait = max(wait, error.not_before - time.time() + 0.005)
        return wait

    def _stop(self, state: RetryCallState) -> bool:
        c = self.connector
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, CONNECTION_ERRORS) and self.breaker.open_reason(
            self._requesting().url
        ):
            return True  # the session's connection budget for this host is spent
        return (
            state.attempt_number > c.max_retries
            or state.idle_for + (state.upcoming_sleep or 0.0) > c.max_retry_wait
        )

    def _log_retry(self, state: RetryCallState) -> None:
        """One line per retry: which request, which attempt, how long it waits and why."""
        current = self._requesting()
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _Retryable):
            reason = f"HTTP {error.response.status_code}"
            url: Any = error.response.request.url
            if error.not_before is not None:
                reason += " with Retry-After"
        else:
            reason = f"{type(error).__name__}: {error}" if error else "unknown"
            try:
                url = error.request.url  # type: ignore[union-attr]
            except (AttributeError, RuntimeError):  # an error raised before a request existed
                url = current.url
        retry_logger.warning(
            "%s: attempt %d of %d failed (%s); retrying in %.1fs",
            self.describe(current.stream, current.method, url),
            state.attempt_number,
            self.connector.max_retries + 1,
            self.redact(reason),
            state.upcoming_sleep or 0.0,
        )

    def send(
        self,
        stream: str,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        auth: Authenticator | None = None,
        basic: httpx.BasicAuth | None = None,
    ) -> httpx.Response:
        """One logical request: rate-budgeted, authorised, retried; a 2xx response or an error.

        Every request of the session (pages, child endpoints, OAuth2 tokens) takes this one path:
        `_attempt` adds the credentials and honours the breaker and the rate budget, `_exchange`
        follows redirects by the spec's policy and reads the body within its limit."""
        request = _Request(stream, method, url, params, headers, json, data, auth or NO_AUTH, basic)
        outer: _Request | None = getattr(self._current, "request", None)
        # A token fetch runs inside a page request's attempt: a Retrying is not re-entrant, so a
        # request made while another is under way on this thread takes the second one.
        retrying = self._retrying if outer is None else self._nested_retrying
        self._current.request = request
        try:
            return self._send(request, retrying)
        finally:
            # A token fetch runs inside a page request; the page request's retries log as the page.
            self._current.request = outer

    def _requesting(self) -> _Request:
        """The request the current thread is sending (for the retry callbacks)."""
        current: _Request | None = getattr(self._current, "request", None)
        return current or _Request("?", "GET", "")

    def _send(self, request: _Request, retrying: Retrying) -> httpx.Response:
        stream, method, url = request.stream, request.method, request.url
        self._refuse_if_open(stream, method, url)
        attempts = 0
        failure: BaseException | None = None
        response: httpx.Response | None = None
        try:
            for attempt in retrying:
                with attempt:
                    attempts += 1
                    response = self._attempt(request)
        except (_Retryable, httpx.HTTPError) as exc:
            failure = exc
        if failure is None and response is not None and response.is_success:
            return response
        # Built outside the except block so no exception chain (with raw URLs) is attached.
        waited = retrying.statistics.get("idle_for", 0.0)
        budget = f"gave up after {attempts} attempt(s) and {waited:.1f}s of retry waits"
        if isinstance(failure, _Retryable):
            response = failure.response
        if response is not None:
            where = self.describe(stream, method, response.request.url)
            reason = response.reason_phrase or ""
            message = (
                f"{where} failed: HTTP {response.status_code} {reason}; "
                f"body: {self._excerpt(response)!r}"
            )
            if response.is_redirect:
                message += (
                    f"; a redirect to {self.safe_url(response.headers.get('Location', '?'))}, "
                    "not followed (spec http.follow_redirects: none)"
                )
            if response.status_code == 429 or response.status_code >= 500:
                message += f"; {budget}"
                if isinstance(failure, _Retryable) and failure.not_before is not None:
                    asked = failure.not_before - time.time()
                    if asked > 0:
                        message += (
                            f"; the server asked to wait {asked:.0f}s more (Retry-After), "
                            f"beyond HttpConnector.max_retry_wait={self.connector.max_retry_wait:g}s"
                        )
        else:
            detail = self.redact(f"{type(failure).__name__}: {failure}")
            message = f"{self.describe(stream, method, url)} failed: {detail}; {budget}"
            if isinstance(failure, CONNECTION_ERRORS) and self.breaker.open_reason(url):
                message += (
                    f"; {self.breaker.threshold} connection failures in a row to "
                    f"{self.safe_url(self.breaker.host_of(url))} in this run, so its other "
                    "requests fail at once"
                )
                raise SourceUnreachableError(message)
        raise HttpSourceError(message)

    def _refuse_if_open(self, stream: str, method: str, url: str) -> None:
        reason = self.breaker.open_reason(url)
        if reason is not None:
            raise SourceUnreachableError(
                f"{self.describe(stream, method, url)} not attempted: {self.redact(reason)}; "
                f"{self.breaker.threshold} connection failures in a row to "
                f"{self.safe_url(self.breaker.host_of(url))} earlier in this run "
                "(HttpConnector.max_connection_failures)"
            )

    def _attempt(self, request: _Request) -> httpx.Response:
        """One try: credentials added, the breaker and the rate budget consulted, redirects
        followed; raises `_Retryable` on 429 / 5xx. A 401 renews the credentials once."""
        url, auth = request.url, request.auth
        refreshed = False
        while True:
            headers = dict(request.headers or {})
            params = dict(request.params or {})
            auth.apply(headers, params)
            self._refuse_if_open(request.stream, request.method, url)
            self.budget.acquire()
            try:
                response = self._exchange(
                    request,
                    params,
                    headers,
                    credential_headers=frozenset(
                        k.lower() for k in headers if k not in (request.headers or {})
                    ),
                )
            except CONNECTION_ERRORS as exc:
                self.breaker.failed(url, f"{type(exc).__name__}: {exc}")
                raise
            self.breaker.succeeded(url)
            if response.status_code == 401 and not refreshed:
                refreshed = auth.refresh()
                if refreshed:
                    continue
            if response.status_code == 429 or response.status_code >= 500:
                deadline = retry_after_deadline(response.headers.get("Retry-After"))
                logger.info(
                    "%s: HTTP %s, will retry",
                    self.redact(self.safe_url(response.request.url)),
                    response.status_code,
                )
                raise _Retryable(response, deadline)
            return response

    def _exchange(
        self,
        request: _Request,
        params: Mapping[str, Any],
        headers: Mapping[str, str],
        *,
        credential_headers: frozenset[str],
    ) -> httpx.Response:
        """Send one request and follow its redirects as `http.follow_redirects` says; the final
        response's body is read (bounded by max_response_bytes).

        A hop to another origin (scheme, host or port) is refused unless the spec says `any`; then
        every credential this session added (auth headers, key query parameters, basic auth,
        cookies) stays behind, for that hop and all later ones."""
        stream, method, url = request.stream, request.method, request.url
        # A form body (the OAuth2 token request's) carries the client secret.
        credential_body = request.data is not None
        credential_params = request.auth.secret_params
        policy = self.options.follow_redirects
        try:
            check_url(url)
        except DestinationRefused as exc:
            raise ForbiddenDestinationError(
                f"{self.describe(stream, method, url)} refused: {self.redact(str(exc))}"
            ) from None
        hop = self.client.build_request(
            method,
            url,
            params=params or None,
            headers=headers,
            json=request.json,
            data=request.data,
        )
        origin = hop.url
        left_origin = False
        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = self.client.send(
                    hop,
                    auth=None if left_origin else request.basic,
                    stream=True,
                    follow_redirects=False,
                )
            except DestinationRefused as exc:
                raise ForbiddenDestinationError(
                    f"{self.describe(stream, method, hop.url)} refused: {self.redact(str(exc))}"
                ) from None
            following = response.next_request if policy != "none" else None
            if following is None:
                self._read_body(response, stream)
                return response
            response.close()
            target = following.url
            where = (
                f"{self.describe(stream, method, hop.url)}: HTTP {response.status_code} "
                f"redirect to {self.safe_url(target)}"
            )
            try:
                check_url(target)
            except DestinationRefused as exc:
                raise ForbiddenDestinationError(
                    f"{where} refused: {self.redact(str(exc))}"
                ) from None
            if not left_origin and not same_origin(origin, target):
                if policy == "same_origin":
                    raise RedirectRefusedError(
                        f"{where} refused: it leaves the origin "
                        f"{origin.scheme}://{origin.netloc.decode('ascii')} and credentials "
                        "must not follow it (spec http.follow_redirects: same_origin; 'any' "
                        "follows such redirects without credentials)"
                    )
                if credential_body and following.method != "GET":
                    raise RedirectRefusedError(
                        f"{where} refused: the request body carries credentials and the "
                        "redirect would resend it to another origin"
                    )
                left_origin = True
            if left_origin:
                following = self._without_credentials(
                    following, credential_params, credential_headers
                )
            hop = following
        raise HttpSourceError(
            f"{self.describe(stream, method, url)}: more than {MAX_REDIRECTS} redirects"
        )

    @staticmethod
    def _without_credentials(
        request: httpx.Request, params: frozenset[str], headers: frozenset[str]
    ) -> httpx.Request:
        """The request with every credential this session added removed."""
        drop = headers | set(_CREDENTIAL_HEADERS)
        for name in list(request.headers):
            if name.lower() in drop:
                del request.headers[name]
        if params and request.url.query:
            request.url = _without_params(request.url, params)
        return request

    def _read_body(self, response: httpx.Response, stream: str) -> None:
        """Read the (decompressed) body, refusing it past max_response_bytes before it is held."""
        limit = self.max_response_bytes
        problem = (
            f"{self.describe(stream, response.request.method, response.request.url)}: the "
            f"response body is larger than {limit} bytes (max_response_bytes; "
            f"{limits.HTTP_RESPONSE_BYTES.hint('http.max_response_bytes')})"
        )
        try:
            declared = response.headers.get("Content-Length", "")
            encoded = response.headers.get("Content-Encoding", "identity").lower()
            if declared.isdigit() and encoded == "identity" and int(declared) > limit:
                raise ResponseTooLargeError(problem)
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    chunks.clear()
                    raise ResponseTooLargeError(problem)
                chunks.append(chunk)
            # What httpx's own read() does; the body is then available as response.content.
            response._content = b"".join(chunks)
        finally:
            response.close()

    # -- reading a stream

    def read(
        self, stream: StreamSpec, cursor: str | None, values: Mapping[str, Any] | None = None
    ) -> StreamRead:
        """Read `stream` from `cursor` (None: everything). Lazy: nothing is fetched until the
        part's batches are iterated."""
        if stream.http is None:
            raise HttpSourceError(
                f"stream '{stream.name}' of spec '{self.source.name}' has no http"
            )
        if stream.parent is not None:
            raise HttpSourceError(
                f"stream '{stream.name}' of spec '{self.source.name}' is a child of "
                f"'{stream.parent}': read it with synkro_dagster.connectors.streams.read_stream"
            )
        stats = ReadStats()
        # `values` fill the path and params placeholders beyond config (a report's period).
        pages = self._pages(stream, stream.http, cursor, stats, parent=values)
        return StreamRead(parts=iter([BatchesPart(pages, name=stream.name)]), stats=stats)

    def read_children(
        self, stream: StreamSpec, parents: Iterator[list[Record]], stats: ReadStats
    ) -> Iterator[tuple[Record, list[Record]]]:
        """(parent record, its child records) for each parent, in parent order.

        The child endpoint of up to `http.concurrency` parents is read at once, every request
        through `send` (the same rate budget, retries and redaction as any page); at most that
        many parents' children are held in memory.
        """
        if stream.http is None:
            raise HttpSourceError(
                f"stream '{stream.name}' of spec '{self.source.name}' has no http"
            )
        options = stream.http
        workers = options.concurrency

        def fetch(parent: Record) -> tuple[list[Record], ReadStats]:
            own = ReadStats()
            records = [
                r for page in self._pages(stream, options, None, own, parent=parent) for r in page
            ]
            return records, own

        pending: deque[tuple[Record, Future]] = deque()
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"synkro-{stream.name}")
        try:
            for batch in parents:
                for parent in batch:
                    pending.append((parent, pool.submit(fetch, parent)))
                    while len(pending) >= workers:
                        yield self._child_result(pending.popleft(), stats)
            while pending:
                yield self._child_result(pending.popleft(), stats)
        finally:
            # A failure (or the consumer stopping) cancels the parents not started yet.
            pool.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def _child_result(item: tuple[Record, Future], stats: ReadStats) -> tuple[Record, list[Record]]:
        parent, future = item
        records, own = future.result()
        stats.pages += own.pages
        stats.bytes += own.bytes
        return parent, records

    def _url(self, options: HttpStreamOptions, parent: Mapping[str, Any] | None = None) -> str:
        path = self.render(options.path, "http.path", parent)
        if path.startswith(("http://", "https://")):
            return path
        base = self.render(self.options.base_url, "http.base_url").rstrip("/")
        return f"{base}/{path.lstrip('/')}" if path else base

    def _paging_context(self, stream: str, method: str) -> PagingContext:
        return PagingContext(
            stream=f"integration '{self.integration.id}', stream '{stream}'",
            method=method,
            page_size=self.connector.page_size,
            max_pages=self.connector.max_pages,
            follow_redirects=self.options.follow_redirects,
            safe_url=self.safe_url,
            redact=self.redact,
        )

    def _check_records(
        self, name: str, number: int, response: httpx.Response, records: list, path: str
    ) -> None:
        """Every record is an object nested at most max_json_depth levels deep."""
        if _flat_objects(records):
            return
        where = (
            f"{self.describe(name, response.request.method, response.request.url)}, page {number}"
        )
        limit = self.max_json_depth
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                raise SourceDataError(
                    f"{where}: record {index + 1} of the records path '{path}' is "
                    f"{type(record).__name__} {self.redact(repr(record)[:80])}, not an object"
                )
            for key, value in record.items():
                if isinstance(value, dict | list) and limits.too_deep(value, limit - 1):
                    raise SourceDataError(
                        f"{where}: record {index + 1}, field '{key}': JSON nested deeper than "
                        f"{limit} levels (max_json_depth; "
                        f"{limits.JSON_DEPTH.hint('http.max_json_depth')})"
                    )

    def _parse_page(self, name: str, number: int, response: httpx.Response) -> Any:
        """The page's JSON, refusing what would fail later without a place: lone surrogates
        (UTF-8 and PostgreSQL cannot store them) and nesting beyond Python's recursion limit
        (records nested deeper than max_json_depth are refused by `_check_records`)."""
        content = response.content
        where = (
            f"{self.describe(name, response.request.method, response.request.url)}, page {number}"
        )
        at = limits.lone_surrogate_at(content)
        if at is not None:
            raise SourceDataError(
                f"{where}: a lone UTF-16 surrogate escape {content[at : at + 6].decode()} at "
                f"{limits.position(content, at)}; it is not a character and cannot be stored"
            )
        try:
            return jsonnumbers.loads(content)  # decimals stay exact (1.10 is not 1.1)
        except RecursionError:
            # Deeper than Python's own limit (~1000 levels): refused before anything is held.
            raise SourceDataError(
                f"{where}: JSON nested deeper than {self.max_json_depth} levels "
                f"(max_json_depth; {limits.JSON_DEPTH.hint('http.max_json_depth')})"
            ) from None
        except ValueError as exc:
            raise HttpSourceError(
                f"{where}: the response is not JSON ({self.redact(str(exc))}): "
                f"{self._excerpt(response)!r}"
            ) from None

    def _pages(
        self,
        stream: StreamSpec,
        options: HttpStreamOptions,
        cursor: str | None,
        stats: ReadStats,
        parent: Mapping[str, Any] | None = None,
    ) -> Iterator[Batch]:
        src = self.options
        name = stream.name
        pagination = options.pagination or src.pagination
        records_path = options.records or src.records
        total_spec: Total | None = options.total or src.total
        auth = self._auth(options.auth or src.auth)
        url = self._url(options, parent)
        params: dict[str, Any] = {}
        for key, value in {**src.params, **options.params}.items():
            params[key] = (
                self.render(value, f"http.params.{key}", parent if key in options.params else None)
                if isinstance(value, str)
                else value
            )
        headers = {
            key: self.render(value, f"http.headers.{key}")
            for key, value in {**src.headers, **options.headers}.items()
        }
        keep: Callable[[Any], bool] | None = None
        cursor_field = stream.cursor.field if stream.cursor else None
        # `cursor` is where this read starts (the data layer resolved initial and lookback);
        # it goes out exactly as stored unless the spec asks for a conversion.
        start = cursor if stream.cursor else None
        if stream.cursor and start:
            if stream.cursor.param:
                params[stream.cursor.param] = render_cursor(start, stream.cursor.format)
            keep = cursor_filter(start)

        paginator = paginator_for(pagination, self._paging_context(name, options.method))
        request: PageRequest | None = paginator.first(url, params)
        received = 0
        dropped = 0
        body: Any = None
        records: Any = None
        number = 0
        while request is not None:
            number += 1
            # Drop the previous page before fetching the next, so at most one page is held here.
            body = records = None
            response = self.send(
                name,
                options.method,
                request.url,
                params=request.params,
                headers=headers,
                json=options.json_body,
                # A next-page URL at another origin is read without credentials, like a redirect.
                auth=auth if request.credentials else NO_AUTH,
            )
            stats.pages += 1
            stats.bytes += len(response.content)
            body = self._parse_page(name, number, response)
            records = select(body, records_path)
            if records is None and number > 1:
                records = []
            if not isinstance(records, list):
                raise SourceDataError(
                    f"integration '{self.integration.id}', stream '{name}': records path "
                    f"'{records_path}' is not a list in the response of "
                    f"{self.safe_url(response.request.url)} (got {type(records).__name__})"
                )
            self._check_records(name, number, response, records, records_path)
            if stats.source_total is None and total_spec is not None:
                stats.source_total = self._total(total_spec, body, response)
            if not records:
                break
            paginator.check_content(number, response)
            received += len(records)
            if keep is not None and cursor_field:
                before = len(records)
                records = [r for r in records if keep(_field(r, cursor_field))]
                dropped += before - len(records)
            stats.records += len(records)
            if records:
                yield records
            request = paginator.next(
                Page(number, request, response, body, received, stats.source_total)
            )
        if dropped:
            logger.info(
                "integration %s, stream %s: dropped %d record(s) older than the cursor "
                "(the API ignores the filter)",
                self.integration.id,
                name,
                dropped,
            )

    @staticmethod
    def _total(spec: Total, body: Any, response: httpx.Response) -> int | None:
        raw = response.headers.get(spec.header) if spec.header else select(body, spec.path)
        try:
            return int(raw) if raw is not None else None
        except (TypeError, ValueError):
            return None


def _flat_objects(records: list) -> bool:
    """Whether every record is an object with no object or array value (the usual page), found
    in C-level passes over the types alone; anything else gets the per-record check."""
    if not all(issubclass(kind, dict) for kind in set(map(type, records))):
        return False
    values = chain.from_iterable(map(dict.values, records))
    return not any(issubclass(kind, dict | list) for kind in set(map(type, values)))


def _field(record: Any, name: str) -> Any:
    if isinstance(record, Mapping):
        if name in record:
            return record[name]
        return select(record, name) if "." in name else None
    return None
