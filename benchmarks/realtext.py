"""Real text installed on the machine, for measuring similarity thresholds (none of it written for a test).

- `docstring_sentences`: the standard library's docstrings (the same on every install of a Python version);
- `dpkg_sentences`: the long descriptions of the installed Debian packages (`/var/lib/dpkg/status`);
- `man_sentences`: the English section-1 man pages' running text (`/usr/share/man/man1`), roff stripped;
- `pydoc_sentences`: the Python documentation's HTML paragraphs (python3.11-doc), a corpus held out of calibration;
- `translations`: gettext catalogues (`/usr/share/locale/*/LC_MESSAGES/*.mo`): one message in many languages.

`plant` mixes a pool's texts with near-copies made the way `benchmarks/dedup.py` always made them
(exact, case and punctuation noise, one word changed, one word added), and `distinct_requests`
gathers real rows that are not copies of one another but look alike: the same form with other
subjects or numbers, other languages, the same topic with another ask. A pool is cleaned of its
own near-copies first (`distinct`: word sets overlapping by half or more), so that a drop that is
not a planted copy is a mistake.
"""

from __future__ import annotations

import ast
import gettext
import gzip
import random
import re
import sysconfig
from collections.abc import Iterable
from pathlib import Path

NOUNS = (
    "garden river library market bridge lighthouse orchard database compiler telescope harbour glacier bakery "
    "vineyard satellite railway festival museum monastery reef desert forest spreadsheet kernel cathedral bicycle "
    "workshop laboratory marathon parliament symphony volcano theatre castle canal factory pipeline network "
    "algorithm startup classroom hospital village island mountain budget contract vaccine battery engine "
    "election climate insurance mortgage recipe painting novel podcast camera password firewall cluster "
    "tournament orchestra bakery pharmacy airport tunnel subway stadium prison embassy archive newsroom "
    "greenhouse beehive tractor drone robot sensor microscope galaxy comet asteroid fossil dinosaur coral "
    "salmon wolf falcon elephant cactus mushroom wheat coffee chocolate cheese bread noodle soup violin guitar"
).split()
ADJS = (
    "quiet ancient modern rural urban coastal frozen tropical digital medieval distributed noisy sparse renewable "
    "fragile hidden forgotten crowded remote seasonal volcanic secure mobile vintage organic floating underground "
    "portable nocturnal migratory industrial experimental affordable sustainable haunted luxurious minimalist "
    "chaotic efficient legendary mysterious automated handmade bilingual decentralised"
).split()
WORD = re.compile(r"\w+")


def near_copy(text: str, rng: random.Random) -> str:
    """A planted copy: a quarter exact, a quarter case/punctuation/spacing noise, 30% one word
    changed to a random noun or adjective, 20% one word added."""
    kind = rng.random()
    if kind < 0.25:
        return text
    if kind < 0.5:  # case, punctuation and spacing noise
        return "  ".join(w.upper() if rng.random() < 0.3 else w for w in text.split()).rstrip(".") + "!!"
    words = text.split()
    i = rng.randrange(1, len(words) - 1)
    if kind < 0.8:
        words[i] = rng.choice(NOUNS + ADJS)  # one word changed
    else:
        words.insert(i, rng.choice(["really", "very", "quite", "short"]))  # one word added
    return " ".join(words)


def sentences(text: str) -> Iterable[str]:
    """Sentences of 4+ words and 30-300 characters, mostly letters, from running text."""
    for para in re.split(r"\n\s*\n", text):
        for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", " ".join(para.split())):
            if 30 <= len(s) <= 300 and sum(c.isalpha() for c in s) > 0.7 * len(s) and len(s.split()) >= 4:
                yield s


def _once(texts: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(texts))


def docstring_sentences(every: int = 1) -> list[str]:
    """The standard library's docstrings (tests and IDLE left out; every `every`-th module, sorted
    by path: parsing them all takes half a minute on a busy core), as sentences, each once."""
    out = []
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))
    for file in files[::every]:
        if {"test", "tests", "idlelib", "site-packages"} & set(file.parts):
            continue
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out.extend(sentences(ast.get_docstring(node) or ""))
    return _once(out)


def dpkg_sentences(status: Path = Path("/var/lib/dpkg/status")) -> list[str]:
    """Installed Debian packages' long descriptions, as sentences (empty where there is no dpkg)."""
    if not status.is_file():
        return []
    text = status.read_text(encoding="utf-8", errors="replace")
    out = []
    for long in re.findall(r"^Description: .*\n((?: .*\n?)*)", text, re.M):
        paragraphs = "\n".join("" if line.strip() == "." else line.strip() for line in long.splitlines())
        out.extend(sentences(paragraphs))
    return _once(out)


