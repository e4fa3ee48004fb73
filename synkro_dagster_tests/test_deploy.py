"""The production deployment, proved without a Docker engine: the compose stack's shape, the Dagster
instance config against a real PostgreSQL, the run launcher config through Dagster's and docker-py's
own validation, the Caddyfile through a real Caddy, the entrypoint against a real PostgreSQL, and the
image installing exactly pyproject.toml's dependencies at requirements.lock's versions."""

from __future__ import annotations

import http.server
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa
import yaml
from dagster._config import process_config, validate_config
from dagster._core.instance.config import dagster_instance_config_schema
from dagster._utils.tags import TagConcurrencyLimitsCounter
from dagster_docker import DockerRunLauncher
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from synkro_dagster.tags import INTEGRATION_TAG, SPEC_TAG
from synkro_dagster_tests.dagster_processes import free_port

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
CADDY = shutil.which("caddy")
needs_caddy = pytest.mark.skipif(
    CADDY is None, reason="`caddy` is not on PATH (.ci/run installs Debian's caddy package)"
)

# ${VAR}, ${VAR:?msg}, ${VAR:-default}; `$${VAR}` is compose's escape for a literal `$`.
COMPOSE_VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")
ENV_LINE = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=")
DOCKER_SOCKET = "/var/run/docker.sock"
APP_SERVICES = ("user_code", "webserver", "daemon")


