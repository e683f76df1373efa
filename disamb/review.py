"""`disamb review`: a local web page to grow the gold set one note at a time.

Hand labelling is slow, so the page asks about the notes the matcher is least sure
of, lets the user answer with one key press, and writes every answer to an
append-only gold file at once (fsync'd), so nothing is lost when the browser or
the server goes away. The data shown is untrusted chat text: the page builds its
DOM with textContent only and is served with a strict Content-Security-Policy;
audio is served by note id from inside the recordings folder, never by path.

This module is the session (notes, queue, answers, refits); review_server.py serves it.
"""

from __future__ import annotations

import json
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import match
from .answers import Answer, ReviewError, append_answer, read_answers
from .inputs import AudioPathError, resolve_audio

ORDERS = ("uncertain", "margin", "random", "file", "disagree")
MIN_ANSWERS_TO_REFIT = 10


class LabelsFileError(ReviewError):
    """labels.jsonl cannot be read or holds no note that can be reviewed."""


class RefitError(ReviewError):
    """Too few usable answers to refit the matcher."""


# ---------------------------------------------------------------- notes


@dataclass
class Item:
    """One reviewable note: what the page shows plus the features for refitting."""

    id: str
    file: str
    transcript: str
    cand_ids: list[str]
    cand_texts: list[str]
    probs: np.ndarray  # one per candidate, then "none of these"
    label_id: str | None  # the labeller's choice in labels.jsonl
    confidence: float
    X: np.ndarray | None  # match.FEATURES rows, None when labels.jsonl lacks them
    gold: str | None | bool = False  # False: no gold in labels.jsonl; else the gold label id (None = none)
    position: int = 0
    disagrees: bool = False  # a trained classifier predicts another class than the labeller chose

    def top_margin(self) -> tuple[float, float]:
        p = np.sort(self.probs)[::-1]
        return float(p[0]), float(p[0] - (p[1] if len(p) > 1 else 0.0))

    def to_json(self, answer: Answer | None) -> dict:
        return {
            "id": self.id,
            "file": self.file,
            "transcript": self.transcript,
            "candidates": [
                {"id": i, "text": t, "prob": round(float(p), 4)}
                for i, t, p in zip(self.cand_ids, self.cand_texts, self.probs)
            ],
            "prob_none": round(float(self.probs[-1]), 4),
            "label_id": self.label_id,
            "confidence": self.confidence,
            "answered": answer is not None,
            "answer": answer.label_id if answer else None,
        }


def load_items(labels_path: Path) -> list[Item]:
    """Notes from labels.jsonl that have scored candidates (no decode error).

    Notes that already carry gold in labels.jsonl are kept (they count for refitting)
    but `Session` does not ask about them again."""
    from .gold import record_problem

    labels_path = Path(labels_path)
    try:
        lines = labels_path.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LabelsFileError(f"{labels_path}: cannot read labels ({e})") from e
    items: list[Item] = []
    seen: set[str] = set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            wrong = record_problem(rec)  # the field types _item relies on
            if wrong is not None:
                raise LabelsFileError(f"{labels_path}:{n}: {wrong}")
            item = _item(rec, len(items))
        except (ValueError, KeyError, TypeError) as e:
            raise LabelsFileError(f"{labels_path}:{n}: not a labels.jsonl record ({e})") from None
        if item is None:
            continue
        if item.id in seen:
            raise LabelsFileError(f"{labels_path}:{n}: duplicate note id {item.id!r}")
        seen.add(item.id)
        items.append(item)
    if not items:
        raise LabelsFileError(f"{labels_path}: no note with candidates to review")
    return items


def _item(rec: dict, position: int) -> Item | None:
    cands = rec["candidates"]
    if rec.get("error") or not cands or any(c.get("prob") is None for c in cands):
        return None
    probs = [float(c["prob"]) for c in cands] + [float(rec.get("prob_none") or 0.0)]
    X = None
    if all(isinstance(c.get("features"), dict) and all(f in c["features"] for f in match.FEATURES) for c in cands):
        X = np.array([[float(c["features"][f]) for f in match.FEATURES] for c in cands])
    gold: str | None | bool = False
    if rec.get("gold_label_id") is not None:
        gold = str(rec["gold_label_id"])
    elif rec.get("gold_in_window") is False:
        gold = None
    return Item(
        id=str(rec["id"]),
        file=str(rec["file"]),
        transcript=str(rec.get("transcript") or ""),
        cand_ids=[str(c["id"]) for c in cands],
        cand_texts=[str(c["text"]) for c in cands],
        probs=np.asarray(probs, float),
        label_id=rec.get("label_id"),
        confidence=float(rec.get("confidence") or 0.0),
        X=X,
        gold=gold,
        position=position,
    )


