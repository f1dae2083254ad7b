"""Documents in: real HTML manuals, PDFs and pages made into WARC files, read by `synth.read`.

The files come from Debian packages the README's test command installs: python3.11-doc (the
Python manual as HTML), libtasn1-doc and shared-mime-info (PDFs). Broken files are made here from
real ones: a PDF encrypted with pypdf, a PDF cut short, a WARC record with corrupted bytes.
"""

import io
import os
import re
import shutil
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pypdf
import pytest
from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from synth.core import SynthError
from synth.io import read
from tests.test_cli import synth

PYDOC = Path("/usr/share/doc/python3.11/html")
PAGE = PYDOC / "tutorial" / "controlflow.html"
TASN = Path("/usr/share/doc/libtasn1-doc/libtasn1.pdf")
SPEC = Path("/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf")
TUTORIAL = ["appetite", "interpreter", "introduction", "controlflow", "datastructures", "modules"]


def rows(path, **kwargs) -> list[dict]:
    return [row for batch in read(path, 16, **kwargs) for row in batch.to_pylist()]


def key(text: str) -> str:
    """Words only, lower case: how extracted text is compared with the page."""
    return " ".join(re.findall(r"\w+", text.lower()))


class Regions(HTMLParser):
    """The `<p>` paragraphs of a Sphinx page's body and all its body text, and the strings of its
    navigation (each link, heading or paragraph of the sidebar, the top and bottom navigation bars,
    the footer and the mobile menu)."""

    NAV = ("sphinxsidebar", "related", "footer", "mobile-nav")
    VOID = {"br", "img", "input", "meta", "link", "hr", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, str]] = []  # per open tag: (tag, "body", "nav" or "")
        self.paragraphs: list[str] = []
        self.body = ""
        self.nav: list[str] = []

    def regions(self) -> set[str]:
        return {region for _, region in self.stack}

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            return
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        region = "nav" if tag == "nav" or any(c in self.NAV for c in classes) else ""
        self.stack.append((tag, region or ("body" if attrs.get("role") == "main" else "")))
        if tag == "p" and self.regions() & {"body", "nav"} == {"body"}:
            self.paragraphs.append("")
        if tag in {"a", "h3", "h4", "p"} and "nav" in self.regions():
            self.nav.append("")

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        tags, regions = [t for t, _ in self.stack], self.regions()
        if "body" in regions and "nav" not in regions:
            self.body += data
            if "p" in tags and self.paragraphs:
                self.paragraphs[-1] += data
        if "nav" in regions and {"a", "h3", "h4", "p"} & set(tags) and self.nav:
            self.nav[-1] += data


def regions(page: Path) -> Regions:
    parser = Regions()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


# ---------------------------------------------------------------- HTML


def test_an_html_page_gives_its_paragraphs_title_and_none_of_its_navigation() -> None:
    (row,) = rows(PAGE)
    assert row["id"] == "controlflow.html" and row["source"] == str(PAGE)
    assert row["title"].startswith("4. More Control Flow Tools")
    assert row["url"] is None  # its canonical link is a file:// address, not a web one
    text, page = key(row["text"]), regions(PAGE)
    paragraphs = [key(p) for p in page.paragraphs if len(key(p).split()) >= 8]
    assert len(paragraphs) >= 40
    found = [p for p in paragraphs if p in text]
    assert len(found) / len(paragraphs) >= 0.95, [p for p in paragraphs if p not in text][:3]
    nav = {key(n) for n in page.nav if len(key(n).split()) >= 2 and key(n) not in key(page.body)}
    assert {"previous topic", "next topic", "this page", "report a bug", "show source"} <= nav
    assert [n for n in nav if n in text] == []


def test_every_page_of_the_tutorial_leaves_its_navigation_behind() -> None:
    for page in [PYDOC / "tutorial" / f"{name}.html" for name in TUTORIAL]:
        (row,) = rows(page)
        text = key(row["text"])
        assert "show source" not in text and "previous topic" not in text and "report a bug" not in text
        assert key(regions(page).paragraphs[0]) in text  # the page's first paragraph


def test_a_glob_reads_matching_files_recursively_with_ids_under_its_folder() -> None:
    found = rows(PYDOC / "tutorial" / "**" / "a*.html")
    assert [r["id"] for r in found] == ["appendix.html", "appetite.html"]
    assert all(r["source"].startswith(str(PYDOC / "tutorial")) for r in found)


# ---------------------------------------------------------------- PDF


def test_a_pdf_gives_one_row_per_page_in_order_with_the_page_text() -> None:
    found = rows(TASN)
    reference = pypdf.PdfReader(TASN)
    pages = [r["page"] for r in found]
    assert pages == sorted(set(pages)) and pages[0] == 1 and len(pages) >= 30
    assert pages[-1] <= len(reference.pages)
    for row in found[::7]:
        assert row["id"] == f"libtasn1.pdf#page={row['page']}" and row["source"] == str(TASN)
        theirs = Counter(key(reference.pages[row["page"] - 1].extract_text()).split())
        ours = Counter(key(row["text"]).split())
        assert sum((theirs & ours).values()) >= 0.9 * sum(theirs.values())  # the same page's words