def _yaml(path: str) -> Any:
    return yaml.safe_load((ROOT / path).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _yaml("docker-compose.yml")


@pytest.fixture(scope="module")
def instance_yaml() -> dict[str, Any]:
    return _yaml("deploy/dagster.yaml")


@pytest.fixture(scope="module")
def env_example() -> dict[str, bool]:
    """Variable name -> whether it is set (True) or only documented as a comment (False)."""
    names: dict[str, bool] = {}
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        match = ENV_LINE.match(line)
        if match:
            names[match[2]] = match[1] is None
    return names


def _mount_sources(service: dict[str, Any]) -> list[str]:
    return [str(v).split(":", 1)[0] for v in service.get("volumes", [])]


# ---------------------------------------------------------------- docker-compose.yml


def _default(value: str) -> str:
    """The default of a compose `${VAR:-default}` (the value itself when it has no variable)."""
    match = re.fullmatch(r"\$\{[A-Z_]+:-(.+)\}", value)
    return match[1] if match else value


def test_compose_has_the_five_services(compose):
    assert set(compose["services"]) == {"db", "user_code", "webserver", "daemon", "caddy"}


def test_images_come_from_variables_with_the_real_defaults(compose, env_example):
    """Users change nothing (the defaults are the real images); the stack test sets the variables
    to images built locally and the pull policy to `never` (synkro_dagster_tests/test_stack.py)."""
    services = compose["services"]
    assert services["db"]["image"] == "${SYNKRO_POSTGRES_IMAGE:-postgres:16}"
    assert services["caddy"]["image"] == "${SYNKRO_CADDY_IMAGE:-caddy:2.10}"
    for name in APP_SERVICES:
        assert services[name]["image"] == "${SYNKRO_IMAGE:?set SYNKRO_IMAGE in .env}"
    for name, service in services.items():
        assert service["pull_policy"] == "${SYNKRO_PULL_POLICY:-missing}", name
    # .env.example repeats the same defaults, so a copied .env behaves as no .env.
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    assert re.search(r"^SYNKRO_POSTGRES_IMAGE=postgres:16$", text, re.M)
    assert re.search(r"^SYNKRO_CADDY_IMAGE=caddy:2\.10$", text, re.M)
    assert re.search(r"^SYNKRO_PULL_POLICY=missing$", text, re.M)


def test_only_caddy_publishes_ports(compose):
    published = [name for name, svc in compose["services"].items() if svc.get("ports")]
    assert published == ["caddy"]
    ports = sorted(
        _default(p.rsplit(":", 1)[0]) + ":" + p.rsplit(":", 1)[1]
        for p in compose["services"]["caddy"]["ports"]
    )
    assert ports == ["443:443", "443:443/udp", "80:80"]


def test_database_keeps_its_data_in_a_named_volume(compose):
    db = compose["services"]["db"]
    assert "ports" not in db and "expose" not in db
    assert "postgres_data" in _mount_sources(db)
    assert "postgres_data" in compose["volumes"]


def test_every_service_has_a_healthcheck(compose):
    for name, svc in compose["services"].items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_services_wait_for_healthy_dependencies(compose):
    expected = {
        "user_code": {"db"},
        "webserver": {"db", "user_code"},
        "daemon": {"db", "user_code"},
        "caddy": {"webserver"},
    }
    for name, deps in expected.items():
        depends_on = compose["services"][name]["depends_on"]
        assert set(depends_on) == deps, name
        for dep, rule in depends_on.items():
            assert rule == {"condition": "service_healthy"}, f"{name} -> {dep}"


def test_docker_socket_only_where_the_run_launcher_runs(compose):
    """The daemon launches runs; the webserver terminates them ("Terminate" in the UI calls
    DockerRunLauncher.terminate in the webserver process). No other service gets the socket."""
    with_socket = {
        name
        for name, svc in compose["services"].items()
        if any(str(v).startswith(DOCKER_SOCKET + ":") for v in svc.get("volumes", []))
    }
    assert with_socket == {"daemon", "webserver"}
    for name in with_socket:
        # The image runs as a non-root user; the socket is root:docker.
        assert compose["services"][name]["group_add"] == ["${DOCKER_GID:?set DOCKER_GID in .env}"]


def test_app_services_run_the_one_image(compose):
    images = {compose["services"][name]["image"] for name in APP_SERVICES}
    assert len(images) == 1
    user_code = compose["services"]["user_code"]
    # Runs launch in the image the code server reports.
    assert user_code["environment"]["DAGSTER_CURRENT_IMAGE"] == user_code["image"]
    assert user_code["environment"]["SYNKRO_MIGRATE_ON_START"] == "1"
    for name in ("webserver", "daemon"):
        assert "SYNKRO_MIGRATE_ON_START" not in compose["services"][name].get("environment", {})


def test_caddy_reaches_only_the_webserver(compose):
    services = compose["services"]
    assert services["caddy"]["networks"] == ["edge"]
    on_edge = {name for name, svc in services.items() if "edge" in svc.get("networks", [])}
    assert on_edge == {"caddy", "webserver"}
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in services["caddy"]["volumes"]


def test_run_containers_share_the_network_and_volumes_of_the_stack(compose, instance_yaml):
    """dagster.yaml names the network and volumes; compose must create them under those names."""
    launcher = instance_yaml["run_launcher"]["config"]
    networks = {key: net.get("name") for key, net in compose["networks"].items()}
    assert launcher["network"] == networks["synkro"]
    for name in APP_SERVICES:
        assert "synkro" in compose["services"][name]["networks"]

    fixed_volume_names = {v["name"]: key for key, v in compose["volumes"].items() if v}
    user_code_mounts = dict(
        str(v).split(":")[:2] for v in compose["services"]["user_code"]["volumes"]
    )
    for mount in launcher["container_kwargs"]["volumes"]:
        volume_name, path = mount.split(":")[:2]
        compose_key = fixed_volume_names[volume_name]
        # The code server sees the same folder at the same path as the run containers.
        assert user_code_mounts[compose_key] == path
    assert user_code_mounts["inbox"] == "/srv/synkro/inbox"


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_file_is_accepted_by_docker_compose(tmp_path):
    """`docker compose config` parses, interpolates and validates the file against the compose
    schema without talking to an engine (GitHub's runners have it; elsewhere it may be missing)."""
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    result = subprocess.run(
        [*cli, "config", "-q"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_inbox_is_a_host_folder_shared_by_name(compose):
    inbox = compose["volumes"]["inbox"]
    assert inbox["name"] == "synkro_inbox"
    assert inbox["driver_opts"]["o"] == "bind"
    assert inbox["driver_opts"]["device"].startswith("${SYNKRO_INBOX_HOST_DIR")


def test_every_variable_compose_uses_is_in_env_example(compose, env_example):
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    used = set(COMPOSE_VAR.findall(text))
    assert used, "expected docker-compose.yml to take its settings from .env"
    missing = sorted(v for v in used if not env_example.get(v))
    assert not missing, f"set these in .env.example: {missing}"


def test_every_variable_a_run_receives_is_set_in_env_example(instance_yaml, env_example):
    """The DockerRunLauncher copies each name from the daemon's environment and fails the launch
    if one is unset, so .env must define every one of them."""
    names = instance_yaml["run_launcher"]["config"]["env_vars"]
    missing = sorted(n for n in names if not env_example.get(n))
    assert not missing, f"set these in .env.example: {missing}"


def test_env_example_covers_every_variable_the_code_reads(env_example):
    code = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "synkro_dagster").rglob("*.py"))
    used = set(re.findall(r"SYNKRO_[A-Z_]+[A-Z]", code)) | {
        "INTEGRATION_SECRET_KEY",
        "DAGSTER_HOME",
        "DAGSTER_CURRENT_IMAGE",
    }
    used |= set(re.findall(r"\b(?:SYNKRO|DAGSTER_PG)_[A-Z_]+[A-Z]\b", _entrypoint_text()))
    missing = sorted(used - set(env_example))
    assert not missing, f"document these in .env.example: {missing}"


def test_every_env_example_variable_has_a_comment():
    lines = (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        match = ENV_LINE.match(line)
        if not match:
            continue
        above = lines[i - 1] if i else ""
        assert above.startswith("#") and not ENV_LINE.match(above), (
            f".env.example line {i + 1}: {match[2]} needs a comment line right above it"
        )


def test_env_example_holds_no_real_secrets(env_example):
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    assert re.search(r"^INTEGRATION_SECRET_KEY=replace-", text, re.M)
    assert re.search(r"^DAGSTER_PG_PASSWORD='change-me'", text, re.M)
    assert re.search(r"^SYNKRO_UI_PASSWORD_HASH='\$2a\$14\$replace", text, re.M)
    assert ".env" in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()


# ---------------------------------------------------------------- dagster.yaml / workspace.yaml


def test_instance_config_passes_dagsters_schema(instance_yaml):
    result = validate_config(dagster_instance_config_schema(), instance_yaml)
    assert result.success, result.errors


def test_docker_run_launcher_config_passes_dagsters_validation(instance_yaml):
    section = instance_yaml["run_launcher"]
    assert (section["module"], section["class"]) == ("dagster_docker", "DockerRunLauncher")
    processed = process_config(DockerRunLauncher.config_type(), section["config"])
    assert processed.success, processed.errors
    launcher = DockerRunLauncher.from_config_value(None, processed.value)  # its own extra checks
    assert launcher.networks == ["synkro_network"]
    assert "SYNKRO_DATABASE_URL" in launcher.env_vars
    assert not any("=" in name for name in launcher.env_vars), "values belong in .env, not here"


def test_run_container_kwargs_are_accepted_by_docker_py(instance_yaml):
    """The launcher hands container_kwargs to docker-py's containers.create; build the same request
    body docker-py would send (no engine needed) so a misspelt or malformed kwarg fails here."""
    from docker.models.containers import _create_container_args
    from docker.types import ContainerConfig

    kwargs = dict(instance_yaml["run_launcher"]["config"]["container_kwargs"])
    create_args = _create_container_args(
        {
            "image": "ghcr.io/example/synkro:test",
            "command": ["dagster", "api", "execute_run", "{}"],
            "detach": True,
            "network": "synkro_network",
            "version": "1.44",
            **kwargs,
        }
    )
    host_config = create_args["host_config"]
    assert host_config["Init"] is True
    assert host_config["Memory"] == 2 * 1024**3
    assert host_config["Binds"] == kwargs["volumes"]
    assert host_config["LogConfig"]["Type"] == "json-file"
    config = ContainerConfig(version="1.44", **create_args)
    assert config["Healthcheck"]["Test"] == ["NONE"]


def test_queued_run_coordinator_config_passes_dagsters_validation(instance_yaml):
    section = instance_yaml["run_coordinator"]
    assert section["class"] == "QueuedRunCoordinator"
    processed = process_config(dg.QueuedRunCoordinator.config_type(), section["config"])
    assert processed.success, processed.errors
    limits = {lim["key"]: lim for lim in section["config"]["tag_concurrency_limits"]}
    assert limits[INTEGRATION_TAG] == {
        "key": INTEGRATION_TAG,
        "value": {"applyLimitPerUniqueValue": True},
        "limit": 1,
    }
    assert limits[SPEC_TAG]["value"] == {"applyLimitPerUniqueValue": True}
    assert 1 < limits[SPEC_TAG]["limit"] <= section["config"]["max_concurrent_runs"]


def test_workspace_points_at_the_code_server(compose):
    workspace = _yaml("deploy/workspace.yaml")
    assert workspace["load_from"] == [
        {"grpc_server": {"host": "user_code", "port": 4000, "location_name": "synkro"}}
    ]
    assert "-p" in compose["services"]["user_code"]["healthcheck"]["test"]


@pytest.fixture(scope="module")
def dagster_storage_db(admin_engine: sa.Engine, pg_server_url: str) -> Iterator[dict[str, str]]:
    """A scratch database for Dagster's storage; returns its URL and the DAGSTER_PG_* pointing at it."""
    name = f"synkro_dagster_{uuid.uuid4().hex[:10]}"
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'create database "{name}"')
    server = sa.make_url(pg_server_url)
    yield {
        "url": server.set(database=name).render_as_string(hide_password=False),
        "DAGSTER_PG_HOST": server.host or "127.0.0.1",
        "DAGSTER_PG_PORT": str(server.port or 5432),
        "DAGSTER_PG_USER": server.username or "postgres",
        "DAGSTER_PG_PASSWORD": server.password or "",
        "DAGSTER_PG_DB": name,
    }
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="module")
def production_instance(
    instance_yaml, dagster_storage_db, tmp_path_factory
) -> Iterator[dg.DagsterInstance]:
    """dagster.yaml as shipped, with only the run launcher swapped for the default one (there is no
    Docker engine here), loaded the way every container loads it: from $DAGSTER_HOME."""
    config = dict(instance_yaml)
    config["run_launcher"] = {"module": "dagster", "class": "DefaultRunLauncher"}
    assert {k: v for k, v in config.items() if k != "run_launcher"} == {
        k: v for k, v in instance_yaml.items() if k != "run_launcher"
    }
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        for key, value in dagster_storage_db.items():
            if key.startswith("DAGSTER_PG_"):
                mp.setenv(key, value)
        with dg.DagsterInstance.get() as instance:
            yield instance


