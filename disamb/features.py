"""Per-candidate features: how well each candidate text explains a clip, and where it
sits in the chat.

Two kinds, kept apart on purpose:

- Evidence (`EVIDENCE`, each with the direction in which it favours a candidate) says
  how well the audio and its transcript fit the text. The matcher weighs only these,
  and every fit keeps each weight's sign, so more likelihood or closer text never
  lowers a candidate's score.
- The slot (`slots`: window position, and the time gap when the chat has timestamps)
  says nothing about the audio. It describes the user's chat, so it feeds the prior
  that `window_prior.fit_window_prior` learns from each run's own notes. A position weight
  learned from one generator's data cost 47 of 55 mistakes on logs shaped otherwise.

Lengths are characters of the normalised text, the same for every rendering of a
candidate: per-token means favoured whichever rendering has the fewest tokens
("67381." beat a better-scoring "six, six, three, eight, one.").
"""

from __future__ import annotations

import math

import numpy as np

from .cache import ClipResult
from .chats import VoiceNote
from .textsim import filler_count, normalize, render_spoken, text_features

EVIDENCE: dict[str, int] = {
    "lik_sum": +1,  # summed log-likelihood of the best rendering
    "lik_per_char": +1,  # the same per character
    "lik_prior": +1,  # summed log-likelihood minus the text's under silent audio (PMI; 0 when off)
    "pmi_per_char": +1,
    "pmi_typed": +1,  # PMI of the text as typed (cleaned only: no filler words dropped)
    "cer": -1,  # character error rate against the transcript (content words)
    "wer": -1,
    "ratio": +1,  # rapidfuzz ratios against the transcript
    "token_set": +1,
    "partial": +1,
    "digit_dist": -1,  # edit distance between the digit sequences
    "len_ratio": -1,  # how far the lengths differ
}
# What the matcher weighs: few enough that a linear fit on a few dozen gold notes
# cannot trade correlated columns against each other (chosen on the benchmark's
# families, benchmarks/accuracy.py --fit-default).
FEATURES = ("lik_sum", "lik_per_char", "lik_prior", "cer", "token_set", "digit_dist")
# Minimal model the gold can choose when the full one overfits a small gold set.
MINIMAL = ("lik_sum", "lik_prior", "cer", "digit_dist")

FILLER_PENALTY = 1.0  # nats per filler word a rendering assumes the typist added

# Gap bins (seconds from the voice note to the message): 0 means no timestamps.
GAP_EDGES = (0.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
N_GAP_BINS = len(GAP_EDGES) + 2  # unknown, negative (clock skew), then one per edge


def candidate_features(
    note: VoiceNote, clip: ClipResult, prior: dict[str, tuple[float, int]] | None
) -> tuple[np.ndarray, list[dict[str, float]]]:
    """One row of FEATURES per candidate, plus every feature as a dict for labels.jsonl."""
    best = [best_scores(cand.text, clip, prior) for cand in note.candidates]
    transcript = clip.transcript
    if transcript is None:
        # --mode score skipped transcription because the likelihood was sure: compare
        # against the rendering the likelihood prefers instead.
        transcript = max(best, key=lambda b: (b[1], b[0]))[3] if best else ""
    rows, dicts = [], []
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
            "position": float(j),
            "gap": _gap_seconds(note, j),  # seconds; left out of the output without timestamps
        }
        dicts.append({k: round(float(v), 4) for k, v in f.items() if math.isfinite(v)})
        rows.append([f[name] for name in FEATURES])
    return np.asarray(rows, float).reshape(len(rows), len(FEATURES)), dicts


def slots(note: VoiceNote) -> np.ndarray:
    """(position in the window, gap bin) of each candidate: what the window prior sees."""
    out = np.zeros((len(note.candidates), 2), dtype=np.int64)
    for j in range(len(note.candidates)):
        out[j, 0] = j
        out[j, 1] = gap_bin(_gap_seconds(note, j))
    return out


def gap_bin(seconds: float) -> int:
    if math.isnan(seconds):
        return 0
    if seconds < 0:
        return 1
    return 2 + sum(seconds >= e for e in GAP_EDGES[1:])


def _gap_seconds(note: VoiceNote, j: int) -> float:
    """Seconds from the note to candidate j, clipped to a day; NaN without timestamps.

    Clipped so that absurd timestamps cannot make a feature infinite.
    """
    ts = note.candidates[j].ts
    if ts is None or note.ts is None:
        return float("nan")
    gap = ts - note.ts
    if not math.isfinite(gap):
        return float("nan")
    return max(-86400.0, min(86400.0, gap))


def best_scores(text: str, clip: ClipResult, prior: dict[str, tuple[float, int]] | None):
    """(summed log-lik, PMI, PMI as typed, rendering) of a candidate.

    Each statistic takes its own best rendering, since we cannot know how the speaker
    said it. A rendering that drops filler words ("ok", "code") pays FILLER_PENALTY per
    word, so "see you at 5 ok?" cannot tie with "see you at 5" when only the latter
    was said, while "1158 ok" still wins on a spoken "one one five eight". Without a
    prior the PMI columns are 0.
    """
    renderings = render_spoken(text)
    fillers = filler_count(text)
    scored = []
    for r in renderings:
        if r in clip.scores:
            total = clip.scores[r][0]
            penalty = FILLER_PENALTY * max(0, fillers - filler_count(r))
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

