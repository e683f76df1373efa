"""How good are the labels? Metrics on the gold subset, and the truth they are measured against.

A user with a small gold subset needs to know, before training on many pseudo-labels,
how many of them are wrong and where: accuracy with an honest interval, what each
confidence threshold buys in precision and costs in coverage, whether the confidences
mean what they say, how good the transcripts are, and the confident mistakes to look at.

Everything here is a plain function over lists of labels.jsonl records, so the same
numbers feed the rich tables, `--json` and the HTML report (report.py draws them); the
metrics themselves, arrays in and numbers out, are metrics.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .chats import loose_text
from .metrics import (DEFAULT_BINS, ece_if_calibrated, expected_calibration_error, reliability_table, risk_coverage,
                      transcript_error_rates, wilson_interval)

OTHER_THRESHOLDS: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
"""Thresholds always shown next to the chosen one."""

DEFAULT_WORST = 10


class EvalError(Exception):
    """Base class: evaluation cannot go on; the message says why in one line."""


class InputError(EvalError):
    """A labels or gold file cannot be read at all."""


class NoGoldError(EvalError):
    """There is nothing to compare the labels with."""


# ---------------------------------------------------------------- reading inputs


def _read_jsonl(path: Path, what: str) -> tuple[list[tuple[int, Any]], list[str]]:
    """(line, parsed object) for every parseable non-empty line, plus one problem per bad line."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a {what} file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text, expected a {what} file") from None
    items, problems = [], []
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"{path}:{no}: not JSON ({e.msg})")
            continue
        if not isinstance(obj, dict):
            problems.append(f"{path}:{no}: expected a JSON object")
            continue
        items.append((no, obj))
    if not items:
        detail = f"; first problem: {problems[0]}" if problems else ""
        raise InputError(f"{path}: no JSON object lines in {what} file{detail}")
    return items, problems


@dataclass
class LabelsRead:
    records: list[dict]
    problems: list[str] = field(default_factory=list)


def read_labels(path: Path) -> LabelsRead:
    """Records of a labels.jsonl, tolerant of older runs: only "id" is required per line.

    Missing fields get neutral values (no label, confidence 0, empty candidates);
    lines that are not objects with a string id are skipped and listed.
    """
    from .gold import record_problem

    items, problems = _read_jsonl(path, "labels.jsonl")
    records, seen = [], set()
    for no, obj in items:
        rid = obj.get("id")
        if not isinstance(rid, str) or not rid:
            problems.append(f"{path}:{no}: no string \"id\"")
            continue
        wrong = record_problem(obj)  # the types every later step relies on
        if wrong is not None:
            problems.append(f"{path}:{no}: {wrong}")
            continue
        if rid in seen:
            problems.append(f"{path}:{no}: duplicate id {rid!r}")
            continue
        seen.add(rid)
        records.append(obj)
    if not records:
        raise InputError(f"{path}: no usable labels ({len(problems)} lines skipped; first: {problems[0]})")
    return LabelsRead(records, problems)


@dataclass
class GoldEntry:
    """The truth for one note as a gold file states it; resolved against its candidates later."""

    note_id: str
    label_id: str | None = None
    label: str | None = None
    label_index: int | None = None
    not_in_window: bool = False  # a truth line with "label_id": null
    text: str | None = None  # a truth line's "text": what was typed, shown when it is not in the window
    spoken: str | None = None  # what was said, when the file knows it (for WER)
    where: str = ""


@dataclass
class GoldRead:
    entries: dict[str, GoldEntry]
    problems: list[str] = field(default_factory=list)


