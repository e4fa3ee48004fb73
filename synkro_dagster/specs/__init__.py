"""Source specs: YAML files describing external systems, and the models that validate them."""

from synkro_dagster.specs.loader import SpecError, load_spec_file, load_specs, specs_dir
from synkro_dagster.specs.models import CursorSpec, SourceSpec, StreamSpec

__all__ = [
    "CursorSpec",
    "SourceSpec",
    "SpecError",
    "StreamSpec",
    "load_spec_file",
    "load_specs",
    "specs_dir",
]