def test_encrypted_and_cut_off_pdfs_are_named_counted_and_skipped(tmp_path, capsys) -> None:
    folder = tmp_path / "pdfs"
    folder.mkdir()
    shutil.copy(SPEC, folder / "spec.pdf")
    writer = pypdf.PdfWriter(clone_from=TASN)
    writer.encrypt(user_password="secret", owner_password="owner")
    writer.write(folder / "locked.pdf")
    data = TASN.read_bytes()
    (folder / "cut.pdf").write_bytes(data[: len(data) * 2 // 3])
    stats: Counter = Counter()
    found = rows(folder, stats=stats)
    assert {r["source"] for r in found} == {str(folder / "spec.pdf")} and len(found) >= 15
    assert stats["skipped_pdf_unreadable"] == 2 and stats["files_pdf"] == 1
    err = capsys.readouterr().err
    assert re.search(r"skipped \S*locked\.pdf: it is encrypted", err)
    assert re.search(r"skipped \S*cut\.pdf: it is cut off", err)
    with pytest.raises(SynthError, match=r"cut\.pdf: it is cut off.*--strict"):
        rows(folder, strict=True)


def test_strict_on_the_command_line_stops_before_any_model_loads(tmp_path) -> None:
    folder = tmp_path / "pdfs"
    folder.mkdir()
    (folder / "a-cut.pdf").write_bytes(SPEC.read_bytes()[:40_000])
    shutil.copy(SPEC, folder / "b.pdf")
    done = synth("synthesize", str(folder), "--out", str(tmp_path / "out"), "--strict")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "a-cut.pdf: it is cut off" in line


def test_a_missing_extra_is_one_line_naming_it(tmp_path) -> None:
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "pypdfium2.py").write_text("raise ImportError('not installed')\n")
    env = {**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "synth", "dedup", str(SPEC), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith("pip install 'synth[docs]'")


# ---------------------------------------------------------------- WARC


def make_warc(path: Path, pages: list[Path]) -> list[str]:
    """A gzipped WARC of `pages` as responses from docs.python.org, a request before each and an
    image response among them; returns the page URLs."""
    urls = []
    with path.open("wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        writer.write_record(writer.create_warcinfo_record(path.name, {"software": "warcio"}))
        for i, page in enumerate(pages):
            url = f"https://docs.python.org/3.11/tutorial/{page.name}"
            writer.write_record(
                writer.create_warc_record(url, "request", payload=io.BytesIO(b"GET / HTTP/1.1\r\n\r\n"))
            )
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
            body = io.BytesIO(page.read_bytes())
            writer.write_record(writer.create_warc_record(url, "response", payload=body, http_headers=headers))
            urls.append(url)
            if i == 1:
                image = next((PYDOC / "_static").glob("*.png"))
                headers = StatusAndHeaders("200 OK", [("Content-Type", "image/png")], protocol="HTTP/1.1")
                png = io.BytesIO(image.read_bytes())
                writer.write_record(
                    writer.create_warc_record(
                        f"https://docs.python.org/{image.name}", "response", payload=png, http_headers=headers
                    )
                )
    return urls


def test_a_warc_gives_its_html_responses_with_urls_dates_and_offsets(tmp_path) -> None:
    pages = [PYDOC / "tutorial" / f"{name}.html" for name in TUTORIAL]
    warc = tmp_path / "crawl.warc.gz"
    urls = make_warc(warc, pages)
    stats: Counter = Counter()
    found = rows(warc, stats=stats)
    assert [r["url"] for r in found] == urls
    assert stats["warc_records_not_html"] == 1 and stats["warc_records"] == len(pages)
    with warc.open("rb") as handle:
        it = ArchiveIterator(handle)
        offsets = [
            it.get_record_offset()
            for r in it
            if r.rec_type == "response" and r.http_headers.get_header("Content-Type").startswith("text/html")
        ]
    for row, page, offset in zip(found, pages, offsets):
        assert row["source"] == str(warc) and row["offset"] == offset and row["id"] == f"crawl.warc.gz#offset={offset}"
        assert row["date"] and row["title"].split(".")[0].isdigit()
        assert key(regions(page).paragraphs[0]) in key(row["text"])
        assert "show source" not in key(row["text"])


def test_a_broken_warc_record_is_reported_and_the_records_after_it_are_read(tmp_path, capsys) -> None:
    pages = [PYDOC / "tutorial" / f"{name}.html" for name in TUTORIAL]
    warc = tmp_path / "crawl.warc.gz"
    urls = make_warc(warc, pages)
    with warc.open("rb") as handle:
        it = ArchiveIterator(handle)
        starts = [
            (it.get_record_offset(), r.rec_headers.get_header("WARC-Target-URI"))
            for r in it
            if r.rec_type == "response"
        ]
    third = next(i for i, (_, url) in enumerate(starts) if url == urls[2])
    begin, end = starts[third][0], starts[third + 1][0]
    data = bytearray(warc.read_bytes())
    middle = (begin + end) // 2
    data[middle : middle + 64] = bytes(64)  # zeros in the middle of the record's deflate stream
    broken = tmp_path / "broken.warc.gz"
    broken.write_bytes(bytes(data))
    stats: Counter = Counter()
    found = rows(broken, stats=stats)
    assert [r["url"] for r in found] == urls[:2] + urls[3:]
    assert stats["warc_records_broken"] == 1
    assert "broken.warc.gz" in capsys.readouterr().err
    with pytest.raises(SynthError, match=r"broken\.warc\.gz: a record after byte \d+ is broken"):
        rows(broken, strict=True)


def test_a_wet_file_gives_its_text_records_with_their_urls(tmp_path) -> None:
    texts = {
        f"https://docs.python.org/3.11/tutorial/{n}.html": rows(PYDOC / "tutorial" / f"{n}.html")[0]["text"]
        for n in TUTORIAL[:3]
    }
    wet = tmp_path / "crawl.warc.wet.gz"
    with wet.open("wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        for url, text in texts.items():
            payload = io.BytesIO(text.encode())
            writer.write_record(
                writer.create_warc_record(url, "conversion", payload=payload, warc_content_type="text/plain")
            )
    found = rows(tmp_path / "*.wet.gz")
    assert [(r["url"], r["text"]) for r in found] == list(texts.items())


# ---------------------------------------------------------------- folders, links, Office files, EPUB


def test_a_folder_mixing_html_pdf_and_text_reads_them_all_and_follows_no_link_out(tmp_path) -> None:
    folder = tmp_path / "docs"
    (folder / "web").mkdir(parents=True)
    shutil.copy(PAGE, folder / "web" / "controlflow.html")
    shutil.copy(SPEC, folder / "spec.pdf")
    (folder / "notes.txt").write_text((PYDOC / "_sources" / "tutorial" / "appetite.rst.txt").read_text())
    (folder / "outside.html").symlink_to(PYDOC / "tutorial" / "appetite.html")
    (folder / "elsewhere").symlink_to(PYDOC / "tutorial", target_is_directory=True)
    (folder / "inside.txt").symlink_to(folder / "notes.txt")
    stats: Counter = Counter()
    found = rows(folder, stats=stats)
    sources = Counter(Path(r["source"]).name for r in found)
    assert set(sources) == {"controlflow.html", "spec.pdf", "notes.txt", "inside.txt"}
    assert stats["skipped_links_outside"] == 1 and stats["skipped_folder_links"] == 1
    assert all(r["text"].strip() for r in found)
    through_glob = rows(folder / "**" / "*.html")  # a glob follows no link out either
    assert [r["id"] for r in through_glob] == ["web/controlflow.html"]


def test_word_slides_and_an_epub_made_from_a_real_page(tmp_path) -> None:
    import docx
    import pptx
    from ebooklib import epub

    paragraphs = [p for p in (" ".join(p.split()) for p in regions(PAGE).paragraphs) if len(p.split()) >= 8][:12]
    document = docx.Document()
    document.core_properties.title = "Control flow"
    for p in paragraphs:
        document.add_paragraph(p)
    document.save(tmp_path / "flow.docx")
    deck = pptx.Presentation()
    for p in paragraphs[:3]:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text, slide.placeholders[1].text = p.split(".")[0], p
    deck.save(tmp_path / "flow.pptx")
    book = epub.EpubBook()
    book.set_title("Flow book")
    chapters = []
    for i, p in enumerate(paragraphs[:2], 1):
        chapter = epub.EpubHtml(title=f"Chapter {i}", file_name=f"c{i}.xhtml")
        chapter.content = f"<html><body><h1>Chapter {i}</h1><p>{p}</p></body></html>"
        book.add_item(chapter)
        chapters.append(chapter)
    book.toc, book.spine = chapters, chapters
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    epub.write_epub(tmp_path / "flow.epub", book)
    (tmp_path / "bad.docx").write_bytes(b"PK\x03\x04 not really a zip")

    stats: Counter = Counter()
    found = {r["id"]: r for r in rows(tmp_path, stats=stats)}
    assert found["flow.docx"]["title"] == "Control flow"
    assert all(key(p) in key(found["flow.docx"]["text"]) for p in paragraphs)
    slides = [r for r in found.values() if r["source"].endswith(".pptx")]
    assert [r["page"] for r in slides] == [1, 2, 3] and all(
        key(paragraphs[i]) in key(slides[i]["text"]) for i in range(3)
    )
    chapters = [r for r in found.values() if r["source"].endswith(".epub")]
    assert [r["page"] for r in chapters] == [1, 2] and chapters[0]["title"] == "Flow book"
    assert key(paragraphs[1]) in key(chapters[1]["text"])
    assert stats["skipped_docx_unreadable"] == 1
