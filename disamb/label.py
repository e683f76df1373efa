"""Turn per-clip results into labels: features per candidate, the matcher (fitted on
gold when there is enough), the one-to-one assignment, calibration and acceptance.
Produces the records of labels.jsonl and the run summary.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import match
from .cache import ClipResult, write_atomic
from .chats import VoiceNote
from .clips import ClipOutcome
from .textsim import FILLER_WORDS, normalize, render_spoken, text_features


@dataclass
class MatchOptions:
    window: int = 10
    assign: bool = True
    prior: bool = True  # subtract each text's likelihood under silent audio (PMI)
    refit: bool = True  # fit the matcher on gold when there is enough of it
    matcher: Path | None = None  # weights to start from instead of the shipped defaults
    min_confidence: float | None = None
    target_precision: float | None = None
    folds: int = 5
    seed: int = 0
    base_strength: float = 20.0  # how many gold notes the starting weights are worth (0: ignore them)
    truncated: frozenset[str] = frozenset()  # candidate texts cut to fit the decoder context


DEFAULT_MIN_CONFIDENCE = 0.9


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
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def candidate_features(
    note: VoiceNote, clip: ClipResult, prior: dict[str, tuple[float, int]] | None, window: int
) -> tuple[np.ndarray, list[dict[str, float]]]:
    """One row of match.FEATURES per candidate, plus the same as dicts for the output."""
    rows, dicts = [], []
    best = [_best_scores(cand.text, clip, prior) for cand in note.candidates]
    transcript = clip.transcript
    if transcript is None:
        # --mode score skipped transcription because the likelihood was sure: compare
        # against the rendering the likelihood prefers instead.
        transcript = max(best, key=lambda b: (b[1], b[0]))[3] if best else ""
    for j, cand in enumerate(note.candidates):
        total, pmi, pmi_typed, _ = best[j]
        chars = max(1, len(normalize(cand.text)))
        f = {
            "lik_per_char": total / chars,
            "lik_sum": total,
            "lik_prior": pmi,
            "pmi_per_char": pmi / chars,
            "pmi_typed": pmi_typed,
            "log_chars": math.log(chars),
            **text_features(transcript, cand.text),
            "position": j / max(window, 1),
            "gap": (math.log1p(max(0.0, cand.ts - note.ts)) / 5.0) if cand.ts is not None and note.ts is not None else 0.0,
        }
        dicts.append({k: round(float(v), 4) for k, v in f.items()})
        rows.append([f[name] for name in match.FEATURES])
    return np.asarray(rows, float).reshape(len(rows), len(match.FEATURES)), dicts


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


FILLER_PENALTY = 1.0  # nats per filler word a rendering assumes the typist added


def _best_scores(text: str, clip: ClipResult, prior: dict[str, tuple[float, int]] | None):
    """(summed log-lik, PMI, PMI as typed, rendering) of a candidate.

    Each statistic takes its own best rendering, since we cannot know how the speaker
    said it. A rendering that drops filler words ("ok", "code") pays FILLER_PENALTY per
    word, so "see you at 5 ok?" cannot tie with "see you at 5" when only the latter
    was said, while "1158 ok" still wins on a spoken "one one five eight". Without a
    prior the PMI columns are 0.
    """
    renderings = render_spoken(text)
    fillers = _filler_count(text)
    scored = []
    for r in renderings:
        if r in clip.scores:
            total = clip.scores[r][0]
            penalty = FILLER_PENALTY * max(0, fillers - _filler_count(r))
            scored.append((r, total - penalty))
    if not scored:
        return -100.0, 0.0, 0.0, ""
    r_lik, total = max(scored, key=lambda x: x[1])
    gains = [(r, t - prior[r][0]) for r, t in scored if prior is not None and r in prior]
    if not gains:
        return total, 0.0, 0.0, r_lik
    r_pmi, pmi = max(gains, key=lambda g: g[1])
    # the text as typed (only cleaned, nothing dropped)
    base = gains[0][1] if gains[0][0] == renderings[0] else pmi
    return total, pmi, base, r_pmi


def _filler_count(text: str) -> int:
    return sum(w in FILLER_WORDS for w in normalize(text).split())


@dataclass
class _Scored:
    note: VoiceNote
    X: np.ndarray | None
    feats: list[dict]
    clip: ClipResult | None
    error: str | None


def label_notes(
    notes: list[VoiceNote],
    outcomes: dict[str, ClipOutcome],
    options: MatchOptions,
    prior: dict[str, tuple[float, int]] | None = None,
) -> tuple[list[dict], Summary, match.Matcher]:
    """Labels for all notes (input order), the run summary and the matcher used."""
    scored: list[_Scored] = []
    for note in notes:
        oc = outcomes.get(note.id)
        if oc is None or oc.result is None:
            scored.append(_Scored(note, None, [], None, oc.error if oc else "not processed"))
            continue
        silent = no_speech_reason(oc.result)
        if silent:  # silence, noise or music: every candidate would get a confident but meaningless label
            scored.append(_Scored(note, None, [], oc.result, silent))
            continue
        X, feats = candidate_features(note, oc.result, prior, options.window)
        scored.append(_Scored(note, X, feats, oc.result, None))
    ok = [s for s in scored if s.X is not None and len(s.note.candidates) > 0]
    summary = Summary(notes=len(notes), errors=len(scored) - len(ok))

    base = match.Matcher.load(options.matcher) if options.matcher else match.default_matcher()
    gold = [i for i, s in enumerate(ok) if s.note.has_gold]
    probs, matcher = _probabilities(ok, gold, base, options, summary)

    cand_ids = [[c.id for c in s.note.candidates] for s in ok]
    decisions = match.assign(probs, cand_ids) if options.assign else match.decide_independently(probs)

    # calibrate the post-assignment confidence on gold when there is enough of it
    platt = matcher.platt
    if len(gold) >= match.MIN_GOLD_TO_FIT and options.refit:
        conf = np.array([decisions[i].confidence for i in gold])
        correct = np.array([_is_correct(ok[i].note, decisions[i]) for i in gold], float)
        platt = match.fit_platt(conf, correct)
    confidences = [match.apply_platt(d.confidence, platt) if d.index is not None else 0.0 for d in decisions]

    _choose_threshold(ok, gold, decisions, confidences, options, summary)

    by_id = {id(s): k for k, s in enumerate(ok)}
    records = []
    for s in scored:
        k = by_id.get(id(s))
        records.append(_record(s, None if k is None else (probs[k], decisions[k], confidences[k]), summary))
    for rec in records:  # scored on a cut text: say so, the text itself stays whole
        for c in rec["candidates"]:
            if c["text"] in options.truncated:
                c["truncated"] = True
    _gold_summary(records, notes, summary)
    summary.matcher = matcher.source
    matcher.platt = platt
    return records, summary, matcher


def _probabilities(ok, gold, base: match.Matcher, options: MatchOptions, summary: Summary):
    """Per-note probabilities; gold notes get out-of-fold ones so their scores are honest."""
    if len(gold) < match.MIN_GOLD_TO_FIT or not options.refit:
        return [base.probs(s.X) for s in ok], base
    Xs = [ok[i].X for i in gold]
    ys = [_gold_index(ok[i].note) for i in gold]
    folds = match.fold_ids(len(gold), min(options.folds, len(gold)), options.seed)
    oof_logits: list[np.ndarray] = [None] * len(gold)  # type: ignore[list-item]
    for k in range(folds.max() + 1):
        train = [j for j in range(len(gold)) if folds[j] != k]
        m = match.fit([Xs[j] for j in train], [ys[j] for j in train], base=base, base_strength=options.base_strength)
        for j in range(len(gold)):
            if folds[j] == k:
                oof_logits[j] = m.logits(Xs[j])
    temperature = match.fit_temperature(oof_logits, ys)
    oof_logits = [z / temperature for z in oof_logits]
    # The gold decides whether refitting is worth it: the starting weights never saw it,
    # so their log-loss on it is as honest as the refit's out-of-fold one. A small gold
    # subset can fit noise, and a worse fit would also be a worse-calibrated one.
    base_logits = [base.logits(x) for x in Xs]
    base_loss, refit_loss = match.log_loss(base_logits, ys), match.log_loss(oof_logits, ys)
    if base_loss <= refit_loss:
        summary.cv_accuracy = match.top1_accuracy(base_logits, ys)
        summary.extra["refit"] = (
            f"kept {base.source} weights: log-loss on gold {base_loss:.3f} "
            f"vs {refit_loss:.3f} refitted (cross-validated)"
        )
        return [base.probs(s.X) for s in ok], base
    final = match.fit(Xs, ys, base=base, base_strength=options.base_strength)
    final.temperature = temperature
    summary.cv_accuracy = match.top1_accuracy(oof_logits, ys)
    probs = [final.probs(s.X) for s in ok]
    for j, i in enumerate(gold):
        probs[i] = match.softmax(oof_logits[j])
    return probs, final


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
        summary.extra["threshold_note"] = "too little gold for --target-precision; default threshold used"
    summary.threshold, summary.threshold_source = DEFAULT_MIN_CONFIDENCE, "default"


def _record(s: _Scored, decided, summary: Summary) -> dict:
    note = s.note
    rec: dict = {"id": note.id, "file": note.file, "transcript": s.clip.transcript if s.clip else None}
    cands = []
    for j, c in enumerate(note.candidates):
        entry = {"id": c.id, "text": c.text, "prob": None}
        if decided is not None:
            entry["prob"] = round(float(decided[0][j]), 4)
            entry["features"] = s.feats[j]
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
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    write_atomic(Path(path), text)
