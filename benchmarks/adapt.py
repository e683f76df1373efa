"""`disamb label --adapt` against `disamb label` on the benchmark families.

Per family (the first --notes voice notes of benchmarks/families.py's data), the same
run with and without cross-fitted encoder adaptation (disamb/adapt.py), measured on
the notes that are not gold and whose truth is in the window (ECE: every labelled note):

    accuracy        the label is the truth
    ece             expected calibration error of every labelled note that is not gold (a
                    note whose truth is not in its window is wrong whatever its label; before
                    2026-12-07 those were left out: `ece_in_window`), beside the
                    ECE a perfectly calibrated labeller would show with the same confidences
                    (`ece_if_calibrated`: at 200 notes about 0.045) and the reliability table
    pmi_top1        the candidate with the highest PMI (lik_prior) is the truth: the raw evidence
    wer             word error rate of the transcript against what was spoken (both normalised)

and the training cost: seconds per 100 clips per epoch (training only, summed over folds),
and the whole adaptation's wall time (training, rescoring, priors, transcription).

Variants (--variants): full (LayerNorms + LoRA, soft targets, labels from the mean of the
adapted and unadapted features), alone (the same adapters, labels from the adapted
features only: how --adapt labelled until 2026-12-07), ln (LayerNorms only),
hard (only notes the matcher is at least 0.9 sure of, one-hot), rounds2 (label → adapt →
relabel twice; its row measures the last round run, kept by the gold or not, and lists
every round's figures under "rounds").

Matching starts (`--matcher held-out`, the default) from weights fitted as the shipped
default is, on the other families' first 120 notes, never on the family measured: the
shipped default_matcher.json was fitted on the first 120 notes of all six families, so a
run started from it (`--matcher shipped`, how every figure before 2026-12-07 was
measured) is judged partly on notes its weights were fitted on.

Usage: python benchmarks/adapt.py --data /work/bench-data --families codes-phone,chat-early-espeak \
           --notes 60 --epochs 2 [--variants full,ln,hard] [--build-notes N] [--out benchmarks/results/adapt.json]
--seed N trains the adapters with another seed (LoRA initialisation and batch order; the folds
follow the note ids), to measure how much one training's gains vary.
--gold-lacking SEED also makes gold, at the log's gold rate, notes whose message is not in
the window (the generator draws gold only among the others; a user's gold does not).
--per-note DIR writes every run's labels (truth, label, confidence, transcript, top three
candidates) to DIR/FAMILY-RUN.jsonl, to read the mistakes one by one.
The per-clip cache lives in DATA/cache (shared with benchmarks/accuracy.py: the base
model's clips are reused); the adapters go to DATA/cache/adapters.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from rapidfuzz.distance import Levenshtein

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.accuracy import fit_on, in_window, prepare as prepare_features  # noqa: E402
from benchmarks.families import FAMILIES, build  # noqa: E402
from disamb.adapt import AdaptOptions, adapt_and_relabel  # noqa: E402
from disamb.chats import read_notes  # noqa: E402
from disamb.clips import ClipOptions  # noqa: E402
from disamb.metrics import ece_if_calibrated, expected_calibration_error, reliability_table  # noqa: E402
from disamb import match  # noqa: E402
from disamb.features import FEATURES  # noqa: E402
from disamb.label import MatchOptions  # noqa: E402
from disamb.models import load_model  # noqa: E402
from disamb.pipeline import label_all  # noqa: E402
from disamb.textsim import normalize  # noqa: E402

VARIANTS = {
    "full": AdaptOptions(),
    "alone": AdaptOptions(unadapted_weight=0.0),
    "ln": AdaptOptions(lora=False),
    "hard": AdaptOptions(hard=True),
    "rounds2": AdaptOptions(rounds=2),
}


def read_truth(folder: Path) -> dict[str, dict]:
    return {t["id"]: t for t in map(json.loads, (folder / "truth.jsonl").read_text("utf-8").splitlines())}


def wer(reference: str, hypothesis: str | None) -> float:
    ref, hyp = normalize(reference).split(), normalize(hypothesis or "").split()
    return Levenshtein.distance(ref, hyp) / max(1, len(ref))


def measure(notes, records: list[dict], truth: dict[str, dict]) -> dict:
    """The figures of one run on the notes that are not gold and whose truth is in the window."""
    right, conf, labelled_right, pmi_right, wers = [], [], [], [], []
    conf_in, right_in = [], []  # the same, as measured before 2026-12-07: truth in the window only
    for note, rec in zip(notes, records):
        t = truth[note.id]
        if note.has_gold:
            continue
        inside = in_window(t)
        ok = inside and rec["label_id"] == t["label_id"]
        if rec["label_id"] is not None:  # a label for a note whose truth is not in its window is wrong
            conf.append(rec["confidence"])
            labelled_right.append(ok)
            if inside:
                conf_in.append(rec["confidence"])
                right_in.append(ok)
        if not inside:
            continue
        right.append(ok)
        cands = rec["candidates"]
        if cands and all("features" in c for c in cands):
            best = max(cands, key=lambda c: c["features"].get("lik_prior", -1e9))
            pmi_right.append(best["id"] == t["label_id"])
        else:
            pmi_right.append(False)
        wers.append(wer(t["spoken"], rec["transcript"]))
    return {
        "n": len(right),
        "accuracy": round(float(np.mean(right)), 4),
        "errors": int(len(right) - sum(right)),
        "labelled": len(conf),
        "ece": round(float(expected_calibration_error(conf, labelled_right)), 4),
        "ece_in_window": round(float(expected_calibration_error(conf_in, right_in)), 4),
        "ece_if_calibrated": round(ece_if_calibrated(conf, draws=500)["mean"], 4),
        "mean_confidence": round(float(np.mean(conf)), 4),
        "reliability": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}
                        for row in reliability_table(conf, labelled_right) if row["count"]],
        "pmi_top1": round(float(np.mean(pmi_right)), 4),
        "wer": round(float(np.mean(wers)), 4),
    }


DEFAULT_FIT_NOTES = 120  # the first notes of each family default_matcher.json was fitted on


def held_out_matcher(name: str, data: Path, lm) -> Path:
    """Weights fitted as the shipped default is (`accuracy.fit_on`, its penalty), on every
    family but `name`, written under DATA/cache/matchers."""
    l2 = float(match.default_matcher().info.get("l2", 0.001))
    others = [prepare_features(f, data / "families" / f, lm, data / "cache", DEFAULT_FIT_NOTES)
              for f in FAMILIES if f != name]
    path = data / "cache" / "matchers" / f"without-{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    fit_on(others, FEATURES, l2).save(path)
    return path


def write_per_note(path: Path, notes, records: list[dict], truth: dict[str, dict]) -> None:
    """One line per note: truth, label, confidence, gold or not (to read mistakes and calibration)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for note, rec in zip(notes, records):
            t = truth[note.id]
            f.write(json.dumps({"id": note.id, "gold": note.has_gold, "in_window": in_window(t),
                                "truth": t["label_id"], "spoken": t["spoken"], "label": rec["label_id"],
                                "confidence": rec.get("confidence"), "transcript": rec["transcript"],
                                "top": [[c["id"], c["text"], round(c.get("prob") or 0.0, 3)] for c in
                                        sorted(rec["candidates"], key=lambda c: -(c.get("prob") or 0))[:3]]}) + "\n")


