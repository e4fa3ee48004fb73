"""Statements that remove rows: the deletes sweep, delete markers, the replace diff, the guard.

Each function returns the SQL (a psycopg `Composable`) and runs nothing, so a statement can be
read and tested on its own; `load.py` runs them inside the load transaction, under the target's
advisory lock. Every statement is scoped to one integration's rows.

- A **sweep** (`deletes: soft | hard`) follows a complete full read: the integration's rows whose
  key the read did not return get `_synkro_deleted_at` (soft) or are deleted (hard).
- A **marker** (`deletes: {marker: status=deleted}`) removes the rows whose latest record the
  source marked as deleted.
- A **replace** swaps the integration's rows for the read's, writing only the difference, so its
  numbers say what really changed.
- The **guard**: a replace or sweep that would remove more than `max_delete_fraction` of the
  integration's rows raises `MassDeleteBlocked` and the transaction rolls back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg import sql

from synkro_dagster.errors import UserError

DELETED_AT = "_synkro_deleted_at"
ALLOW_MASS_DELETE_HINT = "synkro/allow_mass_delete=true"
# Values of a marker field without `=value` that do not mark a deletion (compared lower-cased).
NOT_DELETED = ("", "false", "f", "0", "no", "n")


class MassDeleteBlocked(UserError):
    """A replace or sweep would remove more of an integration's rows than the stream allows."""


@dataclass(frozen=True)
class Marker:
    """A record field that marks a deletion: `field` (any value but null/false/0/no/empty) or
    `field=value` (exactly that text)."""

    field: str
    value: str | None = None
    hard: bool = False


def marked(staged: sql.Composable | None, marker: Marker) -> sql.Composable:
    """A predicate over the staged (text) value of the marker field: is this record deleted?"""
    if staged is None:  # the field never came in this load: nothing is marked
        return sql.SQL("false")
    if marker.value is not None:
        return sql.SQL("coalesce({} = {}, false)").format(staged, sql.Literal(marker.value))
    return sql.SQL("coalesce(lower(btrim({})) <> all({}), false)").format(
        staged, sql.Literal(list(NOT_DELETED))
    )


def keys_match(
    target_keys: Sequence[sql.Composable], staged_keys: Sequence[sql.Composable]
) -> sql.Composable:
    return sql.SQL(" and ").join(
        sql.SQL("{} = {}").format(t, s) for t, s in zip(target_keys, staged_keys, strict=True)
    )


def live_rows(target: sql.Composable, integration: str, soft: bool) -> sql.Composed:
    """How many rows the integration has (not counting soft-deleted ones)."""
    live = sql.SQL(" and {} is null").format(sql.Identifier(DELETED_AT)) if soft else sql.SQL("")
    return sql.SQL("select count(*) from {} where integration_id = {}{}").format(
        target, sql.Literal(integration), live
    )


def key_text(keys: Sequence[sql.Composable]) -> sql.Composable:
    """A primary key as one text value (`row(a, b)::text`), the same for equal typed keys."""
    return sql.SQL("row({})::text").format(sql.SQL(", ").join(keys))


def create_seen_keys(seen: sql.Composable) -> sql.Composed:
    """The keys a sweeping load brought, kept across its parts (files merge one by one)."""
    return sql.SQL("create temp table {} (key text) on commit drop").format(seen)


def remember_keys(
    seen: sql.Composable, stage: sql.Composable, staged_key: sql.Composable
) -> sql.Composed:
    return sql.SQL("insert into {} (key) select {} from {} s").format(seen, staged_key, stage)


def sweep(
    target: sql.Composable,
    seen: sql.Composable,
    integration: str,
    target_key: sql.Composable,
    hard: bool,
) -> sql.Composed:
    """Soft-delete (or delete) the integration's rows whose key the load did not bring.

    `target_key` is the key text of target row `t` (see `key_text`); `seen` holds the loaded
    keys. An empty `seen` (an empty read) sweeps every row: the guard decides whether it may.
    """
    missing = sql.SQL("not exists (select 1 from {} k where k.key = {})").format(seen, target_key)
    if hard:
        return sql.SQL("delete from {} t where t.integration_id = {} and {}").format(
            target, sql.Literal(integration), missing
        )
    return sql.SQL(
        "update {} t set {deleted} = now()"
        " where t.integration_id = {} and t.{deleted} is null and {}"
    ).format(target, sql.Literal(integration), missing, deleted=sql.Identifier(DELETED_AT))


