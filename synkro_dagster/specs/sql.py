"""The 'sql' engine's part of a source spec (source defaults and per-stream options)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SqlSourceOptions(BaseModel):
    """Defaults shared by every stream of a sql source. (Placeholder: fields to be defined.)"""

    model_config = ConfigDict(extra="allow", frozen=True)


class SqlStreamOptions(BaseModel):
    """Per-stream sql options. (Placeholder: fields to be defined.)"""

    model_config = ConfigDict(extra="allow", frozen=True)
