"""Tests for disamb.train and disamb.predict: classes, losses, training, model files, predict."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from disamb.chats import Candidate, VoiceNote
from disamb.classes import class_key
from disamb.predict import find_recordings, predict_notes
from disamb.train import (
    ClassFileError, Classifier, Dataset, ModelFileError, TrainError, TrainOptions, build_classes, build_dataset,
    cc_terms, ce_terms, class_texts, multihot_mse_terms, proden_terms, proden_update, read_class_file, train,
    weighted_mean,
)

# ----------------------------------------------------------------------- classes


def test_variants_of_one_phrase_are_one_class():
    cs = build_classes(["on my way", "On my way!", "on my way 🙂", "see you soon", "See you soon."], min_count=2)
    assert cs.classes == ["on my way", "see you soon"]
    assert cs.counts == {"on my way": 3, "see you soon": 2}


def test_min_count_drops_rare_labels():
    cs = build_classes(["love you", "love you", "love you", "good night", "good night", "sounds good"], min_count=3)
    assert cs.classes == ["love you"]
    assert cs.dropped == {"good night": 2, "sounds good": 1}
    assert build_classes(["red car", "blue bus"], min_count=1).classes == ["blue bus", "red car"]


def test_classes_file_fixes_the_set(tmp_path):
    f = tmp_path / "classes.txt"
    f.write_text("# my phrases\nOn my way!\n\non my way\nrunning late\n", encoding="utf-8")
    fixed = read_class_file(f)
    assert fixed == ["On my way!", "on my way", "running late"]  # as typed; merged by build_classes
    cs = build_classes(["running late", "good night", "good night", "Running late!!"], min_count=2, fixed=fixed)
    assert cs.classes == ["on my way", "running late"]  # file order, counts ignored
    assert cs.counts == {"on my way": 0, "running late": 2}
    assert cs.dropped == {"good night": 2}
    assert cs.names == {"on my way": "On my way!", "running late": "running late"}  # the file's first line
    assert cs.variants["on my way"] == {"On my way!": 0, "on my way": 0}
    assert cs.variants["running late"] == {"running late": 1, "Running late!!": 1}


def test_typed_variants_that_say_the_same_merge_and_the_commonest_names_the_class():
    said = ["i'm at the gym", "im at the gym", "I am at the gym", "im at the gym", "Im at the gym",
            "be there in 5", "be there in five", "Be there in 5!", "be there in 5 minutes"]
    cs = build_classes(said, min_count=1)
    assert cs.classes == ["be there in 5", "be there in 5 minutes", "i am at the gym"]
    assert cs.names["i am at the gym"] == "im at the gym"  # typed most often
    assert cs.variants["i am at the gym"] == {"im at the gym": 2, "i'm at the gym": 1, "I am at the gym": 1,
                                              "Im at the gym": 1}
    assert cs.counts["i am at the gym"] == 5 and cs.counts["be there in 5"] == 3
    assert cs.typed("be there in 5")[0] == "be there in 5"
    assert cs.names["be there in 5 minutes"] == "be there in 5 minutes"  # says more: its own class
    typos = build_classes(["running late", "runing late", "Running late!", "loev you", "love you 🙂"], min_count=2)
    assert typos.classes == ["love you", "running late"]
    assert typos.variants["running late"] == {"running late": 1, "runing late": 1, "Running late!": 1}
    # filler words a typist adds do not make a class of their own (they were near-copies the
    # classifier lost recordings to); a text of fillers only keeps its words
    fillers = build_classes(["happy birthday", "happy birthday okay", "Happy birthday pls!", "thanks", "ok thanks",
                             "code 4712"], min_count=1)
    assert fillers.classes == ["4712", "happy birthday", "okay thanks", "thanks"]  # normalised spelling
    assert fillers.counts["happy birthday"] == 3
    assert fillers.names["4712"] == "code 4712"


def test_a_dropped_apostrophe_does_not_make_a_class():
    said = ["I'll call you back", "ill call you back", "I\u2019ll call you back", "its 4712", "it's 4712",
            "we're home", "were home", "let's go", "lets go"]
    cs = build_classes(said, min_count=1)
    assert len(cs.classes) == 4
    assert cs.counts[class_key("ill call you back")] == 3
    assert class_key("I\u2019ll be there") == class_key("ill be there")  # a curly apostrophe no longer splits the word


def test_a_model_keyed_before_apostrophes_were_dropped_is_rekeyed_on_load(tmp_path):
    """An old model.json keyed "I'll call you back" as "i will call you back": on load it is
    keyed as today's `class_key` keys the chat's texts, with its names, variants and counts;
    where two old classes now share a key, the second keeps its old one."""
    import json

    from disamb.train import KEY_VERSION, Classifier

    data, _, _ = _toy()
    clf = train(data, TrainOptions(epochs=5)).classifier
    clf.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["class_key_version"] == KEY_VERSION
    old = {c: f"old {c}" for c in meta["classes"]}
    first, second = meta["classes"][0], meta["classes"][1]
    names = {old[first]: "I'll call you back", old[second]: "ill call you back"}
    for c in meta["classes"][2:]:
        names[old[c]] = c
    meta.update(classes=[old[c] for c in meta["classes"]], class_names=names,
                class_variants={old[c]: {names[old[c]]: 1} for c in meta["classes"]})
    del meta["class_key_version"]
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    got = Classifier.load(tmp_path / "m")
    assert got.classes[0] == "ill call you back" and got.classes[1] == old[second]  # a clash keeps the old key
    assert got.classes[2:] == [class_key(c) for c in clf.classes[2:]]
    assert got.meta["class_names"]["ill call you back"] == "I'll call you back"
    assert got.meta["class_variants"]["ill call you back"] == {"I'll call you back": 1}
    assert np.allclose(got.logits(data.X[:3]), clf.logits(data.X[:3]))


def test_classes_file_errors(tmp_path):
    with pytest.raises(ClassFileError, match="not found"):
        read_class_file(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n", encoding="utf-8")
    with pytest.raises(ClassFileError, match="no class"):
        read_class_file(empty)


def _note(nid: str, texts: list[str], gold: int | None = None) -> VoiceNote:
    cands = [Candidate(id=f"{nid}-{j}", text=t) for j, t in enumerate(texts)]
    note = VoiceNote(id=nid, file=f"{nid}.wav", audio=Path(f"{nid}.wav"), candidates=cands)
    if gold is not None:
        note.gold_label_id, note.gold_text, note.gold_in_window = cands[gold].id, texts[gold], True
    return note


def _record(note: VoiceNote, probs: list[float], label: int | None, accepted: bool, conf: float = 0.5) -> dict:
    return {
        "id": note.id, "file": note.file,
        "candidates": [{"id": c.id, "text": c.text, "prob": p} for c, p in zip(note.candidates, probs)],
        "label_id": None if label is None else note.candidates[label].id,
        "label": None if label is None else note.candidates[label].text,
        "confidence": conf, "accepted": accepted,
    }


def test_dataset_roles_targets_and_outside_count():
    notes = [
        _note("g", ["On my way!", "pizza?"], gold=0),
        _note("a", ["love you", "on my way 🙂"], gold=None),
        _note("p", ["on my way", "love you!!", "On my way", "xyz"]),
        _note("o", ["xyz", "abc"]),  # no candidate in the class set
        _note("r", ["nothing here", "love you"]),  # accepted label outside the class set
        _note("e", ["love you"]),  # no embedding (its clip failed)
    ]
    records = {
        "a": _record(notes[1], [0.1, 0.9], 1, True, 0.95),
        "p": _record(notes[2], [0.3, 0.2, 0.1, 0.4], 3, False, 0.4),
        "r": _record(notes[4], [0.99, 0.01], 0, True, 0.99),
    }
    texts = class_texts(notes, records, accepted_only=True)
    assert sorted(texts) == sorted(["On my way!", "on my way 🙂", "nothing here"])
    assert sorted(class_texts(notes, records)) == sorted(texts + ["xyz"])  # unsure labels count too
    classes = build_classes(texts + ["love you", "love you"], min_count=2)
    assert classes.classes == ["love you", "on my way"]
    embs = {n.id: np.full(4, i, np.float32) for i, n in enumerate(notes) if n.id != "e"}
    data = build_dataset(notes, records, embs, classes)
    assert data.ids == ["g", "a", "p"]
    assert data.role == ["gold", "accepted", "partial"]
    assert data.target.tolist() == [1, 1, -1]
    assert data.outside == 2 and data.no_embedding == 1
    assert data.mask.tolist() == [[False, True], [True, True], [True, True]]
    assert data.confidence[1] == pytest.approx(0.95)
    # Matcher probabilities of candidates with the same class add up; "xyz" is outside the set.
    assert data.init[2] == pytest.approx(np.array([0.2, 0.4]) / 0.6)
    assert data.init[0] == pytest.approx([0.0, 1.0])


# ----------------------------------------------------------------------- losses


def _logits(p: list[float]) -> torch.Tensor:
    return torch.log(torch.tensor([p], dtype=torch.float64))


def test_cross_entropy_and_weights():
    z = torch.cat([_logits([0.25, 0.75]), _logits([0.5, 0.5])])
    terms = ce_terms(z, torch.tensor([1, 0]))
    assert terms.tolist() == pytest.approx([-math.log(0.75), -math.log(0.5)])
    w = torch.tensor([1.0, 3.0], dtype=torch.float64)
    expected = (-math.log(0.75) * 1 - math.log(0.5) * 3) / 4
    assert float(weighted_mean(terms, w)) == pytest.approx(expected)


def test_proden_weights_are_restricted_to_the_set_and_renormalised():
    z = _logits([0.1, 0.2, 0.3, 0.4])
    mask = torch.tensor([[True, False, True, False]])
    w = proden_update(z, mask)
    assert w[0].tolist() == pytest.approx([0.25, 0.0, 0.75, 0.0])
    loss = proden_terms(z, w)
    assert float(loss[0]) == pytest.approx(-(0.25 * math.log(0.1) + 0.75 * math.log(0.3)))
    # a one-element set is a one-hot label: PRODEN reduces to cross-entropy
    one = torch.tensor([[False, False, False, True]])
    assert float(proden_terms(z, proden_update(z, one))[0]) == pytest.approx(-math.log(0.4))


def test_cc_is_minus_log_of_the_set_probability():
    z = _logits([0.1, 0.2, 0.3, 0.4])
    mask = torch.tensor([[True, False, True, False]])
    assert float(cc_terms(z, mask)[0]) == pytest.approx(-math.log(0.4))
    assert float(cc_terms(z, torch.ones(1, 4, dtype=torch.bool))[0]) == pytest.approx(0.0, abs=1e-12)


def test_multihot_mse():
    z = torch.tensor([[0.0, 0.0, math.log(3.0)]], dtype=torch.float64)  # sigmoid 0.5, 0.5, 0.75
    mask = torch.tensor([[True, False, True]])
    assert float(multihot_mse_terms(z, mask)[0]) == pytest.approx((0.25 + 0.25 + 0.0625) / 3)


# ----------------------------------------------------------------------- training


def _toy(n_per_class: int = 30, n_classes: int = 5, dim: int = 16, gold_per_class: int = 2, seed: int = 0,
         set_size: int = 3) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """Gaussian clusters; a few gold notes per class, the rest known only through candidate sets."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (n_classes, dim))
    y = np.repeat(np.arange(n_classes), n_per_class)
    X = (centres[y] + rng.normal(0, 0.9, (len(y), dim))).astype(np.float32)
    C = n_classes
    roles, target, mask = [], [], []
    seen = np.zeros(C, int)
    for k in y:
        m = np.zeros(C, bool)
        if seen[k] < gold_per_class:
            roles.append("gold"), target.append(k)
            m[k] = True
        else:
            roles.append("partial"), target.append(-1)
            m[k] = True
            m[rng.choice([j for j in range(C) if j != k], set_size - 1, replace=False)] = True
        seen[k] += 1
        mask.append(m)
    mask = np.array(mask)
    classes = build_classes([f"class {chr(97 + k)}" for k in range(C)], min_count=1)
    data = Dataset(ids=[f"n{i}" for i in range(len(y))], X=X, role=roles, target=np.array(target),
                   confidence=np.ones(len(y), np.float32), mask=mask,
                   init=(mask / mask.sum(1, keepdims=True)).astype(np.float32), classes=classes)
    y_test = np.repeat(np.arange(n_classes), 40)
    X_test = (centres[y_test] + rng.normal(0, 0.9, (len(y_test), dim))).astype(np.float32)
    return data, X_test, y_test


