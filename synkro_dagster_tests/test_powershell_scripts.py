"""The PowerShell export scripts: they parse, every parameter and exit code is documented, and —
where PowerShell is installed — Send-SynkroExport.ps1 delivers into a local inbox the way the
file-drop engine expects (.tmp -> rename, manifest first)."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from synkro_dagster.connectors.files_inbox import read_manifest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
SEND = SCRIPTS / "Send-SynkroExport.ps1"
REGISTER = SCRIPTS / "Register-SynkroExportTask.ps1"
PWSH = shutil.which("pwsh") or shutil.which("powershell")
needs_pwsh = pytest.mark.skipif(
    PWSH is None,
    reason="PowerShell (pwsh) is not installed: no registry reachable here ships it "
    "(Debian has no package; the npm 'pwsh' package downloads it from the internet at install)",
)


def _param_names(text: str) -> list[str]:
    """Parameter names declared in the script's top-level param(...) block."""
    start = re.search(r"^param\s*\(", text, flags=re.MULTILINE | re.IGNORECASE)
    assert start, "no param block"
    depth, index = 0, start.end() - 1
    for index in range(start.end() - 1, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            break
    block = text[start.end() : index]
    return re.findall(r"\]\s*\$(\w+)", block)


@pytest.mark.parametrize("script", [SEND, REGISTER], ids=lambda p: p.name)
def test_the_script_parses(script: Path) -> None:
    tree_sitter = pytest.importorskip("tree_sitter")
    grammar = pytest.importorskip("tree_sitter_powershell")
    parser = tree_sitter.Parser(tree_sitter.Language(grammar.language()))
    tree = parser.parse(script.read_bytes())
    errors: list[str] = []

    def walk(node) -> None:
        if node.type == "ERROR" or node.is_missing:
            row, column = node.start_point
            errors.append(f"line {row + 1}:{column + 1}: {node.text[:60]!r}")
        for child in node.children:
            walk(child)

    walk(tree.root_node)
    assert not errors, f"{script.name} does not parse:\n" + "\n".join(errors)


@pytest.mark.parametrize("script", [SEND, REGISTER], ids=lambda p: p.name)
def test_every_parameter_has_comment_based_help(script: Path) -> None:
    text = script.read_text(encoding="utf-8")
    declared = _param_names(text)
    documented = re.findall(r"^\.PARAMETER\s+(\w+)", text, flags=re.MULTILINE)
    assert declared and sorted(declared) == sorted(documented)
    for section in (".SYNOPSIS", ".DESCRIPTION", ".EXAMPLE"):
        assert section in text


def test_send_script_exit_codes_are_documented() -> None:
    text = SEND.read_text(encoding="utf-8")
    codes = {int(v) for v in re.findall(r"^\$Exit\w+ = (\d+)$", text, flags=re.MULTILINE)}
    assert codes == {0, 1, 2, 3, 4}
    for code in codes:
        assert re.search(rf"^\s+{code}  \S", text, flags=re.MULTILINE), f"exit {code} undocumented"


def test_the_manifest_is_renamed_into_place_before_the_data_file() -> None:
    text = SEND.read_text(encoding="utf-8")
    manifest = text.index("-LiteralPath $manifestTmp -Destination $manifest")
    data = text.index("-LiteralPath $tmp -Destination $final")
    assert manifest < data


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    assert PWSH is not None
    return subprocess.run(
        [PWSH, "-NoProfile", "-NonInteractive", "-File", str(SEND), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@needs_pwsh
def test_send_delivers_with_a_manifest_and_never_overwrites(tmp_path: Path) -> None:
    exports, inbox, log = tmp_path / "exports", tmp_path / "inbox", tmp_path / "send.log"
    exports.mkdir()
    inbox.mkdir()
    content = "Код;Сумма\r\n1;2,5\r\n".encode("cp1251")
    (exports / "sales_1.csv").write_bytes(content)
    common = ["-Destination", str(inbox), "-LogPath", str(log), "-StableSeconds", "0"]
    first = _run("-Path", str(exports / "sales_*.csv"), *common)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (inbox / "sales_1.csv").read_bytes() == content
    assert read_manifest(inbox / "sales_1.csv") == hashlib.sha256(content).hexdigest()
    assert not list(inbox.glob("*.tmp"))
    second = _run("-Path", str(exports / "sales_1.csv"), *common)
    assert second.returncode == 0
    assert len(list(inbox.glob("sales_1_*.csv"))) == 1  # the taken name got a timestamp
    assert "sent " in log.read_text(encoding="utf-8")


@needs_pwsh
def test_send_exit_codes(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x\n")
    common = ["-LogPath", str(tmp_path / "log.txt"), "-StableSeconds", "0", "-RetryCount", "2"]
    missing = _run("-Path", str(tmp_path / "nothing_*.csv"), "-Destination", str(tmp_path), *common)
    assert missing.returncode == 2
    unreachable = _run(
        "-Path", str(tmp_path / "a.csv"), "-Destination", str(tmp_path / "no" / "such"), *common,
        "-RetryDelaySeconds", "0",
    )  # fmt: skip
    assert unreachable.returncode == 3
