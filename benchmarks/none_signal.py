"""Which per-note numbers tell a note whose message is not in its window from the others?

Calibration on the hardest family is held back by such notes: they are labelled with
some candidate, often confidently, and every such label is wrong. This script measures,
per family and before adaptation, how well single per-note numbers separate them
(ROC AUC: the chance that a note lacking its message looks worse than one that has it;
0.5 is no signal):

    gap          best candidate's summed log-likelihood minus the free transcript's own
                 (Whisper's average log-probability times its tokens + end of text)
    gap_per_tok  the same per transcript token
    best_lik     best candidate's summed log-likelihood
    best_pmi     best candidate's PMI (likelihood minus its likelihood under silent audio)
    best_cer     lowest character error rate of a candidate against the transcript
    avg_logprob  the transcript's average log-probability

Usage: python benchmarks/none_signal.py --data /work/bench-data \
           --families codes-phone,chat-uniform-festival,chat-busy-mixed [--notes N] \
           [--out benchmarks/results/none-signal.json]
Families without such notes are skipped. The clip cache (DATA/cache) is shared with
benchmarks/accuracy.py and benchmarks/adapt.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.accuracy import prepare  # noqa: E402
from benchmarks.families import FAMILIES, build  # noqa: E402
from disamb import asr  # noqa: E402
from disamb.models import load_model  # noqa: E402

# signal name -> +1 when a larger value means "the message is there"
SIGNALS = {"gap": +1, "gap_per_tok": +1, "best_lik": +1, "best_pmi": +1, "best_cer": -1, "avg_logprob": +1}


def note_signals(lm, clip, feats: list[dict]) -> dict[str, float]:
    transcript = (clip.transcript or "").strip()
    tokens = len(asr.text_tokens(lm, " " + transcript)) if transcript else 0
    own = (clip.avg_logprob or 0.0) * (tokens + 1)
    best_lik = max(f["lik_sum"] for f in feats)
    return {
        "gap": best_lik - own,
        "gap_per_tok": (best_lik - own) / (tokens + 1),
        "best_lik": best_lik,
        "best_pmi": max(f.get("lik_prior", 0.0) for f in feats),
        "best_cer": min(f["cer"] for f in feats),
        "avg_logprob": clip.avg_logprob or 0.0,
    }


def auc_missing(values: np.ndarray, missing: np.ndarray, sign: int) -> float:
    """P(a note lacking its message scores lower than one that has it), signed so that
    'lower' means 'looks less like its message is there'."""
    there, gone = sign * values[~missing], sign * values[missing]
    u = mannwhitneyu(there, gone, alternative="two-sided").statistic
    return float(u / (len(there) * len(gone)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "bench-data")
    ap.add_argument("--families", default="codes-phone,chat-uniform-festival,chat-busy-mixed")
    ap.add_argument("--notes", type=int, help="the first N notes of each family (default: all)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "none-signal.json")
    args = ap.parse_args()
    names = [n for n in args.families.split(",") if n]
    if any(n not in FAMILIES for n in names):
        sys.exit(f"unknown family in {names}; known: {', '.join(FAMILIES)}")
    lm = load_model("tiny.en", "cpu")
    result = {"command": " ".join(["python", "benchmarks/none_signal.py", *sys.argv[1:]]), "model": lm.key,
              "families": {}}
    for name in names:
        folder = args.data / "families" / name
        if not (folder / "truth.jsonl").is_file():
            folder = build(name, args.data / "families")
        p = prepare(name, folder, lm, args.data / "cache", args.notes)
        rows = [note_signals(lm, p.outcomes[n.id].result, d) for n, d in zip(p.notes, p.dicts)]
        missing = np.array([t == len(n.candidates) for n, t in zip(p.notes, p.truth)])
        if not missing.any():
            print(f"{name}: every note's message is in its window, skipped")
            continue
        row = {"notes": len(rows), "missing": int(missing.sum()), "auc": {}, "median_missing": {}, "median_there": {}}
        for key, sign in SIGNALS.items():
            values = np.array([r[key] for r in rows])
            row["auc"][key] = round(auc_missing(values, missing, sign), 3)
            row["median_missing"][key] = round(float(np.median(values[missing])), 2)
            row["median_there"][key] = round(float(np.median(values[~missing])), 2)
        result["families"][name] = row
        print(f"{name}: {row['missing']} of {row['notes']} notes lack their message; AUC "
              + ", ".join(f"{k} {v}" for k, v in row["auc"].items()), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