def test_partial_label_losses_beat_gold_only_on_a_toy_problem():
    data, X_test, y_test = _toy()
    acc = {}
    for loss in ("gold", "proden", "cc"):
        res = train(data, TrainOptions(loss=loss, epochs=150, holdout=0.0, seed=0))
        acc[loss] = float((res.classifier.predict_proba(X_test).argmax(1) == y_test).mean())
    assert acc["proden"] > acc["gold"] + 0.05
    assert acc["cc"] > acc["gold"] + 0.05
    assert acc["proden"] > 0.8


def test_training_is_deterministic_and_holds_out_gold():
    data, X_test, _ = _toy(gold_per_class=4)
    a = train(data, TrainOptions(loss="proden", epochs=40, holdout=0.3, seed=3))
    b = train(data, TrainOptions(loss="proden", epochs=40, holdout=0.3, seed=3))
    assert a.holdout_ids == b.holdout_ids and len(a.holdout_ids) == 6
    assert all(data.role[data.ids.index(i)] == "gold" for i in a.holdout_ids)
    assert np.array_equal(a.classifier.predict_proba(X_test), b.classifier.predict_proba(X_test))
    assert a.rows_used["gold"] == 20 - 6 and a.rows_used["partial"] == data.count("partial")
    assert a.holdout_accuracy is not None and 1 <= a.best_epoch <= a.epochs_run