def with_gold_lacking(notes: list, truth: dict[str, dict], seed: int) -> list:
    """The notes, with those whose message is not in the window also made gold ("not in
    the window") at the log's own gold rate, drawn with `seed`: the generator draws gold
    only where the message exists, a user's gold is drawn from every note."""
    rng = random.Random(seed)
    rate = sum(n.has_gold for n in notes) / max(1, len(notes))
    return [replace(n, gold_label_id=None, gold_text=truth[n.id]["spoken"], gold_in_window=False)
            if not n.has_gold and not in_window(truth[n.id]) and rng.random() < rate else n for n in notes]


def run_family(name: str, data: Path, lm, n_notes: int, variants: list[str], epochs: int, folds: int,
               build_notes: int | None = None, held_out: bool = True, per_note: Path | None = None,
               gold_lacking: int | None = None, seed: int = 0) -> dict:
    folder = data / "families" / name
    if not (folder / "truth.jsonl").is_file():
        config = replace(FAMILIES[name], n_notes=build_notes) if build_notes else None
        folder = build(name, data / "families", config)
    truth = read_truth(folder)
    notes = read_notes(folder / "chats.jsonl", folder / "recordings").notes[:n_notes]
    if gold_lacking is not None:
        notes = with_gold_lacking(notes, truth, gold_lacking)
    cache = data / "cache"
    match_options = MatchOptions(matcher=held_out_matcher(name, data, lm)) if held_out else MatchOptions()
    t0 = time.perf_counter()
    base = label_all(lm, notes, ClipOptions(), match_options, cache)
    out = {"notes": len(notes), "gold": sum(n.has_gold for n in notes), "label_seconds": round(time.perf_counter() - t0, 1),
           "gold_lacking_message": sum(n.has_gold and not n.gold_in_window for n in notes),
           "matcher": "held out (fitted on the other families)" if held_out else "shipped",
           "without": measure(notes, base.records, truth)}
    print(f"{name}: without {out['without']}", flush=True)
    if per_note:
        write_per_note(per_note / f"{name}-without.jsonl", notes, base.records, truth)
    for v in variants:
        opts = AdaptOptions(**{**VARIANTS[v].__dict__, "epochs": epochs, "folds": folds, "seed": seed})
        t1 = time.perf_counter()
        done = adapt_and_relabel(lm, notes, base.records, base.summary, ClipOptions(), match_options, cache, opts,
                                 unadapted_outcomes=base.outcomes, unadapted_prior=base.prior)
        wall = time.perf_counter() - t1
        adapters = [a for r in done.rounds for a in r.adapters]
        trained = [a for a in adapters if not a.reused]
        clip_epochs = sum(len(a.train_ids) for a in trained) * epochs
        row = measure(notes, done.rounds[-1].records, truth)  # the last round's labels, kept by the gold or not
        if len(done.rounds) > 1:
            row["rounds"] = [measure(notes, r.records, truth) for r in done.rounds]
        row.update(
            adapt_seconds=round(wall, 1),
            train_s_per_100_clips_epoch=round(100 * sum(a.seconds for a in trained) / clip_epochs, 1) if clip_epochs else None,
            epoch_losses=[[round(x, 3) for x in a.epoch_losses] for a in adapters],
            reused=[a.reused for a in adapters],
            kept_by_gold=[r.kept for r in done.rounds],
        )
        out[v] = row
        if per_note:
            write_per_note(per_note / f"{name}-{v}.jsonl", notes, done.rounds[-1].records, truth)
        print(f"{name}: {v} {row}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "bench-data")
    ap.add_argument("--families", default="codes-phone,chat-early-espeak")
    ap.add_argument("--notes", type=int, default=60)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0,
                    help="the adapters' seed (LoRA initialisation, batch order): another seed trains other adapters")
    ap.add_argument("--variants", default="full")
    ap.add_argument("--build-notes", type=int, help="a family not built yet under DATA/families is built with this many notes")
    ap.add_argument("--matcher", default="held-out", choices=["held-out", "shipped"],
                    help="Start matching from weights fitted on the other families (default) or from the shipped ones.")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "adapt.json")
    ap.add_argument("--gold-lacking", type=int, metavar="SEED",
                    help="also make gold, at the log's gold rate (drawn with SEED), notes whose message is not in the window")
    ap.add_argument("--per-note", type=Path, help="also write each run's labels, one note per line, to DIR/FAMILY-RUN.jsonl")
    args = ap.parse_args()
    names = [n for n in args.families.split(",") if n]
    unknown = [n for n in names if n not in FAMILIES]
    variants = [v for v in args.variants.split(",") if v]
    if unknown or any(v not in VARIANTS for v in variants):
        sys.exit(f"unknown family or variant: {unknown or variants}; families: {', '.join(FAMILIES)}; variants: {', '.join(VARIANTS)}")
    lm = load_model("tiny.en", "cpu")
    result = {
        "command": " ".join(["python", "benchmarks/adapt.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), torch threads {__import__('torch').get_num_threads()}",
        "model": lm.key, "notes_per_family": args.notes, "epochs": args.epochs, "folds": args.folds,
        "seed": args.seed, "families": {},
    }
    previous = json.loads(args.out.read_text("utf-8")) if args.out.is_file() else {}
    for name in names:
        result["families"][name] = run_family(name, args.data, lm, args.notes, variants, args.epochs, args.folds,
                                              args.build_notes, held_out=args.matcher == "held-out",
                                              per_note=args.per_note, gold_lacking=args.gold_lacking, seed=args.seed)
        result["families"][name]["command"] = result["command"]
        merged = {**previous, **result, "families": {**previous.get("families", {}), **result["families"]}}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(merged, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
