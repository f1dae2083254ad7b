"""Documents as rows: web pages, PDFs, Word and PowerPoint files, EPUBs and web archives.

Each row is `id`, `text`, `source` (the file), `url` (an archive's record, a page's canonical
web address), `title`, `page` (a PDF page, a slide, an EPUB chapter, 1-based), `offset` (a
WARC record's byte offset) and `date` (a WARC record's). The libraries (the `docs` extra) are
imported only when the input holds such a file; the README says why these ones.

A file that cannot be read (corrupt, encrypted, cut off) is named on stderr, counted, and
skipped, or stops the run with `strict`. Nothing outside the paths given is read: no link in a
document is fetched, and a symbolic link out of the folder given is not followed.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from synth.core import Batch, SynthError

DOCUMENT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("url", pa.string()),
        ("title", pa.string()),
        ("page", pa.int32()),
        ("offset", pa.int64()),
        ("date", pa.string()),
    ]
)
KINDS = {
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".pdf": "pdf",
    ".docx": "docx",
    ".pptx": "pptx",
    ".epub": "epub",
    ".warc": "warc",
    ".warc.gz": "warc",
    ".wet": "warc",
    ".wet.gz": "warc",
}
# The modules each kind needs, all in the `docs` extra.
NEEDS = {
    "html": ("resiliparse",),
    "pdf": ("pypdfium2",),
    "docx": ("docx",),
    "pptx": ("pptx",),
    "epub": ("ebooklib", "resiliparse"),
    "warc": ("fastwarc", "resiliparse"),
}
HTML_TYPES = ("text/html", "application/xhtml+xml")


class Unreadable(Exception):
    """A file or record synth cannot use; the message says why (`encrypted`, `cut off`, ...)."""


def kind_of(path: Path) -> str | None:
    """`html`, `pdf`, `docx`, `pptx`, `epub`, `warc`, or None for any other file."""
    name = path.name.lower()
    for suffix in (".warc.gz", ".wet.gz"):
        if name.endswith(suffix):
            return "warc"
    return KINDS.get(path.suffix.lower())


def walk(root: Path, stats: Counter[str]) -> list[Path]:
    """Every file under `root`, sorted. Links to folders are not followed, nor links to files outside."""
    top = root.resolve()
    found = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        links = sum(Path(folder, d).is_symlink() for d in dirs)
        if links:
            stats["skipped_folder_links"] += links
        for name in names:
            file = Path(folder, name)
            if inside(file, top, root, stats):
                found.append(file)
    return sorted(found)


def inside(file: Path, top: Path, root: Path, stats: Counter[str]) -> bool:
    """False, with a note, for a file reached through a symbolic link, out of `top` (`root`, resolved)."""
    if top in Path(os.path.realpath(file)).parents:
        return True
    stats["skipped_links_outside"] += 1
    print(f"synth: note: skipped {file}: a link to {os.path.realpath(file)}, outside {root}", file=sys.stderr)
    return False


def require_extras(kinds: Iterable[str], example: Path) -> None:
    """Stop before reading when a kind of file present needs a library that is not installed."""
    for kind in sorted(set(kinds)):
        for module in NEEDS.get(kind, ()):
            try:
                importlib.import_module(module)
            except ImportError:
                raise SynthError(
                    f"reading {kind.upper()} files such as {example} needs the docs extra: pip install 'synth[docs]'"
                ) from None


def read_documents(
    files: list[Path], root: Path, batch_size: int, strict: bool, stats: Counter[str]
) -> Iterator[Batch]:
    """The rows of `files` (documents and text files under `root`), `batch_size` at a time."""
    require_extras((k for f in files if (k := kind_of(f))), next(iter(files), root))
    rows: list[dict[str, Any]] = []
    for file in files:
        name = file.relative_to(root).as_posix()
        kind = kind_of(file) or "text"
        try:
            for row in READERS[kind](file, name, stats, strict):
                if not row["text"].strip():
                    stats[f"{kind}_without_text"] += 1
                    continue
                rows.append({"source": str(file), **row})
                if len(rows) == batch_size:
                    yield pa.Table.from_pylist(rows, DOCUMENT_SCHEMA)
                    rows = []
        except SynthError:
            raise
        except Exception as exc:  # a damaged file makes the libraries raise all sorts: each one is skipped
            why = str(exc) if isinstance(exc, Unreadable) else f"it cannot be read ({type(exc).__name__}: {exc})"
            skipped(file, why, strict, stats, kind)
            continue
        stats[f"files_{kind}"] += 1
    if rows:
        yield pa.Table.from_pylist(rows, DOCUMENT_SCHEMA)


def skipped(where: str | Path, why: str, strict: bool, stats: Counter[str], kind: str) -> None:
    """Name and count a file (or record) that cannot be used; with `strict`, stop instead."""
    if strict:
        raise SynthError(f"cannot read {where}: {why}; remove it, or drop --strict to skip such files")
    stats[f"skipped_{kind}_unreadable"] += 1
    print(f"synth: warning: skipped {where}: {why}", file=sys.stderr)


# ---------------------------------------------------------------- one reader per kind


def _text(file: Path, name: str, stats: Counter[str], strict: bool) -> Iterator[dict[str, Any]]:
    yield {"id": name, "text": file.read_text(encoding="utf-8", errors="replace")}


def html_text(data: bytes | str, main_content: bool = True) -> tuple[str, str | None, str | None]:
    """A page's main text (resiliparse, boilerplate removed), its title and its canonical http(s) URL."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding
    from resiliparse.parse.html import HTMLTree

    if isinstance(data, bytes):
        raw = data
        try:  # most pages are UTF-8: detecting the encoding costs 3% of extracting, spent only when needed
            data = raw.decode("utf-8")
        except UnicodeDecodeError:  # no encoding detected (None): UTF-8, then bytes_to_str's cp1252 fallback
            data = bytes_to_str(raw, detect_encoding(raw) or "utf-8")
    tree = HTMLTree.parse(data)
    text = extract_plain_text(tree, main_content=main_content, alt_texts=False)
    title = (tree.title or "").strip()
    link = tree.head.query_selector('link[rel="canonical"]') if tree.head is not None else None
    href = (link.getattr("href") or "") if link is not None else ""
    return text, title or None, href if href.startswith(("http://", "https://")) else None


