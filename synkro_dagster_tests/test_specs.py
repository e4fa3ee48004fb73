"""Spec loading: the shipped specs load, and each kind of mistake fails naming file, stream, field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from synkro_dagster.specs import SpecError, load_spec_file, load_specs, specs_dir
from synkro_dagster.specs.http import PageNumberPagination, RateLimit

HTTP_SPECS = Path(__file__).parent / "http_specs"


def test_shipped_specs_load() -> None:
    specs = load_specs(specs_dir())
    assert {"shop", "crm"} <= set(specs)
    assert [s.name for s in specs["shop"].streams] == [
        "customers",
        "products",
        "orders",
        "order_lines",
        "order_items",
        "price_history",
        "daily_sales",
    ]
    assert [s.name for s in specs["crm"].streams] == ["contacts", "deals", "companies"]
    shop = specs["shop"]
    assert isinstance(shop.http.pagination, PageNumberPagination)
    assert shop.http.auth.kind == "bearer"
    assert specs["crm"].http.auth.kind == "oauth2_client_credentials"
    assert shop.stream("orders").columns["line_items"] == "jsonb"


def test_test_api_spec_covers_every_pagination_and_auth_kind() -> None:
    spec = load_spec_file(HTTP_SPECS / "testapi.yaml")
    kinds = {(s.http.pagination or spec.http.pagination).kind for s in spec.streams}
    assert kinds == {"page_number", "offset", "cursor", "next_url", "link_header", "single"}
    auths = {s.http.auth.kind for s in spec.streams if s.http.auth}
    assert auths == {"bearer", "api_key", "basic", "oauth2_client_credentials"}


def test_rate_limit_interval_keeps_both_budgets() -> None:
    assert RateLimit(requests_per_second=10).interval == pytest.approx(0.1)
    assert RateLimit(requests_per_second=10, requests_per_minute=60).interval == pytest.approx(1.0)


# --- broken specs ---------------------------------------------------------------------------------


def _shop() -> dict[str, Any]:
    return yaml.safe_load((specs_dir() / "shop.yaml").read_text())


def _load_broken(tmp_path: Path, raw: dict[str, Any]) -> str:
    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError) as caught:
        load_spec_file(path)
    return str(caught.value)


def _orders(raw: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in raw["streams"] if s["name"] == "orders")


def test_unknown_key_names_file_stream_and_field(tmp_path: Path) -> None:
    raw = _shop()
    _orders(raw)["http"]["pagenation"] = {"kind": "single"}
    message = _load_broken(tmp_path, raw)
    assert "shop.yaml" in message
    assert "stream 'orders'" in message
    assert "field 'http.pagenation'" in message
    assert "unknown key" in message


def test_wrong_type_names_file_stream_and_field(tmp_path: Path) -> None:
    raw = _shop()
    _orders(raw)["http"]["pagination"] = {"kind": "page_number", "page_size": "lots"}
    message = _load_broken(tmp_path, raw)
    assert "shop.yaml" in message and "stream 'orders'" in message
    assert "page_size" in message and "integer" in message


def test_undeclared_placeholder_fails_at_load(tmp_path: Path) -> None:
    raw = _shop()
    _orders(raw)["http"]["path"] = "/accounts/{account_id}/orders"
    message = _load_broken(tmp_path, raw)
    assert "shop.yaml" in message and "stream 'orders'" in message
    assert "field 'http.path'" in message
    assert "'{account_id}'" in message and "declared: base_url" in message
    assert message.startswith("shop.yaml: stream 'orders', field 'http.path'")


def test_undeclared_placeholder_in_source_defaults_fails_at_load(tmp_path: Path) -> None:
    raw = _shop()
    raw["http"]["headers"] = {"X-Shop": "{shop_id}"}
    message = _load_broken(tmp_path, raw)
    assert "field 'http.headers.X-Shop'" in message and "'{shop_id}'" in message


def test_unknown_pagination_kind_lists_the_allowed_ones(tmp_path: Path) -> None:
    raw = _shop()
    _orders(raw)["http"]["pagination"] = {"kind": "pages"}
    message = _load_broken(tmp_path, raw)
    assert "stream 'orders'" in message and "field 'http.pagination'" in message
    assert (
        "unknown pagination kind 'pages'; allowed: page_number, offset, cursor, next_url, "
        "link_header, single"
    ) in message


def test_unknown_auth_kind_lists_the_allowed_ones(tmp_path: Path) -> None:
    raw = _shop()
    raw["http"]["auth"] = {"kind": "oauth", "token_secret": "api_token"}
    message = _load_broken(tmp_path, raw)
    assert "field 'http.auth'" in message
    assert "unknown auth kind 'oauth'; allowed: bearer, api_key, basic" in message


def test_undeclared_secret_fails_at_load(tmp_path: Path) -> None:
    raw = _shop()
    raw["http"]["auth"]["token_secret"] = "shop_token"
    message = _load_broken(tmp_path, raw)
    assert "field 'http.auth.token_secret'" in message
    assert "secret 'shop_token' is not declared" in message and "declared: api_token" in message


def test_undeclared_secret_in_a_stream_override_names_the_stream(tmp_path: Path) -> None:
    raw = _shop()
    _orders(raw)["http"]["auth"] = {"kind": "api_key", "key_secret": "orders_key"}
    message = _load_broken(tmp_path, raw)
    assert "stream 'orders'" in message and "secret 'orders_key'" in message


def test_missing_required_field_is_named(tmp_path: Path) -> None:
    raw = _shop()
    _orders(raw)["http"]["pagination"] = {"kind": "cursor", "param": "after"}
    message = _load_broken(tmp_path, raw)
    assert "stream 'orders'" in message and "token" in message and "Field required" in message


def test_every_broken_example_in_one_file_is_reported(tmp_path: Path) -> None:
    raw = _shop()
    broken = copy.deepcopy(raw)
    broken["streams"][0]["http"]["method"] = "DELETE"
    broken["streams"][1]["http"]["records"] = 3
    message = _load_broken(tmp_path, broken)
    assert "stream 'customers'" in message and "'DELETE'" in message
    assert "stream 'products'" in message and "records" in message


# --- one writer per table ---------------------------------------------------------------------


def test_two_streams_of_one_spec_writing_one_table_are_rejected(tmp_path: Path) -> None:
    raw = _shop()
    _orders(raw)["table"] = "shop_customers"
    message = _load_broken(tmp_path, raw)
    assert message.startswith("shop.yaml: ")
    assert "'customers'" in message and "'orders'" in message
    assert "public.shop_customers" in message


def test_two_specs_writing_one_table_are_rejected_naming_both(tmp_path: Path) -> None:
    (tmp_path / "shop.yaml").write_text((specs_dir() / "shop.yaml").read_text())
    other = {
        "name": "webshop",
        "engine": "http",
        "config": {"base_url": {}},
        "http": {"base_url": "{base_url}"},
        "streams": [
            {"name": "orders", "primary_key": "id", "table": "shop_orders", "http": {"path": "/o"}}
        ],
    }
    (tmp_path / "webshop.yaml").write_text(yaml.safe_dump(other))
    with pytest.raises(SpecError) as caught:
        load_specs(tmp_path)
    message = str(caught.value)
    assert "webshop.yaml" in message and "shop.yaml" in message
    assert "stream 'orders'" in message and "public.shop_orders" in message
    # The same table name in another schema is another table.
    other["schema"] = "webshop"
    (tmp_path / "webshop.yaml").write_text(yaml.safe_dump(other))
    assert set(load_specs(tmp_path)) == {"shop", "webshop"}
