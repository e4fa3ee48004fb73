"""The test API spec (http_specs/testapi.yaml) and the secrets the local API server accepts for it."""

from __future__ import annotations

from pathlib import Path

from synkro_dagster.demo.api_server import ApiServer

TESTAPI = Path(__file__).parent / "http_specs" / "testapi.yaml"
ITEMS = 253  # seeded records behind every /test endpoint


def secrets_for_testapi(api: ApiServer) -> dict[str, str]:
    """The testapi spec's secrets, filled with what `api` accepts."""
    c = api.credentials
    return {
        "token": c.bearer_token,
        "api_key": c.api_key,
        "password": c.basic_password,
        "client_id": c.client_id,
        "client_secret": c.client_secret,
    }
