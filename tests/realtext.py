"""Real text installed on the machine, for checking similarity thresholds on text nobody wrote for a test.

Three corpora of prose paragraphs (12 to 80 words), each read from files every Debian/Python install
of this project has, the same on every run:
- `docstrings`: paragraphs of the standard library's docstrings (module, class and function);
- `dpkg`: the long descriptions of the installed packages in /var/lib/dpkg/status;
- `pydocs`: paragraphs of the Python library reference (python3.x-doc's reST sources).

Near-copies inside a corpus are dropped (`distinct`): a stdlib docstring and its copy in another
module, or the dozens of dpkg "this package contains the development files for X" paragraphs, are
light edits of each other already, and would count as false positives of a detector that is right.
`light_edit` plants the edited copies the decontamination goal is stated for.
"""

from __future__ import annotations

import ast
import gzip
import random
import re
import sys
import sysconfig
from collections import Counter
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path

MIN_WORDS, MAX_WORDS = 12, 80
_WORD = re.compile(r"[a-z0-9]+")


def _clean(paragraph: str) -> str | None:
    """One line of prose, or None for code, tables, lists of names and the like."""
    text = " ".join(paragraph.split())
    words = text.split(" ")
    if not MIN_WORDS <= len(words) <= MAX_WORDS or ">>>" in text or "::" in text:
        return None
    plain = sum(bool(re.fullmatch(r"[A-Za-z][a-z'-]*[,.;:]?", w)) for w in words)
    return text if plain >= 0.75 * len(words) and text[0].isupper() else None


@lru_cache(maxsize=1)
def docstrings() -> tuple[str, ...]:
    """Paragraphs of the standard library's docstrings, in a fixed order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    found: list[str] = []
    for path in sorted(stdlib.rglob("*.py")):
        parts = path.relative_to(stdlib).parts
        if parts[0] in {"test", "idlelib", "lib2to3", "site-packages", "dist-packages"} or "tests" in parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                for para in re.split(r"\n\s*\n", ast.get_docstring(node) or ""):
                    if (text := _clean(para)) is not None:
                        found.append(text)
    return tuple(found)


@lru_cache(maxsize=1)
def dpkg() -> tuple[str, ...]:
    """Paragraphs of the installed packages' long descriptions (/var/lib/dpkg/status)."""
    status = Path("/var/lib/dpkg/status")
    if not status.is_file():
        return ()
    found: list[str] = []
    for stanza in status.read_text(encoding="utf-8", errors="replace").split("\n\n"):
        body = re.search(r"^Description: [^\n]*\n((?: [^\n]*\n?)*)", stanza, flags=re.MULTILINE)
        if body is None:
            continue
        for para in re.split(r"^ \.\s*$", body.group(1), flags=re.MULTILINE):
            if (text := _clean(para)) is not None:
                found.append(text)
    return tuple(found)


_ROLE = re.compile(r":[\w:.-]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
_LINK = re.compile(r"`([^`<]+?)\s*<[^>]*>`_+")


@lru_cache(maxsize=1)
def pydocs() -> tuple[str, ...]:
    """Paragraphs of the library reference's reST sources, markup stripped (python3.x-doc)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    folders = [Path(f"/usr/share/doc/python{version}{s}/html/_sources/library") for s in ("", "-doc")]
    folder = next((f for f in folders if f.is_dir()), None)
    if folder is None:
        return ()
    found: list[str] = []
    for path in sorted(folder.glob("*.txt")):
        text = path.read_text(encoding="utf-8", errors="replace")
        for para in re.split(r"\n\s*\n", text):
            lines = para.splitlines()
            if not lines or lines[0].startswith((" ", "..", "=", "-", "*", "+", "|")):
                continue  # indented blocks (code, directive bodies), directives, headings, lists, tables
            plain = _LINK.sub(r"\1", _ROLE.sub(r"\1", para)).replace("``", "").replace("**", "")
            if (clean := _clean(plain.replace("*", ""))) is not None:
                found.append(clean)
    return tuple(found)


def debian_docs() -> tuple[str, ...]:
    """Paragraphs of the README files under /usr/share/doc (a fourth corpus, for a look by hand)."""
    found: list[str] = []
    for path in sorted(Path("/usr/share/doc").glob("*/README*")):
        try:
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        except (OSError, EOFError):
            continue
        for para in re.split(r"\n\s*\n", raw.decode("utf-8", errors="replace")):
            if (text := _clean(para)) is not None:
                found.append(text)
    return tuple(found)


CORPORA: dict[str, Callable[[], tuple[str, ...]]] = {"docstrings": docstrings, "dpkg": dpkg, "pydocs": pydocs}


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def distinct(texts: tuple[str, ...] | list[str], limit: float = 0.5) -> list[str]:
    """`texts` without near-copies: a text goes if it shares more than `limit` of its distinct words
    (stopwords aside) with a text kept before it. Order kept."""
    common = {w for w, _ in Counter(w for t in texts for w in set(words(t))).most_common(150)}
    kept: list[str] = []
    holders: dict[str, list[int]] = {}
    seen: list[set[str]] = []
    for text in texts:
        mine = set(words(text)) - common
        if len(mine) < 4:
            continue
        overlap: Counter[int] = Counter(k for w in mine for k in holders.get(w, ()))
        if any(n > limit * min(len(mine), len(seen[k])) for k, n in overlap.items()):
            continue
        for w in mine:
            holders.setdefault(w, []).append(len(kept))
        seen.append(mine)
        kept.append(text)
    return kept


def vocabulary(texts: list[str]) -> list[str]:
    """The corpus's words of 3+ letters, each once, sorted: where light edits draw their words from."""
    return sorted({w for t in texts for w in re.findall(r"[a-z]{3,}", t.lower())})


def light_edit(text: str, rng: random.Random, vocab: list[str], every: int = 7) -> str:
    """`text` with one word in `every` (at least one) replaced by a word drawn at random from `vocab`."""
    parts = text.split(" ")
    for i in rng.sample(range(len(parts)), max(1, round(len(parts) / every))):
        word = rng.choice(vocab)
        while word == parts[i].lower():
            word = rng.choice(vocab)
        parts[i] = word
    return " ".join(parts)


def split(texts: list[str], items: int, negatives: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """`items` texts to stand for a benchmark and `negatives` other texts from the same corpus."""
    order = list(texts)
    random.Random(seed).shuffle(order)
    if len(order) < items + negatives:
        raise ValueError(f"the corpus has {len(order)} distinct texts; {items} + {negatives} asked for")
    return order[:items], order[items : items + negatives]


def iter_corpora(names: tuple[str, ...] = tuple(CORPORA)) -> Iterator[tuple[str, list[str]]]:
    """(name, distinct texts) of each corpus installed here."""
    for name in names:
        texts = distinct(CORPORA[name]())
        if texts:
            yield name, texts
