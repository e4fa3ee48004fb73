"""Health check of the dagster-daemon container: exit 0 when the daemon wrote a heartbeat lately.

`dagster-daemon liveness-check` answers the same question, but as a new process importing all of
Dagster: on a busy 2-core host (the stack test) that took more than 90 s, so the check timed out
and the daemon was reported unhealthy while it worked. This reads the newest row of Dagster's
`daemon_heartbeats` table with psycopg alone. The tolerance is Dagster's own: the
DAGSTER_DAEMON_HEARTBEAT_TOLERANCE variable, else 1800 s. A daemon thread that dies stops the
whole daemon process, so the newest heartbeat going stale is what a failure looks like.
"""

import os
import sys

import psycopg

tolerance = int(os.environ.get("DAGSTER_DAEMON_HEARTBEAT_TOLERANCE") or 1800)
try:
    with psycopg.connect(
        host=os.environ["DAGSTER_PG_HOST"],
        port=os.environ.get("DAGSTER_PG_PORT") or "5432",
        user=os.environ["DAGSTER_PG_USER"],
        password=os.environ["DAGSTER_PG_PASSWORD"],
        dbname=os.environ["DAGSTER_PG_DB"],
        connect_timeout=10,
    ) as conn:
        # Dagster stores the heartbeat time as UTC without a time zone.
        age = conn.execute(
            "select extract(epoch from (now() at time zone 'utc') - max(timestamp))"
            " from daemon_heartbeats"
        ).fetchone()[0]
except (psycopg.Error, KeyError) as exc:
    print(f"daemon health: cannot read heartbeats: {type(exc).__name__}", file=sys.stderr)
    sys.exit(1)
if age is None:
    print("daemon health: no heartbeat yet", file=sys.stderr)
    sys.exit(1)
if age > tolerance:
    print(
        f"daemon health: last heartbeat {age:.0f} s ago (tolerance {tolerance} s)", file=sys.stderr
    )
    sys.exit(1)
print(f"daemon live: last heartbeat {age:.0f} s ago")
