"""Prints what the image installs: pyproject.toml's [project] dependencies plus the chosen extras.

    python deploy/requirements.py pyproject.toml "k8s"  > requirements.txt

The Dockerfile runs it on the copied pyproject.toml, so the image has no second, hand-kept
version list. The extras are comma-separated names of [project.optional-dependencies] groups.
"""

import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
requirements = list(project["dependencies"])
extras = sys.argv[2] if len(sys.argv) > 2 else ""
for extra in filter(None, (e.strip() for e in extras.split(","))):
    requirements += project["optional-dependencies"][extra]
print("\n".join(requirements))
