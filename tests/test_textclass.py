"""Tests for the text-scoring classifier: disamb.textclass and disamb.combine."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from disamb.classes import build_classes
from disamb.combine import (
    FEATURES, Combiner, TextClassifier, features_with_head, fit_combiner, load_classifier, oof_folds,
    out_of_fold_logits,
)
from disamb.train import Classifier, Dataset, ModelFileError, TrainOptions, train
from disamb.textclass import expected_calibration_error, shortlist, softmax_masked

from tests.conftest import speak

# ----------------------------------------------------------------------- the combination


def _synthetic(n: int, C: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows whose true class has PMI ~ N(3, 1) and the others N(0, 1); the head is noise.

    The Bayes posterior is then softmax(3 · PMI): the known answer.
    """
    y = rng.integers(0, C, n)
    pmi = rng.normal(0.0, 1.0, (n, C))
    pmi[np.arange(n), y] += 3.0
    head = rng.normal(0.0, 1.0, (n, C))
    text = np.stack([pmi, pmi / 10.0], axis=2)
    return features_with_head(text, head), np.ones((n, C), bool), y


def _dataset(y: np.ndarray, C: int, rng: np.random.Generator, n_gold: int, n_accepted: int) -> Dataset:
    n = len(y)
    classes = build_classes([f"class {chr(97 + k)}" for k in range(C)], min_count=1)
    role = ["gold"] * n_gold + ["accepted"] * n_accepted + ["partial"] * (n - n_gold - n_accepted)
    mask = np.zeros((n, C), bool)
    mask[np.arange(n), y] = True
    for i in range(n_gold + n_accepted, n):  # candidate sets: the truth and two others
        mask[i, rng.choice(C, 2, replace=False)] = True
    target = np.where(np.array(role) == "partial", -1, y)
    init = mask / mask.sum(1, keepdims=True)
    return Dataset(ids=[f"n{i}" for i in range(n)], X=np.zeros((n, 4), np.float32), role=role, target=target,
                   confidence=np.ones(n, np.float32), mask=mask, init=init.astype(np.float32), classes=classes)


@pytest.mark.parametrize("loss", ["proden", "cc"])
def test_combination_recovers_the_known_posterior(loss):
    rng = np.random.default_rng(0)
    C = 5
    feats, ok, y = _synthetic(600, C, rng)
    data = _dataset(y, C, rng, n_gold=40, n_accepted=260)
    got = fit_combiner(feats, ok, data, TrainOptions(loss=loss, seed=0))
    comb = got.combiner
    # effective coefficient on the raw PMI (both PMI features are PMI up to a factor) and on the head
    coef = comb.weights / comb.scale / comb.temperature
    assert coef[0] + coef[1] / 10.0 == pytest.approx(3.0, abs=0.5)
    assert coef[2] < 0.25  # the noise head is all but ignored
    assert np.abs(comb.bias).max() < 0.3  # classes are balanced
    fresh, ok2, y2 = _synthetic(3000, C, rng)
    p = comb.proba(fresh, ok2)
    best = softmax_masked(3.0 * fresh[..., 0], ok2)
    assert (p.argmax(1) == y2).mean() >= (best.argmax(1) == y2).mean() - 0.01
    assert expected_calibration_error(p, y2) < 0.03


def test_temperature_is_fitted_only_with_enough_held_out_gold():
    rng = np.random.default_rng(1)
    feats, ok, y = _synthetic(300, 4, rng)
    few = fit_combiner(feats, ok, _dataset(y, 4, rng, 20, 200), TrainOptions(seed=0))
    assert few.holdout_size == 6 and few.combiner.temperature == 1.0 and "too little" in few.temperature_from
    many = fit_combiner(feats, ok, _dataset(y, 4, rng, 100, 150), TrainOptions(seed=0))
    assert many.holdout_size == 30 and many.combiner.temperature != 1.0
    assert 0.5 < many.combiner.temperature < 2.0  # the CE fit was close to calibrated already


