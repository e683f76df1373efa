"""How good are the labels? Metrics on the gold subset, as tables, JSON and a plot report.

A user with a small gold subset needs to know, before training on many pseudo-labels,
how many of them are wrong and where: accuracy with an honest interval, what each
confidence threshold buys in precision and costs in coverage, whether the confidences
mean what they say, how good the transcripts are, and the confident mistakes to look at.

Everything here is a plain function over lists of labels.jsonl records, so the same
numbers feed the rich tables, `--json` and the HTML report.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

import jiwer
import numpy as np

from .textsim import normalize

OTHER_THRESHOLDS: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
"""Thresholds always shown next to the chosen one."""

DEFAULT_BINS = 10
DEFAULT_WORST = 10


class EvalError(Exception):
    """Base class: evaluation cannot go on; the message says why in one line."""


class InputError(EvalError):
    """A labels or gold file cannot be read at all."""


class NoGoldError(EvalError):
    """There is nothing to compare the labels with."""


# ---------------------------------------------------------------- pure metrics


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials.

    Unlike the normal approximation it stays inside [0, 1] and is sensible at
    k = 0 or k = n, which is common on a small gold subset.
    """
    if n <= 0:
        raise ValueError(f"need at least one trial, got n={n}")
    if not 0 <= k <= n:
        raise ValueError(f"k must be between 0 and n={n}, got {k}")
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = (z / denom) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    lo = 0.0 if k == 0 else max(0.0, centre - half)  # exact at the edges, free of rounding
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def _bin_index(conf: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bins over [0, 1]; a confidence of exactly 1 falls in the last bin."""
    return np.clip(np.floor(conf * bins).astype(int), 0, bins - 1)


def _check_pairs(conf: Sequence[float], correct: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(conf, dtype=float).reshape(-1)
    y = np.asarray(correct, dtype=bool).reshape(-1)
    if c.shape != y.shape:
        raise ValueError(f"{len(c)} confidences but {len(y)} correctness values")
    if c.size and (np.isnan(c).any() or c.min() < 0 or c.max() > 1):
        raise ValueError("confidences must lie in [0, 1]")
    return c, y


def reliability_table(conf: Sequence[float], correct: Sequence[bool], bins: int = DEFAULT_BINS) -> list[dict]:
    """One row per equal-width confidence bin: range, count, mean confidence, accuracy.

    Empty bins are kept (count 0, None values) so the table always has `bins` rows.
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    c, y = _check_pairs(conf, correct)
    idx = _bin_index(c, bins)
    rows = []
    for b in range(bins):
        sel = idx == b
        n = int(sel.sum())
        rows.append({
            "lo": b / bins,
            "hi": (b + 1) / bins,
            "count": n,
            "confidence": float(c[sel].mean()) if n else None,
            "accuracy": float(y[sel].mean()) if n else None,
        })
    return rows


def expected_calibration_error(conf: Sequence[float], correct: Sequence[bool], bins: int = DEFAULT_BINS) -> float:
    """Count-weighted mean gap between confidence and accuracy over equal-width bins."""
    c, y = _check_pairs(conf, correct)
    if c.size == 0:
        raise ValueError("no confidences to calibrate")
    total = 0.0
    for row in reliability_table(c, y, bins):
        if row["count"]:
            total += row["count"] * abs(row["accuracy"] - row["confidence"])
    return total / c.size


def risk_coverage(conf: Sequence[float], correct: Sequence[bool], total: int | None = None) -> list[dict]:
    """Accuracy of the most confident notes, for every coverage the confidences allow.

    Notes are taken in decreasing confidence; tied confidences enter together (no
    threshold can split them), so there is one point per distinct confidence.
    Coverage is relative to `total` (default: the number of notes given), which lets
    the caller count notes that got no label at all in the denominator.
    """
    c, y = _check_pairs(conf, correct)
    total = c.size if total is None else total
    if total < c.size:
        raise ValueError(f"total {total} is smaller than the {c.size} notes given")
    order = np.argsort(-c, kind="stable")
    c, y = c[order], y[order]
    points = []
    right = 0
    for i in range(c.size):
        right += int(y[i])
        if i + 1 < c.size and c[i + 1] == c[i]:
            continue
        points.append({
            "threshold": float(c[i]),
            "k": i + 1,
            "coverage": (i + 1) / total,
            "accuracy": right / (i + 1),
        })
    return points


def transcript_error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> dict:
    """Corpus WER and CER (jiwer) after normalising both sides the way the matcher does.

    Pairs whose reference normalises to nothing are skipped: no error rate is defined there.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    refs, hyps = [], []
    for r, h in zip(references, hypotheses):
        nr = normalize(r)
        if not nr:
            continue
        refs.append(nr)
        hyps.append(normalize(h or ""))
    if not refs:
        return {"n": 0, "skipped": len(references), "wer": None, "cer": None}
    return {
        "n": len(refs),
        "skipped": len(references) - len(refs),
        "wer": float(jiwer.wer(refs, hyps)),
        "cer": float(jiwer.cer(refs, hyps)),
    }


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
        if gid in entries:
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
    """Id of the candidate whose text is the label: exactly, else after normalisation."""
    for cid, text in cands:
        if text == label:
            return cid
    want = normalize(label)
    if not want:
        return None
    for cid, text in cands:
        if normalize(text) == want:
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


# ---------------------------------------------------------------- tables (shared by rich and HTML)


@dataclass
class Section:
    """A titled table of strings: rendered as a rich table on the terminal and in HTML."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""
    text_columns: bool = False  # free text in every column: never right-align


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def _num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _ci(ci: Sequence[float] | None) -> str:
    return "–" if ci is None else f"{ci[0]:.1%} – {ci[1]:.1%}"


def _short(text: str | None, limit: int = 90) -> str:
    if text is None:
        return "–"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def sections(result: dict) -> list[Section]:
    """The evaluation as tables, in the order a reader wants them."""
    g = result["gold"]
    out: list[Section] = []
    rows = [
        ["notes in labels", str(result["notes"])],
        ["labelled / accepted / errors", f"{result['labelled']} / {result['accepted']} / {result['errors']}"],
        ["gold notes", f"{g['notes']} ({g['from_labels']} from labels, {g['from_gold_file']} from gold file)"],
        ["gold with truth in window", str(g["in_window"])],
        ["gold with truth not in window", str(g["not_in_window"])],
        ["  … labelled anyway / accepted anyway", f"{g['not_in_window_labelled']} / {g['not_in_window_accepted']}"],
        ["gold notes with errors (counted wrong)", str(g["errors"])],
        ["gold in window left unlabelled", str(g["in_window_unlabelled"])],
    ]
    acc = result["accuracy"]
    if acc:
        rows.append(["accuracy on gold (truth in window)",
                     f"{acc['value']:.1%} ({acc['correct']}/{acc['n']}), 95% CI {_ci(acc['ci95'])}"])
    thr = result["threshold"]
    rows.append(["threshold", (f"{thr['value']:.4g}" if thr["value"] is not None else "–") + f" ({thr['source']})"])
    cal = result["calibration"]
    if cal:
        rows.append(["expected calibration error", f"{cal['ece']:.3f} ({cal['bins']} bins, {cal['n']} labelled gold)"])
    tq = result["transcripts"]
    if tq and tq["n"]:
        kinds = tq["references"]
        rows.append(["transcript WER / CER", f"{tq['wer']:.1%} / {tq['cer']:.1%} on {tq['n']} notes "
                     f"(reference: {kinds['spoken']} spoken, {kinds['typed']} typed)"])
    if g["unmatched_ids"]:
        ids = g["unmatched_ids"]
        rows.append(["gold ids matching no note", ", ".join(ids[:20]) + (f" … ({len(ids)} in all)" if len(ids) > 20 else "")])
    out.append(Section("Summary", ["what", "value"], rows))

    out.append(Section(
        "Precision and coverage by threshold",
        ["threshold", "accepted", "precision", "95% CI", "coverage"],
        [[f"{p['threshold']:.4g}" + (" (chosen)" if p["chosen"] else ""), str(p["accepted"]),
          _pct(p["precision"]), _ci(p["precision_ci95"]), _pct(p["coverage"])] for p in result["operating_points"]],
        note="over all gold notes; coverage = accepted / gold notes; a label on a note whose truth is not in the window is wrong",
    ))
    if cal:
        out.append(Section(
            "Reliability",
            ["confidence", "count", "mean confidence", "accuracy", "gap"],
            [[f"{r['lo']:.2f}–{r['hi']:.2f}", str(r["count"]), _num(r["confidence"]), _num(r["accuracy"]),
              _num(None if r["count"] == 0 else r["accuracy"] - r["confidence"], 3)] for r in cal["table"]],
        ))
    rc = result["risk_coverage"]
    if rc:
        picks = _curve_samples(rc)
        out.append(Section(
            "Risk–coverage (most confident first)",
            ["coverage", "notes", "accuracy", "confidence ≥"],
            [[_pct(p["coverage"]), str(p["k"]), _pct(p["accuracy"]), f"{p['threshold']:.4g}"] for p in picks],
            note="a sample of the curve; --json and the report have every point",
        ))
    if result["worst"]:
        out.append(Section(
            "Most confident mistakes",
            ["note", "conf.", "acc.", "transcript", "chosen", "truth"],
            [[w["id"], f"{w['confidence']:.3f}", "yes" if w["accepted"] else "no", _short(w["transcript"]),
              _short(w["chosen"]), _short(w["true"]) + ("" if w["true_in_window"] else " (not in window)")]
             for w in result["worst"]],
            text_columns=True,
        ))
    if result.get("classifier"):
        out += classifier_sections(result["classifier"])
    return out


def classifier_sections(m: dict) -> list[Section]:
    """Tables for a classifier evaluation (see evaluate_classifier)."""
    rows = [
        ["model", m.get("model_dir", "–")],
        ["evaluated on", m["method"]],
        ["accuracy", f"{m['accuracy']:.1%} ({m['correct']}/{m['n']}), 95% CI {_ci(m['ci95'])}"],
        [f"top-{m['top_k']} accuracy", _pct(m["top_k_accuracy"])],
        ["accuracy within the candidate window", _pct(m.get("window_accuracy"))],
        ["classes", str(len(m["class_names"]))],
        ["gold notes outside the class set / without embedding",
         f"{m['gold_outside_classes']} / {m['gold_without_embedding']}"],
    ]
    per = [[_short(r["class"], 60), str(r["support"]), str(r["predicted"]), _pct(r["precision"]), _pct(r["recall"])]
           for r in m["per_class"]]
    return [
        Section("Classifier on gold", ["what", "value"], rows),
        Section("Per-class precision and recall", ["class", "gold", "predicted", "precision", "recall"], per,
                note="classes that occur among the evaluated notes or their predictions"),
    ]


def _curve_samples(points: list[dict], wanted: Iterable[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)) -> list[dict]:
    """The last curve point at or below each wanted coverage (plus the full curve's end)."""
    picks: list[dict] = []
    for w in wanted:
        below = [p for p in points if p["coverage"] <= w + 1e-12]
        if below and (not picks or picks[-1] is not below[-1]):
            picks.append(below[-1])
    if points and (not picks or picks[-1] is not points[-1]):
        picks.append(points[-1])
    return picks


def rich_tables(result: dict) -> list:
    """The sections as rich Tables for the terminal."""
    from rich.table import Table

    tables = []
    for s in sections(result):
        t = Table(title=s.title, title_justify="left", caption=s.note or None, caption_justify="left")
        for i, c in enumerate(s.columns):
            t.add_column(c, justify="left" if i == 0 or s.text_columns else "right",
                         overflow="fold")
        for row in s.rows:
            t.add_row(*row)
        tables.append(t)
    return tables


# ---------------------------------------------------------------- plots and HTML report


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(plt, fig, path: Path) -> None:
    import io

    from .files import write_atomic

    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, dpi=110, format="png")
    plt.close(fig)  # pyplot keeps every open figure alive otherwise
    write_atomic(path, png.getvalue())


