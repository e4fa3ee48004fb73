"""Every shell command in README.md and docs/*.md works, from the repository root, as documented.

The blocks run in order (README.md, then docs/*.md by name), each in a fresh `bash` from the
repository root, against a real dagster-webserver and dagster-daemon that load the code location
the way a user's do (no -m, no -w: the root workspace.yaml / DAGSTER_MODULE_NAME=synkro), with
PostgreSQL run storage (the root dagster.yaml's queue, in a fresh database) and the demo sources
(the demo API served for the whole test, so the demo integrations stay syncable). A block fails
the test on a non-zero exit or a Python traceback in its output, and at the end every run the
commands started must have succeeded. Blocks marked `<!-- docs-test: skip — reason -->` are not
run (see docs_blocks.py for the convention).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import yaml

from synkro_dagster_tests.dagster_processes import (
    BIN,
    WebhookReceiver,
    free_port,
    instance_and_data_layer_on_postgres,
    log_tail,
    webserver_and_daemon,
)
from synkro_dagster_tests.docs_blocks import (
    REPO_ROOT,
    DocsBlockError,
    ShellBlock,
    all_shell_blocks,
    shell_blocks,
)

SECRET_KEY = "x4r1cQ1Mv0b8m0cB1U2GkH0d6sZ0QbLw7j8kGmXo4Zs="
# Generous: on a busy shared CI machine one `dagster` command alone can take half a minute.
BLOCK_TIMEOUT = 420.0
TRACEBACK = "Traceback (most recent call last)"


# -- the block reader: fast, no services ---------------------------------------------------------


def test_blocks_are_found_with_their_skip_markers(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# t\n\n```bash\necho one\n```\n\n"
        "<!-- docs-test: skip — needs Docker -->\n```sh\ndocker ps\n```\n\n"
        "```yaml\na: 1\n```\n\n```shell\necho two\necho three\n```\n",
        encoding="utf-8",
    )
    blocks = shell_blocks(doc)
    assert [(b.line, b.text, b.skip_reason) for b in blocks] == [
        (3, "echo one", None),
        (8, "docker ps", "needs Docker"),
        (16, "echo two\necho three", None),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<!-- docs-test: skip -->\n```bash\nx\n```\n", "doc.md:1: a docs-test skip marker needs"),
        ("```bash\nx\n", "doc.md:1: code block is never closed"),
        ("<!-- docs-test: skip — why -->\nsome text\n```bash\nx\n```\n", "doc.md:1: docs-test"),
        ("<!-- docs-test: skip — why -->\n```yaml\nx: 1\n```\n", "not a shell block"),
    ],
)
def test_malformed_markers_name_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(text, encoding="utf-8")
    with pytest.raises(DocsBlockError, match=re.escape(message)):
        shell_blocks(doc)


def test_every_doc_reads_and_no_command_needs_a_code_location_flag() -> None:
    blocks = all_shell_blocks()
    assert blocks, "README.md and docs/*.md have no shell blocks"
    # One code location, `synkro`, found without flags: -m/-f/-w would load it under another name.
    flag = re.compile(
        r"\bdagster(?:-daemon|-webserver)?\b[^\n]*\s(?:-m|-f|-w|--module-name|--python-file|--workspace)\s"
    )
    offending = [b.where for b in blocks if b.skip_reason is None and flag.search(b.text)]
    assert not offending, f"documented dagster commands with -m/-f/-w: {offending}"


# -- running them ---------------------------------------------------------------------------------


@dataclass
class DocsStack:
    env: dict[str, str]
    ui_url: str
    logs: dict[str, Path]
    alerts: WebhookReceiver

    def log_tail(self) -> str:
        return log_tail(self.logs, 3000)


def local_instance_on_postgres(storage_url: str) -> str:
    """The root dagster.yaml (the local instance and its queue) with PostgreSQL storage."""
    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text(encoding="utf-8"))
    for key in ("storage", "local_artifact_storage", "compute_logs"):
        config.pop(key, None)
    config["storage"] = {"postgres": {"postgres_url": storage_url}}
    return yaml.safe_dump(config, sort_keys=False)


@pytest.fixture(scope="module")
def docs_stack(
    tmp_path_factory, admin_engine: sa.Engine, pg_server_url: str, migrated_template: str
) -> Iterator[DocsStack]:
    from synkro_dagster.demo.api_server import start_api_server

    work = tmp_path_factory.mktemp("docs_commands")
    home = work / "dagster_home"
    home.mkdir()
    with ExitStack() as cleanup:
        data_url = cleanup.enter_context(
            instance_and_data_layer_on_postgres(
                admin_engine,
                pg_server_url,
                migrated_template,
                "synkro_docs",
                home,
                local_instance_on_postgres,
            )
        )

        api = start_api_server(bench_records=1000)
        cleanup.callback(api.stop)
        alerts = WebhookReceiver()
        cleanup.callback(alerts.close)
        port = free_port()
        ui_url = f"http://127.0.0.1:{port}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "SYNKRO_"))},
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "DAGSTER_HOME": str(home),
            # What `. .venv/bin/activate` sets after ./run: the `synkro` location for every command.
            "DAGSTER_MODULE_NAME": "synkro",
            "SYNKRO_DATABASE_URL": data_url,
            "INTEGRATION_SECRET_KEY": SECRET_KEY,
            "SYNKRO_TEMP_DIR": str(work / "temp"),
            "SYNKRO_INBOX_ROOT": str(work / "inbox"),
            "SYNKRO_DEMO_API_URL": api.url,
            "SYNKRO_UI_URL": ui_url,
            "SYNKRO_ALERT_WEBHOOK_URL": alerts.url,
            "SYNKRO_AUTOMATION_INTERVAL_SECONDS": "5",
            "DAGSTER_GRPC_TIMEOUT_SECONDS": "180",
            "DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS": "180",
            "PYTHONUNBUFFERED": "1",
        }
        (work / "inbox").mkdir()
        logs = cleanup.enter_context(
            webserver_and_daemon(env, REPO_ROOT, work, port=port, tail_chars=3000)
        )
        yield DocsStack(env, ui_url, logs, alerts)


def _text(value: bytes | str | None) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value or ""


def _run_block(block: ShellBlock, env: dict[str, str], log: list[str]) -> None:
    started = time.monotonic()
    try:
        result = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", block.text],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{block.where}: the shell block did not finish within {BLOCK_TIMEOUT:.0f}s "
            "(a long-running command needs `<!-- docs-test: skip — reason -->` above it):\n"
            f"{block.text}\n--- output ---\n{_text(exc.stdout)}{_text(exc.stderr)}\n"
            f"--- blocks before ---\n" + "\n".join(log)
        )
    output = f"{result.stdout}\n{result.stderr}".strip()
    log.append(f"{block.where} ({time.monotonic() - started:.1f}s, exit {result.returncode})")
    problem = None
    if result.returncode != 0:
        problem = f"exited with {result.returncode}"
    elif TRACEBACK in output:
        problem = "printed a Python traceback"
    if problem:
        pytest.fail(
            f"{block.where}: the documented shell block {problem}:\n{block.text}\n"
            f"--- output ---\n{output[-6000:]}\n--- blocks before ---\n" + "\n".join(log)
        )


def _runs(ui_url: str) -> list[dict]:
    response = httpx.post(
        f"{ui_url}/graphql",
        json={
            "query": "{ runsOrError(limit: 500) { ... on Runs { results { runId jobName status "
            "tags { key value } } } } }"
        },
        timeout=60,
    )
    runs = response.json()["data"]["runsOrError"]["results"]
    for run in runs:
        run["tags"] = {t["key"]: t["value"] for t in run["tags"]}
    return runs


@pytest.mark.e2e
@pytest.mark.timeout(1800)
def test_every_documented_command_works(docs_stack: DocsStack) -> None:
    blocks = all_shell_blocks()
    ran: list[str] = []
    for block in blocks:
        if block.skip_reason is None:
            _run_block(block, docs_stack.env, ran)
    assert ran, "no runnable shell block in README.md or docs/*.md"

    # Everything the commands queued finishes, and nothing failed.
    deadline = time.monotonic() + 300
    while True:
        runs = _runs(docs_stack.ui_url)
        active = [
            r for r in runs if r["status"] in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED")
        ]
        if not active:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"runs still active after the docs commands: {active}")
        time.sleep(2)
    failed = [
        f"{r['runId']} {r['jobName']} partition={r['tags'].get('dagster/partition')}: {r['status']}"
        for r in runs
        if r["status"] not in ("SUCCESS",)
    ]
    assert not failed, (
        "runs started by the documented commands did not succeed:\n"
        + "\n".join(failed)
        + "\n"
        + docs_stack.log_tail()
    )
    assert runs, "the documented commands started no run"
    # Every run carries the integration, tenant and spec, whatever launched it.
    untagged = [
        r["runId"]
        for r in runs
        if not all(r["tags"].get(t) for t in ("synkro/integration", "synkro/tenant", "synkro/spec"))
    ]
    assert not untagged, f"runs without synkro/integration, tenant and spec: {untagged}"
    assert not docs_stack.alerts.bodies, docs_stack.alerts.bodies
    print("\n".join(ran))


# -- the screenshots the docs show (SYNKRO_UPDATE_SCREENSHOTS=1, needs chromium) --------------


DOCS_IMAGES = REPO_ROOT / "docs" / "images"


def _chromium() -> str | None:
    import shutil

    return next(
        (
            shutil.which(n)
            for n in ("chromium", "chromium-browser", "google-chrome")
            if shutil.which(n)
        ),
        None,
    )


def _screenshot(url: str, target: Path, profile: Path, size: str = "1600,1000") -> None:
    profile.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            str(_chromium()),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=25000",
            f"--window-size={size}",
            f"--screenshot={target}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert target.exists(), result.stderr[-2000:]


def _graphql(ui_url: str, query: str) -> dict:
    return httpx.post(f"{ui_url}/graphql", json={"query": query}, timeout=60).json()["data"]


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_docs_screenshots(docs_stack: DocsStack, tmp_path: Path) -> None:
    """Refreshes docs/images/ from the stack the documented commands just drove."""
    if os.environ.get("SYNKRO_UPDATE_SCREENSHOTS") != "1":
        pytest.skip("set SYNKRO_UPDATE_SCREENSHOTS=1 to refresh docs/images/")
    if _chromium() is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    import html
    import json

    ui = docs_stack.ui_url
    backfills = _graphql(
        ui, "{ partitionBackfillsOrError { ... on PartitionBackfills { results { id jobName } } } }"
    )["partitionBackfillsOrError"]["results"]
    job_backfill = next(b["id"] for b in backfills if b["jobName"] == "sync_shop")
    runs = _runs(ui)
    run_id = next(r["runId"] for r in runs if r["tags"].get("synkro/integration") == "demo-shop")
    pages = {
        "partition-runs.png": f"{ui}/runs?q%5B0%5D=tag%3Asynkro%2Ftenant%3Ddemo-retail",
        "backfill.png": f"{ui}/runs/b/{job_backfill}?tab=runs",
        "run.png": f"{ui}/runs/{run_id}",
        "asset-graph.png": f"{ui}/locations/synkro/asset-groups/shop",
    }
    for name, url in pages.items():
        _screenshot(url, DOCS_IMAGES / name, tmp_path / name)

    # A real failed run of the stack and the alert the daemon's sensor posted for it.
    env = docs_stack.env
    add = (
        "synkro integrations add demo-broken --spec shop --tenant demo-retail "
        "--config base_url=$SYNKRO_DEMO_API_URL --secret api_token=wrong-token-0451"
    )
    subprocess.run(["bash", "-ec", add], env=env, cwd=REPO_ROOT, check=True, capture_output=True)
    try:
        result = subprocess.run(
            [str(BIN / "dagster"), "asset", "materialize", "--select", "key:shop/orders",
             "--partition", "demo-broken"],
            env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert result.returncode != 0, result.stdout[-2000:]
        deadline = time.monotonic() + 120
        while not [b for b in docs_stack.alerts.bodies if b.get("integration") == "demo-broken"]:
            assert time.monotonic() < deadline, (
                f"no alert for demo-broken:\n{docs_stack.log_tail()}"
            )
            time.sleep(2)
    finally:
        subprocess.run(
            ["bash", "-ec", "synkro integrations remove demo-broken --yes"],
            env=env, cwd=REPO_ROOT, capture_output=True,
        )  # fmt: skip
    [alert] = [b for b in docs_stack.alerts.bodies if b.get("integration") == "demo-broken"]
    assert (alert["tenant"], alert["spec"]) == ("demo-retail", "shop")
    assert "wrong-token-0451" not in json.dumps(alert)
    page = tmp_path / "alert.html"
    body = html.escape(json.dumps(alert, indent=2))
    page.write_text(
        "<html><body style='font-family:sans-serif;margin:24px'>"
        "<h3>POST to SYNKRO_ALERT_WEBHOOK_URL (format: generic)</h3>"
        f"<pre style='font-size:15px;background:#f4f4f4;padding:16px;white-space:pre-wrap'>{body}"
        "</pre></body></html>"
    )
    _screenshot(page.as_uri(), DOCS_IMAGES / "alert.png", tmp_path / "alert", size="1200,560")
