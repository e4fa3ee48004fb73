"""The shell blocks of README.md and docs/*.md, as the docs-commands test runs them.

A block is a ```bash / ```sh / ```shell fence. The line directly above its opening fence may be
`<!-- docs-test: skip — <reason> -->` (production-only, long-running, needs Docker ...): such a
block is listed but not run. A skip marker without a reason, an unclosed fence or a marker not
followed by a shell block is an error that names the file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHELL_FENCE = re.compile(r"^```\s*(bash|sh|shell)\b.*$")
ANY_FENCE = re.compile(r"^```")
SKIP_MARKER = re.compile(r"^<!--\s*docs-test:\s*skip\b\s*(?:[—–:-]+\s*)?(?P<reason>.*?)\s*-->\s*$")


class DocsBlockError(ValueError):
    """A documentation file whose shell blocks or skip markers cannot be read as intended."""


@dataclass(frozen=True)
class ShellBlock:
    path: Path
    line: int  # 1-based line of the opening fence
    text: str
    skip_reason: str | None

    @property
    def where(self) -> str:
        try:
            name = self.path.relative_to(REPO_ROOT)
        except ValueError:
            name = self.path
        return f"{name}:{self.line}"


def doc_files(root: Path = REPO_ROOT) -> list[Path]:
    """README.md first, then docs/*.md by name: the order the test runs them in."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def shell_blocks(path: Path) -> list[ShellBlock]:
    """Every shell block of one Markdown file, with its skip reason if marked."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[ShellBlock] = []
    pending_skip: tuple[int, str] | None = None
    previous = ""
    index = 0
    while index < len(lines):
        line = lines[index]
        marker = SKIP_MARKER.match(line.strip())
        if marker:
            if not marker.group("reason"):
                raise DocsBlockError(
                    f"{path}:{index + 1}: a docs-test skip marker needs a reason "
                    "(`<!-- docs-test: skip — why it cannot run here -->`)"
                )
            pending_skip = (index + 1, marker.group("reason"))
        elif ANY_FENCE.match(line):
            shell = SHELL_FENCE.match(line)
            start = index
            index += 1
            body: list[str] = []
            while index < len(lines) and not lines[index].startswith("```"):
                body.append(lines[index])
                index += 1
            if index >= len(lines):
                raise DocsBlockError(f"{path}:{start + 1}: code block is never closed")
            skip = None
            if pending_skip is not None:
                if not shell:
                    raise DocsBlockError(
                        f"{path}:{pending_skip[0]}: docs-test skip marker above a block that is "
                        "not a shell block (only ```bash / ```sh / ```shell blocks are run)"
                    )
                if previous.strip() != lines[pending_skip[0] - 1].strip():
                    raise DocsBlockError(
                        f"{path}:{pending_skip[0]}: the docs-test skip marker must be the line "
                        "directly above the opening fence"
                    )
                skip = pending_skip[1]
            if shell:
                blocks.append(ShellBlock(path, start + 1, "\n".join(body), skip))
            pending_skip = None
        elif pending_skip is not None and line.strip():
            raise DocsBlockError(
                f"{path}:{pending_skip[0]}: docs-test skip marker is not directly above a "
                "shell block"
            )
        if line.strip():
            previous = line
        index += 1
    if pending_skip is not None:
        raise DocsBlockError(f"{path}:{pending_skip[0]}: docs-test skip marker at the end")
    return blocks


def all_shell_blocks(root: Path = REPO_ROOT) -> list[ShellBlock]:
    return [block for path in doc_files(root) for block in shell_blocks(path)]
