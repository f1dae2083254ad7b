"""`synth calibrate`: a judge against human labels, on label sets whose figures are known."""

import json
import re
from collections import Counter

import krippendorff
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synth import recipes
from synth.agreement import agreement, jury_agreement, summary
from synth.backends import Completion
from synth.calibrate import calibrate
from synth.core import SynthError
from synth.io import read_provenance
from tests.conftest import ScriptedBackend
from tests.test_cli import synth

SCALE = ["very poor", "poor", "average", "good", "excellent"]


def test_perfect_agreement_is_one_everywhere() -> None:
    codes = [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    f = agreement(codes, codes, None, "ordinal", 5, resamples=20)
    for m in ("accuracy", "cohen_kappa", "quadratic_kappa", "spearman"):
        assert f[m]["value"] == pytest.approx(1.0), m
    assert f["accuracy"]["ci95"] == [1.0, 1.0]
    assert f["confusion"] == [[2 if i == j else 0 for j in range(5)] for i in range(5)]
    assert all(p["precision"] == p["recall"] == 1.0 and p["support"] == 2 for p in f["per_label"])


def test_chance_agreement_has_zero_kappa() -> None:
    # observed agreement 1/2, expected by chance (1/2 * 1/2) * 2 = 1/2: kappa (0.5 - 0.5) / (1 - 0.5) = 0
    f = agreement([0, 0, 1, 1], [0, 1, 0, 1], None, "label", 2, resamples=0)
    assert f["accuracy"]["value"] == 0.5 and f["cohen_kappa"]["value"] == pytest.approx(0.0)
    assert "quadratic_kappa" not in f and f["confusion"] == [[1, 1], [1, 1]]
    assert [p["precision"] for p in f["per_label"]] == [0.5, 0.5]


def test_a_systematic_off_by_one_judge_is_never_right_yet_ranks_perfectly() -> None:
    human, judge = [0, 1, 2, 3], [1, 2, 3, 4]  # the judge always says one grade higher
    f = agreement(human, judge, None, "ordinal", 5, resamples=0)
    assert f["accuracy"]["value"] == 0.0
    # p_o = 0; p_e = 3 shared labels x (1/4 x 1/4) = 3/16: kappa = -(3/16) / (13/16) = -3/13
    assert f["cohen_kappa"]["value"] == pytest.approx(-3 / 13)
    # quadratic weights (i-j)^2/16: observed mean 1/16; expected sum over i in 0..3, j in 1..4 of
    # (i-j)^2 / (16 x 16) = 56/256; kappa = 1 - 16/56 = 5/7
    assert f["quadratic_kappa"]["value"] == pytest.approx(5 / 7)
    assert f["spearman"]["value"] == pytest.approx(1.0)
    assert f["confusion"][0] == [0, 1, 0, 0, 0] and f["confusion"][4] == [0] * 5


def test_bootstrap_interval_is_seeded_and_holds_the_value() -> None:
    rng = np.random.default_rng(3)
    human = rng.integers(0, 5, 60)
    judge = np.clip(human + rng.integers(-1, 2, 60), 0, 4)
    a = agreement(human, judge, None, "ordinal", 5, resamples=100, seed=1)
    b = agreement(human, judge, None, "ordinal", 5, resamples=100, seed=1)
    assert a == b
    for m in ("accuracy", "cohen_kappa", "quadratic_kappa", "spearman"):
        low, high = a[m]["ci95"]
        assert low <= a[m]["value"] <= high and low < high, m


def test_jury_agreement_matches_krippendorffs_alpha_by_hand() -> None:
    # two raters, four items: coincidences o00 = o01 = o10 = o11 = 2, n = 8; D_o = 4/8,
    # D_e = 2 x 4 x 4 / (8 x 7) = 4/7; alpha = 1 - (1/2) / (4/7) = 1/8
    assert jury_agreement([[0, 0, 1, 1], [0, 1, 0, 1]], "label", 2)["krippendorff_alpha"] == pytest.approx(0.125)
    assert jury_agreement([[0, 1, 2, 2], [0, 1, 2, 2]], "ordinal", 3)["krippendorff_alpha"] == pytest.approx(1.0)


def _quality(label: str) -> str:
    return json.dumps({"explanation": "x", "input_quality": label})


# Ten rows the judge scores, with what people said; two it fails on; one label whose id is not judged.
HUMAN = ["good", "good", "poor", "excellent", "average", "very poor", "good", "poor", "average", "excellent"]
JUDGE = ["good", "excellent", "poor", "excellent", "good", "poor", "good", "average", "average", "good"]


def _judged(tmp_path, replies=None, jurors=None):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"id": f"r{i}", "instruction": f"Question {i}?"}) for i in range(13)))
    if replies is None:  # rows 10 and 11 fail twice (a retry each); row 12 has no human label
        cut = Completion('{"explanation": "trunc', "length")
        replies = [*map(_quality, JUDGE), "prose", cut, _quality("good"), "prose again", cut]
    backends = jurors or [ScriptedBackend(replies=replies)]
    out = tmp_path / "judged"
    recipes.judge(backends, src, out=out, rubrics=["quality"], batch_size=16)
    return out


