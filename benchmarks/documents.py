"""Documents in: extraction quality of the candidate libraries, synth.read's speed against the
chosen library called directly, and peak memory reading a 1 GB WARC.

On real files Debian installs (the README's test command installs them):
  quality   HTML: the Python 3.11 manual (python3.11-doc), every 9th page. A page's body
            paragraphs (`<p>` of 8+ words in `div[role=main]`) should be in the text, its
            navigation (sidebar, navigation bars, footer: strings of 2+ words not in the body)
            should not; compared as lower-case words. PDF: shared-mime-info's spec against the
            same spec as HTML (word recall and precision), and every PDF under /usr/share/doc
            (gzipped ones unpacked to a temp dir): pages/s and words left with ligature glyphs.
  speed     pages per CPU second (this process's, best of --repeat turns, taken turn by turn)
            through `synth.read` and through the chosen library called directly on the same files
            (resiliparse's extract_plain_text; pypdfium2 page by page); wall time is kept too.
  memory    a 1 GB WARC built from the manual's pages repeated, in a temp dir deleted afterwards,
            read by `synth.read` in a child process (its VmHWM) and by fastwarc + resiliparse
            directly, for the baseline.

    python benchmarks/documents.py [--repeat 3] [--warc-mb 1024] [--parts quality,speed,memory]

Writes benchmarks/results/documents.json and prints a table.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
PYDOC = Path("/usr/share/doc/python3.11/html")
SPEC = Path("/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf")
SPEC_HTML = Path("/usr/share/doc/shared-mime-info/shared-mime-info-spec.html")
LIGATURES = re.compile("[\ufb00-\ufb06]")


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def key(text: str) -> str:
    return " ".join(words(text))


# ---------------------------------------------------------------- quality


def html_truth(html: str) -> tuple[list[str], list[str]]:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    main = tree.css_first("div[role=main]")
    paragraphs = [k for k in (key(p.text()) for p in main.css("p")) if len(k.split()) >= 8]
    body = key(main.text(separator=" "))
    nav = set()
    for selector in ("div.sphinxsidebar", "div.related", "div.footer", "div.mobile-nav", "nav"):
        for region in tree.css(selector):
            for node in region.css("a, h3, h4, p, li"):
                k = key(node.text(separator=" "))
                if len(k.split()) >= 2 and k not in body:
                    nav.add(k)
    return paragraphs, sorted(nav)


def html_candidates() -> dict:
    import trafilatura
    from inscriptis import get_text
    from resiliparse.extract.html2text import extract_plain_text
    from selectolax.lexbor import LexborHTMLParser

    return {
        "resiliparse (main_content)": lambda h: extract_plain_text(h, main_content=True),
        "trafilatura": lambda h: trafilatura.extract(h, include_tables=True) or "",
        "trafilatura (favor_recall)": lambda h: trafilatura.extract(h, include_tables=True, favor_recall=True) or "",
        "inscriptis (no boilerplate removal)": get_text,
        "selectolax body text (no removal)": lambda h: LexborHTMLParser(h).body.text(separator="\n"),
    }


def html_quality(pages: list[Path]) -> dict:
    htmls = [p.read_text(encoding="utf-8") for p in pages]
    truths = [html_truth(h) for h in htmls]
    out = {}
    for name, extract in html_candidates().items():
        hit = total = leak = nav_total = 0
        start = time.perf_counter()
        texts = [key(extract(h)) for h in htmls]
        seconds = time.perf_counter() - start
        for text, (paragraphs, nav) in zip(texts, truths):
            hit += sum(p in text for p in paragraphs)
            total += len(paragraphs)
            leak += sum(n in text for n in nav)
            nav_total += len(nav)
        out[name] = {
            "paragraphs_kept": round(hit / total, 3),
            "navigation_kept": round(leak / nav_total, 3),
            "pages_per_s": round(len(htmls) / seconds, 1),
        }
    return {"pages": len(pages), "paragraphs": sum(len(t[0]) for t in truths), "candidates": out}


def pdf_candidates() -> dict:
    import pypdf
    import pypdfium2 as pdfium
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LTTextContainer

    def with_pdfium(path: Path) -> list[str]:
        doc = pdfium.PdfDocument(path)
        pages = []
        for i in range(len(doc)):
            page = doc[i]
            textpage = page.get_textpage()
            pages.append(textpage.get_text_bounded())
            textpage.close()
            page.close()
        doc.close()
        return pages

    def with_pdfminer(path: Path) -> list[str]:
        return ["".join(e.get_text() for e in page if isinstance(e, LTTextContainer)) for page in extract_pages(path)]

    return {
        "pypdfium2": with_pdfium,
        "pypdf": lambda path: [page.extract_text() for page in pypdf.PdfReader(path).pages],
        "pdfminer.six": with_pdfminer,
    }


def pdf_files(tmp: Path) -> list[Path]:
    files = sorted(Path("/usr/share/doc").rglob("*.pdf"))
    for packed in sorted(Path("/usr/share/doc").rglob("*.pdf.gz")):
        files.append(tmp / f"{packed.parent.name}-{packed.name[:-3]}")
        files[-1].write_bytes(gzip.decompress(packed.read_bytes()))
    return files


def pdf_quality(files: list[Path]) -> dict:
    from selectolax.lexbor import LexborHTMLParser

    reference = collections.Counter()
    for page in sorted(SPEC_HTML.glob("*.html")):
        reference.update(words(LexborHTMLParser(page.read_text(encoding="utf-8")).body.text(separator=" ")))
    out = {}
    for name, extract in pdf_candidates().items():
        pages = seconds = ligatures = total = 0
        for file in files:
            start = time.perf_counter()
            try:
                texts = extract(file)
            except Exception as exc:  # a library that cannot open a file: counted as failed
                out.setdefault(name, {}).setdefault("failed", []).append(f"{file.name}: {type(exc).__name__}")
                continue
            seconds += time.perf_counter() - start
            pages += len(texts)
            found = [w for t in texts for w in words(t)]
            ligatures += sum(bool(LIGATURES.search(w)) for w in found)
            total += len(found)
        spec = collections.Counter(words("\n".join(extract(SPEC))))
        common = sum((spec & reference).values())
        out.setdefault(name, {}).update(
            {
                "pages_per_s": round(pages / seconds, 1),
                "words_with_ligature_glyphs": round(ligatures / total, 4),
                "spec_word_recall": round(common / sum(reference.values()), 3),
                "spec_word_precision": round(common / sum(spec.values()), 3),
            }
        )
    return {"files": [f.name for f in files], "pages": pages, "candidates": out}


# ---------------------------------------------------------------- speed


def html_direct(files: list[Path]) -> int:
    from resiliparse.extract.html2text import extract_plain_text

    for file in files:
        extract_plain_text(file.read_text(encoding="utf-8"), main_content=True)
    return len(files)


def pdf_direct(files: list[Path]) -> int:
    import pypdfium2 as pdfium

    pages = 0
    for file in files:
        doc = pdfium.PdfDocument(file)
        for i in range(len(doc)):
            page = doc[i]
            textpage = page.get_textpage()
            textpage.get_text_bounded()
            textpage.close()
            page.close()
            pages += 1
        doc.close()
    return pages


def through_synth(folder: Path) -> int:
    from synth.io import read

    return sum(batch.num_rows for batch in read(folder, 1000))


def speed(html_folder: Path, pdf_folder: Path, repeat: int) -> dict:
    html_files = sorted(html_folder.rglob("*.html"))
    pdf_files_ = sorted(pdf_folder.glob("*.pdf"))
    sides = {
        "html": [("direct", lambda: html_direct(html_files)), ("synth.read", lambda: through_synth(html_folder))],
        "pdf": [("direct", lambda: pdf_direct(pdf_files_)), ("synth.read", lambda: through_synth(pdf_folder))],
    }
    out = {}
    for kind, runs in sides.items():
        runs[0][1](), runs[1][1]()  # warm-up: imports, page cache
        times: dict[str, list[float]] = {name: [] for name, _ in runs}
        cpu: dict[str, list[float]] = {name: [] for name, _ in runs}
        counts = {}
        for turn in range(repeat):  # turn by turn, so a noisy neighbour hits both sides; each goes first in turn
            for name, run in runs if turn % 2 == 0 else runs[::-1]:
                start, start_cpu = time.perf_counter(), time.process_time()
                counts[name] = run()
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
        # CPU time: on a shared machine a neighbour moves wall time by +-20% from one turn to the next
        best = {name: min(t) for name, t in cpu.items()}
        out[kind] = {
            "files": len(html_files if kind == "html" else pdf_files_),
            "rows": counts,
            "pages_per_cpu_s": {name: round(counts["direct"] / best[name], 1) for name in best},
            "synth_overhead_cpu": round(best["synth.read"] / best["direct"] - 1, 3),
            "synth_overhead_wall": round(min(times["synth.read"]) / min(times["direct"]) - 1, 3),
            "wall_s": {name: [round(t, 3) for t in ts] for name, ts in times.items()},
            "cpu_s": {name: [round(t, 3) for t in ts] for name, ts in cpu.items()},
        }
    return out


# ---------------------------------------------------------------- memory


def build_warc(path: Path, pages: list[Path], size: int) -> int:
    """An uncompressed WARC of `pages` as responses, repeated with new URLs until `size` bytes."""
    bodies = [p.read_bytes() for p in pages]
    written = records = 0
    with path.open("wb") as handle:
        while written < size:
            for page, body in zip(pages, bodies):
                http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + body
                head = (
                    "WARC/1.0\r\nWARC-Type: response\r\n"
                    f"WARC-Record-ID: <urn:uuid:{uuid.uuid4()}>\r\nWARC-Date: 2026-01-01T00:00:00Z\r\n"
                    f"WARC-Target-URI: https://docs.python.org/{records}/{page.name}\r\n"
                    f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(http)}\r\n\r\n"
                ).encode()
                handle.write(head + http + b"\r\n\r\n")
                written += len(head) + len(http) + 4
                records += 1
                if written >= size:
                    break
    return records


CHILD = {
    "synth.read": ("from synth.io import read\nrows = sum(b.num_rows for b in read(sys.argv[1], 1000))\n"),
    "fastwarc + resiliparse": (
        "from fastwarc.warc import ArchiveIterator, WarcRecordType\n"
        "from resiliparse.extract.html2text import extract_plain_text\n"
        "from resiliparse.parse.encoding import bytes_to_str, detect_encoding\n"
        "rows = 0\n"
        "with open(sys.argv[1], 'rb') as f:\n"
        "    for r in ArchiveIterator(f, record_types=WarcRecordType.response):\n"
        "        body = r.reader.read()\n"
        "        extract_plain_text(bytes_to_str(body, detect_encoding(body)), main_content=True)\n"
        "        rows += 1\n"
    ),
}


def warc_readers(warc: Path) -> dict:
    """Records/s iterating the WARC and reading every response body, no extraction: the two readers."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    from warcio.archiveiterator import ArchiveIterator as WarcioIterator

    def with_fastwarc() -> int:
        with warc.open("rb") as handle:
            return sum(bool(r.reader.read()) for r in ArchiveIterator(handle, record_types=WarcRecordType.response))

    def with_warcio() -> int:
        with warc.open("rb") as handle:
            return sum(bool(r.content_stream().read()) for r in WarcioIterator(handle) if r.rec_type == "response")

    out = {}
    for name, run in (("fastwarc", with_fastwarc), ("warcio", with_warcio)):
        start = time.perf_counter()
        records = run()
        out[name] = {"records": records, "records_per_s": round(records / (time.perf_counter() - start), 1)}
    return out


