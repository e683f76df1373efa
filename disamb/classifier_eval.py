"""How good is a trained classifier? Accuracy on gold it did not train on.

Either the gold notes `disamb train` held out (their ids are in the model's JSON) or
K-fold cross-validation that retrains the head on everything but one fold. Notes are
rebuilt from labels.jsonl records, with gold taken the same way evaluate.py takes it.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Sequence

import numpy as np

from .evaluate import EvalError, GoldRead, _candidates, _truth_from_entry, _truth_from_record
from .metrics import wilson_interval

# ---------------------------------------------------------------- a trained classifier on gold


class ModelEvalError(EvalError):
    """The classifier cannot be evaluated on this gold (no held-out gold, too few notes for --cv)."""


def classification_metrics(true: Sequence[int], proba: np.ndarray, classes: list[str], top_k: int = 3) -> dict:
    """Accuracy (Wilson interval), top-k accuracy, per-class precision/recall and the confusion matrix.

    `proba` is (n, C); rows of the confusion matrix are true classes, columns predictions.
    """
    y = np.asarray(true, int).reshape(-1)
    p = np.asarray(proba, float).reshape(len(y), len(classes)) if len(y) else np.zeros((0, len(classes)))
    if len(y) == 0:
        raise ValueError("no notes to score")
    pred = p.argmax(1)
    right = int((pred == y).sum())
    k = min(top_k, len(classes))
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    in_top = int((top == y[:, None]).any(1).sum())
    C = len(classes)
    confusion = np.zeros((C, C), int)
    np.add.at(confusion, (y, pred), 1)
    per_class = []
    for c in range(C):
        support, predicted, hit = int(confusion[c].sum()), int(confusion[:, c].sum()), int(confusion[c, c])
        if support == 0 and predicted == 0:
            continue
        per_class.append({
            "class": classes[c], "support": support, "predicted": predicted, "correct": hit,
            "precision": hit / predicted if predicted else None,
            "recall": hit / support if support else None,
        })
    per_class.sort(key=lambda r: (-r["support"], r["class"]))
    return {
        "n": len(y),
        "correct": right,
        "accuracy": right / len(y),
        "ci95": list(wilson_interval(right, len(y))),
        "top_k": k,
        "top_k_accuracy": in_top / len(y),
        "per_class": per_class,
        "class_names": list(classes),
        "confusion": confusion.tolist(),
    }


def model_notes(records: list[dict], gold: GoldRead | None, recordings: Path) -> tuple[list, dict[str, str]]:
    """VoiceNotes rebuilt from labels.jsonl records (gold from `gold` first), for embedding and
    retraining; notes whose audio path cannot be used are returned as errors by id."""
    from .chats import Candidate, VoiceNote
    from .inputs import AudioPathError, resolve_audio

    notes, errors = [], {}
    for rec in records:
        cands = _candidates(rec)
        truth = None
        if gold and rec["id"] in gold.entries:
            got = _truth_from_entry(gold.entries[rec["id"]], cands)
            truth = None if isinstance(got, str) else got
        if truth is None:
            truth = _truth_from_record(rec, cands)
        file = rec.get("file") if isinstance(rec.get("file"), str) else ""
        try:
            audio = resolve_audio(Path(recordings), file)
        except AudioPathError as e:
            errors[rec["id"]] = str(e)
            continue
        note = VoiceNote(id=rec["id"], file=file, audio=audio, candidates=[Candidate(i, t) for i, t in cands])
        if truth is not None:
            note.gold_in_window = truth.in_window
            note.gold_label_id = truth.label_id
            note.gold_text = truth.text or truth.spoken
        notes.append(note)
    return notes, errors


def _class_of(note, index: dict[str, int]) -> int | None:
    from .classes import class_key
    from .train import gold_text

    g = gold_text(note)
    return None if g is None else index.get(class_key(g))


def _window_mask(notes: list, index: dict[str, int], C: int) -> np.ndarray:
    """(n, C): the classes among each note's candidates; all classes where none is known."""
    from .predict import candidate_mask

    return candidate_mask(notes, index, C)[0]


