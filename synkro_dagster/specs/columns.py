"""Column control in a spec: which source fields land, under which names, and which are hashed.

A stream's `columns:` block mixes two things. A field name with a type (`amount: numeric`) is a
type hint, as before. The reserved keys take lists or mappings instead:

    columns:
      select: [InvoiceId, Amount, Email]     # land only these fields (or: exclude: [...])
      rename: {InvoiceId: invoice_id}        # source field -> column
      hash: [Email]                          # land HMAC-SHA256(salt, value) instead of the value
      Amount: numeric                        # a type hint, as always

`naming: snake_case` (spec level, a stream may override it) turns every other field name into
snake_case (`InvoiceId` -> `invoice_id`), so CamelCase APIs land as unquoted names. Primary keys,
cursor fields and type hints name the source's fields; they land under the same new names.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Naming = Literal["as_is", "snake_case"]
CONTROL_KEYS = ("select", "exclude", "rename", "hash")

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NON_WORD = re.compile(r"[^0-9a-zA-Z]+")


def snake_case(name: str) -> str:
    """`InvoiceId` -> `invoice_id`, `HTTPStatus` -> `http_status`, `Customer Name` -> `customer_name`.

    Idempotent: a snake_case name stays as it is. A name with nothing to keep is left unchanged
    (the data layer quotes it)."""
    spaced = _CAMEL_BOUNDARY.sub("_", name)
    result = _NON_WORD.sub("_", spaced).strip("_").lower()
    return result or name


class ColumnControl(BaseModel):
    """The reserved keys of a stream's `columns:` block (type hints live beside them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    select: list[str] | None = Field(default=None, description="land only these source fields")
    exclude: list[str] = Field(default_factory=list, description="never land these source fields")
    rename: dict[str, str] = Field(
        default_factory=dict, description="source field -> landed column name"
    )
    hash: list[str] = Field(
        default_factory=list,
        description="source fields landed as a salted SHA-256 (HMAC) of their value",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ColumnControl:
        if self.select is not None and self.exclude:
            raise ValueError("give columns.select or columns.exclude, not both")
        if self.select is not None and not self.select:
            raise ValueError("columns.select must list at least one field")
        targets = list(self.rename.values())
        twice = sorted({t for t in targets if targets.count(t) > 1})
        if twice:
            raise ValueError(f"columns.rename: two fields renamed to {', '.join(twice)}")
        for name, target in self.rename.items():
            if not target.strip():
                raise ValueError(f"columns.rename: field '{name}' renamed to an empty name")
        if self.select is not None:
            lost = [f for f in [*self.rename, *self.hash] if f not in self.select]
            if lost:
                raise ValueError(
                    f"columns.select leaves out {', '.join(lost)}, which columns.rename or "
                    "columns.hash names"
                )
        dropped = [f for f in [*self.rename, *self.hash] if f in self.exclude]
        if dropped:
            raise ValueError(
                f"columns.exclude drops {', '.join(dropped)}, which columns.rename or "
                "columns.hash names"
            )
        return self

    @property
    def is_empty(self) -> bool:
        return self.select is None and not (self.exclude or self.rename or self.hash)

    def keeps(self, field: str) -> bool:
        """Whether the source field lands at all."""
        if self.select is not None:
            return field in self.select
        return field not in self.exclude


def split_columns(value: Any) -> tuple[Any, Any]:
    """A raw `columns:` mapping -> (type hints, column control). Reserved keys with a list or
    mapping value are control; everything else is a type hint (so a field called `hash` with a
    type string is still a hint)."""
    if not isinstance(value, dict):
        return value, {}
    hints: dict[str, Any] = {}
    control: dict[str, Any] = {}
    for key, item in value.items():
        if key in CONTROL_KEYS and isinstance(item, list | dict):
            control[key] = item
        else:
            hints[key] = item
    return hints, control


def landed_name(field: str, control: ColumnControl, naming: Naming) -> str:
    """The column a source field lands in: its rename, else the naming rule applied."""
    renamed = control.rename.get(field)
    if renamed is not None:
        return renamed
    if naming == "snake_case":
        return snake_case(field)
    return field