def test_out_of_fold_folds_keep_each_sender_in_one_fold():
    senders = ["ann"] * 9 + ["bo"] * 5 + ["cy"] * 4 + ["di"] * 3 + [None] * 3
    fold, how = oof_folds(senders, 3, seed=0)
    assert how == "by sender (4 senders)"
    for s in ("ann", "bo", "cy", "di"):
        assert len({fold[i] for i, t in enumerate(senders) if t == s}) == 1
    assert sorted(np.bincount(fold, minlength=3).tolist()) == [7, 8, 9]  # largest first into the emptiest fold
    again, _ = oof_folds(senders, 3, seed=0)
    assert (again == fold).all()


@pytest.mark.parametrize("senders", [[None] * 10, ["ann"] * 6 + ["bo"] * 4])
def test_out_of_fold_folds_are_random_without_enough_senders(senders):
    fold, how = oof_folds(senders, 3, seed=0)
    assert how == "random"
    assert sorted(np.bincount(fold, minlength=3).tolist()) == [3, 3, 4]
    assert len({tuple(oof_folds(senders, 3, seed=s)[0]) for s in range(5)}) > 1  # the seed draws them


def test_out_of_fold_head_logits_are_for_senders_it_did_not_hear():
    """Each sender says one class and the features only tell senders apart (a random vector
    per sender): a head that heard the sender gets it right, one that did not has nothing to go on."""
    rng = np.random.default_rng(0)
    C, S, per = 3, 12, 6
    senders = [f"s{k}" for k in range(S) for _ in range(per)]
    y = np.array([k % C for k in range(S) for _ in range(per)])
    data = _dataset(y, C, rng, n_gold=len(y), n_accepted=0)
    voice = rng.normal(0.0, 1.0, (S, 32))
    data.X = (np.repeat(voice, per, axis=0) + rng.normal(0.0, 0.1, (len(y), 32))).astype(np.float32)
    opts = TrainOptions(loss="ce", seed=0, holdout=0.0)
    heard, how_random = out_of_fold_logits(data, opts)
    unheard, how_sender = out_of_fold_logits(data, opts, senders=senders)
    assert (how_random, how_sender) == ("random", "by sender (12 senders)")
    assert (heard.argmax(1) == y).mean() > 0.9
    assert (unheard.argmax(1) == y).mean() < 0.5


def test_classes_not_scored_get_no_probability():
    comb = Combiner(weights=np.ones(3), bias=np.zeros(3), scale=np.ones(3))
    feats = np.zeros((2, 3, 3))
    feats[:, 2, 0] = 50.0
    ok = np.array([[True, True, True], [True, True, False]])
    p = comb.proba(feats, ok)
    assert p[0].argmax() == 2 and p[1, 2] == 0.0 and p[1, :2] == pytest.approx([0.5, 0.5])
    keep = shortlist(np.array([[0.0, 3.0, 1.0, 2.0]]), 2, np.array([[True, False, False, False]]))
    assert keep.tolist() == [[True, True, False, True]]
    assert shortlist(np.zeros((1, 4)), None).all()


# ----------------------------------------------------------------------- model files


def _toy_text_classifier(rescore_top=None) -> TextClassifier:
    rng = np.random.default_rng(0)
    classes = build_classes(["On my way!", "on my way", "love you", "Love you", "love you"], min_count=1)
    n = 8
    y = np.arange(n) % 2
    X = rng.normal(size=(n, 4)).astype(np.float32) + y[:, None] * 2
    data = Dataset(ids=[str(i) for i in range(n)], X=X, role=["gold"] * n, target=y,
                   confidence=np.ones(n, np.float32), mask=np.eye(2, dtype=bool)[y],
                   init=np.eye(2, dtype=np.float32)[y], classes=classes)
    head = train(data, TrainOptions(epochs=20, holdout=0.0)).classifier
    comb = Combiner(weights=np.array([1.5, 0.2, 0.7]), bias=np.array([0.1, -0.1]), scale=np.array([2.0, 0.3, 4.0]),
                    temperature=1.3)
    return TextClassifier(head, comb, [classes.typed(c) for c in classes.classes], rescore_top,
                          {"holdout_accuracy": None})


