"""Reads spec YAML files and turns validation failures into errors naming file, stream and field."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from synkro_dagster.errors import UserError
from synkro_dagster.specs.models import SourceSpec

SPECS_DIR_ENV = "SYNKRO_SPECS_DIR"


class SpecError(UserError, ValueError):
    """A spec file is broken; the message names the file, the stream and the field."""


def specs_dir() -> Path:
    configured = os.environ.get(SPECS_DIR_ENV)
    return Path(configured) if configured else Path(__file__).resolve().parent


def _describe_location(raw: Any, loc: tuple[Any, ...]) -> str:
    """('streams', 1, 'http', 'pagination') -> "stream 'orders', field 'http.pagination'"."""
    parts = [p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function")))]
    where = ""
    if len(parts) >= 2 and parts[0] == "streams" and isinstance(parts[1], int):
        streams = raw.get("streams") if isinstance(raw, dict) else None
        name = None
        if isinstance(streams, list) and parts[1] < len(streams):
            item = streams[parts[1]]
            name = item.get("name") if isinstance(item, dict) else None
        where = f"stream '{name}'" if name else f"stream #{parts[1] + 1}"
        parts = parts[2:]
    field = ".".join(str(p) for p in parts)
    if field:
        where = f"{where}, field '{field}'" if where else f"field '{field}'"
    return where or "top level"


def _format_error(path: Path, raw: Any, error: ErrorDetails) -> str:
    where = _describe_location(raw, tuple(error.get("loc", ())))
    message = error.get("msg", "invalid")
    if error.get("type") == "extra_forbidden":
        message = "unknown key (check the spelling against docs/specs.md)"
    elif error.get("type") == "literal_error":
        expected = error.get("ctx", {}).get("expected")
        message = f"got {error.get('input')!r}; allowed: {expected}"
    if where == "top level":
        # Checks across fields already name the stream and field in their own words.
        return f"{path.name}: {message.removeprefix('Value error, ')}"
    return f"{path.name}: {where}: {message}"


def load_spec_file(path: Path) -> SourceSpec:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SpecError(f"{path.name}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path.name}: a spec must be a mapping with name, engine and streams")
    try:
        spec = SourceSpec.model_validate(raw)
    except ValidationError as exc:
        lines = [_format_error(path, raw, e) for e in exc.errors()]
        raise SpecError("\n".join(lines)) from None
    except ValueError as exc:  # raised by validators that check across fields
        raise SpecError(f"{path.name}: {exc}") from None
    if spec.name != path.stem:
        raise SpecError(f"{path.name}: name '{spec.name}' must equal the file name '{path.stem}'")
    return spec


@lru_cache(maxsize=8)
def _load_specs_cached(directory: str) -> dict[str, SourceSpec]:
    specs: dict[str, SourceSpec] = {}
    writers: dict[tuple[str, str], tuple[Path, str]] = {}
    for path in sorted(Path(directory).glob("*.yaml")):
        spec = load_spec_file(path)
        specs[spec.name] = spec
        for stream in spec.streams:
            table = (spec.target_schema, spec.table_for(stream))
            if table in writers:
                other_path, other_stream = writers[table]
                raise SpecError(
                    f"{path.name}: stream '{stream.name}' writes table '{'.'.join(table)}',"
                    f" which stream '{other_stream}' of {other_path.name} already writes;"
                    " give one of them its own `table:` or `schema:`"
                )
            writers[table] = (path, stream.name)
    return specs


def load_specs(directory: Path | None = None) -> dict[str, SourceSpec]:
    """Every spec in the folder (default: SYNKRO_SPECS_DIR or the packaged specs), by name."""
    return dict(_load_specs_cached(str((directory or specs_dir()).resolve())))
