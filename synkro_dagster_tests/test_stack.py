"""The production stack on a real Docker engine: docker-compose.yml, the Dockerfile, the
entrypoint, deploy/dagster.yaml and the Caddyfile, run together.

Every image is built here, from Debian packages (deploy/stacktest/build-bases.sh) and the
repository, and compose is told never to pull: no image registry is needed. The test then
registers an integration with the `synkro` CLI inside the code server, launches a partition run
through the UI's GraphQL endpoint behind Caddy, and checks that the DockerRunLauncher's run
container landed the rows, that a failing run is alerted to a webhook container, and that the
volumes keep runs, registry and data across `compose down` / `up`.

Deselected by default (`-m stack` selects it; .ci/run does). It needs root or a reachable Docker
engine, `docker compose` and, for the bases, debootstrap; when the engine cannot be reached or
started, the tests skip and say why. An engine it starts itself it stops again.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from synkro_dagster_tests.dagster_processes import free_port, partition_keys, wait_for

# The first test's limit covers building the images from scratch (debootstrap included).
pytestmark = [pytest.mark.stack, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[1]
STACKTEST = ROOT / "deploy" / "stacktest"
IMAGE = "synkro-stacktest/synkro:test"  # the Dockerfile's production target
DEMO_IMAGE = "synkro-stacktest/synkro-demo:test"  # its demo target: the demo API's container
BASES = {
    "python": "synkro-stacktest/python:bookworm",
    "postgres": "synkro-stacktest/postgres:bookworm",
    "caddy": "synkro-stacktest/caddy:bookworm",
}
SERVICES = ("db", "user_code", "webserver", "daemon", "caddy")
# The compose file gives these their names, so they are the same whatever the project is called.
FIXED_VOLUMES = ("synkro_inbox", "synkro_dagster_storage")
NETWORK = "synkro_network"
LOCATION = "synkro"
API_PORT = 8765
SHOP_TOKEN = "shop-token-7f3a9c2e5194"  # demo api_server.Credentials().bearer_token
SECRET_KEY = "x4r1cQ1Mv0b8m0cB1U2GkH0d6sZ0QbLw7j8kGmXo4Zs="
UI_USER = "ops"


def _run(
    *args: str, timeout: float = 300, check: bool = True, **kwargs: Any
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kwargs
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def _docker_ok() -> bool:
    return (
        shutil.which("docker") is not None
        and subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    )


# ---------------------------------------------------------------- the engine and the images


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Iterator[None]:
    """A reachable Docker engine: the running one, or a dockerd started here (and stopped after)."""
    if shutil.which("docker") is None:
        pytest.skip("no `docker` client on PATH (.ci/run installs Debian's docker.io)")
    started: subprocess.Popen | None = None
    if not _docker_ok():
        dockerd = shutil.which("dockerd")
        if dockerd is None or os.geteuid() != 0:
            pytest.skip("no Docker engine is reachable and dockerd cannot be started (needs root)")
        log = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
        started = subprocess.Popen(
            [dockerd, "--storage-driver=overlay2"],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while not _docker_ok():
            if started.poll() is not None or time.monotonic() > deadline:
                started.kill()
                pytest.skip(f"dockerd did not start here: {log.read_text()[-1500:]}")
            time.sleep(1)
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the `docker compose` plugin is not installed (.ci/run installs it)")
    try:
        yield
    finally:
        if started is not None:
            started.terminate()
            try:
                started.wait(timeout=60)
            except subprocess.TimeoutExpired:
                started.kill()


@pytest.fixture(scope="module")
def engine_lock(engine) -> Iterator[None]:
    """One stack test per engine at a time: the stack's network, volumes and helper containers
    have fixed names, and each run begins by removing what a previous one left."""
    with open("/tmp/synkro-stacktest.lock", "w") as lock:
        deadline = time.monotonic() + 1800
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail("another stack test held the engine for 30 minutes")
                time.sleep(5)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def images(engine_lock, tmp_path_factory) -> dict[str, str]:
    """The three Debian-made bases (cached on this machine) and the project's production and demo
    images built on the Python one, with pip installing from a wheelhouse built here: no
    registry, no index."""
    started = time.monotonic()
    # The bases (debootstrap, apt) and the wheelhouse (pip) download side by side.
    bases_log = tmp_path_factory.mktemp("bases") / "build-bases.log"
    with bases_log.open("wb") as log:
        bases = subprocess.Popen(
            [str(STACKTEST / "build-bases.sh")], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            # Wheels for the base's Python (bookworm's 3.11), downloaded by the host's pip: the
            # build itself reaches no package index.
            _run(
                STACKTEST / "wheelhouse.sh",
                ROOT / ".wheelhouse",
                timeout=900,
                env={**os.environ, "PYTHON": sys.executable},
            )
            returncode = bases.wait(timeout=1500)
        finally:
            if bases.poll() is None:
                bases.kill()
    if returncode != 0:
        pytest.fail(f"build-bases.sh failed:\n{bases_log.read_text()[-3000:]}")
    bases_seconds = time.monotonic() - started
    started = time.monotonic()
    for target, tag in (("production", IMAGE), ("demo", DEMO_IMAGE)):
        _run(
            STACKTEST / "docker-build",
            "--build-arg",
            f"BASE_IMAGE={BASES['python']}",
            "--build-arg",
            "PIP_INSTALL_OPTIONS=--no-index --find-links /tmp/wheels",
            "--target",
            target,
            "-t",
            tag,
            ROOT,
            timeout=1200,
        )
    print(
        f"stack: bases and wheels {bases_seconds:.0f} s, images {time.monotonic() - started:.0f} s"
    )
    return {"synkro": IMAGE, "demo": DEMO_IMAGE, **BASES}


# ---------------------------------------------------------------- the stack


# Small servers on the stack's network: the demo shop API the integration reads from (in the demo
# image: the production one has no demo), and the alert webhook (each body printed as one JSON
# line; the production image).
API_PROGRAM = f"""
import time
from synkro_dagster.demo.api_server import start_api_server
with start_api_server(port={API_PORT}, host="0.0.0.0") as api:
    print(api.url, flush=True)
    while True:
        time.sleep(3600)