def read_gold(path: Path) -> GoldRead:
    """Gold from a chats.jsonl (voice notes with label_id/label), a manifest (label/label_index)
    or a truth file (lines {"id", "label_id"} with null for "not in the window", or {"id", "label"}).
    The gold.jsonl `disamb review` writes is such a truth file with a "ts" on each line; as
    in `answers.read_answers` (its reader for `label --gold` and `review`), a note's last
    answer wins there, where any other file's repeated id is reported.

    Text messages and notes without any label field are not gold and are ignored.
    """
    items, problems = _read_jsonl(path, "gold")
    entries: dict[str, GoldEntry] = {}
    for no, obj in items:
        where = f"{path}:{no}"
        kind = obj.get("type")
        if kind == "text":
            continue
        is_chat = kind is not None
        is_manifest = "candidates" in obj
        is_answer = "ts" in obj and not is_chat and not is_manifest  # a line of `disamb review`'s gold.jsonl
        if not any(k in obj for k in ("label_id", "label", "label_index")):
            continue
        gid = obj.get("id")
        if not isinstance(gid, str) or not gid:
            problems.append(f"{where}: no string \"id\"")
            continue
        e = GoldEntry(note_id=gid, where=where)
        lid, lab, lix = obj.get("label_id"), obj.get("label"), obj.get("label_index")
        if isinstance(lid, str) and lid:
            e.label_id = lid
        elif isinstance(lix, int) and not isinstance(lix, bool):
            e.label_index = lix
        elif isinstance(lab, str) and lab.strip():
            e.label = lab
        elif "label_id" in obj and lid is None and not is_chat and not is_manifest:
            e.not_in_window = True
        elif lid is None and lab is None and lix is None:
            continue  # an explicit "no gold here" in a chat or manifest
        else:
            problems.append(f"{where}: unusable gold value")
            continue
        if not is_chat and not is_manifest:
            text, spoken = obj.get("text"), obj.get("spoken", obj.get("text"))
            e.text = text if isinstance(text, str) and text.strip() else None
            e.spoken = spoken if isinstance(spoken, str) and spoken.strip() else None
        if gid in entries and is_answer:  # a later answer is the reviewer's correction
            del entries[gid]
        elif gid in entries:
            problems.append(f"{where}: duplicate gold id {gid!r} (first at {entries[gid].where})")
            continue
        entries[gid] = e
    return GoldRead(entries, problems)


# ---------------------------------------------------------------- per-note outcomes


def _candidates(rec: dict) -> list[tuple[str, str]]:
    """(id, text) of a record's candidates; positional ids when an older run stored none."""
    out = []
    cands = rec.get("candidates")
    if not isinstance(cands, list):
        return out
    for i, c in enumerate(cands):
        if isinstance(c, dict):
            cid = c.get("id") if isinstance(c.get("id"), str) else f"{rec['id']}#{i}"
            out.append((cid, c.get("text") if isinstance(c.get("text"), str) else ""))
        elif isinstance(c, str):
            out.append((f"{rec['id']}#{i}", c))
    return out


def _match_text(label: str, cands: list[tuple[str, str]]) -> str | None:
    """Id of the candidate whose text is the label: exactly, else in the loose form.

    The same rule `disamb label` applies to a chat's gold text (chats.loose_text: case,
    punctuation, spacing), so a label resolves to the same message in both. The matcher's
    canonical form is too loose for this: it makes "1158" and "1 1 5 8" one text, and
    a window holding both would resolve to whichever comes first.
    """
    for cid, text in cands:
        if text == label:
            return cid
    want = loose_text(label)
    if not want:
        return None
    for cid, text in cands:
        if loose_text(text) == want:
            return cid
    return None


@dataclass
class Truth:
    """Resolved gold for one note: the right candidate id, or None when the truth is not in the window."""

    label_id: str | None
    in_window: bool
    text: str | None  # the right text (typed message or given label), when known
    spoken: str | None  # what was said, when known
    source: str  # "labels" or "gold file"


def _truth_from_record(rec: dict, cands: list[tuple[str, str]]) -> Truth | None:
    texts = dict(cands)
    gid = rec.get("gold_label_id")
    if isinstance(gid, str) and gid:
        if gid in texts:
            return Truth(gid, True, texts[gid], None, "labels")
        return Truth(None, False, rec.get("gold_text"), None, "labels")
    if rec.get("gold_in_window") is False:
        gt = rec.get("gold_text")
        return Truth(None, False, gt if isinstance(gt, str) else None, None, "labels")
    return None


def _truth_from_entry(e: GoldEntry, cands: list[tuple[str, str]]) -> Truth | str:
    """Truth for the note, or a problem message."""
    texts = dict(cands)
    if e.label_id is not None:
        if e.label_id in texts:
            return Truth(e.label_id, True, texts[e.label_id], e.spoken, "gold file")
        return Truth(None, False, e.text, e.spoken, "gold file")
    if e.label_index is not None:
        if not 0 <= e.label_index < len(cands):
            return f"{e.where}: label_index {e.label_index} out of range ({len(cands)} candidates)"
        cid, text = cands[e.label_index]
        return Truth(cid, True, text, e.spoken, "gold file")
    if e.label is not None:
        cid = _match_text(e.label, cands)
        return Truth(cid, cid is not None, e.label if cid is None else texts[cid], e.spoken, "gold file")
    return Truth(None, False, e.text, e.spoken, "gold file")


