"""The ways an HTTP source fails for good; each names integration, stream and URL (secrets removed)."""

from __future__ import annotations

from synkro_dagster.errors import SynkroError, TransientError, UserError


class HttpSourceError(SynkroError, RuntimeError):
    """An HTTP source failed for good: names integration, stream, URL (secrets removed), status
    and a body excerpt."""


class PaginationLoopError(HttpSourceError):
    """The server sent the same page (token, URL or content) twice: reading on would never end."""


class SourceUnreachableError(HttpSourceError, TransientError):
    """The host refused (or never answered) too many connections in this session."""


class ForbiddenDestinationError(HttpSourceError, UserError):
    """A request would go to a scheme or address Synkro never sends source traffic to (SSRF)."""


class RedirectRefusedError(HttpSourceError, UserError):
    """A redirect the spec's `follow_redirects` does not allow (e.g. to another origin)."""


class ResponseTooLargeError(HttpSourceError):
    """A response body is larger than the session's limit (max_response_bytes)."""
