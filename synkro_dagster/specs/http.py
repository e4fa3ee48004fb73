"""The 'http' engine's part of a source spec (source defaults and per-stream options)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class HttpSourceOptions(BaseModel):
    """Defaults shared by every stream of a http source. (Placeholder: fields to be defined.)"""

    model_config = ConfigDict(extra="allow", frozen=True)


class HttpStreamOptions(BaseModel):
    """Per-stream http options. (Placeholder: fields to be defined.)"""

    model_config = ConfigDict(extra="allow", frozen=True)
