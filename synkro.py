"""The `synkro` code location: Synkro's Definitions under the module name Dagster names it by.

Dagster names a code location loaded with `-m <module>` (or DAGSTER_MODULE_NAME) after the module.
Loading Synkro as `-m synkro`, from workspace.yaml, pyproject.toml or DAGSTER_MODULE_NAME=synkro
therefore always gives the same location name, `synkro`, which queued runs are launched from.
"""

from synkro_dagster.definitions import defs

__all__ = ["defs"]