def _labels(tmp_path, rows):
    path = tmp_path / "labels.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_a_scripted_judge_with_a_known_confusion_matrix_reproduces_it(tmp_path) -> None:
    judged = _judged(tmp_path)
    rows = [{"id": f"r{i}", "input_quality": h} for i, h in enumerate(HUMAN)]
    rows += [{"id": "r10", "input_quality": "good"}, {"id": "r11", "input_quality": "poor"}]
    rows += [{"id": "ghost", "input_quality": "good"}]
    result = calibrate(judged, _labels(tmp_path, rows), out=tmp_path / "report", resamples=20)

    assert result["rows"] == {"labels": 13, "joined": 12, "not_joined": 1, "not_joined_ids": ["ghost"]}
    f = result["fields"]["input_quality"]
    assert f["kind"] == "ordinal" and f["labels"] == SCALE
    mine = f["judges"]["input_quality"]
    expected = Counter(zip(HUMAN, JUDGE))
    assert mine["confusion"] == [[expected[(h, j)] for j in SCALE] for h in SCALE]
    assert mine["compared"] == 10 and mine["unscored"] == {"parse_error": 1, "truncated": 1}
    assert mine["accuracy"]["value"] == pytest.approx(sum(h == j for h, j in zip(HUMAN, JUDGE)) / 10)
    good = SCALE.index("good")  # judge said good 4 times, 2 of them right; people said good 3 times
    assert mine["per_label"][good] == {"precision": 0.5, "recall": pytest.approx(2 / 3), "support": 3}

    written = json.loads((tmp_path / "report/report.json").read_text())
    assert written["fields"]["input_quality"]["judges"]["input_quality"]["confusion"] == mine["confusion"]
    page = (tmp_path / "report/report.md").read_text()
    assert "| good | 0 | 0 | 0 | 2 | 1 |" in page and "![input_quality" in page
    png = tmp_path / "report/confusion_input_quality.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_jury_gets_its_agreement_in_the_card_and_each_juror_its_own_figures(tmp_path) -> None:
    one = ["good", "poor", "excellent", "average", "good", "good", "poor", "very poor", "good", "average"]
    two = ["good", "average", "excellent", "average", "poor", "good", "poor", "poor", "good", "good"]
    tail = [_quality("good")] * 3
    jurors = [
        ScriptedBackend(replies=[*map(_quality, one), *tail]),
        ScriptedBackend(replies=[*map(_quality, two), *tail]),
    ]
    judged = _judged(tmp_path, jurors=jurors)

    table = pq.read_table(judged / "data")
    assert table["input_quality_jurors"].to_pylist()[:10] == [list(p) for p in zip(one, two)]
    expected = krippendorff.alpha(
        [[SCALE.index(v) for v in one + ["good"] * 3], [SCALE.index(v) for v in two + ["good"] * 3]],
        level_of_measurement="ordinal",
        value_domain=list(range(5)),
    )
    alpha = read_provenance(judged)["jury_agreement"]["input_quality"]["krippendorff_alpha"]
    assert alpha == pytest.approx(expected) and 0 < alpha < 1

    labels = _labels(tmp_path, [{"id": f"r{i}", "input_quality": h} for i, h in enumerate(HUMAN)])
    result = calibrate(judged, labels, out=tmp_path / "report", resamples=0)
    f = result["fields"]["input_quality"]
    assert set(f["judges"]) == {"input_quality", "input_quality_jurors[0]", "input_quality_jurors[1]"}
    first = f["judges"]["input_quality_jurors[0]"]["accuracy"]["value"]
    assert first == pytest.approx(sum(h == j for h, j in zip(HUMAN, one)) / 10)
    assert f["jury"]["krippendorff_alpha"] == pytest.approx(
        krippendorff.alpha(
            [[SCALE.index(v) for v in one], [SCALE.index(v) for v in two]],
            level_of_measurement="ordinal",
            value_domain=list(range(5)),
        )
    )


