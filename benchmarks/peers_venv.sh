#!/usr/bin/env bash
# The peers benchmark's own environment (never a runtime dependency of Synkro): dlt with its
# sql_database / rest_api sources and PostgreSQL destination, pyarrow, pandas.
# Usage: bash benchmarks/peers_venv.sh [temp/bench-venv]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-temp/bench-venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  "dlt[postgres,sql_database]>=1.31,<2" "pyarrow>=25,<27" "pandas>=2.2,<3.2" \
  "sqlalchemy>=2.0.30,<2.2" "pymysql>=1.1,<2" "psycopg[binary]>=3.2,<3.4" "psutil>=5.9"
"$venv/bin/python" -c "import dlt, pyarrow, pandas; print('bench venv ready:', dlt.__version__)"