def delete_marked(
    target: sql.Composable,
    stage: sql.Composable,
    integration: str,
    match: sql.Composable,
    is_marked: sql.Composable,
) -> sql.Composed:
    """Delete the integration's rows whose staged record is marked as deleted (hard markers)."""
    return sql.SQL(
        "delete from {} t where t.integration_id = {} and exists"
        " (select 1 from {} s where {} and {})"
    ).format(target, sql.Literal(integration), stage, match, is_marked)


def count_marked_live(
    target: sql.Composable,
    stage: sql.Composable,
    integration: str,
    match: sql.Composable,
    is_marked: sql.Composable,
) -> sql.Composed:
    """How many live rows of the integration a soft marker is about to mark deleted."""
    return sql.SQL(
        "select count(*) from {} t where t.integration_id = {} and t.{} is null and exists"
        " (select 1 from {} s where {} and {})"
    ).format(target, sql.Literal(integration), sql.Identifier(DELETED_AT), stage, match, is_marked)


def keep_latest_per_key(
    stage: sql.Composable, keys: sql.Composable, order: sql.Composable
) -> sql.Composed:
    """Drop every staged record but the latest of each key (markers judge the latest version)."""
    return sql.SQL(
        "delete from {stage} s where s.ctid <> all(array("
        "select distinct on ({keys}) s.ctid from {stage} s order by {order}))"
    ).format(stage=stage, keys=keys, order=order)


def replace_diff(
    *,
    target: sql.Composable,
    stage: sql.Composable,
    integration: str,
    old_row: Sequence[sql.Composable],
    new_row: Sequence[sql.Composable],
    old_key: Sequence[sql.Composable],
    new_key: Sequence[sql.Composable],
    names: sql.Composable,
    values: sql.Composable,
) -> sql.Composed:
    """Swap the integration's rows for the staged ones, deleting and inserting only the difference.

    Rows compare by their whole value (`row(...)::text`, in which null and '' differ), as
    multisets: two equal rows in the table and one in the read leave one. Both data-modifying
    parts see the table as it was before the statement. Returns one row: (rows before, rows
    deleted, rows inserted, keys both deleted and inserted = updated rows; 0 without a key).
    """

    def row_text(parts: Sequence[sql.Composable]) -> sql.Composable:
        return sql.SQL("row({})::text").format(sql.SQL(", ").join(parts))

    old_text, new_text = row_text(old_row), row_text(new_row)
    old_key_text = row_text(old_key) if old_key else sql.SQL("null::text")
    new_key_text = row_text(new_key) if new_key else sql.SQL("null::text")
    return sql.SQL(
        "with old as (select t.ctid as c, {old_text} as r, {old_key} as k,"
        "  row_number() over (partition by {old_text}) as n"
        "  from {target} t where t.integration_id = {integration}),"
        " new as (select s.ctid as c, {new_text} as r, {new_key} as k,"
        "  row_number() over (partition by {new_text}) as n from {stage} s),"
        " gone as (delete from {target} t using old"
        "  where t.ctid = old.c and not exists (select 1 from new where new.r = old.r and new.n = old.n)"
        "  returning old.k),"
        " came as (insert into {target} ({names}) select {values} from {stage} s join new on new.c = s.ctid"
        "  where not exists (select 1 from old where old.r = new.r and old.n = new.n)"
        "  returning 1),"
        " came_keys as (select new.k from new"
        "  where not exists (select 1 from old where old.r = new.r and old.n = new.n))"
        " select (select count(*) from old), (select count(*) from gone), (select count(*) from came),"
        "  (select count(*) from (select k from gone where k is not null"
        "   intersect all select k from came_keys where k is not null) both_sides)"
    ).format(
        old_text=old_text,
        new_text=new_text,
        old_key=old_key_text,
        new_key=new_key_text,
        target=target,
        stage=stage,
        integration=sql.Literal(integration),
        names=names,
        values=values,
    )


def check_fraction(
    *,
    what: str,
    removing: int,
    rows_before: int,
    max_fraction: float,
    allowed: bool,
    where: str,
) -> None:
    """Raise MassDeleteBlocked if `removing` of `rows_before` rows is more than `max_fraction`."""
    if allowed or removing <= 0 or rows_before <= 0 or max_fraction >= 1:
        return
    share = removing / rows_before
    if share <= max_fraction:
        return
    raise MassDeleteBlocked(
        f"{where}: the {what} would remove {removing} of {rows_before} rows ({share:.0%}),"
        f" more than max_delete_fraction {max_fraction:g}; nothing was changed (rows and cursor"
        " are as before). If the source really lost these rows, run again with the run tag"
        f" {ALLOW_MASS_DELETE_HINT}; otherwise check the source (an empty or cut-short answer)."
    )