def test_training_needs_two_classes_and_examples():
    data, _, _ = _toy()
    one = Dataset(ids=data.ids[:3], X=data.X[:3], role=["partial"] * 3, target=np.full(3, -1),
                  confidence=np.ones(3, np.float32), mask=data.mask[:3], init=data.init[:3], classes=data.classes)
    with pytest.raises(TrainError, match="no training examples"):
        train(one, TrainOptions(loss="gold"))
    with pytest.raises(TrainError, match="unknown loss"):
        train(data, TrainOptions(loss="hinge"))


# ----------------------------------------------------------------------- model files


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_save_load_round_trip(tmp_path, head):
    data, X_test, _ = _toy()
    res = train(data, TrainOptions(loss="cc", head=head, hidden=8, epochs=20, seed=1),
                encoder={"name": "tiny.en", "key": "k"})
    res.classifier.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.safetensors"]
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["classes"] == data.classes.classes and meta["feature_dim"] == 16
    assert meta["encoder"]["name"] == "tiny.en" and meta["head"]["kind"] == head
    assert meta["options"]["loss"] == "cc" and meta["holdout_ids"] == res.holdout_ids
    assert "holdout_accuracy" in meta["metrics"] and meta["package_version"]
    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as f:
        assert {"feature_mean", "feature_std", "head.out.weight"} <= set(f.keys())
    loaded = Classifier.load(tmp_path / "m")
    assert loaded.classes == res.classifier.classes
    assert np.array_equal(loaded.predict_proba(X_test), res.classifier.predict_proba(X_test))


