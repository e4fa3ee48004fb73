"""The 'files' engine's part of a source spec (source defaults and per-stream options)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class FilesSourceOptions(BaseModel):
    """Defaults shared by every stream of a files source. (Placeholder: fields to be defined.)"""

    model_config = ConfigDict(extra="allow", frozen=True)


class FilesStreamOptions(BaseModel):
    """Per-stream files options. (Placeholder: fields to be defined.)"""

    model_config = ConfigDict(extra="allow", frozen=True)