@dg.op
def say_hello() -> str:
    return "hello"


@dg.job
def deploy_probe_job() -> None:
    say_hello()


def test_production_instance_keeps_runs_in_postgresql(production_instance, dagster_storage_db):
    instance = production_instance
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
    assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
    assert instance.run_monitoring_enabled
    assert not instance.telemetry_enabled

    tags = {INTEGRATION_TAG: "acme-shop", SPEC_TAG: "shop"}
    result = deploy_probe_job.execute_in_process(instance=instance, tags=tags)
    assert result.success

    engine = sa.create_engine(dagster_storage_db["url"])
    try:
        with engine.connect() as conn:
            params = {"id": result.run_id}
            status = conn.execute(
                sa.text("select status from runs where run_id = :id"), params
            ).scalar_one()
            run_tags = dict(
                conn.execute(
                    sa.text("select key, value from run_tags where run_id = :id"), params
                ).all()
            )
            events = conn.execute(
                sa.text("select count(*) from event_logs where run_id = :id"), params
            ).scalar_one()
    finally:
        engine.dispose()
    assert status == "SUCCESS"
    assert run_tags[INTEGRATION_TAG] == "acme-shop" and run_tags[SPEC_TAG] == "shop"
    assert events > 0


def test_daemon_health_check_reads_dagsters_heartbeats(production_instance, dagster_storage_db):
    """deploy/daemon_health.py (the daemon's compose health check) against heartbeats Dagster
    itself wrote to the production storage: none yet, a fresh one, a stale one."""
    from dagster._daemon.types import DaemonHeartbeat

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PG_")},
        **{k: v for k, v in dagster_storage_db.items() if k.startswith("DAGSTER_PG_")},
    }

    def check(**extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(ROOT / "deploy" / "daemon_health.py")],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )

    production_instance.wipe_daemon_heartbeats()
    result = check()
    assert result.returncode == 1 and "no heartbeat yet" in result.stderr

    production_instance.add_daemon_heartbeat(
        DaemonHeartbeat(time.time() - 120, "SENSOR", "daemon-1", errors=[])
    )
    result = check()
    assert result.returncode == 0, result.stderr
    assert "daemon live" in result.stdout
    # Older than the tolerance (Dagster's variable): unhealthy.
    result = check(DAGSTER_DAEMON_HEARTBEAT_TOLERANCE="60")
    assert result.returncode == 1 and "tolerance 60 s" in result.stderr
    # A storage it cannot read fails the check, naming neither the URL nor the password.
    result = check(DAGSTER_PG_DB="no_such_database_5d1", DAGSTER_PG_PASSWORD="pw-5d1")
    assert result.returncode == 1 and "cannot read heartbeats" in result.stderr
    assert "pw-5d1" not in result.stderr + result.stdout