def _html(file: Path, name: str, stats: Counter[str], strict: bool) -> Iterator[dict[str, Any]]:
    text, title, url = html_text(file.read_bytes())
    yield {"id": name, "text": text, "title": title, "url": url}


def _pdf(file: Path, name: str, stats: Counter[str], strict: bool) -> Iterator[dict[str, Any]]:
    import pypdfium2 as pdfium

    try:
        doc = pdfium.PdfDocument(file)
    except pdfium.PdfiumError as exc:
        raise Unreadable(_pdf_problem(file, exc)) from None
    try:
        title = (doc.get_metadata_dict().get("Title") or "").strip() or None
        blank = []
        for number in range(1, len(doc) + 1):
            page = doc[number - 1]
            textpage = page.get_textpage()
            text = textpage.get_text_bounded().replace("\r\n", "\n").replace("\r", "\n")
            textpage.close()
            page.close()
            if not text.strip():
                blank.append(number)
                continue
            yield {"id": f"{name}#page={number}", "text": text, "title": title, "page": number}
        if blank:  # a scan: pages with no text layer are named, never empty rows
            stats["pdf_pages_without_text"] += len(blank)
            pages = ", ".join(map(str, blank[:10])) + (", ..." if len(blank) > 10 else "")
            print(f"synth: note: {file}: page {pages} has no text layer (scanned?); skipped", file=sys.stderr)
    finally:
        doc.close()


def _pdf_problem(file: Path, exc: Exception) -> str:
    if "password" in str(exc).lower():
        return "it is encrypted (a password is needed to open it)"
    with file.open("rb") as handle:
        handle.seek(max(0, file.stat().st_size - 1024))
        if b"%%EOF" not in handle.read():
            return "it is cut off (no %%EOF at its end)"
    return f"it is not a valid PDF ({exc})"


def _zipped(open_file: Callable[[str], Any], file: Path, kind: str) -> Any:
    import zipfile

    try:
        return open_file(str(file))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise Unreadable(f"it is not a valid {kind} file ({exc or type(exc).__name__})") from None


def _docx(file: Path, name: str, stats: Counter[str], strict: bool) -> Iterator[dict[str, Any]]:
    import docx

    doc = _zipped(docx.Document, file, "DOCX")
    parts = [p.text for p in doc.paragraphs if p.text.strip()]
    for table in doc.tables:
        parts += ["\t".join(cell.text for cell in row.cells) for row in table.rows]
    title = (doc.core_properties.title or "").strip() or None
    yield {"id": name, "text": "\n\n".join(parts), "title": title}