def queue_order(items: list[Item], answered: set[str], order: str, seed: int = 0) -> list[str]:
    """Ids of the unanswered notes, the one to ask next first.

    "uncertain": lowest top probability; "margin": smallest gap between the top two
    options (counting "none of these"); "random": shuffled with `seed`; "file": as
    in labels.jsonl; "disagree": notes where the classifier and the labeller differ
    first (see `mark_disagreements`), each group least certain first. Ties keep file
    order so the queue is reproducible.
    """
    todo = [it for it in items if it.id not in answered]
    if order == "uncertain":
        todo.sort(key=lambda it: (it.top_margin()[0], it.position))
    elif order == "margin":
        todo.sort(key=lambda it: (it.top_margin()[1], it.position))
    elif order == "disagree":
        todo.sort(key=lambda it: (not it.disagrees, it.top_margin()[0], it.position))
    elif order == "random":
        random.Random(seed).shuffle(todo)
    elif order != "file":
        raise ReviewError(f"unknown order {order!r} (choose from {', '.join(ORDERS)})")
    return [it.id for it in todo]


def mark_disagreements(items: list[Item], predictions: Path) -> int:
    """Flag notes whose classifier prediction (predictions.jsonl from `disamb predict`)
    is not the class of the labeller's choice; returns how many disagree.

    Classes are keyed by spoken form (`classes.class_key`), so the labeller's text is keyed the same way.
    Where the two disagree, one of them is wrong: an answer there teaches the most.
    """
    from .classes import class_key

    predicted: dict[str, str] = {}
    try:
        lines = Path(predictions).read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ReviewError(f"{predictions}: cannot read predictions ({e})") from e
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if row.get("class") is not None:
                predicted[str(row["id"])] = str(row["class"])
        except (ValueError, AttributeError, KeyError) as e:
            raise ReviewError(f"{predictions}:{n}: not a prediction line ({e})") from e
    count = 0
    for it in items:
        cls = predicted.get(it.id)
        if cls is None or it.label_id is None or it.label_id not in it.cand_ids:
            continue
        it.disagrees = class_key(it.cand_texts[it.cand_ids.index(it.label_id)]) != cls
        count += it.disagrees
    return count


def _target(item: Item, label_id: str | None) -> int | None:
    """Index of an answer among the candidates, len for none, None if not in the window."""
    if label_id is None:
        return len(item.cand_ids)
    return item.cand_ids.index(label_id) if label_id in item.cand_ids else None


# ---------------------------------------------------------------- session