"""
WEBHOOK_PROGRAM = """
import json
from http.server import BaseHTTPRequestHandler, HTTPServer
class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        print(json.dumps({"path": self.path, "body": json.loads(body)}), flush=True)
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
HTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
"""


@dataclass
class Stack:
    project: Path
    name: str
    https_port: int
    password: str = field(repr=False)
    helpers: dict[str, str]
    shared: dict[str, Any] = field(default_factory=dict)
    ca_file: Path | None = None

    def compose(self, *args: str, timeout: float = 600, check: bool = True):
        return _run(
            "docker",
            "compose",
            "-p",
            self.name,
            *args,
            cwd=self.project,
            timeout=timeout,
            check=check,
        )

    def exec(self, service: str, *command: str, timeout: float = 180) -> str:
        return self.compose("exec", "-T", service, *command, timeout=timeout).stdout

    def sql(self, query: str) -> str:
        return self.exec("db", "psql", "-U", "synkro", "-d", "synkro", "-tAc", query).strip()

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "80", check=False).stdout

    def client(self, auth: bool = True) -> httpx.Client:
        assert self.ca_file is not None
        # Caddy's own CA (`tls internal`), read out of the caddy container: a verified TLS
        # connection to the name the site is served at.
        return httpx.Client(
            base_url=f"https://localhost:{self.https_port}",
            verify=ssl.create_default_context(cafile=str(self.ca_file)),
            auth=(UI_USER, self.password) if auth else None,
            timeout=60,
        )

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        with self.client() as client:
            response = client.post("/graphql", json={"query": query, "variables": variables or {}})
        assert response.status_code == 200, f"GraphQL HTTP {response.status_code}: {response.text}"
        payload = response.json()
        assert "errors" not in payload, payload["errors"]
        return payload["data"]

    def health(self) -> dict[str, str]:
        out = self.compose("ps", "--all", "--format", "json").stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        if len(rows) == 1 and isinstance(rows[0], list):
            rows = rows[0]
        return {row["Service"]: row.get("Health") or row.get("State", "") for row in rows}

    def up(self) -> float:
        started = time.monotonic()
        result = self.compose(
            "up", "-d", "--wait", "--wait-timeout", "600", timeout=720, check=False
        )
        if result.returncode != 0:
            pytest.fail(f"compose up failed:\n{result.stderr[-3000:]}\n{self.logs()}")
        return time.monotonic() - started


def _env_file(example: Path, values: dict[str, str]) -> str:
    """.env.example with the test's values filled in: every variable it sets stays set."""
    lines, seen = [], set()
    for line in example.read_text(encoding="utf-8").splitlines():
        name = line.split("=", 1)[0] if "=" in line and not line.startswith("#") else None
        if name in values:
            value = values[name]
            lines.append(f"{name}='{value}'" if "$" in value else f"{name}={value}")
            seen.add(name)
        else:
            lines.append(line)
    missing = set(values) - seen
    assert not missing, f".env.example lacks {sorted(missing)}"
    return "\n".join(lines) + "\n"


