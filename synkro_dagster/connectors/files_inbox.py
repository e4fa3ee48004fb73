"""An integration's inbox folder: which files are complete, their content hashes, and moving them.

Layout: `<inbox root>/<integration id>/` holds dropped files; `processed/` and `quarantine/` below
it hold loaded and rejected ones. A file is *ready* when it is not an upload in progress
(`*.tmp`), not a manifest (`*.sha256`), and either has its `<name>.sha256` manifest beside it
(the upload protocol renames a file into place only when it is complete) or has not changed for
`stable_seconds`; a stream with `require_manifest` waits for the manifest in any case.

An inbox is written by the client, so nothing in it is trusted to point where it says: symbolic
links are never followed. A symlinked data file or manifest is listed as `refused` (the run
quarantines the link itself, with the reason), a symlinked inbox, `processed/` or `quarantine/`
folder, or a plain file with one of those names, is an `InboxError` before anything is read, and
files move with directory file descriptors opened with O_NOFOLLOW, so a folder swapped for a link
between a check and the move cannot redirect it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from synkro_dagster.errors import UserError
from synkro_dagster.specs.files import FileOptions
from synkro_dagster.specs.models import SourceSpec, StreamSpec

INBOX_ROOT_ENV = "SYNKRO_INBOX_ROOT"
PROCESSED = "processed"
QUARANTINE = "quarantine"
MANIFEST_SUFFIX = ".sha256"
UPLOAD_SUFFIXES = (".tmp", ".partial", ".part", ".crdownload")
HASH_CHUNK = 1024 * 1024


class InboxError(UserError, RuntimeError):
    """The inbox's own layout is unsafe or broken (symlinked folders, a file where a folder must
    be): the run fails before reading, naming the path and what to fix."""


def resolve_inbox_root(inbox_root: str | None = None) -> Path:
    """The inbox root: the argument, else SYNKRO_INBOX_ROOT, else <temp dir>/inbox."""
    if inbox_root:
        return Path(inbox_root)
    configured = os.environ.get(INBOX_ROOT_ENV)
    if configured:
        return Path(configured)
    from synkro_dagster.database import temp_dir

    return temp_dir() / "inbox"


def inbox_dir(root: Path, integration_id: str) -> Path:
    if (
        not integration_id
        or "/" in integration_id
        or "\\" in integration_id
        or ".." in integration_id
    ):
        raise ValueError(f"integration id {integration_id!r} cannot name an inbox folder")
    return root / integration_id


@dataclass(frozen=True)
class DroppedFile:
    """A complete file in an inbox, the stream it belongs to, and its stat at listing time."""

    path: Path
    stream: str
    size: int
    mtime_ns: int
    # Why the entry is refused without being read (a symbolic link): the run quarantines it.
    refused: str | None = None

    @property
    def manifest(self) -> Path:
        return manifest_path(self.path)

    def unchanged(self) -> bool:
        """Whether the file (not what a link points at) still has its listed size and mtime."""
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            return False
        return st.st_size == self.size and st.st_mtime_ns == self.mtime_ns


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + MANIFEST_SUFFIX)


def stream_options(source: SourceSpec) -> list[tuple[StreamSpec, FileOptions]]:
    return [(s, FileOptions.resolve(source, s)) for s in source.streams if s.files is not None]


def ready_files(
    inbox: Path,
    streams: list[tuple[StreamSpec, FileOptions]],
    stable_seconds: float,
    now: float | None = None,
) -> list[DroppedFile]:
    """Complete files of the given streams in `inbox`, oldest first (then by name)."""
    if not inbox.is_dir():
        return []
    now = time.time() if now is None else now
    found: list[DroppedFile] = []
    for entry in os.scandir(inbox):
        name = entry.name
        lowered = name.lower()
        if lowered.endswith(UPLOAD_SUFFIXES + (MANIFEST_SUFFIX,)) or name.startswith("."):
            continue
        match = next(((s, o) for s, o in streams if o.matches(name)), None)
        if entry.is_symlink():
            if match is not None:
                # Loading it would read whatever it points at (another tenant's inbox, /etc).
                st = entry.stat(follow_symlinks=False)
                target = os.readlink(entry.path)
                found.append(
                    DroppedFile(
                        Path(entry.path),
                        match[0].name,
                        st.st_size,
                        st.st_mtime_ns,
                        refused=f"{name} is a symbolic link (to {target}); the inbox only "
                        "accepts regular files, links are never followed",
                    )
                )
            continue
        if not entry.is_file(follow_symlinks=False):
            continue  # processed/, quarantine/ and any other folder
        if match is None:
            continue
        stream, options = match
        st = entry.stat(follow_symlinks=False)
        manifest = manifest_path(Path(entry.path))
        if manifest.is_symlink():
            found.append(
                DroppedFile(
                    Path(entry.path),
                    stream.name,
                    st.st_size,
                    st.st_mtime_ns,
                    refused=f"its manifest {manifest.name} is a symbolic link (to "
                    f"{os.readlink(manifest)}); links are never followed",
                )
            )
            continue
        has_manifest = manifest.is_file()
        if options.require_manifest and not has_manifest:
            continue
        # A file with its manifest came through the .tmp -> rename protocol, complete (and the
        # run checks its hash); any other file must have stopped changing first. ctime counts
        # too: a copy tool can set an old mtime, but not the ctime its own writes cause.
        changed = max(st.st_mtime, st.st_ctime)
        if not has_manifest and now - changed < stable_seconds:
            continue
        found.append(DroppedFile(Path(entry.path), stream.name, st.st_size, st.st_mtime_ns))
    found.sort(key=lambda f: (f.mtime_ns, f.path.name))
    return found


def sha256_file(path: Path) -> str:
    """The file's SHA-256 (hex), read in 1 MB chunks: memory stays flat for any size."""
    digest = hashlib.sha256()
    # O_NOFOLLOW: a file swapped for a link after listing is not read through the link.
    with os.fdopen(os.open(path, os.O_RDONLY | _NOFOLLOW), "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(path: Path) -> str | None:
    """The hash a `<name>.sha256` manifest declares (sha256sum or bare-hex format), if any."""
    manifest = read_manifest_info(path)
    return None if manifest is None else manifest.sha256


@dataclass(frozen=True)
class Manifest:
    """What a `<name>.sha256` manifest says: the content hash, and optionally which export it is.

    The first line is sha256sum's `<hex>  <name>` (or the bare hex); further lines may add
    `# export_id: <id>` and `# exported_at: <ISO 8601>` (`sha256sum -c` skips `#` lines).
    `exported_at_error` says why an `exported_at` could not be read (the file is rejected).
    """

    sha256: str
    export_id: str | None = None
    exported_at: datetime | None = None
    exported_at_error: str | None = None


_MANIFEST_FIELD = re.compile(r"#?\s*(export_id|exported_at)\s*[:=]\s*(.*?)\s*")


def read_manifest_info(path: Path) -> Manifest | None:
    """The manifest beside `path`, if there is one."""
    manifest = manifest_path(path)
    try:
        with os.fdopen(os.open(manifest, os.O_RDONLY | _NOFOLLOW), "rb") as handle:
            text = handle.read(64 * 1024).decode("utf-8-sig", errors="replace").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:  # ELOOP: the manifest is a link; ready_files lists the file as refused
        return None
    lines = text.splitlines()
    token = lines[0].split()[0].lower() if lines and lines[0].split() else ""
    fields: dict[str, str] = {}
    for line in lines[1:]:
        match = _MANIFEST_FIELD.fullmatch(line.strip())
        if match and match.group(2):
            fields[match.group(1)] = match.group(2)
    exported_at = None
    error = None
    if "exported_at" in fields:
        try:
            exported_at = datetime.fromisoformat(fields["exported_at"])
        except ValueError:
            error = f"exported_at {fields['exported_at']!r} is not an ISO 8601 timestamp"
        else:
            if exported_at.tzinfo is None:
                exported_at = exported_at.replace(tzinfo=UTC)  # naive: read as UTC
    return Manifest(token, fields.get("export_id"), exported_at, error)


def export_order(files: list[DroppedFile]) -> list[DroppedFile]:
    """Files of one stream in the order they are applied: oldest export first.

    When every file's manifest gives `exported_at`, by that timestamp (then name); otherwise by
    file name, which for exports named `<stream>_<date or counter>` is their export order.
    """
    manifests = {f.path: read_manifest_info(f.path) for f in files}
    stamps = {p: m.exported_at if m is not None else None for p, m in manifests.items()}
    if files and all(stamp is not None for stamp in stamps.values()):
        return sorted(files, key=lambda f: (stamps[f.path], f.path.name))
    return sorted(files, key=lambda f: f.path.name)


class HashCache:
    """Content hashes by (path, size, mtime): a file is hashed again only when it changed."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._items: OrderedDict[tuple[str, int, int], str] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def hash(self, dropped: DroppedFile) -> str:
        key = (str(dropped.path), dropped.size, dropped.mtime_ns)
        with self._lock:
            cached = self._items.get(key)
            if cached is not None:
                self._items.move_to_end(key)
                return cached
        digest = sha256_file(dropped.path)
        with self._lock:
            self._items[key] = digest
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
        return digest


def _free_name(folder_fd: int, name: str) -> str:
    """`name`, or `<stem>.<n><suffix>` when that name is taken in the folder."""

    def taken(candidate: str) -> bool:
        try:
            os.lstat(candidate, dir_fd=folder_fd)
        except FileNotFoundError:
            return False
        return True

    if not taken(name):
        return name
    stem, dot, suffix = name.partition(".")
    suffix = dot + suffix
    n = 1
    while taken(f"{stem}.{n}{suffix}"):
        n += 1
    return f"{stem}.{n}{suffix}"


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def _open_folder(path: Path, name: str | None = None, parent_fd: int | None = None) -> int:
    """A file descriptor of a real folder (never through a symbolic link)."""
    target = name if name is not None else path
    try:
        return os.open(target, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=parent_fd)
    except OSError:
        shown = path / name if name is not None else path
        if os.path.islink(shown):
            raise InboxError(
                f"{shown} is a symbolic link (to {os.readlink(shown)}); inbox folders must be "
                "real folders: files moved through it would land outside this inbox. Replace it "
                "with a folder"
            ) from None
        if os.path.lexists(shown):
            raise InboxError(
                f"{shown} is a file, not a folder; Synkro moves loaded and rejected files "
                "into it. Rename or remove the file"
            ) from None
        raise


def check_inbox(inbox: Path) -> None:
    """Fail before reading when the inbox, its processed/ or quarantine/ is a link or a file."""
    if not os.path.lexists(inbox):
        return
    inbox_fd = _open_folder(inbox)
    try:
        for folder in (PROCESSED, QUARANTINE):
            try:
                os.lstat(folder, dir_fd=inbox_fd)
            except FileNotFoundError:
                continue
            os.close(_open_folder(inbox, folder, inbox_fd))
    finally:
        os.close(inbox_fd)


def move_to_processed(path: Path) -> Path | None:
    """Move a loaded file (and its manifest) to processed/; None if it is already gone."""
    return _move(path, path.parent / PROCESSED)


def split_reason(reason: str) -> tuple[str, str]:
    """(one readable line, the details): the first line of `reason`, cut before a parenthesis it
    does not close; the rest (a parser's multi-line message, a caret) goes to the details."""
    lines = [line.rstrip() for line in reason.strip().splitlines()] or [""]
    head, rest = lines[0], [line for line in lines[1:] if line.strip()]
    depth, cut = 0, None
    for index, char in enumerate(head):
        if char == "(":
            if depth == 0:
                cut = index
            depth += 1
        elif char == ")" and depth:
            depth -= 1
    if depth and cut is not None:
        head, tail = head[:cut].rstrip(" :;,"), head[cut + 1 :].strip()
        rest.insert(0, tail)
    return head, "\n".join(rest)


def move_to_quarantine(path: Path, reason: str, details: dict[str, str]) -> Path | None:
    """Move a rejected file (and its manifest) to quarantine/ with `<name>.error.txt` beside it.

    The note's `error:` is one line; anything more the reason carries follows under `details:`.
    """
    target = _move(path, path.parent / QUARANTINE)
    if target is None:
        return None
    head, more = split_reason(reason)
    lines = [
        f"file: {path.name}",
        *(f"{k}: {v}" for k, v in details.items()),
        f"quarantined at: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"error: {head}",
        *(["details:", *(f"  {line}" for line in more.splitlines())] if more else []),
        "",
        "Nothing from this file was loaded. Fix the file and drop it into the inbox again;",
        "a corrected file has a new content hash and is loaded by the next sync.",
        "",
    ]
    write_note(target.with_name(target.name + ".error.txt"), "\n".join(lines))
    return target


def _move(path: Path, folder: Path) -> Path | None:
    """Move `path` (the entry itself, a link stays a link) and its manifest into `folder`, a
    subfolder of its inbox, by names relative to folder descriptors opened without following
    links."""
    inbox_fd = _open_folder(path.parent)
    try:
        try:
            os.lstat(path.name, dir_fd=inbox_fd)
        except FileNotFoundError:
            return None
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder.name, dir_fd=inbox_fd)
        folder_fd = _open_folder(path.parent, folder.name, inbox_fd)
        try:
            name = _free_name(folder_fd, path.name)
            os.rename(path.name, name, src_dir_fd=inbox_fd, dst_dir_fd=folder_fd)
            manifest = path.name + MANIFEST_SUFFIX
            with contextlib.suppress(FileNotFoundError):
                os.rename(
                    manifest, name + MANIFEST_SUFFIX, src_dir_fd=inbox_fd, dst_dir_fd=folder_fd
                )
        finally:
            os.close(folder_fd)
    finally:
        os.close(inbox_fd)
    return folder / name


def write_note(path: Path, text: str) -> None:
    """Write a new file `path` (inside a checked inbox folder) without following a link there."""
    folder_fd = _open_folder(path.parent)
    try:
        fd = os.open(
            path.name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOFOLLOW, 0o644, dir_fd=folder_fd
        )
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
    finally:
        os.close(folder_fd)