def memory(pages: list[Path], size_mb: int, readers_only: bool = False) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="synth-warc-"))
    try:
        warc = tmp / "pages.warc"
        start = time.perf_counter()
        records = build_warc(warc, pages, size_mb << 20)
        out = {
            "warc_mb": round(warc.stat().st_size / 2**20),
            "records": records,
            "build_s": round(time.perf_counter() - start, 1),
            "readers": warc_readers(warc),
        }
        for name, body in CHILD.items() if not readers_only else ():
            code = (
                "import sys, time\nstart = time.perf_counter()\n"
                + body
                + "hwm = [l for l in open('/proc/self/status') "
                "if l.startswith('VmHWM')][0].split()[1]\nprint(rows, int(hwm) / 1024, time.perf_counter() - start)\n"
            )
            done = subprocess.run([sys.executable, "-c", code, str(warc)], capture_output=True, text=True, check=True)
            rows, peak, seconds = done.stdout.split()
            out[name] = {
                "rows": int(rows),
                "peak_mb": round(float(peak)),
                "seconds": round(float(seconds), 1),
                "records_per_s": round(int(rows) / float(seconds), 1),
            }
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warc-mb", type=int, default=1024)
    parser.add_argument("--parts", default="quality,speed,memory", help="any of quality, speed, memory, readers")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    all_pages = sorted(PYDOC.rglob("*.html"))
    out = RESULTS / "documents.json"
    results = json.loads(out.read_text()) if out.exists() else {}  # the parts not run keep their figures
    with tempfile.TemporaryDirectory(prefix="synth-docs-") as tmp:
        pdfs = pdf_files(Path(tmp))
        pdf_folder, html_folder = Path(tmp) / "pdfs", Path(tmp) / "html"
        pdf_folder.mkdir()
        for file in pdfs:
            shutil.copy(file, pdf_folder / file.name)
        for page in all_pages:  # the manual's pages alone (its folder also holds the .txt sources)
            (html_folder / page.relative_to(PYDOC)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(page, html_folder / page.relative_to(PYDOC))
        if "quality" in parts:
            results["html_quality"] = html_quality(all_pages[::9])
            results["pdf_quality"] = pdf_quality(pdfs)
        if "speed" in parts:
            results["speed"] = speed(html_folder, pdf_folder, args.repeat)
    if parts & {"memory", "readers"}:
        found = memory(all_pages, args.warc_mb, readers_only="memory" not in parts)
        results["warc_memory" if "memory" in parts else "warc_readers"] = found
    RESULTS.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({part: results[part] for part in results}, indent=2))


if __name__ == "__main__":
    main()