# MT-Bench's human-judgment layout (lmsys/mt_bench_human_judgments, splits `human` and `gpt4_pair`).
CONVERSATION = pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))
MT_SCHEMA = pa.schema(
    [
        ("question_id", pa.int64()),
        ("model_a", pa.string()),
        ("model_b", pa.string()),
        ("winner", pa.string()),
        ("judge", pa.string()),
        ("conversation_a", CONVERSATION),
        ("conversation_b", CONVERSATION),
        ("turn", pa.int64()),
    ]
)


def _mt_bench(path, votes) -> None:
    talk = [{"content": "Q", "role": "user"}, {"content": "A", "role": "assistant"}]
    rows = [
        {
            "question_id": q,
            "model_a": a,
            "model_b": b,
            "winner": w,
            "judge": j,
            "conversation_a": talk,
            "conversation_b": talk,
            "turn": t,
        }
        for q, t, a, b, w, j in votes
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=MT_SCHEMA), path)


def test_mt_bench_votes_are_paired_as_the_paper_pairs_them(tmp_path) -> None:
    _mt_bench(
        tmp_path / "gpt4_pair.parquet",
        [
            (81, 1, "gpt-4", "vicuna-13b", "model_a", "gpt4_pair"),
            (81, 1, "alpaca-13b", "gpt-4", "model_b", "gpt4_pair"),
            (82, 1, "vicuna-13b", "alpaca-13b", "tie", "gpt4_pair"),
            (82, 1, "gpt-4", "alpaca-13b", "tie (inconsistent)", "gpt4_pair"),
            (81, 2, "gpt-4", "vicuna-13b", "model_b", "gpt4_pair"),
        ],
    )
    _mt_bench(
        tmp_path / "human.parquet",
        [
            (81, 1, "vicuna-13b", "gpt-4", "model_b", "expert_0"),  # gpt-4, shown second: agrees
            (81, 1, "gpt-4", "vicuna-13b", "model_b", "expert_1"),  # vicuna: disagrees
            (81, 1, "alpaca-13b", "gpt-4", "model_b", "expert_0"),  # gpt-4: agrees
            (81, 1, "alpaca-13b", "gpt-4", "model_a", "author_0"),  # the authors' votes are left out
            (82, 1, "vicuna-13b", "alpaca-13b", "tie (bothbad)", "expert_2"),  # tie = tie: agrees, with ties
            (82, 1, "gpt-4", "alpaca-13b", "model_a", "expert_3"),  # gpt-4 vs the judge's tie: disagrees
            (81, 2, "gpt-4", "vicuna-13b", "model_b", "expert_0"),  # turn 2: agrees
            (83, 1, "gpt-4", "vicuna-13b", "model_a", "expert_0"),  # no judge vote
        ],
    )
    out = tmp_path / "report"
    calibrate(tmp_path / "gpt4_pair.parquet", tmp_path / "human.parquet", out=out, resamples=20)
    result = json.loads((out / "report.json").read_text())
    assert result["rows"] == {"labels": 8, "authors_left_out": 1, "joined": 6, "not_joined": 1, "judge_duplicates": 0}
    turn1 = result["fields"]["winner (turn 1)"]["judges"]["winner"]
    assert turn1["compared"] == 5 and turn1["accuracy"]["value"] == pytest.approx(3 / 5)  # with ties
    assert turn1["compared_without_ties"] == 3 and turn1["accuracy_without_ties"]["value"] == pytest.approx(2 / 3)
    assert result["fields"]["winner (turn 2)"]["judges"]["winner"]["accuracy"]["value"] == 1.0
    assert result["fields"]["winner (all turns)"]["judges"]["winner"]["compared"] == 6
    assert "winner (turn 1) [winner]: 5 compared" in summary(result)


