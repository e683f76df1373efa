"""Apply a trained classifier to recordings: which class each one carries.

Works without a chat (every audio file in a folder) or with a chat log / manifest,
where the choice can be restricted to each note's candidates and compared with the
labeller's labels and the gold truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .chats import VoiceNote
from .files import write_jsonl
from .inputs import AUDIO_EXTENSIONS, AudioPathError, resolve_audio
from .classes import class_key
from .train import Classifier, gold_text


def candidate_mask(notes: list[VoiceNote], index: dict[str, int], n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, C): the classes among each note's candidates, and which notes had none.

    A note whose candidates are no known class gets every class: there is nothing to
    restrict it to (the caller says so).
    """
    mask = np.zeros((len(notes), n_classes), bool)
    for r, note in enumerate(notes):
        for c in note.candidates:
            k = index.get(class_key(c.text))
            if k is not None:
                mask[r, k] = True
    empty = ~mask.any(1)
    mask[empty] = True
    return mask, empty


def restrict_proba(probs: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Probabilities over all classes renormalised over the `allowed` ones: the same as a
    softmax over those classes only. A row whose allowed classes all have probability 0
    (a shortlist scored none of them) is uniform over them."""
    probs = np.where(allowed, probs, 0.0)
    total = probs.sum(1, keepdims=True)
    return np.where(total > 0, probs / np.where(total > 0, total, 1.0), allowed / allowed.sum(1, keepdims=True))


def find_recordings(folder: Path) -> tuple[list[VoiceNote], list[str]]:
    """Every audio file under `folder` as a note without candidates (id = relative path).

    Links that lead outside the folder are refused, as in chat logs; the reasons are returned.
    """
    folder = Path(folder)
    notes, refused = [], []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS):
        rel = path.relative_to(folder).as_posix()
        try:
            audio = resolve_audio(folder, rel)
        except AudioPathError as e:
            refused.append(str(e))
            continue
        notes.append(VoiceNote(id=rel, file=rel, audio=audio, candidates=[]))
    return notes, refused


@dataclass
class PredictSummary:
    notes: int = 0
    predicted: int = 0
    errors: int = 0
    restricted: int = 0  # choice limited to the note's candidate classes
    no_candidate_class: int = 0  # restriction asked for, but no candidate is a known class
    labels_compared: int = 0  # labeller label in the class set
    labels_agree: int = 0
    accepted_compared: int = 0
    accepted_agree: int = 0
    gold: int = 0  # gold notes whose truth is a known class
    gold_correct: int = 0
    holdout_gold: int = 0  # of those, the ones held out of training
    holdout_correct: int = 0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["labels_agreement"] = self.labels_agree / self.labels_compared if self.labels_compared else None
        d["accepted_agreement"] = self.accepted_agree / self.accepted_compared if self.accepted_compared else None
        d["gold_accuracy"] = self.gold_correct / self.gold if self.gold else None
        d["holdout_accuracy"] = self.holdout_correct / self.holdout_gold if self.holdout_gold else None
        return d


def predict_notes(
    clf: Classifier,
    notes: list[VoiceNote],
    embeddings: dict[str, np.ndarray],
    errors: dict[str, str] | None = None,
    top_k: int = 3,
    restrict: bool = False,
    records: dict[str, dict] | None = None,
    proba: dict[str, np.ndarray] | None = None,
) -> tuple[list[dict], PredictSummary]:
    """One predictions.jsonl row per note (input order) and the counts for the summary.

    `proba` (note id -> probabilities over all classes) comes from a text-scoring model
    (`combine.TextClassifier.predict`); without it the head's own probabilities are used.
    "class" is the class key (the normalised text review and eval compare in), "name" the
    class as people typed it most often.
    """
    errors = errors or {}
    index = {c: i for i, c in enumerate(clf.classes)}
    names = clf.meta.get("class_names") or {}
    holdout = set(clf.meta.get("holdout_ids") or [])
    summary = PredictSummary(notes=len(notes))
    ready = [n for n in notes if n.id in embeddings and (proba is None or n.id in proba)]
    allowed = None
    if ready:
        if restrict:
            allowed, empty = candidate_mask(ready, index, len(clf.classes))
        if proba is None:
            probs = clf.predict_proba(np.stack([embeddings[n.id] for n in ready]), allowed)
        else:
            probs = np.stack([proba[n.id] for n in ready])
            if allowed is not None:
                probs = restrict_proba(probs, allowed)
    rows_by_id: dict[str, dict] = {}
    for r, note in enumerate(ready):
        p = probs[r]
        order = np.argsort(-p, kind="stable")[: max(1, top_k)]
        row = {
            "id": note.id, "file": note.file, "class": clf.classes[order[0]],
            "name": names.get(clf.classes[order[0]], clf.classes[order[0]]),
            "probability": round(float(p[order[0]]), 4),
            "top_k": [{"class": clf.classes[k], "name": names.get(clf.classes[k], clf.classes[k]),
                       "probability": round(float(p[k]), 4)} for k in order],
        }
        if restrict:
            row["restricted"] = not bool(empty[r])
            summary.restricted += row["restricted"]
            summary.no_candidate_class += not row["restricted"]
        _compare(row, note, records, index, holdout, summary)
        rows_by_id[note.id] = row
        summary.predicted += 1
    rows = []
    for note in notes:
        row = rows_by_id.get(note.id)
        if row is None:
            row = {"id": note.id, "file": note.file, "class": None, "probability": None, "top_k": [],
                   "error": errors.get(note.id, "no embedding")}
            summary.errors += 1
        rows.append(row)
    return rows, summary


def _compare(row: dict, note: VoiceNote, records: dict[str, dict] | None, index: dict[str, int],
             holdout: set[str], summary: PredictSummary) -> None:
    """Add the labeller's class and the gold class to the row where known, and count agreement."""
    predicted = row["class"]
    rec = (records or {}).get(note.id)
    if rec is not None and rec.get("label"):
        lab = class_key(rec["label"])
        row["labeller_class"] = lab if lab in index else None
        if lab in index:
            agree = lab == predicted
            row["agrees"] = agree
            summary.labels_compared += 1
            summary.labels_agree += agree
            if rec.get("accepted"):
                summary.accepted_compared += 1
                summary.accepted_agree += agree
    g = gold_text(note)
    if g is not None and class_key(g) in index:
        right = class_key(g) == predicted
        row["gold_class"] = class_key(g)
        summary.gold += 1
        summary.gold_correct += right
        if note.id in holdout:
            row["held_out"] = True
            summary.holdout_gold += 1
            summary.holdout_correct += right


def write_predictions(path: Path, rows: list[dict]) -> None:
    """predictions.jsonl, one object per recording, written atomically."""
    write_jsonl(Path(path), rows)
