"""Maps source names (spec names, record keys) to safe PostgreSQL identifiers.

Every name reaches SQL through `psycopg.sql.Identifier`, so a key such as `x"; drop table y; --`
simply becomes a column of that name. PostgreSQL silently truncates identifiers longer than 63
bytes, which would make two long keys collide; names that long are shortened here instead, to a
prefix plus a hash of the whole name, so the same key always maps to the same column and different
keys never share one.
"""

from __future__ import annotations

import hashlib

from psycopg import sql

MAX_IDENTIFIER_BYTES = 63
_HASH_CHARS = 8

# Columns every landed table carries; a source field with one of these names is kept, renamed,
# rather than allowed to overwrite them (tenant_id in particular drives row-level security).
SYSTEM_COLUMNS = ("tenant_id", "integration_id", "_synkro_synced_at", "_synkro_run_id")
RENAMED_PREFIX = "_source_"


def shorten(name: str) -> str:
    """`name` if it fits in 63 bytes, else a deterministic prefix + '_' + hash of the whole name."""
    encoded = name.encode("utf-8")
    if len(encoded) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha256(encoded).hexdigest()[:_HASH_CHARS]
    room = MAX_IDENTIFIER_BYTES - _HASH_CHARS - 1
    prefix = encoded[:room].decode("utf-8", errors="ignore")  # never split a multi-byte character
    return f"{prefix}_{digest}"


def column_name(key: str) -> str:
    """The target column for a record key (or a primary-key / cursor field name)."""
    name = str(key).replace("\x00", "_") or "_"
    if name in SYSTEM_COLUMNS or name.startswith("_synkro_"):
        name = RENAMED_PREFIX + name
    return shorten(name)


def table_name(name: str) -> str:
    """A schema or table name as it is created (shortened if longer than 63 bytes)."""
    return shorten(name.replace("\x00", "_") or "_")


def qualified(schema: str, table: str) -> sql.Identifier:
    """`"schema"."table"`, both parts quoted."""
    return sql.Identifier(table_name(schema), table_name(table))