def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path) -> None:
    judged = _judged(tmp_path)
    out = tmp_path / "report"
    cases = [
        ([{"id": "nope", "input_quality": "good"}], [], "none of the 1 label ids"),
        ([{"id": "r0", "input_quality": "good"}], ["--field", "response_score"], "no field 'response_score'"),
    ]
    for rows, extra, message in cases:
        labels = _labels(tmp_path, rows)
        done = synth("calibrate", str(judged), "--labels", str(labels), "--out", str(out), *extra)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr and not out.exists()


@pytest.mark.parametrize(
    ("rows", "fields", "message"),
    [
        ([{"id": "r0", "input_quality": "good"}], ["input_quality_explanation"], "is free text"),
        ([{"id": "r0", "input_quality": "great"}], [], "label 'great' of input_quality is not one of its labels"),
        ([{"id": "r0", "quality": "good"}], [], "the labels have none of the judge's fields (input_quality)"),
        ([{"id": "r0", "input_quality": "good"}], ["input_quality=nope"], "the judged data has no column 'nope'"),
        ([{"input_quality": "good", "row": 1}], [], "none of the 1 label ids"),  # read() numbers id-less rows
    ],
)
def test_other_bad_labels_and_fields_are_clear_errors(tmp_path, rows, fields, message) -> None:
    judged = _judged(tmp_path)
    with pytest.raises(SynthError, match=re.escape(message)):
        calibrate(judged, _labels(tmp_path, rows), out=tmp_path / "report", fields=fields, resamples=0)
    assert not (tmp_path / "report").exists()


@pytest.mark.timeout(600)
def test_the_embedded_model_judges_a_few_rows_and_calibrate_reports_on_them(tmp_path) -> None:
    questions = [
        "What is 7 times 8?",
        "Write a haiku about rain.",
        "Fix this Python: print('hi'",
        "Plan a three-day trip to Rome.",
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"id": f"q{i}", "instruction": q}) for i, q in enumerate(questions)))
    out = tmp_path / "judged"
    # The grammar holds the answer to the schema; two enums fit in 64 tokens, so rows parse.
    done = synth("judge", str(src), "--out", str(out), "--rubric", "category", "--max-tokens", "64")
    assert done.returncode == 0, done.stderr
    people = ["Math", "Creative writing", "Coding & Debugging", "Planning"]
    labels = _labels(tmp_path, [{"id": f"q{i}", "task_category": c} for i, c in enumerate(people)])
    report = tmp_path / "report"
    done = synth("calibrate", str(out), "--labels", str(labels), "--out", str(report), "--resamples", "100")
    assert done.returncode == 0, done.stderr
    result = json.loads((report / "report.json").read_text())
    assert result["rows"]["joined"] == 4
    f = result["fields"]["task_category"]["judges"]["task_category"]
    assert f["compared"] + sum(f["unscored"].values()) == 4
    judged = pq.read_table(out / "data").to_pylist()
    scored = [r for r in judged if r["category_status"] == "ok"]
    assert scored and f["compared"] == len(scored), [r["category_raw"] for r in judged]
    assert sum(map(sum, f["confusion"])) == len(scored)  # what the model said is what the matrix counts
    right = sum(r["task_category"] == people[int(r["id"][1:])] for r in scored)
    assert f["accuracy"]["value"] == pytest.approx(right / len(scored))
    assert "## task_category" in (report / "report.md").read_text()