def test_loading_refuses_broken_model_folders(tmp_path):
    data, _, _ = _toy()
    res = train(data, TrainOptions(loss="ce", epochs=5))
    with pytest.raises(ModelFileError, match="not a model folder"):
        Classifier.load(tmp_path / "nope")
    good = tmp_path / "good"
    res.classifier.save(good)
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    (bad / "model.safetensors").write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(ModelFileError, match="unreadable"):
        Classifier.load(bad)
    shutil.copytree(good, tmp_path / "wrong", dirs_exist_ok=True)
    meta = json.loads((good / "model.json").read_text())
    meta["classes"] = meta["classes"][:-1]
    (tmp_path / "wrong" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="do not match"):
        Classifier.load(tmp_path / "wrong")


# ----------------------------------------------------------------------- predict


def test_predict_rows_restriction_and_agreement():
    data, X_test, y_test = _toy()
    clf = train(data, TrainOptions(loss="proden", epochs=60, holdout=0.0)).classifier
    names = clf.classes
    x0 = X_test[y_test == 0][0]  # a clear class-0 example
    notes = [
        _note("v1", [names[0] + "!", "unknown text"], gold=0),
        _note("v2", [names[1], names[2].upper()]),  # restricted to classes 1 and 2
        _note("v3", ["nothing known"]),  # no candidate class: falls back to all classes
        _note("v4", [names[0]]),  # its clip failed
    ]
    embs = {"v1": x0, "v2": x0, "v3": x0}
    records = {"v1": _record(notes[0], [0.9, 0.1], 0, True, 0.97), "v2": _record(notes[1], [0.5, 0.5], 0, False)}
    rows, s = predict_notes(clf, notes, embs, {"v4": "cannot decode audio"}, top_k=2, restrict=True, records=records)
    assert [r["id"] for r in rows] == ["v1", "v2", "v3", "v4"]
    assert rows[0]["class"] == names[0] and rows[0]["agrees"] is True and rows[0]["gold_class"] == names[0]
    assert len(rows[0]["top_k"]) == 2 and rows[0]["top_k"][0]["class"] == names[0]
    assert rows[0]["probability"] == rows[0]["top_k"][0]["probability"]
    assert rows[1]["class"] in names[1:3] and rows[1]["restricted"] is True
    assert sum(t["probability"] for t in rows[1]["top_k"]) == pytest.approx(1.0, abs=1e-3)
    assert rows[2]["restricted"] is False and rows[2]["class"] == names[0]
    assert rows[3]["class"] is None and rows[3]["error"] == "cannot decode audio"
    assert (s.predicted, s.errors, s.restricted, s.no_candidate_class) == (3, 1, 2, 1)
    assert (s.labels_compared, s.accepted_compared, s.accepted_agree, s.gold, s.gold_correct) == (2, 1, 1, 1, 1)
    assert s.labels_agree == 1 + (rows[1]["class"] == names[1]) and rows[1]["agrees"] == (rows[1]["class"] == names[1])
    json.dumps(rows)  # every row is plain JSON