def evaluate_classifier(
    clf,
    notes: list,
    embeddings: dict[str, np.ndarray],
    records: list[dict],
    cv: int | None = None,
    seed: int = 0,
    proba_by_id: dict[str, np.ndarray] | None = None,
) -> dict:
    """Score a trained classifier (disamb.train.Classifier) on gold notes it did not train on.

    Without `cv`: the gold notes the model held out (ids in its JSON), scored with
    `proba_by_id` when given (a text-scoring model's probabilities, as predict gives
    them), else with the head. With `cv` = K: the
    gold notes in the class set are split in K folds and a head is retrained K times with
    the model's own options on everything except one fold (the fold's notes are dropped
    entirely, not merely their gold), then scored on that fold. Predictions range over
    all classes; `window_accuracy` restricts them to the note's candidate classes.
    """
    from .match import fold_ids
    from .predict import restrict_proba
    from .train import TrainError, TrainOptions, build_classes, build_dataset, train

    index = {c: i for i, c in enumerate(clf.classes)}
    held = set(clf.meta.get("holdout_ids") or [])
    gold = [n for n in notes if n.has_gold and (cv is not None or n.id in held)]
    scorable = [n for n in gold if n.id in embeddings and _class_of(n, index) is not None]
    info = {  # counts over the gold notes this evaluation could use
        "classes": len(clf.classes),
        "gold_notes": len(gold),
        "gold_outside_classes": sum(1 for n in gold if _class_of(n, index) is None),
        "gold_without_embedding": sum(1 for n in gold if n.id not in embeddings),
    }
    if cv is None:
        test = scorable
        if not test:
            raise ModelEvalError(
                f"the model holds out no gold note that is here ({len(held)} held-out ids in its JSON); "
                "use --cv K to retrain K times on the rest")
        if proba_by_id is not None:
            test = [n for n in test if n.id in proba_by_id]
            if not test:
                raise ModelEvalError("no held-out gold note could be scored")
        mask = _window_mask(test, index, len(clf.classes))
        if proba_by_id is None:
            X = np.stack([embeddings[n.id] for n in test])
            proba, window = clf.predict_proba(X), clf.predict_proba(X, mask)
        else:
            proba = np.stack([proba_by_id[n.id] for n in test])
            window = restrict_proba(proba, mask)
        y = [_class_of(n, index) for n in test]
        method = f"held-out gold recorded in the model ({len(test)} notes)"
    else:
        if cv < 2 or len(scorable) < cv:
            raise ModelEvalError(f"--cv {cv} needs at least {max(cv, 2)} gold notes in the class set, found {len(scorable)}")
        known = {f.name for f in fields(TrainOptions)}
        opts = TrainOptions(**{k: v for k, v in (clf.meta.get("options") or {}).items() if k in known})
        by_id = {r["id"]: r for r in records}
        folds = fold_ids(len(scorable), cv, seed)
        test, y, parts, wparts = [], [], [], []
        for k in range(cv):
            fold = [n for j, n in enumerate(scorable) if folds[j] == k]
            out = {n.id for n in fold}
            train_notes = [n for n in notes if n.id not in out]
            classes = build_classes([], fixed=list(clf.classes), source="model")
            data = build_dataset(train_notes, by_id, embeddings, classes)
            try:
                fitted = train(data, opts, clf.meta.get("encoder")).classifier
            except TrainError as e:
                raise ModelEvalError(f"fold {k + 1} of {cv}: {e}") from None
            X = np.stack([embeddings[n.id] for n in fold])
            parts.append(fitted.predict_proba(X))
            wparts.append(fitted.predict_proba(X, _window_mask(fold, index, len(clf.classes))))
            test += fold
            y += [_class_of(n, index) for n in fold]
        proba, window = np.concatenate(parts), np.concatenate(wparts)
        method = f"{cv}-fold cross-validation on {len(test)} gold notes (retrained with the model's options)"
    result = classification_metrics(y, proba, list(clf.classes))
    result["window_accuracy"] = float((window.argmax(1) == np.asarray(y)).mean())
    return info | {"method": method, "ids": [n.id for n in test]} | result