def test_run_queue_limits_one_run_per_integration_and_caps_each_spec(
    production_instance, instance_yaml
):
    """Dagster's own dequeue counter, fed the production limits and runs stored in PostgreSQL."""
    instance = production_instance
    limits = instance.run_coordinator.get_run_queue_config().tag_concurrency_limits
    configured = instance_yaml["run_coordinator"]["config"]["tag_concurrency_limits"]
    spec_cap = next(lim["limit"] for lim in configured if lim["key"] == SPEC_TAG)

    def run(integration: str, spec: str) -> dg.DagsterRun:
        return instance.create_run_for_job(
            deploy_probe_job, tags={INTEGRATION_TAG: integration, SPEC_TAG: spec}
        )

    counter = TagConcurrencyLimitsCounter(limits, [run("acme-shop", "shop")])
    assert counter.is_blocked(run("acme-shop", "shop")), "same integration twice at once"
    assert not counter.is_blocked(run("globex-shop", "shop"))
    assert not counter.is_blocked(run("acme-crm", "crm"))

    counter = TagConcurrencyLimitsCounter(
        limits, [run(f"client-{i}", "shop") for i in range(spec_cap)]
    )
    assert counter.is_blocked(run("one-more-client", "shop")), "spec cap reached"
    assert not counter.is_blocked(run("one-more-client", "crm"))


# ---------------------------------------------------------------- deploy/Caddyfile


@pytest.fixture(scope="module")
def ui_password() -> str:
    return "correct horse battery"