def _remove_helpers_and_run_containers(helpers: dict[str, str]) -> None:
    names = list(helpers.values())
    # Only the run containers of this test's image: other Dagster deployments on the engine stay.
    runs = _run(
        "docker",
        "ps",
        "-aq",
        "--filter",
        "label=dagster/run_id",
        "--filter",
        f"ancestor={IMAGE}",
        check=False,
    ).stdout.split()
    if names or runs:
        _run("docker", "rm", "-f", *names, *runs, check=False)


@pytest.fixture(scope="module")
def stack(images: dict[str, str], tmp_path_factory) -> Iterator[Stack]:
    # The deploy layout of docs/deploy.md: docker-compose.yml, deploy/Caddyfile and .env.
    project = tmp_path_factory.mktemp("stack")
    (project / "deploy").mkdir()
    shutil.copy(ROOT / "docker-compose.yml", project / "docker-compose.yml")
    shutil.copy(ROOT / "deploy" / "Caddyfile", project / "deploy" / "Caddyfile")
    inbox = project / "inbox"
    inbox.mkdir()
    os.chown(inbox, 10001, 10001)

    password = secrets.token_urlsafe(18)
    pg_password = secrets.token_hex(16)
    password_hash = _run(
        "docker",
        "run",
        "--rm",
        "--network",
        "none",
        images["caddy"],
        "caddy",
        "hash-password",
        "--plaintext",
        password,
    ).stdout.strip()
    https_port = free_port()
    name = "synkrostack"
    helpers = {"api": "synkro-stacktest-api", "webhook": "synkro-stacktest-webhook"}
    values = {
        "SYNKRO_IMAGE": images["synkro"],
        "SYNKRO_POSTGRES_IMAGE": images["postgres"],
        "SYNKRO_CADDY_IMAGE": images["caddy"],
        "SYNKRO_PULL_POLICY": "never",
        "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
        "SYNKRO_INBOX_HOST_DIR": str(inbox),
        "DAGSTER_PG_PASSWORD": pg_password,
        "SYNKRO_DATABASE_URL": f"postgresql://synkro:{pg_password}@db:5432/synkro",
        "INTEGRATION_SECRET_KEY": SECRET_KEY,
        "SYNKRO_AUTOMATION_INTERVAL_SECONDS": "5",
        "SYNKRO_ALERT_WEBHOOK_URL": f"http://{helpers['webhook']}:8080/alerts",
        "SYNKRO_UI_URL": f"https://localhost:{https_port}",
        "SYNKRO_SITE_ADDRESS": "localhost",
        "SYNKRO_TLS": "internal",
        "SYNKRO_UI_USER": UI_USER,
        "SYNKRO_UI_PASSWORD_HASH": password_hash,
        # Published on the loopback interface only: the test's traffic never leaves the host.
        "SYNKRO_HTTP_PORT": f"127.0.0.1:{free_port()}",
        "SYNKRO_HTTPS_PORT": f"127.0.0.1:{https_port}",
    }
    (project / ".env").write_text(_env_file(ROOT / ".env.example", values), encoding="utf-8")
    os.chmod(project / ".env", 0o600)

    result = Stack(project, name, https_port, password, helpers)
    _remove_helpers_and_run_containers(helpers)
    result.compose("down", "-v", "--remove-orphans", check=False)
    try:
        result.shared["first_up_seconds"] = result.up()
        for helper, image, program in (
            ("api", images["demo"], API_PROGRAM),
            ("webhook", images["synkro"], WEBHOOK_PROGRAM),
        ):
            _run(
                "docker",
                "run",
                "-d",
                "--name",
                helpers[helper],
                "--network",
                NETWORK,
                # The image's check probes a code server these containers do not run.
                "--no-healthcheck",
                image,
                "python",
                "-c",
                program,
            )
        ca = project / "caddy-root.crt"
        ca.write_text(
            wait_for(
                "Caddy's internal CA",
                lambda: (
                    result.compose(
                        "exec",
                        "-T",
                        "caddy",
                        "cat",
                        "/data/caddy/pki/authorities/local/root.crt",
                        check=False,
                    ).stdout
                ),
                timeout=60,
                every=2,
            )
        )
        result.ca_file = ca
        yield result
    except BaseException:
        print(result.logs())
        raise
    finally:
        # Every service's whole log, kept for a failure's post-mortem (the volumes go below).
        logs = result.compose("logs", "--no-color", "--timestamps", check=False, timeout=120)
        (project / "compose.log").write_text(logs.stdout + logs.stderr)
        print(f"stack: compose logs in {project / 'compose.log'}")
        _remove_helpers_and_run_containers(helpers)
        result.compose("down", "-v", "--remove-orphans", timeout=300, check=False)