@dataclass
class Outcome:
    """One gold note, scored."""

    id: str
    truth: Truth
    label_id: str | None
    label: str | None
    confidence: float
    accepted: bool
    error: str | None
    transcript: str | None

    @property
    def labelled(self) -> bool:
        return self.error is None and self.label_id is not None

    @property
    def correct(self) -> bool:
        """Right only when labelled with the true candidate; errors and wrong "no label"s are wrong."""
        return self.labelled and self.truth.in_window and self.label_id == self.truth.label_id


def _confidence(rec: dict) -> float:
    c = rec.get("confidence")
    if isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c):
        return min(1.0, max(0.0, float(c)))
    return 0.0


def _label_of(rec: dict, cands: list[tuple[str, str]]) -> tuple[str | None, str | None]:
    lid = rec.get("label_id")
    if isinstance(lid, str) and lid:
        return lid, rec.get("label") if isinstance(rec.get("label"), str) else dict(cands).get(lid)
    return None, None


def _threshold(records: list[dict], given: float | None) -> tuple[float | None, str]:
    if given is not None:
        return given, "--threshold"
    accepted = [_confidence(r) for r in records if r.get("accepted") is True and _label_of(r, [])[0]]
    if accepted:
        return min(accepted), "lowest confidence among accepted notes"
    if any("accepted" in r for r in records):
        return None, "no note was accepted"
    return None, "labels carry no \"accepted\" flag; pass --threshold"


# ---------------------------------------------------------------- the evaluation


