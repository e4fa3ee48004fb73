"""The one Definitions object: specs -> assets and checks, resources, jobs, schedules, sensors.

Loading it reads the spec YAML files only: no database, no network.
"""

from __future__ import annotations

import dagster as dg

defs = dg.Definitions()
