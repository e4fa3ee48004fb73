"""Size and shape limits for untrusted input (HTTP bodies, JSON, CSV, XLSX), from the environment.

Every limit keeps one hostile input from taking the run's whole memory or stack: the defaults let
ordinary sources through and refuse a bomb with an error that names the limit and how to raise it.
A spec setting wins over the environment variable, which wins over the default here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limit:
    """One limit: its environment variable, default and what it bounds (for error messages)."""

    env: str
    default: int
    what: str

    def value(self, override: int | None = None) -> int:
        """The spec's `override` if given, else the environment variable, else the default."""
        if override is not None:
            return override
        raw = os.environ.get(self.env, "").strip()
        if not raw:
            return self.default
        try:
            value = int(raw.replace("_", ""))
        except ValueError:
            raise ValueError(f"{self.env}={raw!r} is not a whole number") from None
        if value <= 0:
            raise ValueError(f"{self.env}={raw!r} must be positive")
        return value

    def hint(self, spec_field: str | None = None) -> str:
        """How to raise it, for an error message."""
        where = f"the spec's {spec_field} or " if spec_field else ""
        return f"raise it with {where}{self.env}"


HTTP_RESPONSE_BYTES = Limit(
    "SYNKRO_HTTP_MAX_RESPONSE_BYTES", 64 * MIB, "bytes in one HTTP response body (decompressed)"
)
JSON_DEPTH = Limit("SYNKRO_JSON_MAX_DEPTH", 100, "nesting levels of JSON arrays and objects")
CSV_FIELD_CHARS = Limit("SYNKRO_CSV_MAX_FIELD_CHARS", 1 * MIB, "characters in one CSV field")
CSV_LINE_BYTES = Limit("SYNKRO_CSV_MAX_LINE_BYTES", 64 * MIB, "bytes in one line of a CSV file")
XLSX_UNCOMPRESSED_BYTES = Limit(
    "SYNKRO_XLSX_MAX_UNCOMPRESSED_BYTES", 1024 * MIB, "decompressed bytes of an XLSX file"
)
XLSX_RATIO = Limit(
    "SYNKRO_XLSX_MAX_RATIO", 200, "decompressed / compressed size of one part of an XLSX file"
)
XLSX_SHARED_STRINGS_BYTES = Limit(
    "SYNKRO_XLSX_MAX_SHARED_STRINGS_BYTES",
    64 * MIB,
    "decompressed bytes of an XLSX file's shared-strings table (held in memory while reading)",
)


# -- JSON checks: lone surrogates on the raw bytes (a C-speed search), nesting on parsed values

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def too_deep(value: Any, max_depth: int) -> bool:
    """Whether objects/arrays nest deeper than `max_depth` levels in `value` (a record is level
    1). Iterative, so the check cannot itself hit the recursion limit it guards; scalars cost one
    isinstance each."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def lone_surrogates(raw: bytes) -> Iterator[int]:
    r"""Byte offsets of the `\uD800`-`\uDFFF` escapes in JSON text that are not half of a
    surrogate pair (not a character: UTF-8 and PostgreSQL cannot store them)."""
    if b"\\u" not in raw:
        return
    pending_high: int | None = None
    for match in _SURROGATE_ESCAPE.finditer(raw):
        start = match.start()
        backslashes = 0
        while start - backslashes - 1 >= 0 and raw[start - backslashes - 1] == 0x5C:
            backslashes += 1
        if backslashes % 2:
            continue  # an escaped backslash followed by the letters "uD8..": plain text
        is_high = match.group()[3:4].lower() in b"89ab"
        if pending_high is not None:
            if not is_high and start == pending_high + 6:
                pending_high = None
                continue
            yield pending_high
            pending_high = None
        if is_high:
            pending_high = start
        else:
            yield start
    if pending_high is not None:
        yield pending_high


def lone_surrogate_at(raw: bytes) -> int | None:
    """The first of `lone_surrogates(raw)`, or None."""
    return next(lone_surrogates(raw), None)


def lone_surrogate_in_file(handle: BinaryIO, chunk_size: int = 1024 * 1024) -> int | None:
    """`lone_surrogate_at` over a whole file read in chunks (memory stays flat): each chunk is
    judged with some bytes of context on both sides, so a pair cut by a chunk edge is a pair."""
    context = 64
    base = handle.tell()
    previous = b""
    data = handle.read(chunk_size)
    offset = 0
    while data:
        following = handle.read(chunk_size)
        window = previous + data + following[:12]
        for at in lone_surrogates(window):
            if len(previous) <= at < len(previous) + len(data):
                handle.seek(base)
                return offset + at - len(previous)
        offset += len(data)
        previous = (previous + data)[-context:]
        data = following
    handle.seek(base)
    return None


def longest_line_over(handle: BinaryIO, limit: int, chunk_size: int = 1024 * 1024) -> int | None:
    """The (1-based) number of the first line longer than `limit` bytes, or None; the file is
    read in chunks, so a hostile single-line file is refused after `limit` bytes, not loaded."""
    base = handle.tell()
    run = 0
    line = 1
    try:
        while chunk := handle.read(chunk_size):
            first = chunk.find(b"\n")
            if first == -1:
                run += len(chunk)
                if run > limit:
                    return line
                continue
            if run + first > limit:
                return line
            line += chunk.count(b"\n")
            # Lines wholly inside a chunk are shorter than the chunk, which is below any limit.
            run = len(chunk) - chunk.rfind(b"\n") - 1
        return None
    finally:
        handle.seek(base)


def position(raw: bytes, offset: int) -> str:
    """'line L, column C (byte B)' of a byte offset, for error messages."""
    line = raw.count(b"\n", 0, offset) + 1
    column = offset - (raw.rfind(b"\n", 0, offset) + 1) + 1
    return f"line {line}, column {column} (byte {offset})"
