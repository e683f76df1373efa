"""Tests for disamb.evaluate: metrics against hand computations, and `disamb eval` end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from disamb.cli import app
from disamb.textsim import normalize
from disamb.classifier_eval import ModelEvalError, classification_metrics, evaluate_classifier
from disamb.evaluate import NoGoldError, evaluate_labels, read_gold, read_labels
from disamb.metrics import (
    ece_if_calibrated,
    expected_calibration_error,
    reliability_table,
    risk_coverage,
    transcript_error_rates,
    wilson_interval,
)
from disamb.report import write_report

runner = CliRunner()


# ---------------------------------------------------------------- pure metrics


def wilson_direct(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The textbook form: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    p = k / n
    root = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return ((p + z * z / (2 * n) - root) / (1 + z * z / n), (p + z * z / (2 * n) + root) / (1 + z * z / n))


@pytest.mark.parametrize("k,n", [(16, 30), (45, 50), (1, 7)])
def test_wilson_matches_direct_formula(k, n):
    assert wilson_interval(k, n) == pytest.approx(wilson_direct(k, n), abs=1e-12)


def test_wilson_known_values_at_the_edges():
    # k = 0: lower is 0 and upper is z²/(n+z²); k = n mirrors it.
    z2 = 1.96**2
    assert wilson_interval(0, 10) == pytest.approx((0.0, z2 / (10 + z2)))
    assert wilson_interval(10, 10) == pytest.approx((10 / (10 + z2), 1.0))
    # published value for 5/10 with the exact 97.5% normal quantile: (0.2366, 0.7634)
    assert wilson_interval(5, 10, z=1.959963985) == pytest.approx((0.2365931, 0.7634069), abs=1e-6)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)
    with pytest.raises(ValueError):
        wilson_interval(4, 3)


@given(st.integers(1, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_contains_the_proportion(kn):
    k, n = kn
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_ece_hand_example():
    # bin 0.9-1.0: two notes at 0.95, one right -> gap 0.45 (weight 2)
    # bin 0.1-0.2: one note at 0.15, wrong -> gap 0.15; bin 0.6-0.7: one at 0.65, right -> gap 0.35
    conf = [0.95, 0.95, 0.15, 0.65]
    correct = [True, False, False, True]
    assert expected_calibration_error(conf, correct, 10) == pytest.approx((2 * 0.45 + 0.15 + 0.35) / 4)
    # one bin: |mean confidence - accuracy| = |0.675 - 0.5|
    assert expected_calibration_error(conf, correct, 1) == pytest.approx(0.175)
    # perfectly calibrated: confidence 1 and right, 0 and wrong
    assert expected_calibration_error([1.0, 0.0], [True, False], 10) == pytest.approx(0.0)


def test_ece_if_calibrated_matches_the_binomial_by_hand():
    # ten notes at confidence 0.9, all in one bin: ECE = |k/10 - 0.9| with k ~ Binomial(10, 0.9)
    by_hand = sum(math.comb(10, k) * 0.9**k * 0.1 ** (10 - k) * abs(k / 10 - 0.9) for k in range(11))
    assert ece_if_calibrated([0.9] * 10, draws=20000)["mean"] == pytest.approx(by_hand, abs=0.003)
    # certain notes leave nothing to chance; many notes shrink the reference
    assert ece_if_calibrated([1.0, 0.0, 1.0])["mean"] == 0.0
    assert ece_if_calibrated([0.9] * 1000)["mean"] < ece_if_calibrated([0.9] * 10)["mean"] / 5


def test_reliability_bins():
    rows = reliability_table([0.95, 0.95, 0.15, 0.65, 1.0, 0.1], [True, False, False, True, True, False], 10)
    assert len(rows) == 10
    assert [r["count"] for r in rows] == [0, 2, 0, 0, 0, 0, 1, 0, 0, 3]
    assert rows[1]["lo"] == pytest.approx(0.1) and rows[1]["hi"] == pytest.approx(0.2)
    assert rows[1]["accuracy"] == 0.0 and rows[1]["confidence"] == pytest.approx(0.125)
    assert rows[9]["accuracy"] == pytest.approx(2 / 3)  # 1.0 lands in the last bin
    assert rows[9]["confidence"] == pytest.approx((0.95 + 0.95 + 1.0) / 3)
    assert rows[0]["accuracy"] is None
    with pytest.raises(ValueError):
        reliability_table([1.2], [True])


def test_risk_coverage_points_and_ties():
    pts = risk_coverage([0.3, 0.8, 0.9, 0.8], [False, False, True, True], total=5)
    assert [(p["threshold"], p["k"]) for p in pts] == [(0.9, 1), (0.8, 3), (0.3, 4)]
    assert [p["coverage"] for p in pts] == pytest.approx([0.2, 0.6, 0.8])
    assert [p["accuracy"] for p in pts] == pytest.approx([1.0, 2 / 3, 0.5])
    with pytest.raises(ValueError):
        risk_coverage([0.5, 0.4], [True, False], total=1)


def test_transcript_error_rates_normalise_both_sides():
    r = transcript_error_rates(["See you at 5!", "the cat sat"], ["see you at five", "the cat sad"])
    assert r["n"] == 2
    assert r["wer"] == pytest.approx(1 / 7)  # one substituted word out of 4 + 3
    assert r["cer"] > 0
    assert transcript_error_rates(["😀"], ["x"])["n"] == 0


# ---------------------------------------------------------------- records


def cands(note: str, texts: list[str]) -> list[dict]:
    return [{"id": f"{note}m{j}", "text": t, "prob": 0.1} for j, t in enumerate(texts)]


def record(nid: str, texts: list[str], label: int | None, conf: float, accepted: bool,
           gold: int | None = None, transcript: str = "", **extra) -> dict:
    cs = cands(nid, texts)
    r = {
        "id": nid, "file": f"{nid}.ogg", "transcript": transcript, "candidates": cs,
        "label_id": cs[label]["id"] if label is not None else None,
        "label": cs[label]["text"] if label is not None else None,
        "confidence": conf, "accepted": accepted,
        "gold_label_id": cs[gold]["id"] if gold is not None else None,
    }
    r.update(extra)
    return r


TEXTS = ["see you at five", "call me later", "<script>alert('x')</script>"]


def sample_records() -> list[dict]:
    """Six gold notes with known answers, one not in window, one error, one without gold."""
    return [
        record("a", TEXTS, 0, 0.95, True, gold=0, transcript="see you at five"),
        record("b", TEXTS, 1, 0.92, True, gold=1, transcript="call me later"),
        record("c", TEXTS, 2, 0.90, True, gold=0, transcript="see you at 5"),  # confident mistake
        record("d", TEXTS, 1, 0.60, False, gold=1, transcript="call me"),
        record("e", TEXTS, None, 0.0, False, gold=0, transcript=None, error="undecodable audio"),
        record("f", TEXTS, 0, 0.85, False, gold=None, transcript="something else",
               gold_in_window=False, gold_text="something else"),
        record("g", TEXTS, 0, 0.99, True, gold=None, transcript="see you at five"),
    ]


def test_evaluate_labels_known_answers():
    res = evaluate_labels(sample_records())
    g = res["gold"]
    assert (g["notes"], g["in_window"], g["not_in_window"], g["errors"]) == (6, 5, 1, 1)
    assert (g["not_in_window_labelled"], g["not_in_window_accepted"]) == (1, 0)
    acc = res["accuracy"]
    assert (acc["correct"], acc["n"]) == (3, 5)  # a, b, d right; c wrong; error e counts as wrong
    assert acc["ci95"] == pytest.approx(list(wilson_direct(3, 5)))
    # threshold inferred from the accepted notes: lowest accepted confidence is 0.90
    assert res["threshold"]["value"] == pytest.approx(0.90)
    chosen = [p for p in res["operating_points"] if p["chosen"]]
    assert len(chosen) == 1
    assert (chosen[0]["accepted"], chosen[0]["correct"]) == (3, 2)  # a, b right; c wrong
    assert chosen[0]["coverage"] == pytest.approx(3 / 6)
    p05 = next(p for p in res["operating_points"] if p["threshold"] == 0.5)
    assert (p05["accepted"], p05["correct"]) == (5, 3)  # a b c d f; f's truth is not in the window
    # calibration over labelled gold a b c d f: conf .95 .92 .90 .60 .85, right 1 1 0 1 0
    by_hand = (3 * abs(2 / 3 - (0.95 + 0.92 + 0.90) / 3) + abs(1 - 0.60) + abs(0 - 0.85)) / 5
    assert res["calibration"]["ece"] == pytest.approx(by_hand)
    assert [p["k"] for p in res["risk_coverage"]] == [1, 2, 3, 4, 5]
    assert res["risk_coverage"][-1]["coverage"] == pytest.approx(5 / 6)
    assert [w["id"] for w in res["worst"]] == ["c", "f"]
    assert res["worst"][0]["true"] == "see you at five" and res["worst"][0]["chosen"] == TEXTS[2]
    # a b c d have a transcript and a typed reference, f the gold text; e has an error
    assert res["transcripts"]["n"] == 5 and res["transcripts"]["references"] == {"spoken": 0, "typed": 5}
    json.dumps(res)  # JSON-ready


def test_explicit_threshold_and_bins():
    res = evaluate_labels(sample_records(), threshold=0.93, bins=2)
    chosen = next(p for p in res["operating_points"] if p["chosen"])
    assert (chosen["threshold"], chosen["accepted"], chosen["correct"]) == (0.93, 1, 1)
    assert len(res["calibration"]["table"]) == 2


def test_no_gold_raises():
    recs = [record("x", TEXTS, 0, 0.9, True)]
    with pytest.raises(NoGoldError, match="label_id"):
        evaluate_labels(recs)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_older_run_with_truth_file(tmp_path):
    # an older labels.jsonl: candidates as plain strings, no accepted/gold fields
    recs = [{"id": "o1", "candidates": ["a b", "c d"], "label_id": "o1#1", "confidence": 0.8},
            {"id": "o2", "candidates": ["e f", "g h"], "label_id": "o2#0", "confidence": 0.4},
            {"id": "o3", "candidates": ["i j", "k l"], "label_id": "o3#0", "confidence": 0.7}]
    truth = write_jsonl(tmp_path / "truth.jsonl", [
        {"id": "o1", "label_id": "o1#1", "text": "c d"},
        {"id": "o2", "label": "G H!"},  # text, matched to a candidate after normalisation
        {"id": "o3", "label_id": None, "text": "never typed"},
        {"id": "zz", "label_id": "q"},
    ])
    gold = read_gold(truth)
    res = evaluate_labels(recs, gold)
    assert res["threshold"]["value"] is None and "--threshold" in res["threshold"]["source"]
    assert res["gold"]["from_gold_file"] == 3 and res["gold"]["unmatched_ids"] == ["zz"]
    assert (res["accuracy"]["correct"], res["accuracy"]["n"]) == (1, 2)
    assert res["gold"]["not_in_window_labelled"] == 1
    assert res["transcripts"] is None  # no transcripts in this old run
    o3 = next(w for w in res["worst"] if w["id"] == "o3")
    assert o3["true"] == "never typed" and o3["true_in_window"] is False


def test_gold_file_overrides_labels_and_reads_chats_and_manifests(tmp_path):
    recs = sample_records()
    chats = write_jsonl(tmp_path / "chats.jsonl", [
        {"id": "c", "type": "voice", "file": "c.ogg", "label_id": "cm2"},  # now c is right
        {"id": "cm2", "type": "text", "text": "hello"},
        {"id": "g", "type": "voice", "file": "g.ogg", "label": "see you at FIVE"},
        {"id": "a", "type": "voice", "file": "a.ogg"},
    ])
    res = evaluate_labels(recs, read_gold(chats))
    assert res["gold"]["from_gold_file"] == 2 and res["gold"]["notes"] == 7
    assert (res["accuracy"]["correct"], res["accuracy"]["n"]) == (5, 6)
    manifest = write_jsonl(tmp_path / "manifest.jsonl", [
        {"id": "o1", "audio": "o1.wav", "candidates": ["a", "b"], "label_index": 1},
    ])
    old = [{"id": "o1", "candidates": [{"text": "a"}, {"text": "b"}], "label_id": "o1#1", "confidence": 0.9,
            "accepted": True}]
    res = evaluate_labels(old, read_gold(manifest))
    assert res["accuracy"]["value"] == 1.0


def test_gold_text_resolves_as_label_does(tmp_path):
    # The same loose form as chats.py: "1 1 5 8." is the message "1 1 5 8", not the earlier "1158"
    # that the matcher's canonical form would also equal.
    from disamb.chats import Candidate, _match_label

    texts = ["1158", "1 1 5 8", "code 1158"]
    recs = [record("n", texts, 1, 0.9, True)]
    truth = write_jsonl(tmp_path / "truth.jsonl", [{"id": "n", "label": "1 1 5 8."}])
    res = evaluate_labels(recs, read_gold(truth))
    assert (res["accuracy"]["correct"], res["accuracy"]["n"]) == (1, 1)
    assert _match_label("1 1 5 8.", [Candidate(f"nm{j}", t) for j, t in enumerate(texts)]) == "nm1"


def test_review_answers_file_reads_as_label_and_review_read_it(tmp_path):
    # gold.jsonl from `disamb review`: the last answer for a note is the reviewer's correction, as in
    # answers.read_answers; a repeated id in any other gold file is still reported
    from disamb.answers import append_answer, read_answers

    gold = tmp_path / "gold.jsonl"
    for note_id, label_id in (("n", "nm0"), ("p", "pm0"), ("n", "nm1"), ("p", None)):
        append_answer(gold, note_id, label_id)
    read = read_gold(gold)
    assert read.problems == []
    assert {k: (e.label_id, e.not_in_window) for k, e in read.entries.items()} == {
        k: (a.label_id, a.label_id is None) for k, a in read_answers(gold).items()}
    assert read.entries["n"].label_id == "nm1" and read.entries["p"].not_in_window
    truth = write_jsonl(tmp_path / "truth.jsonl", [{"id": "n", "label_id": "a"}, {"id": "n", "label_id": "b"}])
    again = read_gold(truth)
    assert again.entries["n"].label_id == "a" and "duplicate gold id" in again.problems[0]


# ---------------------------------------------------------------- the CLI


def test_cli_tables_json_and_report(tmp_path):
    labels = write_jsonl(tmp_path / "labels.jsonl", sample_records())
    r = runner.invoke(app, ["eval", str(labels)])
    assert r.exit_code == 0, r.output
    for title in ("Summary", "Precision and coverage", "Reliability", "Risk", "Most confident mistakes"):
        assert title in r.stdout
    assert "60.0% (3/5)" in r.stdout

    r = runner.invoke(app, ["eval", str(labels), "--json", "--report", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["accuracy"]["correct"] == 3 and data["gold"]["errors"] == 1
    for name in ("risk_coverage.png", "reliability.png", "confidence_hist.png"):
        png = (tmp_path / "rep" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    page = (tmp_path / "rep" / "index.html").read_text(encoding="utf-8")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert 'src="risk_coverage.png"' in page and "Reliability" in page


def test_cli_no_gold_exit_2(tmp_path):
    labels = write_jsonl(tmp_path / "labels.jsonl", [record("x", TEXTS, 0, 0.9, True)])
    r = runner.invoke(app, ["eval", str(labels)])
    assert r.exit_code == 2
    assert "no gold" in r.stderr and "label_id" in r.stderr and "--gold" in r.stderr


def test_cli_unknown_gold_ids_listed_and_bad_lines_counted(tmp_path):
    rows = [json.dumps(r) for r in sample_records()] + ["{not json", '{"no": "id"}']
    labels = write_jsonl(tmp_path / "labels.jsonl", rows)
    truth = write_jsonl(tmp_path / "truth.jsonl", [
        {"id": "a", "label_id": "am0"}, {"id": "ghost1", "label_id": "m"}, {"id": "ghost2", "label": "x"},
    ])
    r = runner.invoke(app, ["eval", str(labels), "--gold", str(truth), "--json"])
    assert r.exit_code == 1
    data = json.loads(r.stdout)
    assert data["gold"]["unmatched_ids"] == ["ghost1", "ghost2"]
    assert "ghost1, ghost2" in r.stderr
    assert "labels.jsonl:8: not JSON" in r.stderr and "labels.jsonl:9" in r.stderr
    assert data["gold"]["errors"] == 1


def test_cli_unreadable_inputs_exit_2(tmp_path):
    r = runner.invoke(app, ["eval", str(tmp_path / "missing.jsonl")])
    assert r.exit_code == 2 and "no such file" in r.stderr
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    r = runner.invoke(app, ["eval", str(tmp_path / "bin.jsonl")])
    assert r.exit_code == 2 and "not UTF-8" in r.stderr
    labels = write_jsonl(tmp_path / "labels.jsonl", sample_records())
    truth = write_jsonl(tmp_path / "truth.jsonl", [{"id": "nobody", "label_id": "m"}])
    r = runner.invoke(app, ["eval", str(labels), "--gold", str(truth)])
    assert r.exit_code == 1 and "nobody" in r.stderr  # listed; labels.jsonl still has its own gold
    assert "Summary" in r.stdout
    r = runner.invoke(app, ["eval", str(write_jsonl(tmp_path / "l2.jsonl", [record("x", TEXTS, 0, 0.9, True)])),
                            "--gold", str(truth)])
    assert r.exit_code == 2 and "none of the 1 gold ids" in r.stderr


# ---------------------------------------------------------------- a trained classifier


def test_classification_metrics_hand_example():
    proba = [[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.8, 0.1], [0.6, 0.1, 0.3]]
    m = classification_metrics([0, 0, 1, 2], proba, ["a", "b", "c"], top_k=2)
    assert (m["correct"], m["n"], m["accuracy"]) == (2, 4, 0.5)
    assert m["top_k_accuracy"] == 0.75  # row 1 has its truth third
    assert m["confusion"] == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    per = {r["class"]: r for r in m["per_class"]}
    assert (per["a"]["precision"], per["a"]["recall"]) == (0.5, 0.5)
    assert (per["b"]["precision"], per["b"]["recall"]) == (0.5, 1.0)
    assert (per["c"]["precision"], per["c"]["recall"]) == (None, 0.0)
    assert m["ci95"] == pytest.approx(list(wilson_direct(2, 4)))


PHRASES = ["see you at five", "call me later", "bin day is tuesday"]


def classifier_setup(tmp_path, holdout=0.3):
    """30 gold notes whose fake embeddings cluster by phrase, with every phrase as a candidate."""
    import numpy as np

    pytest.importorskip("disamb.train")  # the classifier module lands separately
    from disamb.chats import Candidate, VoiceNote
    from disamb.train import TrainOptions, build_classes, build_dataset, train

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 3
    notes, records, embs = [], [], {}
    for i in range(30):
        k = i % 3
        nid = f"n{i:02d}"
        cands = [Candidate(f"{nid}c{j}", t) for j, t in enumerate(PHRASES)]
        notes.append(VoiceNote(id=nid, file=f"{nid}.wav", audio=tmp_path / f"{nid}.wav", candidates=cands,
                               gold_label_id=cands[k].id, gold_text=PHRASES[k], gold_in_window=True))
        records.append({"id": nid, "candidates": [{"id": c.id, "text": c.text} for c in cands],
                        "label_id": cands[k].id, "label": PHRASES[k], "confidence": 0.9, "accepted": True})
        embs[nid] = (centres[k] + rng.normal(size=8) * (0.3 if i != 4 else 6.0)).astype(np.float32)
    classes = build_classes(PHRASES, min_count=1)
    clf = train(build_dataset(notes, {r["id"]: r for r in records}, embs, classes),
                TrainOptions(loss="ce", holdout=holdout, epochs=60, patience=20)).classifier
    return clf, notes, records, embs


def test_evaluate_classifier_held_out_and_cv(tmp_path):
    import numpy as np

    clf, notes, records, embs = classifier_setup(tmp_path)
    held = clf.meta["holdout_ids"]
    m = evaluate_classifier(clf, notes, embs, records)
    assert sorted(m["ids"]) == sorted(held) and m["n"] == len(held) == 9
    X = np.stack([embs[i] for i in m["ids"]])
    truth = [normalize([n for n in notes if n.id == i][0].gold_text) for i in m["ids"]]  # classes are normalised
    direct = np.mean([clf.classes[j] == t for j, t in zip(clf.predict_proba(X).argmax(1), truth)])
    assert m["accuracy"] == pytest.approx(direct)
    assert m["top_k_accuracy"] == 1.0  # three classes: the truth is always in the top 3

    cv = evaluate_classifier(clf, notes, embs, records, cv=3)
    assert sorted(cv["ids"]) == sorted(n.id for n in notes)  # every gold note scored once
    assert cv["accuracy"] >= 0.9 and "3-fold" in cv["method"]
    with pytest.raises(ModelEvalError):
        evaluate_classifier(clf, notes[:2], embs, records, cv=3)


def test_evaluate_classifier_without_holdout_asks_for_cv(tmp_path):
    clf, notes, records, embs = classifier_setup(tmp_path, holdout=0.0)
    with pytest.raises(ModelEvalError, match="--cv"):
        evaluate_classifier(clf, notes, embs, records)


def test_report_with_classifier_has_confusion_plot(tmp_path):
    clf, notes, records, embs = classifier_setup(tmp_path)
    res = evaluate_labels(sample_records())
    res["classifier"] = evaluate_classifier(clf, notes, embs, records) | {"model_dir": "m<1>"}
    files = write_report(res, tmp_path / "rep")
    assert (tmp_path / "rep" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    page = (tmp_path / "rep" / "index.html").read_text(encoding="utf-8")
    assert "Per-class precision and recall" in page and "m&lt;1&gt;" in page and len(files) == 5
    json.dumps(res)