def test_find_recordings_is_recursive_and_stays_inside(tmp_path):
    rec = tmp_path / "rec"
    (rec / "sub").mkdir(parents=True)
    (rec / "a.wav").write_bytes(b"x")
    (rec / "sub" / "b.OGG").write_bytes(b"x")
    (rec / "notes.txt").write_text("not audio")
    outside = tmp_path / "secret.wav"
    outside.write_bytes(b"x")
    (rec / "link.wav").symlink_to(outside)
    notes, refused = find_recordings(rec)
    assert [n.id for n in notes] == ["a.wav", "sub/b.OGG"]
    assert len(refused) == 1 and "link" in refused[0]


# ----------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_label_train_predict_from_the_cli(tmp_path):
    """12 espeak-ng clips of 4 phrases: label, train, predict through the real CLI."""
    from typer.testing import CliRunner

    from disamb.cli import app
    from benchmarks.synth import SynthConfig, closed_class_dataset

    cfg = SynthConfig(gold_fraction=0.5, typed_style=0.3, codes=0.0, typo_rate=0.0, spoken_filler=0.0)
    info = closed_class_dataset(tmp_path / "d", n_per_class=3, seed=0, config=cfg,
                                phrases=("on my way", "good night", "love you", "I'm outside"))
    cache = str(tmp_path / "cache")
    run = CliRunner().invoke
    r = run(app, ["label", str(info.recordings), str(info.chats), "-o", str(tmp_path / "labels.jsonl"),
                  "--cache-dir", cache, "-q", "--json"])
    assert r.exit_code == 0, r.output
    r = run(app, ["train", str(info.recordings), str(info.chats), str(tmp_path / "labels.jsonl"), "-o",
                  str(tmp_path / "model"), "--cache-dir", cache, "-q", "--json", "--min-count", "1", "--epochs", "50"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["with_embedding"] == 12 and summary["classes"] >= 4 and summary["loss"] in ("proden", "ce")
    r = run(app, ["predict", str(info.recordings), str(info.chats), "--model", str(tmp_path / "model"),
                  "-o", str(tmp_path / "pred.jsonl"), "--cache-dir", cache, "-q", "--json",
                  "--restrict-to-candidates", "--labels", str(tmp_path / "labels.jsonl")])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(set(x) >= {"id", "file", "class", "probability", "top_k"} for x in rows)
    assert json.loads(r.stdout)["gold_accuracy"] is not None
    # without a chat: every audio file in the folder
    r = run(app, ["predict", str(info.recordings), "--model", str(tmp_path / "model"),
                  "-o", str(tmp_path / "pred2.jsonl"), "--cache-dir", cache, "-q"])
    assert r.exit_code == 0, r.output
    assert len((tmp_path / "pred2.jsonl").read_text().splitlines()) == 12
    r = run(app, ["predict", str(info.recordings), "--model", str(tmp_path / "nothing"), "-q"])
    assert r.exit_code == 2 and "not a model folder" in r.output