@dataclass
class Session:
    """The state one server holds: the notes, the answers so far and the queue order."""

    items: list[Item]
    gold_path: Path
    recordings: Path
    order: str = "uncertain"
    seed: int = 0
    matcher_out: Path | None = None
    answers: dict[str, Answer] = field(default_factory=dict)
    answer_order: list[str] = field(default_factory=list)
    matcher_source: str = "labels.jsonl"
    lock: threading.Lock = field(default_factory=threading.Lock)
    _index: dict[str, Item] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def open(cls, recordings: Path, labels: Path, gold: Path | None = None, **kw: Any) -> "Session":
        items = load_items(labels)
        gold_path = Path(gold) if gold is not None else Path(labels).with_name("gold.jsonl")
        by_id = {it.id for it in items}
        answers = read_answers(gold_path)
        s = cls(items=items, gold_path=gold_path, recordings=Path(recordings), **kw)
        if s.order not in ORDERS:
            raise ReviewError(f"unknown order {s.order!r} (choose from {', '.join(ORDERS)})")
        s.answers = {k: a for k, a in answers.items() if k in by_id}
        s.answer_order = list(s.answers)
        return s

    def item(self, note_id: str) -> Item | None:
        return self._by_id().get(note_id)

    def _by_id(self) -> dict[str, Item]:
        if len(self._index) != len(self.items):
            self._index = {it.id: it for it in self.items}
        return self._index

    def audio_path(self, note_id: str) -> Path:
        """The clip of a note, resolved inside the recordings folder.

        Raises KeyError for an unknown id and AudioPathError when the file named in
        labels.jsonl is missing or would lead outside the folder.
        """
        it = self._by_id()[note_id]
        return resolve_audio(self.recordings, it.file)

    def unplayable(self) -> list[str]:
        """Ids of reviewable notes whose audio cannot be served (missing or outside
        the folder): usually the wrong recordings folder was given."""
        bad = []
        for it in self.reviewable():
            try:
                resolve_audio(self.recordings, it.file)
            except AudioPathError:
                bad.append(it.id)
        return bad

    def answer(self, note_id: str, label_id: str | None) -> Answer:
        it = self._by_id().get(note_id)
        if it is None:
            raise KeyError(note_id)
        if label_id is not None and label_id not in it.cand_ids:
            raise ValueError(f"{_short(label_id)} is not a candidate of {_short(note_id)}")
        with self.lock:
            a = append_answer(self.gold_path, note_id, label_id)
            self.answers[note_id] = a
            if note_id in self.answer_order:
                self.answer_order.remove(note_id)
            self.answer_order.append(note_id)
        return a

    def reviewable(self) -> list[Item]:
        """Notes to ask about: all but those with gold already in labels.jsonl
        (unless the user answered them anyway in an earlier run)."""
        return [it for it in self.items if it.gold is False or it.id in self.answers]

    def stats(self) -> dict:
        """Answered / remaining and how often the labeller agreed with the answers."""
        right = sum(self._by_id()[k].label_id == a.label_id for k, a in self.answers.items())
        n = len(self.answers)
        total = len(self.reviewable())
        return {
            "answered": n,
            "remaining": total - n,
            "total": total,
            "already_gold": len(self.items) - total,
            "labeller_correct": right,
            "labeller_accuracy": (right / n) if n else None,
            "refit_examples": len(self._training_set()[0]),
            "can_refit": n >= MIN_ANSWERS_TO_REFIT and len(self._training_set()[0]) >= MIN_ANSWERS_TO_REFIT,
            "min_answers_to_refit": MIN_ANSWERS_TO_REFIT,
            "matcher": self.matcher_source,
            "order": self.order,
            "gold_file": str(self.gold_path),
        }

    def state(self) -> dict:
        """Everything the page needs: notes in review order (answered first, in the
        order they were answered, then the queue) and where to resume."""
        with self.lock:
            queue = queue_order(self.reviewable(), set(self.answers), self.order, self.seed)
            sequence = list(self.answer_order) + queue
            by_id = self._by_id()
            return {
                "notes": [by_id[k].to_json(self.answers.get(k)) for k in sequence],
                "resume": len(self.answer_order),
                "stats": self.stats(),
            }

    def _training_set(self) -> tuple[list[np.ndarray], list[int]]:
        """Feature rows and target index of every note with an answer, or with gold
        in labels.jsonl; the user's answer wins over the old gold."""
        Xs, ys = [], []
        for it in self.items:
            a = self.answers.get(it.id)
            if a is not None:
                t = _target(it, a.label_id)
            elif it.gold is not False:
                t = _target(it, it.gold)  # type: ignore[arg-type]
            else:
                continue
            if t is not None and it.X is not None:
                Xs.append(it.X)
                ys.append(t)
        return Xs, ys

    def refit(self) -> dict:
        """Fit the matcher on the answers (plus gold already in labels.jsonl),
        recompute every note's probabilities and reorder the queue."""
        with self.lock:
            if len(self.answers) < MIN_ANSWERS_TO_REFIT:
                raise RefitError(f"refitting needs {MIN_ANSWERS_TO_REFIT} answers, have {len(self.answers)}")
            Xs, ys = self._training_set()
            if len(Xs) < MIN_ANSWERS_TO_REFIT:
                raise RefitError(
                    f"refitting needs {MIN_ANSWERS_TO_REFIT} answered notes with features, have {len(Xs)}"
                )
            m = match.fit(Xs, ys)
            for it in self.items:
                if it.X is not None:
                    it.probs = m.probs(it.X)
            self.matcher_source = m.source
            if self.matcher_out is not None:
                m.save(self.matcher_out)
        return self.state()


def _short(value: object, limit: int = 40) -> str:
    """A repr short enough to echo back in an error, whatever size the client sent."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
