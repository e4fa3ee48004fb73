"""Environment settings the automation reads: tick intervals, default status, alert webhook."""

from __future__ import annotations

import os

import dagster as dg

# How often the sensors tick. Production default: once a minute (one indexed registry query per
# tick), so an integration's cron fires at most a minute late. Tests set a few seconds.
INTERVAL_ENV = "SYNKRO_AUTOMATION_INTERVAL_SECONDS"
DEFAULT_INTERVAL_SECONDS = 60

# "running" (default) makes a fresh deployment schedule integrations without a click in the UI,
# as Celery beat did; "stopped" leaves every Synkro sensor off until someone turns it on.
DEFAULT_STATUS_ENV = "SYNKRO_AUTOMATION_DEFAULT_STATUS"

ALERT_WEBHOOK_URL_ENV = "SYNKRO_ALERT_WEBHOOK_URL"
ALERT_WEBHOOK_FORMAT_ENV = "SYNKRO_ALERT_WEBHOOK_FORMAT"
ALERT_TELEGRAM_CHAT_ID_ENV = "SYNKRO_ALERT_TELEGRAM_CHAT_ID"
UI_URL_ENV = "SYNKRO_UI_URL"
DEFAULT_UI_URL = "http://127.0.0.1:3000"

FRESHNESS_GRACE_ENV = "SYNKRO_FRESHNESS_GRACE_MINUTES"
DEFAULT_FRESHNESS_GRACE_MINUTES = 30


def interval_seconds() -> int:
    """Seconds between sensor ticks (SYNKRO_AUTOMATION_INTERVAL_SECONDS, at least 1)."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL_SECONDS
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{INTERVAL_ENV}={raw!r} is not a whole number of seconds") from None
    return max(value, 1)


def default_status() -> dg.DefaultSensorStatus:
    raw = os.environ.get(DEFAULT_STATUS_ENV, "running").strip().lower()
    if raw not in ("running", "stopped"):
        raise ValueError(f"{DEFAULT_STATUS_ENV}={raw!r}: use 'running' or 'stopped'")
    return dg.DefaultSensorStatus.RUNNING if raw == "running" else dg.DefaultSensorStatus.STOPPED


def ui_url() -> str:
    return (os.environ.get(UI_URL_ENV) or DEFAULT_UI_URL).rstrip("/")


def freshness_grace_minutes() -> float:
    raw = os.environ.get(FRESHNESS_GRACE_ENV, "").strip()
    if not raw:
        return float(DEFAULT_FRESHNESS_GRACE_MINUTES)
    try:
        return max(float(raw), 0.0)
    except ValueError:
        raise ValueError(f"{FRESHNESS_GRACE_ENV}={raw!r} is not a number of minutes") from None
