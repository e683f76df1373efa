"""Turn per-clip results into labels: the matcher (chosen on gold when there is
enough), the window prior learned from the run, the one-to-one assignment, calibration
and acceptance. Produces the records of labels.jsonl and the run summary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import match
from .cache import ClipResult
from .files import write_jsonl
from .chats import MAX_TEXT_CHARS, VoiceNote
from .clips import ClipOutcome
from .features import FEATURES, MINIMAL, candidate_features, slots
from .textsim import render_spoken
from .window_prior import WindowPrior, fit_window_prior


@dataclass
class MatchOptions:
    assign: bool = True
    prior: bool = True  # subtract each text's likelihood under silent audio (PMI)
    position_prior: bool = True  # learn where in the window this chat's answers sit (EM)
    refit: bool = True  # let the gold choose among the starting weights, a refit and a minimal model
    matcher: Path | None = None  # weights to start from instead of the shipped defaults
    min_confidence: float | None = None
    target_precision: float | None = None
    folds: int = 5
    seed: int = 0


DEFAULT_MIN_CONFIDENCE = 0.9


@dataclass
class Heard:
    """A second model's clip results on the same notes, averaged into the features with
    `weight` (adapt.py: the unadapted model's, beside the adapted one's)."""

    outcomes: dict[str, ClipOutcome]
    prior: dict[str, tuple[float, int]] | None
    weight: float


@dataclass
class Summary:
    notes: int = 0
    labelled: int = 0
    accepted: int = 0
    errors: int = 0
    skipped_lines: int = 0
    short_windows: int = 0
    gold: int = 0
    gold_in_window: int = 0
    gold_correct: int = 0
    gold_accuracy: float | None = None  # on gold notes whose truth is in the window
    gold_accepted: int = 0
    gold_accepted_correct: int = 0
    threshold: float = DEFAULT_MIN_CONFIDENCE
    threshold_source: str = "default"
    coverage: float | None = None
    matcher: str = "default"
    cv_accuracy: float | None = None
    matcher_losses: dict | None = None  # cross-validated log-loss on gold of each choice
    matcher_errors: dict | None = None  # cross-validated gold notes each choice got wrong
    matcher_choice: str | None = None  # which of them the gold chose
    window_prior: dict | None = None  # estimated share of answers per position and gap bin
    adapt: list[dict] | None = None  # --adapt: per round, training losses, gold before/after, seconds
    remarks: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


NO_SPEECH_PROB = 0.6  # Whisper's own no_speech_threshold ...
NO_SPEECH_LOGPROB = -1.0  # ... together with its logprob_threshold
NO_SPEECH_SURE = 0.9  # this sure of no speech, a fluent transcript is the usual "you" hallucination


def no_speech_reason(clip: ClipResult) -> str | None:
    """Why the clip holds no speech to match, or None when it does (Whisper's silence rule)."""
    p, lp = clip.no_speech_prob, clip.avg_logprob
    if p is None or lp is None:
        return None
    if (p > NO_SPEECH_PROB and lp < NO_SPEECH_LOGPROB) or p > NO_SPEECH_SURE:
        return f"no speech detected (no_speech_prob {p:.2f}, avg_logprob {lp:.2f})"
    return None


@dataclass
class _Note:
    """One note on its way to a record: its features, or why it has none."""

    note: VoiceNote
    X: np.ndarray | None
    feats: list[dict]
    clip: ClipResult | None
    error: str | None
    slots: np.ndarray | None = None
    best: int | None = None  # the candidate the evidence puts first on every count (match.dominant)


def label_notes(
    notes: list[VoiceNote],
    outcomes: dict[str, ClipOutcome],
    options: MatchOptions,
    prior: dict[str, tuple[float, int]] | None = None,
    truncated: frozenset[str] = frozenset(),
    priors_by_note: dict[str, dict[str, tuple[float, int]]] | None = None,
    also: Heard | None = None,
) -> tuple[list[dict], Summary, match.Matcher]:
    """Labels for all notes (input order), the run summary and the matcher used.

    `priors_by_note` (note id -> text priors) replaces `prior` for the notes it names:
    cross-fitted adaptation (adapt.py) scores each fold with its own model.

    `truncated`: candidate texts that were cut to fit the decoder context when scored
    (see truncated_texts); their records say so, the text itself stays whole.

    `also`: a second model's results; where it heard the note too, each feature is the
    weighted mean of the two models' (the matcher is linear, so its logits are too).
    """
    scored: list[_Note] = []
    for note in notes:
        oc = outcomes.get(note.id)
        if oc is None or oc.result is None:
            scored.append(_Note(note, None, [], None, oc.error if oc else "not processed"))
            continue
        silent = no_speech_reason(oc.result)
        if silent:  # silence, noise or music: every candidate would get a confident but meaningless label
            scored.append(_Note(note, None, [], oc.result, silent))
            continue
        note_prior = priors_by_note.get(note.id, prior) if priors_by_note is not None else prior
        X, feats = candidate_features(note, oc.result, note_prior)
        if also is not None:
            X, feats = _blend(note, X, feats, also)
        scored.append(_Note(note, X, feats, oc.result, None, slots(note), match.dominant(X)))
    ok = [s for s in scored if s.X is not None and len(s.note.candidates) > 0]
    summary = Summary(notes=len(notes), errors=len(scored) - len(ok))
    cut = {c.id for n in notes for c in n.candidates if c.chars is not None}
    if cut:
        summary.remarks.append(f"{len(cut)} candidate texts longer than {MAX_TEXT_CHARS:,} characters were cut "
                               "to that length (marked \"truncated\" with \"text_chars\" in the output)")

    base = match.Matcher.load(options.matcher) if options.matcher else match.default_matcher()
    gold = [i for i, s in enumerate(ok) if s.note.has_gold]
    probs, matcher = _probabilities(ok, gold, base, options, summary)

    cand_ids = [[c.id for c in s.note.candidates] for s in ok]
    decisions = match.assign(probs, cand_ids) if options.assign else match.decide_independently(probs)

    # calibrate the post-assignment confidence on gold when there is enough of it,
    # starting from the matcher's own map
    platt = matcher.platt
    if len(gold) >= match.MIN_GOLD_TO_FIT and options.refit:
        conf = np.array([decisions[i].confidence for i in gold])
        correct = np.array([_is_correct(ok[i].note, decisions[i]) for i in gold], float)
        platt = match.fit_platt(conf, correct, prior=matcher.platt)
    confidences = [match.apply_platt(d.confidence, platt) if d.index is not None else 0.0 for d in decisions]

    _choose_threshold(ok, gold, decisions, confidences, options, summary)

    by_id = {id(s): k for k, s in enumerate(ok)}
    records = []
    for s in scored:
        k = by_id.get(id(s))
        records.append(_record(s, None if k is None else (probs[k], decisions[k], confidences[k]), summary, truncated))
    _gold_summary(records, notes, summary)
    summary.matcher = matcher.source
    matcher.platt = platt
    return records, summary, matcher


def _blend(note: VoiceNote, X: np.ndarray, feats: list[dict], also: Heard) -> tuple[np.ndarray, list[dict]]:
    """Features averaged with `also`'s on the same note; unchanged where it has no usable clip."""
    oc = also.outcomes.get(note.id)
    if oc is None or oc.result is None or no_speech_reason(oc.result):
        return X, feats
    X2, feats2 = candidate_features(note, oc.result, also.prior)
    w = also.weight
    mixed = [{k: round((1 - w) * v + w * f2[k], 4) if k in f2 else v for k, v in f.items()} for f, f2 in zip(feats, feats2)]
    return (1 - w) * X + w * X2, mixed


def _probabilities(ok: list[_Note], gold: list[int], base: match.Matcher, options: MatchOptions, summary: Summary):
    """Per-note probabilities (candidates then none) and the matcher behind them.

    With enough gold, the gold chooses among the starting weights, a refit and a minimal
    model, each with a temperature fitted on the gold (`_scaled_on_gold`, `_cross_fitted`),
    by cross-validated errors, then log-loss (`_choose`); gold notes then get out-of-fold
    probabilities, so their scores are honest. The window prior is learned from all
    notes with the evidence of the matcher in use.

    Gold notes whose message is not in the window take no part in fitting, scaling or
    choosing the matcher (they still count in the Platt map and the gold accuracy): they
    say nothing about which candidate the evidence favours, and no weight on these
    features tells them apart, so the fit could only flatten every note. Measured on
    1,000 codes-phone notes with 2-7 such notes added to its 100 gold: errors 137 →
    139-146 and in-window ECE 0.031 → 0.069-0.100 when they took part, 137 and
    0.030-0.036 now.
    """
    known = {i: _gold_index(ok[i].note) for i in gold}
    logits = [base.logits(s.X) for s in ok]
    prior = _window_prior(ok, logits, known, options)
    teach = [i for i in gold if known[i] < len(ok[i].X)]
    if len(teach) < match.MIN_GOLD_TO_FIT or not options.refit:
        return _final(ok, logits, prior, summary), base
    offsets = [_offsets(ok[i], prior) for i in teach]
    ys = [known[i] for i in teach]
    start = _scaled_on_gold(base, [logits[i] for i in teach], offsets, ys)
    choices = {"starting weights": ([start.logits(ok[i].X) for i in teach], start, None)}
    for name, use in (("refit", FEATURES), ("minimal", MINIMAL)):
        oof, temperature = _cross_fitted(ok, teach, ys, offsets, use, options)
        final = match.fit([ok[i].X for i in teach], ys, offsets, use=use)
        final.temperature = temperature
        final.source = f"{name} on {len(teach)} gold notes"
        choices[name] = (oof, final, temperature)
    losses = {name: match.log_loss([z + o for z, o in zip(c[0], offsets)], ys) for name, c in choices.items()}
    errors = {name: _errors(c[0], offsets, ys) for name, c in choices.items()}
    name = _choose(losses, errors)
    oof, chosen, _ = choices[name]
    summary.matcher_losses = {k: round(v, 4) for k, v in losses.items()}
    summary.matcher_errors, summary.matcher_choice = errors, name
    summary.cv_accuracy = 1.0 - errors[name] / len(ys)
    if chosen is base:
        return _final(ok, logits, prior, summary), base
    logits = [chosen.logits(s.X) for s in ok]  # gold lacking its message: never fitted on, so honest too
    if chosen is not start:
        for j, i in enumerate(teach):
            logits[i] = oof[j]
    prior = _window_prior(ok, logits, known, options)
    return _final(ok, logits, prior, summary), chosen


def _scaled_on_gold(base: match.Matcher, logits: list[np.ndarray], offsets, ys) -> match.Matcher:
    """The starting weights with a temperature fitted on the gold, as the refit and the
    minimal model get theirs (`_cross_fitted`), so the gold compares three models on one
    footing. One number, fitted on the gold as theirs is; the weights never were.

    Their own temperature was fitted on other notes than this run's, and after `--adapt`
    on other features too (the mean of two models'): on 1,000 codes-phone notes the
    unscaled weights were kept on an error tie and left the run under-confident (ECE
    0.046; scaled, 0.031). With every gold note right either way the fit has no optimum
    (sharper is always better), so the weights stay as they are. `logits`: theirs on the gold.
    """
    if _errors(logits, offsets, ys) == 0:
        return base
    t = match.fit_temperature(logits, ys, offsets)
    return replace(base, temperature=base.temperature * t, source=f"{base.source}, temperature x{t:.3f} from the gold")


def _errors(logits, offsets, ys) -> int:
    return sum(int(np.argmax(z + o)) != y for z, o, y in zip(logits, offsets, ys))


def _choose(losses: dict[str, float], errors: dict[str, int]) -> str:
    """The starting weights unless another choice gets more gold notes right out of fold;
    among those with the fewest errors, the lowest log-loss.

    With every gold note right either way, a refit on a few dozen separable notes wins
    any log-loss comparison by growing its weights, and then loses notes the gold never
    showed it (benchmark family chat-late-flite: 38 gold notes, refit loss 0.0001 against
    the starting weights' 0.05, and 4 more mistakes on the other 212 notes).
    """
    fewest = min(errors.values())
    if errors["starting weights"] == fewest:
        return "starting weights"
    return min((n for n in losses if errors[n] == fewest), key=losses.get)


def _cross_fitted(ok, gold, ys, offsets, use, options: MatchOptions):
    """Out-of-fold logits of a matcher fitted on the other folds of the gold, temperature-scaled."""
    folds = match.fold_ids(len(gold), min(options.folds, len(gold)), options.seed)
    oof: list[np.ndarray] = [None] * len(gold)  # type: ignore[list-item]
    for k in range(folds.max() + 1):
        train = [j for j in range(len(gold)) if folds[j] != k]
        m = match.fit([ok[gold[j]].X for j in train], [ys[j] for j in train], [offsets[j] for j in train], use=use)
        for j in range(len(gold)):
            if folds[j] == k:
                oof[j] = m.logits(ok[gold[j]].X)
    temperature = match.fit_temperature(oof, ys, offsets)
    return [z / temperature for z in oof], temperature


def _window_prior(ok, logits, known, options: MatchOptions) -> WindowPrior | None:
    if not options.position_prior or not ok:
        return None
    return fit_window_prior(logits, [s.slots for s in ok], known, [s.best for s in ok])


def _offsets(s: _Note, prior: WindowPrior | None) -> np.ndarray:
    return np.append(prior.logits(s.slots, s.best), 0.0) if prior is not None else np.zeros(len(s.X) + 1)


def _final(ok, logits, prior, summary: Summary) -> list[np.ndarray]:
    if prior is not None:
        summary.window_prior = prior.as_dict()
    return [match.softmax(z + _offsets(s, prior)) for s, z in zip(ok, logits)]


def _gold_index(note: VoiceNote) -> int:
    """Index of the gold candidate, or len(candidates) for "not in the window"."""
    if note.gold_in_window and note.gold_label_id is not None:
        for j, c in enumerate(note.candidates):
            if c.id == note.gold_label_id:
                return j
    return len(note.candidates)


def _is_correct(note: VoiceNote, d: match.Decision) -> bool:
    return (d.index if d.index is not None else len(note.candidates)) == _gold_index(note)


def _choose_threshold(ok, gold, decisions, confidences, options: MatchOptions, summary: Summary) -> None:
    if options.min_confidence is not None:
        summary.threshold, summary.threshold_source = options.min_confidence, "--min-confidence"
        return
    labelled_gold = [i for i in gold if decisions[i].index is not None]
    if options.target_precision is not None and len(labelled_gold) >= 10:
        conf = np.array([confidences[i] for i in labelled_gold])
        correct = np.array([_is_correct(ok[i].note, decisions[i]) for i in labelled_gold])
        t, prec, cov = match.threshold_for_precision(conf, correct, options.target_precision)
        summary.threshold = t
        summary.threshold_source = (
            f"target precision {options.target_precision:g} on gold"
            + ("" if t <= 1.0 else " (not reachable: nothing accepted)")
        )
        return
    if options.target_precision is not None:
        summary.remarks.append("too little gold for --target-precision; default threshold used")
    summary.threshold, summary.threshold_source = DEFAULT_MIN_CONFIDENCE, "default"


def _record(s: _Note, decided, summary: Summary, truncated: frozenset[str] = frozenset()) -> dict:
    note = s.note
    rec: dict = {"id": note.id, "file": note.file, "transcript": s.clip.transcript if s.clip else None}
    cands = []
    for j, c in enumerate(note.candidates):
        entry = {"id": c.id, "text": c.text, "prob": None}
        if c.chars is not None:  # cut when read: the record says so and how long it was
            entry.update(truncated=True, text_chars=c.chars)
        if decided is not None:
            entry["prob"] = round(float(decided[0][j]), 4)
            entry["features"] = s.feats[j]
        if c.text in truncated:  # scored on a cut text
            entry["truncated"] = True
        cands.append(entry)
    rec["candidates"] = cands
    label_id = label = None
    confidence = 0.0
    if decided is not None:
        probs, d, conf = decided
        rec["prob_none"] = round(float(probs[-1]), 4)
        if d.index is not None:
            label_id, label, confidence = note.candidates[d.index].id, note.candidates[d.index].text, conf
    rec.update(
        label_id=label_id,
        label=label,
        confidence=round(float(confidence), 4),
        accepted=bool(label_id is not None and confidence >= summary.threshold),
        gold_label_id=note.gold_label_id,
    )
    if note.has_gold and not note.gold_in_window:
        rec["gold_text"] = note.gold_text
        rec["gold_in_window"] = False
    if s.error:
        rec["error"] = s.error
    if s.clip is not None:
        rec["duration"] = round(s.clip.seconds, 2)
    return rec


def _gold_summary(records: list[dict], notes: list[VoiceNote], summary: Summary) -> None:
    summary.labelled = sum(r["label_id"] is not None for r in records)
    summary.accepted = sum(r["accepted"] for r in records)
    for r, note in zip(records, notes):
        if not note.has_gold:
            continue
        summary.gold += 1
        if note.gold_in_window:
            summary.gold_in_window += 1
            right = r["label_id"] == note.gold_label_id
            summary.gold_correct += right
            if r["accepted"]:
                summary.gold_accepted += 1
                summary.gold_accepted_correct += right
    if summary.gold_in_window:
        summary.gold_accuracy = summary.gold_correct / summary.gold_in_window
    if summary.notes:
        summary.coverage = summary.accepted / summary.notes


def truncated_texts(lm, notes: list[VoiceNote]) -> frozenset[str]:
    """Candidate texts with a spoken rendering longer than Whisper's context (scored cut short)."""
    from .asr import is_truncated

    texts = {c.text for n in notes for c in n.candidates}
    return frozenset(t for t in texts if any(is_truncated(lm, r) for r in render_spoken(t)))


def write_labels(path: Path, records: list[dict]) -> None:
    """labels.jsonl, one object per note in input order, written atomically."""
    write_jsonl(Path(path), records)
