"""MinHash dedup's numbers-and-names check, and its parts, on rows whose right answer is known."""

from __future__ import annotations

import pyarrow as pa

from synth.core import from_rows
from synth.stages import dedup_minhash

LONG = (
    "Translate the following paragraph about the history of the old harbour, its lighthouse keepers and "
    "the fishing families who lived beside it for 300 years into French, keeping the tone."
)


def kept(stage, texts: list[str], size: int = 64) -> list[int]:
    rows = [{"id": str(i), "instruction": t} for i, t in enumerate(texts)]
    out = list(stage(from_rows(rows[start : start + size]) for start in range(0, len(rows), size)))
    return sorted(int(i) for b in out for i in b["id"].to_pylist())


def test_a_long_text_with_a_language_or_number_swapped_is_kept_and_its_copies_dropped() -> None:
    texts = [
        LONG,  # 0
        LONG.replace("French", "German"),  # 1: another request
        LONG.replace("300", "250"),  # 2: another number
        LONG.replace("French", "German").replace("tone", "tone!"),  # 3: a copy of 1
        LONG.replace("French", "french"),  # 4: the name lower-cased: a copy of 0
        LONG.replace("French", "FRENCH"),  # 5: capitals are case noise, no name: a copy of 0
        LONG.replace(" 300 years", " centuries"),  # 6: the number dropped, nothing else of its own: a copy of 0
        "Summarise " + LONG[len("Translate ") :].replace("French", "Italian"),  # 7: another name, another ask
    ]
    stage = dedup_minhash()
    assert kept(stage, texts) == [0, 1, 2, 7]
    assert stage.notes["check_terms"] is True
    # The same rows one by one in batches of one, and all in one batch: the same decisions.
    assert kept(dedup_minhash(), texts, size=1) == [0, 1, 2, 7]
    # Without the check, every row but the first is a copy: they share nearly every word.
    assert kept(dedup_minhash(check_terms=False), texts) == [0]


def test_other_numbers_in_a_document_keep_it_and_the_rejects_say_which_row_a_copy_copies() -> None:
    report = [f"In {year} the harbour handled {year - 1800} ships, " for year in (1901, 1902)]
    body = "and the keepers logged every storm, every wreck and every rescue along the northern coast. " * 12
    texts = [report[0] + body, report[1] + body, report[0] + body.replace("storm", "gale", 1)]
    rejects: list = []
    stage = dedup_minhash(rejects=rejects.append)
    assert kept(stage, texts) == [0, 1]
    dropped = pa.concat_tables(rejects)
    assert dropped["id"].to_pylist() == ["2"] and dropped["dup_cluster"].to_pylist() == ["0"]
    assert dropped["dup_similarity"][0].as_py() >= 0.7