def test_text_classifier_save_load_round_trip(tmp_path):
    clf = _toy_text_classifier(rescore_top=1)
    clf.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.safetensors"]
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["class_names"] == {"love you": "love you", "on my way": "On my way!"}
    assert meta["text_scoring"]["variants"] == {"love you": ["love you", "Love you"], "on my way": ["On my way!", "on my way"]}
    back = load_classifier(tmp_path / "m")
    assert isinstance(back, TextClassifier)
    assert back.classes == clf.classes and back.variants == clf.variants and back.rescore_top == 1
    assert back.combiner.weights == pytest.approx(clf.combiner.weights)
    assert back.combiner.temperature == pytest.approx(1.3)
    feats = np.random.default_rng(2).normal(size=(3, 2, len(FEATURES)))
    ok = np.ones((3, 2), bool)
    assert back.combiner.proba(feats, ok) == pytest.approx(clf.combiner.proba(feats, ok), abs=1e-6)
    X = np.random.default_rng(3).normal(size=(3, 4)).astype(np.float32)
    assert back.head.logits(X) == pytest.approx(clf.head.logits(X), abs=1e-6)
    # a head-only model still loads as one
    clf.head.save(tmp_path / "h")
    assert type(load_classifier(tmp_path / "h")) is Classifier


def test_broken_text_scoring_model_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    clf = _toy_text_classifier()
    clf.save(tmp_path / "m")
    shutil.copytree(tmp_path / "m", tmp_path / "v")
    meta = json.loads((tmp_path / "v" / "model.json").read_text())
    del meta["text_scoring"]["variants"]["love you"]
    (tmp_path / "v" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="variants"):
        load_classifier(tmp_path / "v")
    t = load_file(str(tmp_path / "m" / "model.safetensors"))
    t["combine.temperature"][0] = -1.0
    save_file(t, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(ModelFileError, match="temperature positive"):
        load_classifier(tmp_path / "m")


# ----------------------------------------------------------------------- real audio, no chat log


PHRASES = ("see you tomorrow morning", "the cat is on the roof", "call me after lunch")


def test_predict_recordings_without_a_chat_log(tmp_path, tiny_model):
    """espeak-ng clips of three phrases; a model whose head knows nothing and whose text
    scoring reads the words picks each phrase, through the CLI and from the cache on a rerun."""
    from typer.testing import CliRunner

    from disamb.cli import app

    rec = tmp_path / "rec"
    rec.mkdir()
    for k, text in enumerate(PHRASES):
        speak(text, rec / f"c{k}.wav", voice=("en-us", "en-gb")[k % 2], speed=150)
    classes = build_classes([p.capitalize() for p in PHRASES], min_count=1)
    head = Classifier(classes=classes.classes, head=_zero_head(len(classes.classes)),
                      mean=np.zeros(384, np.float32), std=np.ones(384, np.float32),
                      meta={"head": {"kind": "linear"}, "encoder": {"name": "tiny.en", "key": tiny_model.key},
                            "class_names": {c: classes.name(c) for c in classes.classes}})
    comb = Combiner(weights=np.array([1.0, 0.0, 0.0]), bias=np.zeros(3), scale=np.ones(3))
    TextClassifier(head, comb, [classes.typed(c) for c in classes.classes]).save(tmp_path / "model")
    cache = str(tmp_path / "cache")
    args = ["predict", str(rec), "--model", str(tmp_path / "model"), "-o", str(tmp_path / "p.jsonl"),
            "--cache-dir", cache, "-q", "--json"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    rows = {x["file"]: x for x in map(json.loads, (tmp_path / "p.jsonl").read_text().splitlines())}
    for k, text in enumerate(PHRASES):
        row = rows[f"c{k}.wav"]
        assert row["class"] == text and row["name"] == text.capitalize()
        assert sum(t["probability"] for t in row["top_k"]) == pytest.approx(1.0, abs=2e-3)
    entries = sorted(p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*.json"))
    r = CliRunner().invoke(app, args)  # a rerun reads every score from the cache
    assert r.exit_code == 0, r.output
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*.json")) == entries

    # --rescore-top 1: a head trained on these clips shortlists one class, only it is scored
    from disamb.cache import ClipCache
    from disamb.clips import ClipOptions
    from disamb.predict import find_recordings
    from disamb.textclass import run_text_scoring

    notes, _ = find_recordings(rec)
    variants = [classes.typed(c) for c in classes.classes]
    got = run_text_scoring(tiny_model, notes, variants, ClipOptions(), ClipCache(tmp_path / "cache"), which={})
    y = np.array([classes.classes.index(PHRASES[int(n.id[1])]) for n in notes])
    data = Dataset(ids=[n.id for n in notes], X=np.stack([got.embeddings[n.id] for n in notes]), role=["gold"] * 3,
                   target=y, confidence=np.ones(3, np.float32), mask=np.eye(3, dtype=bool)[y],
                   init=np.eye(3, dtype=np.float32)[y], classes=classes)
    trained = train(data, TrainOptions(epochs=100, holdout=0.0)).classifier
    comb = Combiner(weights=np.array([1.0, 0.0, 1.0]), bias=np.zeros(3), scale=np.ones(3))
    proba, _, errors = TextClassifier(trained, comb, variants, rescore_top=1).predict(
        tiny_model, notes, ClipOptions(), ClipCache(tmp_path / "cache"))
    assert not errors
    for n, k in zip(notes, y):
        assert proba[n.id][k] == pytest.approx(1.0) and (proba[n.id] > 0).sum() == 1


def _zero_head(C: int):
    import torch

    from disamb.train import make_head

    head = make_head(384, C)
    with torch.no_grad():
        for p in head.parameters():
            p.zero_()
    return head


def test_eval_model_scores_a_text_model_as_predict_does(tmp_path, tiny_model):
    """`eval --model` on a text-scoring model reports the whole model on its held-out gold:
    a head that knows nothing (the head alone would say the first class every time) with
    text scoring that reads the words gets every phrase right; a model whose encoder key
    no longer matches is refused in one line."""
    from typer.testing import CliRunner

    from disamb.cli import app

    rec = tmp_path / "rec"
    rec.mkdir()
    for k, text in enumerate(PHRASES):
        speak(text, rec / f"c{k}.wav", voice=("en-gb", "en-us")[k % 2], speed=150)
    classes = build_classes(list(PHRASES), min_count=1)
    ids = [f"c{k}" for k in range(len(PHRASES))]
    meta = {"head": {"kind": "linear"}, "encoder": {"name": "tiny.en", "key": tiny_model.key},
            "class_names": {c: classes.name(c) for c in classes.classes}, "holdout_ids": ids}
    head = Classifier(classes=classes.classes, head=_zero_head(len(classes.classes)),
                      mean=np.zeros(384, np.float32), std=np.ones(384, np.float32), meta=meta)
    comb = Combiner(weights=np.array([1.0, 0.0, 0.0]), bias=np.zeros(3), scale=np.ones(3))
    TextClassifier(head, comb, [classes.typed(c) for c in classes.classes]).save(tmp_path / "model")
    labels = tmp_path / "labels.jsonl"
    rows = []
    for k, text in enumerate(PHRASES):
        cands = [{"id": f"m{k}{j}", "text": t, "prob": 1 / 3} for j, t in enumerate(PHRASES)]
        rows.append({"id": f"c{k}", "file": f"c{k}.wav", "transcript": text, "candidates": cands,
                     "label_id": f"m{k}{k}", "label": text, "confidence": 0.9, "accepted": True,
                     "gold_label_id": f"m{k}{k}"})
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["eval", str(labels), "--model", str(tmp_path / "model"), "--recordings", str(rec),
            "--cache-dir", str(tmp_path / "cache"), "--json", "-q"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)["classifier"]
    assert got["ids"] == ids and got["accuracy"] == pytest.approx(1.0)

    meta_path = tmp_path / "model" / "model.json"
    m = json.loads(meta_path.read_text())
    m["encoder"]["key"] = "another-encoder"
    meta_path.write_text(json.dumps(m))
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "trained on encoder another-encoder" in r.output
    assert "Traceback" not in r.output
