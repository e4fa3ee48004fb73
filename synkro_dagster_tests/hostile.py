"""Hostile inputs, generated (never stored): an XLSX whose shared strings unpack to far more than
the file, a CSV that is one endless line, JSON nested beyond any sense. Written in chunks, so a
generator's own memory stays small at any size; tests use small sizes, benchmarks/ large ones."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

from openpyxl import Workbook

CHUNK = 1024 * 1024


def xlsx_shared_strings_bomb(path: Path, unpacked_bytes: int) -> Path:
    """A valid workbook (sheet 'Orders': id, name) whose shared-strings table unpacks to about
    `unpacked_bytes` of distinct strings that compress ~1000:1."""
    book = Workbook()
    sheet = book.active
    sheet.title = "Orders"
    sheet.append(["id", "name"])
    sheet.append([1, "x"])
    template = io.BytesIO()
    book.save(template)
    with zipfile.ZipFile(template) as source, zipfile.ZipFile(path, "w") as target:
        for member in source.infolist():
            if member.filename == "xl/sharedStrings.xml":
                continue
            target.writestr(member, source.read(member.filename), zipfile.ZIP_DEFLATED)
        info = zipfile.ZipInfo("xl/sharedStrings.xml")
        info.compress_type = zipfile.ZIP_DEFLATED
        with target.open(info, "w", force_zip64=True) as out:
            out.write(b'<?xml version="1.0" encoding="UTF-8"?>\n')
            out.write(b'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">')
            out.write(b"<si><t>id</t></si><si><t>name</t></si><si><t>x</t></si>")
            filler = b"<si><t>" + b"A" * 4000 + b"</t></si>"
            written = 0
            while written < unpacked_bytes:
                out.write(filler * 256)
                written += len(filler) * 256
            out.write(b"</sst>")
    return path


def xlsx_ratio_bomb(path: Path, unpacked_bytes: int) -> Path:
    """A workbook whose sheet part is padded with whitespace that compresses ~1000:1."""
    book = Workbook()
    book.active.append(["id"])
    template = io.BytesIO()
    book.save(template)
    with zipfile.ZipFile(template) as source, zipfile.ZipFile(path, "w") as target:
        for member in source.infolist():
            data = source.read(member.filename)
            if member.filename == "xl/worksheets/sheet1.xml":
                info = zipfile.ZipInfo(member.filename)
                info.compress_type = zipfile.ZIP_DEFLATED
                with target.open(info, "w", force_zip64=True) as out:
                    head, _, tail = data.partition(b"<sheetData>")
                    out.write(head)
                    for _ in range(unpacked_bytes // CHUNK):
                        out.write(b" " * CHUNK)
                    out.write(b"<sheetData>" + tail)
                continue
            target.writestr(member, data, zipfile.ZIP_DEFLATED)
    return path


def csv_one_long_line(path: Path, length: int, header: str = "id,name\n") -> Path:
    """A CSV whose second line is `length` bytes of one field with no line end."""
    with path.open("wb") as out:
        out.write(header.encode())
        out.write(b"1,")
        left = length
        block = b"x" * CHUNK
        while left > 0:
            out.write(block[: min(CHUNK, left)])
            left -= CHUNK
    return path


def deep_json(depth: int) -> str:
    """A list with one record nested `depth` objects deep."""
    return '[{"id": 1, "v": ' + '{"a": ' * depth + "1" + "}" * depth + "}]"


def chunks_of(total: int, chunk: bytes) -> Iterator[bytes]:
    """`total` bytes of a response body as repeated `chunk`s (a streamed, endless-looking body)."""
    sent = 0
    while sent < total:
        piece = chunk[: total - sent]
        sent += len(piece)
        yield piece