def plot_risk_coverage(result: dict, path: Path) -> None:
    plt = _pyplot()
    rc = result["risk_coverage"]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    if rc:
        cov = [0.0] + [p["coverage"] for p in rc]
        acc = [rc[0]["accuracy"]] + [p["accuracy"] for p in rc]
        ax.step(cov, acc, where="pre", color="tab:blue", label="accuracy of the most confident")
    thr = result["threshold"]["value"]
    for p in result["operating_points"]:
        if p["chosen"] and p["precision"] is not None:
            ax.plot([p["coverage"]], [p["precision"]], "o", color="tab:red", label=f"chosen threshold {thr:.3g}")
    if result["accuracy"]:
        ax.axhline(result["accuracy"]["value"], color="grey", ls="--", lw=1, label="overall accuracy (in window)")
    low = min([p["accuracy"] for p in rc] + ([result["accuracy"]["value"]] if result["accuracy"] else []), default=0.0)
    ax.set_xlim(0, 1)
    ax.set_ylim(max(0.0, math.floor((low - 0.05) * 10) / 10), 1.02)  # zoom: the interesting part is near the top
    ax.set_xlabel("coverage (share of gold notes accepted)")
    ax.set_ylabel("accuracy of accepted")
    ax.set_title("Risk–coverage on gold")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    _save_figure(plt, fig, path)