def evaluate_labels(
    records: list[dict],
    gold: GoldRead | None = None,
    threshold: float | None = None,
    bins: int = DEFAULT_BINS,
    worst: int = DEFAULT_WORST,
) -> dict:
    """Every figure `disamb eval` shows, as one JSON-ready dict.

    Gold comes from the records (gold_label_id / gold_in_window) and, per note id, from
    `gold` when given, which takes precedence. Accuracy is over gold notes whose truth is
    among the candidates. Precision, coverage, the risk-coverage curve and calibration
    count every gold note, so a label given to a note whose truth is not in the window
    is a wrong label there. The chosen threshold is `threshold` or, when None, the
    lowest confidence among accepted notes (the labeller accepts at confidence >= its
    threshold, so that is the threshold it used, up to the gap to the next confidence).
    Raises NoGoldError when no note has gold.
    """
    by_id = {r["id"]: r for r in records}
    problems: list[str] = list(gold.problems) if gold else []
    unmatched = sorted(set(gold.entries) - set(by_id)) if gold else []

    outcomes: list[Outcome] = []
    for rec in records:
        cands = _candidates(rec)
        truth: Truth | None = None
        if gold and rec["id"] in gold.entries:
            got = _truth_from_entry(gold.entries[rec["id"]], cands)
            if isinstance(got, str):
                problems.append(got)
            else:
                truth = got
        if truth is None:
            truth = _truth_from_record(rec, cands)
        if truth is None:
            continue
        lid, ltext = _label_of(rec, cands)
        err = rec.get("error")
        outcomes.append(Outcome(
            id=rec["id"], truth=truth, label_id=lid, label=ltext, confidence=_confidence(rec),
            accepted=rec.get("accepted") is True, error=str(err) if err else None,
            transcript=rec.get("transcript") if isinstance(rec.get("transcript"), str) else None,
        ))
    if not outcomes:
        raise NoGoldError(_no_gold_message(gold, unmatched))

    thr, thr_source = _threshold(records, threshold)
    in_win = [o for o in outcomes if o.truth.in_window]
    out_win = [o for o in outcomes if not o.truth.in_window]
    labelled = [o for o in outcomes if o.labelled]
    conf = np.array([o.confidence for o in labelled], float)
    corr = np.array([o.correct for o in labelled], bool)

    accuracy = None
    if in_win:
        k = sum(o.correct for o in in_win)
        lo, hi = wilson_interval(k, len(in_win))
        accuracy = {"correct": k, "n": len(in_win), "value": k / len(in_win), "ci95": [lo, hi]}

    points = []
    candidates = ([thr] if thr is not None else []) + [t for t in OTHER_THRESHOLDS if t != thr]
    for t in sorted(set(candidates)):
        sel = conf >= t
        n_acc = int(sel.sum())
        right = int(corr[sel].sum())
        points.append({
            "threshold": t,
            "chosen": t == thr,
            "accepted": n_acc,
            "correct": right,
            "precision": right / n_acc if n_acc else None,
            "precision_ci95": list(wilson_interval(right, n_acc)) if n_acc else None,
            "coverage": n_acc / len(outcomes),
        })

    calibration = None
    if labelled:
        calibration = {
            "n": len(labelled),
            "bins": bins,
            "ece": expected_calibration_error(conf, corr, bins),
            "ece_if_calibrated": ece_if_calibrated(conf, bins),
            "mean_confidence": float(conf.mean()),
            "accuracy": float(corr.mean()),
            "table": reliability_table(conf, corr, bins),
        }

    refs, hyps = [], []
    ref_kinds = {"spoken": 0, "typed": 0}
    for o in outcomes:
        ref = o.truth.spoken or o.truth.text
        if ref and o.transcript is not None and o.error is None:
            refs.append(ref)
            hyps.append(o.transcript)
            ref_kinds["spoken" if o.truth.spoken else "typed"] += 1
    transcripts = transcript_error_rates(refs, hyps) | {"references": ref_kinds} if refs else None

    mistakes = sorted((o for o in labelled if not o.correct), key=lambda o: (-o.confidence, o.id))
    worst_rows = [{
        "id": o.id,
        "confidence": o.confidence,
        "accepted": o.accepted,
        "transcript": o.transcript,
        "chosen_id": o.label_id,
        "chosen": o.label,
        "true_id": o.truth.label_id,
        "true": o.truth.text,
        "true_in_window": o.truth.in_window,
    } for o in mistakes[:worst]]

    return {
        "notes": len(records),
        "labelled": sum(1 for r in records if _label_of(r, [])[0] and not r.get("error")),
        "accepted": sum(1 for r in records if r.get("accepted") is True),
        "errors": sum(1 for r in records if r.get("error")),
        "threshold": {"value": thr, "source": thr_source},
        "gold": {
            "notes": len(outcomes),
            "from_labels": sum(o.truth.source == "labels" for o in outcomes),
            "from_gold_file": sum(o.truth.source == "gold file" for o in outcomes),
            "in_window": len(in_win),
            "not_in_window": len(out_win),
            "not_in_window_labelled": sum(o.labelled for o in out_win),
            "not_in_window_accepted": sum(o.labelled and o.accepted for o in out_win),
            "errors": sum(o.error is not None for o in outcomes),
            "in_window_unlabelled": sum(not o.labelled and o.error is None for o in in_win),
            "unmatched_ids": unmatched,
        },
        "accuracy": accuracy,
        "operating_points": points,
        "risk_coverage": risk_coverage(conf, corr, total=len(outcomes)) if labelled else [],
        "calibration": calibration,
        "transcripts": transcripts,
        "worst": worst_rows,
        "scored": [{"id": o.id, "confidence": o.confidence, "correct": o.correct,
                    "labelled": o.labelled, "in_window": o.truth.in_window} for o in outcomes],
        "problems": problems,
    }


def _no_gold_message(gold: GoldRead | None, unmatched: list[str]) -> str:
    if gold is not None and gold.entries:
        return (f"none of the {len(gold.entries)} gold ids matches a note in the labels "
                f"(e.g. {', '.join(unmatched[:3])}); is the gold file for this run?")
    if gold is not None:
        return ("the gold file has no gold: give lines {\"id\": <voice note id>, \"label_id\": <id of the right "
                "text message>} or {\"id\", \"label\": <the right text>}")
    return ("no gold notes in the labels: add \"label_id\" (the id of the right text message) to some voice "
            "notes in chats.jsonl and rerun disamb label, or pass --gold truth.jsonl with lines "
            "{\"id\": <voice note id>, \"label_id\": <message id>}")
