"""Synkro's exception tree: one root, a branch a user fixes and a branch time fixes.

    SynkroError                 anything Synkro raises on purpose
    ├── UserError               the message names what is wrong and what to do; the CLI prints
    │                           it as one line, without a traceback
    └── TransientError          may pass on its own (network, lock timeout, serialization
                                failure); a sync failing only with these is retried with backoff

Every class Synkro defines derives from one of these (and keeps the builtin base it had, so
`except ValueError` around a spec load still works). Callers decide by class, never by name.
"""

from __future__ import annotations


class SynkroError(Exception):
    """Root of every error Synkro raises on purpose."""


class UserError(SynkroError):
    """A problem the user fixes (a spec, an integration, a key, a command's input); the message
    says which one and what to do."""


class TransientError(SynkroError):
    """A failure that may pass on its own; a retry later is the fix."""


# SQLSTATEs of PostgreSQL failures a retry can cure: serialization failure, deadlock, lock not
# available (lock_timeout / NOWAIT), and the connection classes (08xxx: connection lost / refused).
_TRANSIENT_SQLSTATES = ("40001", "40P01", "55P03")
_TRANSIENT_SQLSTATE_CLASSES = ("08",)


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) is a failure a later retry can cure: a TransientError,
    or a PostgreSQL serialization failure, deadlock, lock timeout or lost connection."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TransientError):
            return True
        if isinstance(current, UserError):
            return False
        sqlstate = getattr(current, "sqlstate", None) or getattr(
            getattr(current, "orig", None), "sqlstate", None
        )
        if isinstance(sqlstate, str) and (
            sqlstate in _TRANSIENT_SQLSTATES or sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
        ):
            return True
        current = current.__cause__ or current.__context__
    return False
