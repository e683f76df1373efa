"""The numbers an evaluation is made of, arrays in and numbers out: Wilson intervals,
reliability tables and expected calibration error (with the ECE a perfectly calibrated
labeller would still show on as many notes), risk-coverage points, and transcript WER/CER.

Apart from evaluate.py, which reads files and resolves the truth, because the labeller's
benchmarks and the classifier (textclass.py, classifier_eval.py) use the same metrics on
their own arrays.
"""

from __future__ import annotations

import math
from typing import Sequence

import jiwer
import numpy as np

from .textsim import normalize

DEFAULT_BINS = 10


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


def ece_if_calibrated(conf: Sequence[float], bins: int = DEFAULT_BINS, draws: int = 2000, seed: int = 0) -> dict:
    """The ECE a perfectly calibrated labeller would show with these confidences: mean and 90th percentile.

    ECE is biased upwards on few notes: each bin's accuracy is a sample, and its
    distance from the confidence counts even when the labeller is exactly right about
    itself. With the 100 gold notes a typical log has, a calibrated labeller shows
    about 0.045 (measured on the benchmark families), so a measured ECE means little
    until it is set beside this reference. Outcomes are drawn as Bernoulli(confidence).
    """
    c = np.asarray(conf, float)
    if c.size == 0:
        raise ValueError("no confidences to calibrate")
    rng = np.random.default_rng(seed)
    values = np.array([expected_calibration_error(c, rng.random(c.size) < c, bins) for _ in range(draws)])
    return {"mean": float(values.mean()), "p90": float(np.quantile(values, 0.9))}


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