def dpkg_summaries(status: Path = Path("/var/lib/dpkg/status")) -> list[str]:
    """Installed Debian packages' one-line descriptions ("GNU C Library: Shared libraries")."""
    if not status.is_file():
        return []
    return _once(re.findall(r"^Description: (.*)$", status.read_text(encoding="utf-8", errors="replace"), re.M))


def pydoc_sentences(folder: Path = Path("/usr/share/doc/python3.11/html")) -> list[str]:
    """The Python documentation's HTML paragraphs (the python3.11-doc package), tags and entities
    stripped, as sentences (empty where it is not installed)."""
    import html

    out: list[str] = []
    for file in sorted(folder.rglob("*.html")) if folder.is_dir() else []:
        if file.name.startswith("genindex") or "_static" in file.parts:
            continue
        page = file.read_text(encoding="utf-8", errors="replace")
        for paragraph in re.findall(r"<p>(.*?)</p>", page, re.S):
            out.extend(sentences(html.unescape(re.sub(r"<[^>]+>", "", paragraph))))
    return _once(out)


_ROFF_ESCAPE = re.compile(r"\\f(?:\[[^]]*\]|\(..|.)|\\s[+-]?\d|\\\(..|\\\*(?:\(..|.)|\\[&/,|^~%:]|\\(?=-)")