def _pptx(file: Path, name: str, stats: Counter[str], strict: bool) -> Iterator[dict[str, Any]]:
    import pptx

    deck = _zipped(pptx.Presentation, file, "PPTX")
    title = (deck.core_properties.title or "").strip() or None
    for number, slide in enumerate(deck.slides, 1):
        texts = [s.text_frame.text for s in slide.shapes if s.has_text_frame and s.text_frame.text.strip()]
        yield {"id": f"{name}#page={number}", "text": "\n\n".join(texts), "title": title, "page": number}


def _epub(file: Path, name: str, stats: Counter[str], strict: bool) -> Iterator[dict[str, Any]]:
    import ebooklib
    from ebooklib import epub

    book = _zipped(lambda f: epub.read_epub(str(f), options={"ignore_ncx": True}), file, "EPUB")
    titles = book.get_metadata("DC", "title")
    title = titles[0][0] if titles else None
    chapters = [book.get_item_with_id(item_id) for item_id, _ in book.spine]
    number = 0
    for item in chapters:
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT:
            continue
        number += 1
        text, _, _ = html_text(item.get_content(), main_content=False)  # a chapter is all content
        yield {"id": f"{name}#page={number}", "text": text, "title": title, "page": number}


def _warc(file: Path, name: str, stats: Counter[str], strict: bool) -> Iterator[dict[str, Any]]:
    """Response records with HTML bodies, and WET conversion records. After a broken record the
    next record found is read on; the broken stretch is named and counted once."""
    start: int | None = 0
    with file.open("rb") as handle:
        while start is not None:
            found: list[int] = []
            error = yield from _warc_from(handle, name, start, stats, found)
            if error is None:
                return
            at = found[-1] if found else start
            if strict:
                raise Unreadable(f"a record after byte {at} is broken ({error})")
            if found or start == 0:  # a retry that fails at once is the same broken stretch
                stats["warc_records_broken"] += 1
                print(f"synth: warning: {file}: a record after byte {at} is broken ({error}); skipped", file=sys.stderr)
            start = _next_member(handle, at + 1)


def _warc_from(
    handle: Any, name: str, start: int, stats: Counter[str], found: list[int]
) -> Generator[dict[str, Any], None, str | None]:
    """The records from byte `start` on (their offsets appended to `found`); returns the error that
    stopped them, or None at the end of the file."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    handle.seek(start)
    wanted = WarcRecordType.response | WarcRecordType.conversion
    try:
        for record in ArchiveIterator(handle, record_types=wanted):
            found.append(record.stream_pos)  # a file object's position: absolute
            row = _warc_row(record, record.reader.read(), f"{name}#offset={found[-1]}", found[-1], stats)
            if row is not None:
                yield row
    except (OSError, ValueError) as exc:  # bad gzip data, a malformed header
        return str(exc) or type(exc).__name__
    return None


def _warc_row(record: Any, body: bytes, row_id: str, at: int, stats: Counter[str]) -> dict[str, Any] | None:
    headers = record.headers
    url, date = headers.get("WARC-Target-URI"), headers.get("WARC-Date")
    if headers.get("WARC-Type") == "conversion":  # WET: the text is already extracted
        text, title = body.decode("utf-8", errors="replace"), None
    else:
        kind = (record.http_headers.get("Content-Type", "") if record.http_headers else "").lower()
        if not kind.startswith(HTML_TYPES):
            stats["warc_records_not_html"] += 1
            return None
        text, title, _ = html_text(body)
    stats["warc_records"] += 1
    return {"id": row_id, "text": text, "title": title, "url": url, "offset": at, "date": date}


def _next_member(handle: Any, position: int) -> int | None:
    """The next gzip member (or `WARC/` header of a plain file) at or after `position`."""
    handle.seek(position)
    tail = b""
    while True:
        block = handle.read(1 << 20)
        if not block:
            return None
        data = tail + block
        found = [i for i in (data.find(b"\x1f\x8b\x08"), data.find(b"WARC/1.")) if i >= 0]
        if found:
            return position - len(tail) + min(found)
        tail = data[-8:]
        position += len(block)


READERS: dict[str, Callable[[Path, str, Counter[str], bool], Iterator[dict[str, Any]]]] = {
    "text": _text,
    "html": _html,
    "pdf": _pdf,
    "docx": _docx,
    "pptx": _pptx,
    "epub": _epub,
    "warc": _warc,
}