@pytest.fixture(scope="module")
def caddy_env(ui_password: str) -> dict[str, str]:
    if CADDY is None:
        pytest.skip("`caddy` is not on PATH (.ci/run installs Debian's caddy package)")
    hashed = subprocess.run(
        [CADDY, "hash-password", "--plaintext", ui_password],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert hashed.startswith("$2")
    return {
        **os.environ,
        "SYNKRO_SITE_ADDRESS": "sync.example.com",
        "SYNKRO_TLS": "ops@example.com",
        "SYNKRO_UI_USER": "synkro",
        "SYNKRO_UI_PASSWORD_HASH": hashed,
    }


def _caddy(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CADDY, *args, "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        env={**env, "HOME": str(cwd), "XDG_DATA_HOME": str(cwd), "XDG_CONFIG_HOME": str(cwd)},
        cwd=cwd,
        timeout=60,
    )


def _handler_chains(routes: list[dict], prefix: tuple = ()) -> Iterator[list[dict]]:
    """Every sequence of handlers a request can go through, with the matchers on its way."""
    for route in routes:
        chain = [*prefix, {"match": route.get("match")}]
        for handler in route.get("handle", []):
            if handler["handler"] == "subroute":
                yield from _handler_chains(handler["routes"], tuple(chain))
            else:
                chain.append(handler)
        yield chain


@needs_caddy
def test_caddyfile_validates(caddy_env, tmp_path):
    result = _caddy(["validate", "--config", str(ROOT / "deploy/Caddyfile")], caddy_env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Valid configuration" in result.stdout + result.stderr


@needs_caddy
@pytest.mark.parametrize(
    ("site", "tls", "issuer"),
    [("sync.example.com", "ops@example.com", "acme"), ("203.0.113.7", "internal", "internal")],
)
def test_caddy_puts_basic_auth_in_front_of_every_proxied_request(
    caddy_env, tmp_path, site, tls, issuer
):
    import json

    env = {**caddy_env, "SYNKRO_SITE_ADDRESS": site, "SYNKRO_TLS": tls}
    result = _caddy(["adapt", "--config", str(ROOT / "deploy/Caddyfile")], env, tmp_path)
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)

    servers = config["apps"]["http"]["servers"]
    assert list(servers) == ["srv0"]
    assert servers["srv0"]["listen"] == [":443"]
    chains = list(_handler_chains(servers["srv0"]["routes"]))
    proxies = [c for c in chains if any(h.get("handler") == "reverse_proxy" for h in c)]
    assert proxies, "no reverse_proxy found"
    for chain in chains:
        handlers = [h.get("handler") for h in chain if "handler" in h]
        if not handlers:
            continue
        # Basic auth comes before anything that answers the request, with no matcher of its own
        # between the site and it (so no path escapes it).
        assert "authentication" in handlers, f"a route without basic auth: {handlers}"
        auth_at = handlers.index("authentication")
        assert all(h in ("headers",) for h in handlers[:auth_at]), handlers
        matchers = [c["match"] for c in chain if "match" in c and c["match"]]
        assert matchers == [[{"host": [site]}]], matchers
        auth = next(h for h in chain if h.get("handler") == "authentication")
        account = auth["providers"]["http_basic"]["accounts"][0]
        assert account["username"] == "synkro"
        assert account["password"] == caddy_env["SYNKRO_UI_PASSWORD_HASH"]
        assert auth["providers"]["http_basic"]["hash"]["algorithm"] == "bcrypt"
    # Error handling (after a 401 or a failed proxy) only answers with the status code.
    error_chains = list(_handler_chains(servers["srv0"].get("errors", {}).get("routes", [])))
    error_handlers = {h.get("handler") for c in error_chains for h in c if "handler" in h}
    assert error_handlers <= {"headers", "static_response"}, error_handlers
    upstreams = [
        u["dial"]
        for chain in proxies
        for h in chain
        if h.get("handler") == "reverse_proxy"
        for u in h["upstreams"]
    ]
    assert upstreams == ["webserver:3000"]

    policies = config["apps"]["tls"]["automation"]["policies"]
    assert policies[0]["subjects"] == [site]
    assert policies[0]["issuers"][0]["module"] == issuer


class _FakeWebserver(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"dagster-webserver stand-in"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@needs_caddy
def test_caddy_serving_the_caddyfile_asks_for_the_password(caddy_env, ui_password, tmp_path):
    """A real Caddy serving deploy/Caddyfile. Only test plumbing differs: unprivileged ports, no
    admin API, no trust-store install, and the upstream name resolved to a local stand-in."""
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeWebserver)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    http_port, https_port = free_port(), free_port()
    caddyfile = (ROOT / "deploy/Caddyfile").read_text(encoding="utf-8")
    assert "reverse_proxy webserver:3000" in caddyfile
    caddyfile = caddyfile.replace(
        "reverse_proxy webserver:3000", f"reverse_proxy 127.0.0.1:{upstream.server_port}"
    )
    test_options = f"{{\n\tadmin off\n\tskip_install_trust\n\thttp_port {http_port}\n\thttps_port {https_port}\n}}\n"
    config = tmp_path / "Caddyfile"
    config.write_text(test_options + caddyfile, encoding="utf-8")
    env = {
        **caddy_env,
        "SYNKRO_SITE_ADDRESS": "localhost",
        "SYNKRO_TLS": "internal",
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path),
    }
    log = (tmp_path / "caddy.log").open("w")
    proc = subprocess.Popen(
        [CADDY, "run", "--config", str(config), "--adapter", "caddyfile"],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"https://localhost:{https_port}/"
    try:
        # Checking a bcrypt hash of the cost `caddy hash-password` uses takes a second or more.
        with httpx.Client(verify=False, timeout=20) as client:
            deadline = time.monotonic() + 20
            while True:
                try:
                    anonymous = client.get(url)
                    break
                except httpx.TransportError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            wrong = client.get(url, auth=("synkro", "not the password"))
            right = client.get(url, auth=("synkro", ui_password))
            redirect = client.get(f"http://localhost:{http_port}/", follow_redirects=False)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        upstream.shutdown()

    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Basic")
    assert "stand-in" not in anonymous.text
    assert wrong.status_code == 401
    assert right.status_code == 200 and right.text == "dagster-webserver stand-in"
    for response in (anonymous, right):
        assert response.headers["strict-transport-security"].startswith("max-age=")
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["referrer-policy"]
        assert "server" not in response.headers  # neither Caddy's nor the upstream's
    assert redirect.status_code in (301, 308)
    assert redirect.headers["location"].startswith("https://localhost")


# ---------------------------------------------------------------- deploy/entrypoint.sh


def _entrypoint_text() -> str:
    return (ROOT / "deploy/entrypoint.sh").read_text(encoding="utf-8")


def _run_entrypoint(env: dict[str, str], *command: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SYNKRO_", "DAGSTER_PG_"))}
    base["PATH"] = f"{VENV_BIN}{os.pathsep}{base.get('PATH', '')}"
    return subprocess.run(
        [str(ROOT / "deploy/entrypoint.sh"), *command],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _applied_migrations(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(
                conn.exec_driver_sql(
                    "select version from supabase_migrations.schema_migrations order by version"
                ).scalars()
            )
    finally:
        engine.dispose()


def test_entrypoint_migrates_then_runs_the_command(empty_database_url):
    result = _run_entrypoint(
        {"SYNKRO_DATABASE_URL": empty_database_url, "SYNKRO_MIGRATE_ON_START": "1"},
        "echo",
        "role command ran",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("role command ran")
    on_disk = sorted(p.name.split("_", 1)[0] for p in (ROOT / "supabase/migrations").glob("*.sql"))
    assert _applied_migrations(empty_database_url) == on_disk


def test_entrypoint_creates_the_data_layer_database_on_first_start(
    admin_engine, pg_server_url, dagster_storage_db
):
    """The compose `db` service creates Dagster's database only; the code server makes the other."""
    name = f"synkro_first_{uuid.uuid4().hex[:10]}"
    url = sa.make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    env = {k: v for k, v in dagster_storage_db.items() if k.startswith("DAGSTER_PG_")}
    try:
        result = _run_entrypoint(
            {**env, "SYNKRO_DATABASE_URL": url, "SYNKRO_MIGRATE_ON_START": "1"}, "true"
        )
        assert result.returncode == 0, result.stderr
        assert f"created database {name}" in result.stdout
        assert len(_applied_migrations(url)) >= 1
    finally:
        with admin_engine.connect() as conn:
            conn.exec_driver_sql(f'drop database if exists "{name}" with (force)')


def test_entrypoint_does_not_migrate_unless_asked(empty_database_url):
    result = _run_entrypoint({"SYNKRO_DATABASE_URL": empty_database_url}, "true")
    assert result.returncode == 0, result.stderr
    engine = sa.create_engine(empty_database_url)
    try:
        with engine.connect() as conn:
            history = conn.exec_driver_sql(
                "select to_regclass('supabase_migrations.schema_migrations')"
            ).scalar()
    finally:
        engine.dispose()
    assert history is None


def test_entrypoint_gives_up_on_an_unreachable_database_without_leaking_the_password():
    port = free_port()  # nothing listens here
    result = _run_entrypoint(
        {
            "SYNKRO_DATABASE_URL": f"postgresql://synkro:s3cret-pw@127.0.0.1:{port}/synkro",
            "SYNKRO_DB_WAIT_SECONDS": "1",
            "SYNKRO_MIGRATE_ON_START": "1",
        },
        "echo",
        "must not run",
    )
    assert result.returncode == 1
    assert "gave up waiting for the data layer database" in result.stderr
    assert "must not run" not in result.stdout
    assert "s3cret-pw" not in result.stdout + result.stderr


# ---------------------------------------------------------------- Dockerfile


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text(encoding="utf-8")


def test_image_installs_exactly_pyprojects_dependencies():
    """Run the Dockerfile's own extraction program on pyproject.toml: what it would pip install is
    pyproject's [project] dependencies, character for character, and nothing is pinned elsewhere."""
    dockerfile = _dockerfile()
    program = ROOT / "deploy" / "requirements.py"
    assert (
        'RUN python /tmp/build/requirements.py /tmp/build/pyproject.toml "$SYNKRO_EXTRAS"'
        " > /tmp/build/requirements.txt" in dockerfile
    )
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]

    def extract(extras: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, str(program), str(ROOT / "pyproject.toml"), extras],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return out.splitlines()

    assert extract("") == pyproject["dependencies"]
    assert extract("dev") == pyproject["dependencies"] + pyproject["optional-dependencies"]["dev"]
    assert any(r.startswith("dagster==") for r in extract(""))

    # The only installs: the generated list at the locked versions, then the project without
    # dependencies (production), and in the demo target the whole project again over it.
    pip_commands = [
        " ".join(line.split()).split("pip install ", 1)[1]
        for line in re.sub(r"\\\n", " ", dockerfile).splitlines()
        if "pip install" in line
    ]
    assert pip_commands == [
        "$PIP_INSTALL_OPTIONS -r /tmp/build/requirements.txt -c /tmp/build/requirements.lock",
        "$PIP_INSTALL_OPTIONS --no-deps /tmp/src && pip check && rm -rf /tmp/build",
        "$PIP_INSTALL_OPTIONS --no-deps --force-reinstall /tmp/src && pip check",
    ]
    # Empty unless a build installs from a wheelhouse (deploy/stacktest/wheelhouse.sh).
    assert 'ARG PIP_INSTALL_OPTIONS=""' in dockerfile


def _locked() -> dict[str, list[tuple[str, Marker | None]]]:
    """requirements.lock as {normalized name: [(version, marker or None)]}; every line an exact pin."""
    locked: dict[str, list[tuple[str, Marker | None]]] = {}
    for number, line in enumerate(
        (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines(), 1
    ):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement = Requirement(line)
        pins = [spec for spec in requirement.specifier if spec.operator == "=="]
        assert len(pins) == 1 and len(requirement.specifier) == 1, (
            f"requirements.lock line {number} is not one exact pin: {line!r}"
        )
        locked.setdefault(canonicalize_name(requirement.name), []).append(
            (pins[0].version, requirement.marker)
        )
    return locked


# The environments the project runs in: the image (3.12, and the stack test's 3.11 base) and
# ./run's virtualenv on any supported Python.
LINUX_PYTHONS = [
    {
        "python_version": version,
        "python_full_version": f"{version}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    for version in ("3.11", "3.12", "3.13")
]


def test_lock_file_pins_every_declared_dependency_at_a_version_pyproject_allows():
    """requirements.lock cannot drift from pyproject.toml: each dependency and each extra's
    dependency has one locked version on every supported Python, inside pyproject's bounds."""
    locked = _locked()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = list(project["dependencies"])
    for group in project["optional-dependencies"].values():
        declared += group
    for line in declared:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} is in pyproject.toml but not locked: ./run lock"
        for environment in LINUX_PYTHONS:
            if requirement.marker and not requirement.marker.evaluate(environment):
                continue
            versions = [
                version
                for version, marker in locked[name]
                if marker is None or marker.evaluate(environment)
            ]
            assert len(versions) == 1, (name, environment["python_version"], versions)
            assert requirement.specifier.contains(versions[0], prereleases=True), (
                f"requirements.lock has {name}=={versions[0]}, pyproject.toml asks {line!r}:"
                " ./run lock"
            )


def test_lock_file_keeps_dagster_core_and_libraries_in_lockstep():
    """Core 1.N.x and its libraries 0.(N+16).x are released together; mixing releases breaks."""
    locked = {name: versions for name, versions in _locked().items() if name.startswith("dagster")}
    core = Version(locked["dagster"][0][0])
    library = f"0.{core.minor + 16}.{core.micro}"
    assert {"dagster-postgres", "dagster-docker", "dagster-k8s"} <= set(locked)
    for name, versions in locked.items():
        for version, _ in versions:
            assert version in (str(core), library), f"{name}=={version} next to dagster=={core}"


def test_the_tested_environment_is_the_locked_one():
    """What this test run imports is what the image installs: every package the project needs,
    followed through its dependencies as installed here, is locked at the installed version."""
    locked = {name: {version for version, _ in pins} for name, pins in _locked().items()}
    seen: set[tuple[str, frozenset[str]]] = set()
    queue: list[tuple[str, frozenset[str]]] = [("synkro-dagster", frozenset({"dev"}))]
    while queue:
        name, extras = queue.pop()
        distribution = importlib.metadata.distribution(name)
        key = canonicalize_name(distribution.metadata["Name"])
        if key != "synkro-dagster":
            assert distribution.version in locked.get(key, set()), (
                f"{key} {distribution.version} is installed but requirements.lock has"
                f" {sorted(locked.get(key, set()))}: ./run lock, or reinstall with ./run"
            )
        for line in distribution.requires or []:
            requirement = Requirement(line)
            if requirement.marker and not any(
                requirement.marker.evaluate({"extra": extra}) for extra in extras or {""}
            ):
                continue
            child = canonicalize_name(requirement.name)
            if (child, frozenset(requirement.extras)) not in seen:
                seen.add((child, frozenset(requirement.extras)))
                queue.append((child, frozenset(requirement.extras)))
    assert len(seen) > 50  # the walk followed dagster's tree, not just the top level


def test_dockerfile_caches_dependencies_and_runs_unprivileged():
    dockerfile = _dockerfile()
    lines = [line for line in dockerfile.splitlines() if line and not line.startswith("#")]
    # The base is a build argument whose default is the official image.
    assert lines[0] == "ARG BASE_IMAGE=python:3.12-slim"
    assert [line for line in lines if line.startswith("FROM")] == [
        "FROM ${BASE_IMAGE} AS wheelhouse",
        "FROM ${BASE_IMAGE} AS source",
        "FROM ${BASE_IMAGE} AS production",
        "FROM production AS demo",
        # The last stage is what a plain `docker build` (compose, CI) makes: production.
        "FROM production",
    ]
    # Built by Engine 20.10's built-in BuildKit frontend too: no frontend image to pull, no heredoc.
    assert not dockerfile.startswith("# syntax=")
    assert "<<" not in dockerfile

    def first(prefix: str) -> int:
        return next(i for i, line in enumerate(lines) if line.startswith(prefix))

    # pyproject.toml alone, its dependencies installed, and only then the source.
    production = first("FROM ${BASE_IMAGE} AS production")
    assert production < first("COPY pyproject.toml requirements.lock") < first("RUN --mount")
    assert re.search(r"^USER synkro$", dockerfile, re.M)
    assert first("USER synkro") < first("ENTRYPOINT")
    assert "HEALTHCHECK" in dockerfile
    assert 'ENTRYPOINT ["/app/deploy/entrypoint.sh"]' in dockerfile
    assert "SYNKRO_MIGRATIONS_DIR=/app/supabase/migrations" in dockerfile
    assert "COPY supabase/migrations /app/supabase/migrations" in dockerfile
    assert "DAGSTER_HOME=/opt/dagster/dagster_home" in dockerfile
    assert "COPY deploy/dagster.yaml deploy/workspace.yaml /opt/dagster/dagster_home/" in dockerfile
    # Every path the build copies exists in the repository.
    for match in re.finditer(r"^COPY (?:--\S+ )*(.+) \S+$", dockerfile, re.M):
        for source in match[1].split():
            # A wildcard may match nothing (the optional wheelhouse).
            assert "*" in source or (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    assert os.access(ROOT / "deploy/entrypoint.sh", os.X_OK)


def _stages(dockerfile: str) -> dict[str, list[str]]:
    """{stage name: its instructions, continuation lines joined}; the unnamed last stage is ""."""
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in re.sub(r"\\\n\s*", " ", dockerfile).splitlines():
        if line.startswith("FROM "):
            name = line.split(" AS ")[1] if " AS " in line else ""
            current = stages.setdefault(name, [])
        elif line.strip() and not line.startswith("#"):
            current.append(" ".join(line.split()))
    return stages


def test_the_production_image_leaves_the_demo_out():
    """synkro_dagster/demo (the demo API and sources of `./run demo`) reaches only the demo target:
    production installs the source stage's copy, from which the demo is removed, through a mount
    (no layer holds the source), and the default target is production."""
    dockerfile = _dockerfile()
    stages = _stages(dockerfile)
    assert stages["source"] == [
        "COPY README.md pyproject.toml synkro.py /src/",
        "COPY synkro_dagster /src/synkro_dagster",
        "RUN rm -rf /src/synkro_dagster/demo",
    ]
    production = stages["production"]
    # Nothing of the project's package is copied into production; its one install mounts the
    # source stage.
    assert not [i for i in production if i.startswith("COPY") and "synkro_dagster" in i]
    [install] = [i for i in production if "--no-deps /tmp/src" in i]
    assert "--mount=type=bind,from=source,source=/src,target=/tmp/src,rw" in install
    assert not [i for i in production if "--mount=type=bind,target=" in i]  # the whole context
    # The demo target adds it; the last stage (the default target) adds nothing to production.
    assert any("--force-reinstall /tmp/src" in i for i in stages["demo"])
    assert stages[""] == []


# ---------------------------------------------------------------- CI/CD and Helm


def test_deploy_workflow_tests_builds_then_deploys_with_secrets_only():
    workflow = _yaml(".github/workflows/deploy.yml")
    trigger = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert trigger["push"]["branches"] == ["main"]
    jobs = workflow["jobs"]
    assert set(jobs) == {"test", "image", "deploy"}
    assert jobs["image"]["needs"] == "test"
    assert jobs["deploy"]["needs"] == "image"
    test_steps = " ".join(str(s.get("run", "")) for s in jobs["test"]["steps"])
    assert "./run test" in test_steps
    assert jobs["test"]["services"]["postgres"]["image"].startswith("postgres:")
    deploy_text = yaml.safe_dump(jobs["deploy"])
    assert "docker compose pull" in deploy_text and "docker compose up -d" in deploy_text
    text = (ROOT / ".github/workflows/deploy.yml").read_text(encoding="utf-8")
    for secret in ("DEPLOY_HOST", "DEPLOY_USER", "DEPLOY_SSH_KEY", "DEPLOY_KNOWN_HOSTS"):
        assert f"secrets.{secret}" in text
    assert "StrictHostKeyChecking=no" not in text


def test_helm_values_run_the_same_image_and_limits(instance_yaml):
    values = _yaml("deploy/helm/values.yaml")
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False
    assert values["postgresql"]["postgresqlHost"]
    assert values["generatePostgresqlPasswordSecret"] is False
    scheme = instance_yaml["run_storage"]["config"]["postgres_db"]["scheme"]
    assert values["postgresql"]["postgresqlScheme"] == scheme == "postgresql+psycopg2"

    user_code = values["dagster-user-deployments"]
    assert user_code["enabled"] is True
    (deployment,) = user_code["deployments"]
    assert deployment["image"]["repository"].endswith("/synkro")
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "synkro_dagster.definitions"]
    assert deployment["port"] == 4000
    assert {"name": "synkro-env"} in deployment["envSecrets"]
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}

    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] is True and coordinator["type"] == "QueuedRunCoordinator"
    queued = coordinator["config"]["queuedRunCoordinator"]
    compose_queue = instance_yaml["run_coordinator"]["config"]
    assert queued["tagConcurrencyLimits"] == compose_queue["tag_concurrency_limits"]
    assert queued["maxConcurrentRuns"] >= compose_queue["max_concurrent_runs"]
    assert values["telemetry"]["enabled"] is False