def plot_reliability(result: dict, path: Path) -> None:
    plt = _pyplot()
    cal = result["calibration"]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect calibration")
    if cal:
        rows = [r for r in cal["table"] if r["count"]]
        width = 1.0 / cal["bins"]
        ax.bar([r["lo"] for r in rows], [r["accuracy"] for r in rows], width=width, align="edge",
               edgecolor="black", color="tab:blue", alpha=0.7, label="accuracy in bin")
        ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], "o", color="tab:red",
                ms=4, label="(mean confidence, accuracy) of bin")
        for r in rows:
            ax.annotate(str(r["count"]), (r["lo"] + width / 2, min(r["accuracy"] + 0.02, 0.98)), ha="center", fontsize=7)
        ax.set_title(f"Reliability (ECE {cal['ece']:.3f}, n={cal['n']})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    _save_figure(plt, fig, path)


def plot_confidence_histogram(result: dict, path: Path) -> None:
    plt = _pyplot()
    scored = [s for s in result["scored"] if s["labelled"]]
    bins = result["calibration"]["bins"] if result["calibration"] else DEFAULT_BINS
    edges = np.linspace(0, 1, max(bins, 10) + 1)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    right = [s["confidence"] for s in scored if s["correct"]]
    wrong = [s["confidence"] for s in scored if not s["correct"]]
    ax.hist([right, wrong], bins=edges, stacked=True, color=["tab:green", "tab:red"],
            label=[f"right ({len(right)})", f"wrong ({len(wrong)})"], edgecolor="black")
    thr = result["threshold"]["value"]
    if thr is not None:
        ax.axvline(thr, color="black", ls="--", lw=1, label=f"threshold {thr:.3g}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("gold notes")
    ax.set_title("Confidence of labelled gold notes")
    ax.legend(loc="upper left", fontsize=8)
    _save_figure(plt, fig, path)


def plot_confusion(model: dict, path: Path, max_labels: int = 40) -> None:
    """Confusion matrix over the classes that occur (true or predicted) among the scored notes."""
    plt = _pyplot()
    cm = np.asarray(model["confusion"], int)
    used = np.flatnonzero(cm.sum(0) + cm.sum(1))
    cm = cm[np.ix_(used, used)]
    names = [_short(model["class_names"][i], 28) for i in used]
    size = min(14.0, 3.5 + 0.28 * len(used))
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(cm, cmap="Blues", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if len(used) <= max_labels:
        ax.set_xticks(range(len(used)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(used)), names, fontsize=7)
        if len(used) <= 25:
            for i in range(len(used)):
                for j in range(len(used)):
                    if cm[i, j]:
                        ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Classifier confusion matrix (n={model['n']}, accuracy {model['accuracy']:.1%})")
    _save_figure(plt, fig, path)


PLOTS = {
    "risk_coverage.png": (plot_risk_coverage, "Risk–coverage curve"),
    "reliability.png": (plot_reliability, "Reliability diagram"),
    "confidence_hist.png": (plot_confidence_histogram, "Confidence histogram, right vs wrong"),
}


def html_page(title: str, secs: list[Section], images: list[tuple[str, str]], subtitle: str = "") -> str:
    """A self-contained page; every piece of text goes through html.escape (chat text is untrusted)."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1150px}"
        "table{border-collapse:collapse;margin:8px 0 4px}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:14px;vertical-align:top}th{background:#f0f0f0}td.n{text-align:right}"
        "p.note{color:#666;font-size:12px;margin:0 0 18px}.plots{display:flex;flex-wrap:wrap;gap:12px}"
        "figure{margin:0}figcaption{font-size:13px;color:#444}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    if subtitle:
        parts.append(f"<p>{e(subtitle)}</p>")
    for s in secs:
        parts.append(f"<h2>{e(s.title)}</h2><table><tr>" + "".join(f"<th>{e(c)}</th>" for c in s.columns) + "</tr>")
        for row in s.rows:
            cells = []
            for i, v in enumerate(row):
                cls = ' class="n"' if i > 0 and not s.text_columns and _looks_numeric(v) else ""
                cells.append(f"<td{cls}>{e(v)}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
        if s.note:
            parts.append(f'<p class="note">{e(s.note)}</p>')
    if images:
        parts.append('<h2>Plots</h2><div class="plots">')
        for name, caption in images:
            parts.append(f'<figure><img src="{e(name, quote=True)}" alt="{e(caption, quote=True)}" width="600">'
                         f"<figcaption>{e(caption)}</figcaption></figure>")
        parts.append("</div>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _looks_numeric(v: str) -> bool:
    return bool(v) and (v[0].isdigit() or v[0] == "–") and len(v) < 30


def write_report(result: dict, out_dir: Path, title: str = "disamb eval") -> list[Path]:
    """PNG plots and an index.html showing the tables and the plots together; returns the files written."""
    from .files import write_atomic

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out_dir}: cannot create report folder ({e.strerror or e})") from None
    written = []
    images = []
    for name, (fn, caption) in PLOTS.items():
        fn(result, out_dir / name)
        written.append(out_dir / name)
        images.append((name, caption))
    if result.get("classifier"):
        plot_confusion(result["classifier"], out_dir / "confusion.png")
        written.append(out_dir / "confusion.png")
        images.append(("confusion.png", "Classifier confusion matrix"))
    page = out_dir / "index.html"
    write_atomic(page, html_page(title, sections(result), images, result.get("source", "")))
    written.append(page)
    return written


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
    from .chats import AudioPathError, Candidate, VoiceNote, resolve_audio

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
    from .train import gold_text

    g = gold_text(note)
    return None if g is None else index.get(normalize(g))


def _window_mask(notes: list, index: dict[str, int], C: int) -> np.ndarray:
    """(n, C): the classes among each note's candidates; all classes where none is known."""
    m = np.zeros((len(notes), C), bool)
    for r, note in enumerate(notes):
        for c in note.candidates:
            k = index.get(normalize(c.text))
            if k is not None:
                m[r, k] = True
    m[~m.any(1)] = True
    return m


def evaluate_classifier(
    clf,
    notes: list,
    embeddings: dict[str, np.ndarray],
    records: list[dict],
    cv: int | None = None,
    seed: int = 0,
) -> dict:
    """Score a trained classifier (disamb.train.Classifier) on gold notes it did not train on.

    Without `cv`: the gold notes the model held out (ids in its JSON). With `cv` = K: the
    gold notes in the class set are split in K folds and a head is retrained K times with
    the model's own options on everything except one fold (the fold's notes are dropped
    entirely, not merely their gold), then scored on that fold. Predictions range over
    all classes; `window_accuracy` restricts them to the note's candidate classes.
    """
    from .match import fold_ids
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
        X = np.stack([embeddings[n.id] for n in test])
        proba = clf.predict_proba(X)
        window = clf.predict_proba(X, _window_mask(test, index, len(clf.classes)))
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