# ---------------------------------------------------------------- GraphQL helpers

RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status jobName tags { key value } }
  }
}
"""
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PipelineNotFoundError { message }
  }
}
"""


def _run_info(stack: Stack, run_id: str) -> dict:
    run = stack.graphql(RUN_QUERY, {"runId": run_id})["runOrError"]
    assert run["__typename"] == "Run", run
    run["tags"] = {t["key"]: t["value"] for t in run["tags"]}
    return run


def _launch_partition(stack: Stack, job: str, partition: str) -> str:
    params = {
        "selector": {
            "repositoryLocationName": LOCATION,
            "repositoryName": "__repository__",
            "jobName": job,
        },
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
        "runConfigData": {},
    }
    result = stack.graphql(LAUNCH, {"params": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def _finished(stack: Stack, run_id: str, timeout: float = 300) -> dict:
    def done() -> dict | None:
        run = _run_info(stack, run_id)
        return run if run["status"] in ("SUCCESS", "FAILURE", "CANCELED") else None

    return wait_for(f"run {run_id} to finish", done, timeout=timeout, every=3)


def _api_total(stack: Stack, collection: str) -> int:
    """What the demo API itself reports for a collection (X-Total-Count), asked inside its container."""
    program = (
        "import urllib.request as u; r = u.urlopen(u.Request("
        f"'http://127.0.0.1:{API_PORT}/shop/api/v1/{collection}?per_page=1', "
        f"headers={{'Authorization': 'Bearer {SHOP_TOKEN}'}})); print(r.headers['X-Total-Count'])"
    )
    return int(_run("docker", "exec", stack.helpers["api"], "python", "-c", program).stdout)


# ---------------------------------------------------------------- the tests, in order


def test_the_production_image_has_no_demo_and_the_demo_image_has(images):
    """The demo (an 800-line HTTP server and its samples) stays out of what production runs;
    there `synkro demo` says where the demo is instead of failing with a traceback."""

    def in_image(
        image: str, *command: str, check: bool = True, user: str = "synkro"
    ) -> subprocess.CompletedProcess:
        return _run(
            "docker", "run", "--rm", "--network", "none", "--user", user,
            "--entrypoint", command[0], image, *command[1:], timeout=120, check=check,
        )  # fmt: skip

    find_spec = "import importlib.util; print(importlib.util.find_spec('synkro_dagster.demo'))"
    assert in_image(images["synkro"], "python", "-c", find_spec).stdout.strip() == "None"
    # No copy anywhere in the image's file system either (a leftover build folder, say).
    leftovers = in_image(
        images["synkro"],
        "sh",
        "-c",
        "find / -xdev \\( -path /proc -o -path /sys \\) -prune"
        " -o \\( -name api_server.py -o -name erp_source.py \\) -print",
        user="root",  # every folder readable
    ).stdout.split()
    assert leftovers == []
    demo = in_image(images["synkro"], "synkro", "demo", check=False)
    assert demo.returncode == 1
    assert "`synkro demo` is not installed here" in demo.stderr and "Traceback" not in demo.stderr
    assert "synkro_dagster.demo" in in_image(images["demo"], "python", "-c", find_spec).stdout
    # Everything else in the demo image is the production image's.
    for image in (images["synkro"], images["demo"]):
        assert "migrate" in in_image(image, "synkro", "db", "--help").stdout


def test_every_service_becomes_healthy_from_local_images_only(stack: Stack, images):
    health = stack.health()
    assert health == dict.fromkeys(SERVICES, "healthy"), health
    # Each service runs the image compose was given, none pulled from a registry.
    for service, image in (
        ("db", images["postgres"]),
        ("caddy", images["caddy"]),
        ("user_code", images["synkro"]),
        ("webserver", images["synkro"]),
        ("daemon", images["synkro"]),
    ):
        container = stack.compose("ps", "-q", service).stdout.strip()
        configured = _run("docker", "inspect", "-f", "{{.Config.Image}}", container).stdout
        assert configured.strip() == image, service
    # The image's user is not root; the daemon reaches the Docker socket through the group.
    assert stack.exec("daemon", "id", "-u").strip() == "10001"
    stack.exec("daemon", "python", "-c", "import docker; docker.from_env().ping()")


def test_caddy_asks_for_the_password_and_serves_the_ui_with_it(stack: Stack):
    with stack.client(auth=False) as anonymous:
        denied = anonymous.get("/")
        assert denied.status_code == 401
        assert "Server" not in denied.headers
        assert anonymous.get("/graphql").status_code == 401
    with httpx.Client(
        base_url=f"https://localhost:{stack.https_port}",
        verify=ssl.create_default_context(cafile=str(stack.ca_file)),
        auth=(UI_USER, "not-the-password"),
        # Caddy compares bcrypt hashes (cost 14): slow on a busy machine.
        timeout=60,
    ) as wrong:
        assert wrong.get("/").status_code == 401
    with stack.client() as client:
        page = client.get("/")
        assert page.status_code == 200
        assert "<title>Dagster</title>" in page.text or "dagster" in page.text.lower()
        assert page.headers["Strict-Transport-Security"].startswith("max-age=")
        assert page.headers["X-Frame-Options"] == "DENY"
        info = client.get("/server_info")
        assert info.status_code == 200
        assert "dagster_webserver_version" in info.json()
    # The webserver reaches the code server: the `synkro` location is loaded.
    assert _location_loaded(stack)


def _location_loaded(stack: Stack) -> bool:
    entries = stack.graphql(
        """
        { workspaceOrError { ... on Workspace { locationEntries {
            name loadStatus locationOrLoadError { __typename } } } } }
        """
    )["workspaceOrError"]["locationEntries"]
    [entry] = [e for e in entries if e["name"] == LOCATION]
    return entry["locationOrLoadError"]["__typename"] == "RepositoryLocation"


def test_the_code_server_migrated_the_data_layer(stack: Stack):
    logs = stack.compose("logs", "--no-color", "user_code").stdout
    assert "entrypoint: created database synkro" in logs
    assert "entrypoint: applying data layer migrations" in logs
    versions = stack.sql("select count(*) from supabase_migrations.schema_migrations")
    migrations = list((ROOT / "supabase" / "migrations").glob("*.sql"))
    assert int(versions) == len(migrations)
    assert stack.sql("select to_regclass('synkro.integrations') is not null") == "t"
    # The webserver and the daemon never migrate.
    for service in ("webserver", "daemon"):
        text = stack.compose("logs", "--no-color", service).stdout
        assert "applying data layer migrations" not in text


def test_an_integration_registered_with_the_cli_syncs_in_a_run_container(stack: Stack, images):
    api = f"base_url=http://{stack.helpers['api']}:{API_PORT}"
    add = ("synkro", "integrations", "add")
    stack.exec(
        "user_code",
        *add,
        "demo-shop",
        "--spec",
        "shop",
        "--tenant",
        "acme",
        "--config",
        api,
        "--secret",
        f"api_token={SHOP_TOKEN}",
    )
    # The failing one: the API refuses its token.
    stack.exec(
        "user_code",
        *add,
        "broken-shop",
        "--spec",
        "shop",
        "--tenant",
        "beta",
        "--config",
        api,
        "--secret",
        "api_token=wrong-token-0d9e4c",
    )
    listed = stack.exec("user_code", "synkro", "integrations", "list")
    assert "demo-shop" in listed and "broken-shop" in listed
    assert SHOP_TOKEN not in listed

    # The registry sensor (in the code server) turns the rows into partitions.
    wait_for(
        "the registry sensor to add the partitions",
        lambda: partition_keys(stack.graphql, ["shop", "orders"]) == ["broken-shop", "demo-shop"],
        timeout=180,
        every=3,
    )
    started = time.monotonic()
    run_id = _launch_partition(stack, "sync_shop", "demo-shop")
    run = _finished(stack, run_id)
    stack.shared["run_seconds"] = time.monotonic() - started
    assert run["status"] == "SUCCESS", stack.logs()
    stack.shared["run_id"] = run_id

    # It ran in its own container, from the image the code server reported, on the stack's network.
    container_id = run["tags"]["docker/container_id"]
    inspect = json.loads(_run("docker", "inspect", container_id).stdout)[0]
    assert inspect["Config"]["Image"] == images["synkro"]
    assert inspect["Config"]["Labels"]["dagster/run_id"] == run_id
    assert NETWORK in inspect["NetworkSettings"]["Networks"]
    assert inspect["State"]["ExitCode"] == 0
    assert run["tags"]["dagster/image"] == images["synkro"]

    # Every record the API has landed in `db`, for this integration.
    counts = {}
    for stream in ("customers", "products", "orders"):
        landed = int(
            stack.sql(
                f"select count(*) from public.shop_{stream} where integration_id = 'demo-shop'"
            )
        )
        assert landed == _api_total(stack, stream), stream
        counts[stream] = landed
    assert all(counts.values()), counts
    stack.shared["counts"] = counts
    # Minutes of sensor ticks later the code server still serves the definitions.
    assert _location_loaded(stack)


def test_the_run_and_its_metadata_read_back_through_graphql(stack: Stack):
    run_id = stack.shared.get("run_id")
    if run_id is None:
        pytest.skip("needs the sync run of the previous test")
    run = _run_info(stack, run_id)
    assert run["jobName"] == "sync_shop"
    assert run["tags"]["dagster/partition"] == "demo-shop"
    events = stack.graphql(
        """
        query Logs($runId: ID!) {
          logsForRun(runId: $runId) {
            __typename
            ... on EventConnection { events { __typename
              ... on MaterializationEvent { assetKey { path } partition
                metadataEntries { label __typename
                  ... on IntMetadataEntry { intValue } } } } }
          }
        }
        """,
        {"runId": run_id},
    )["logsForRun"]["events"]
    materialized = {
        "/".join(e["assetKey"]["path"]): e
        for e in events
        if e["__typename"] == "MaterializationEvent"
    }
    assert {"shop/customers", "shop/products", "shop/orders"} <= set(materialized)
    orders = materialized["shop/orders"]
    assert orders["partition"] == "demo-shop"
    ints = {m["label"]: m.get("intValue") for m in orders["metadataEntries"] if "intValue" in m}
    assert ints, orders["metadataEntries"]
    # The rows the run reports reading are the rows that landed.
    read = next((v for k, v in ints.items() if "read" in k), None)
    assert read == stack.shared["counts"]["orders"], ints


def test_a_failing_run_is_alerted_to_the_webhook(stack: Stack):
    if "run_id" not in stack.shared:
        pytest.skip("needs the integrations of the previous test")
    run_id = _launch_partition(stack, "sync_shop", "broken-shop")
    assert _finished(stack, run_id)["status"] == "FAILURE"

    def alerts() -> list[dict]:
        out = _run("docker", "logs", stack.helpers["webhook"]).stdout
        bodies = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        return [b for b in bodies if run_id in json.dumps(b)]

    [alert] = wait_for("the failure alert at the webhook container", alerts, timeout=180, every=3)
    assert alert["path"] == "/alerts"
    text = json.dumps(alert["body"])
    assert "broken-shop" in text
    assert "wrong-token-0d9e4c" not in text
    stack.shared["failed_run_id"] = run_id


def test_down_and_up_keeps_runs_registry_and_data(stack: Stack):
    if "counts" not in stack.shared:
        pytest.skip("needs the sync run of the earlier tests")
    stack.compose("down", timeout=300)
    assert not stack.compose("ps", "-q").stdout.strip()
    stack.shared["second_up_seconds"] = stack.up()
    assert stack.health() == dict.fromkeys(SERVICES, "healthy")

    assert _run_info(stack, stack.shared["run_id"])["status"] == "SUCCESS"
    if "failed_run_id" in stack.shared:
        assert _run_info(stack, stack.shared["failed_run_id"])["status"] == "FAILURE"
    listed = stack.exec("user_code", "synkro", "integrations", "list")
    assert "demo-shop" in listed and "broken-shop" in listed
    for stream, count in stack.shared["counts"].items():
        landed = stack.sql(
            f"select count(*) from public.shop_{stream} where integration_id = 'demo-shop'"
        )
        assert int(landed) == count, stream
    # No migration ran twice: the code server found the database up to date.
    assert "up to date" in stack.compose("logs", "--no-color", "user_code").stdout


def test_down_with_volumes_removes_everything(stack: Stack):
    _remove_helpers_and_run_containers(stack.helpers)
    stack.compose("down", "-v", timeout=300)
    containers = _run(
        "docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={stack.name}"
    ).stdout
    assert not containers.strip()
    volumes = set(_run("docker", "volume", "ls", "-q").stdout.split())
    left = {v for v in volumes if v.startswith(f"{stack.name}_") or v in FIXED_VOLUMES}
    assert not left, left
    networks = set(_run("docker", "network", "ls", "--format", "{{.Name}}").stdout.split())
    assert NETWORK not in networks and "synkro_edge" not in networks
    print(
        "stack timings: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in stack.shared.items() if k.endswith("seconds"))
    )