def man_sentences(folder: Path = Path("/usr/share/man/man1"), pages: int = 600) -> list[str]:
    """Running text of up to `pages` English man pages (sorted by name), roff requests and font
    escapes stripped, as sentences; option descriptions are one-line phrases, left out here."""
    out: list[str] = []
    files = sorted(folder.glob("*.gz")) if folder.is_dir() else []
    for file in files[:: max(1, len(files) // pages)]:
        try:
            roff = gzip.decompress(file.read_bytes()).decode("utf-8", errors="replace")
        except (OSError, EOFError):
            continue
        lines = []
        for line in roff.splitlines():
            if line.startswith((".PP", ".P", ".LP", ".SH", ".SS", ".TP", ".IP", ".sp", ".br")) or not line.strip():
                lines.append("")  # a paragraph break
            elif not line.startswith((".", "'")):
                lines.append(_ROFF_ESCAPE.sub("", line).replace("\\-", "-").replace("\\e", "\\"))
        out.extend(sentences("\n".join(lines)))
    return _once(out)


def translations(
    domains: tuple[str, ...] = ("apt", "coreutils", "dpkg", "grep", "findutils", "bash"),
) -> list[list[str]]:
    """Messages of 5+ words with their translations in the installed gettext catalogues: each item
    is one message in English and 3-8 other languages (empty where no catalogues are installed)."""
    langs = ("de", "fr", "es", "it", "nl", "pt_BR", "pl", "sv")
    out = []
    for domain in domains:
        catalogues = {}
        for lang in langs:
            path = Path(f"/usr/share/locale/{lang}/LC_MESSAGES/{domain}.mo")
            if path.is_file():
                with path.open("rb") as f:
                    catalogues[lang] = gettext.GNUTranslations(f)._catalog  # type: ignore[attr-defined]
        if len(catalogues) < 3:
            continue
        english = sorted({k for c in catalogues.values() for k in c if isinstance(k, str)})
        for msgid in english:
            if len(msgid.split()) < 5 or len(msgid) > 200 or "%" in msgid or "\n" in msgid or "--" in msgid:
                continue
            # versions that keep most words (command syntax, names) are copies of one another: left out
            versions = distinct([msgid] + [c[msgid] for c in catalogues.values() if c.get(msgid, msgid) != msgid])
            if len(versions) >= 4:
                out.append(versions)
    return out


def distinct(texts: Iterable[str], overlap: float = 0.5) -> list[str]:
    """Texts in order, less any whose lower-cased word set shares `overlap` (Jaccard) or more with
    an earlier one's: a real pool's own near-copies, so that only the planted ones are copies.

    Exact, with prefix filtering: two sets that close share one of each set's rarest
    `len - ceil(overlap * len) + 1` words, so only those words are indexed and probed."""
    import math
    from collections import Counter

    items = [(t, frozenset(WORD.findall(t.lower()))) for t in texts]
    freq = Counter(w for _, words in items for w in words)
    kept: list[str] = []
    sets: list[frozenset[str]] = []
    by_word: dict[str, list[int]] = {}
    for text, words in items:
        if not words:
            continue
        rare = sorted(words, key=lambda w: (freq[w], w))[: len(words) - math.ceil(overlap * len(words)) + 1]
        seen = {i for w in rare for i in by_word.get(w, ())}
        if any(len(words & sets[i]) / len(words | sets[i]) >= overlap for i in seen):
            continue
        for w in rare:
            by_word.setdefault(w, []).append(len(sets))
        sets.append(words)
        kept.append(text)
    return kept


def plant(pool: list[str], rows: int, seed: int = 0, dup_rate: float = 0.1) -> tuple[list[str], list[int | None]]:
    """`rows` texts: the pool's in a seeded order, `dup_rate` of them near-copies (`near_copy`) of
    earlier ones; and for each, the position of the row it copies (None for an original)."""
    rng = random.Random(seed)
    order = pool[:]
    rng.shuffle(order)
    texts: list[str] = []
    truth: list[int | None] = []
    originals: list[int] = []
    for _ in range(rows):
        if originals and rng.random() < dup_rate:
            source = rng.choice(originals)
            texts.append(near_copy(texts[source], rng))
            truth.append(source)
        else:
            if not order:
                raise ValueError(f"the pool holds {len(pool)} texts; ask for fewer rows")
            originals.append(len(texts))
            texts.append(order.pop())
            truth.append(None)
    return texts, truth


def distinct_requests(seed: int = 0, per_kind: int = 80) -> dict[str, list[str]]:
    """Rows that are not copies of one another but look alike, by kind, `per_kind` of each at most:

    - `same_form`: real docstring sentences that open with the same four words ("Return the number
      of ...") and go on differently;
    - `other_numbers`: real sentences holding a number, each beside itself with other numbers;
    - `other_languages`: gettext messages, one message in several languages, and requests to
      translate a real sentence into one language or another;
    - `same_topic`: requests on one real subject with another ask;
    - `package_labels`: Debian package summaries of one library ("libfoo - development files",
      "libfoo - runtime library"): one word apart, as a planted copy is, so no threshold that
      catches those copies keeps them; reported, and kept out of the 1% bound.
    """
    rng = random.Random(seed)
    docs = distinct(docstring_sentences(), 0.6)
    out: dict[str, list[str]] = {}

    groups: dict[str, list[str]] = {}
    for s in docs:
        if len(s.split()) >= 7:
            groups.setdefault(" ".join(s.split()[:4]).lower(), []).append(s)
    same_form = [g[:3] for g in groups.values() if len(g) >= 2]
    rng.shuffle(same_form)
    out["same_form"] = [s for g in same_form for s in g][:per_kind]

    numbered = [s for s in docs if re.search(r"(?<![\w.])\d{1,4}(?![\w.])", s) and len(s) < 160]
    rng.shuffle(numbered)
    other_numbers = []
    for s in numbered[: per_kind // 2]:
        other_numbers.append(s)
        other_numbers.append(re.sub(r"(?<![\w.])\d{1,4}(?![\w.])", lambda m: str(int(m[0]) + rng.randint(2, 9)), s))
    out["other_numbers"] = other_numbers[:per_kind]

    messages = translations()
    rng.shuffle(messages)
    languages = [v for item in messages[: per_kind // 6] for v in item[:4]]
    targets = ["French", "German", "Spanish", "Italian"]
    used = set(out["same_form"]) | set(out["other_numbers"])  # each sentence in one kind only
    short = [s for s in docs if len(s) < 90 and s not in used]
    rng.shuffle(short)
    requests = [f"Translate into {lang}: {s}" for s in short[: per_kind // 8] for lang in targets]
    out["other_languages"] = (languages + requests)[:per_kind]

    subjects = [s.rstrip(".") for s in short[per_kind // 8 : per_kind // 8 + per_kind // 4]]
    asks = [
        "Explain in plain words what this means: {}",
        "Write a unit test for code that does this: {}",
        "Give an example where this matters: {}",
    ]
    out["same_topic"] = [ask.format(s) for s in subjects for ask in asks][:per_kind]

    summaries: dict[str, list[str]] = {}
    for s in dpkg_summaries():
        if ":" in s or " - " in s:
            summaries.setdefault(re.split(r":| - ", s)[0].strip().lower(), []).append(s)
    out["package_labels"] = [s for g in summaries.values() if len(g) >= 2 for s in g[:3]][:per_kind]
    return out
