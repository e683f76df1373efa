"""Which loss should train the classifier? Recipes side by side on a closed-class set.

A synthetic closed-class chat (benchmarks.synth.closed_class_dataset: 30 fixed phrases said
by varied espeak-ng voices, speeds and noise, typed with variations, 10 candidates per
note) is labelled with the real pipeline (clips.run_clips + label.label_notes) with 5%
and 20% of the training notes given gold. Recordings of some voices are held out
entirely; each recipe trains on the rest and is scored on the held-out voices without
any chat around them (unrestricted choice among all classes).

Recipes: gold only; cross-entropy on accepted pseudo-labels + gold; + PRODEN on the
rest; + CC on the rest; naive multi-hot targets with sigmoid + MSE; and PRODEN / CC
without the labeller (every non-gold note through its candidate set).

Every recording is tested once: the voices are split into folds and each fold is held
out in turn (the labeller still sees the whole chat, but gold and training use only
the other voices).

    python benchmarks/train.py                  # generate (once), label, train, table
    python benchmarks/train.py --prepare-only   # only the Whisper work (cached)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from disamb.cache import ClipCache  # noqa: E402
from disamb.chats import read_notes  # noqa: E402
from disamb.clips import ClipOptions, run_clips  # noqa: E402
from disamb.label import MatchOptions, label_notes  # noqa: E402
from disamb.models import load_model  # noqa: E402
from disamb.textsim import normalize  # noqa: E402
from disamb.train import (  # noqa: E402
    TrainOptions, build_classes, build_dataset, class_texts, train,
)

# name -> (loss, use the labeller's pseudo-labels)
RECIPES = {
    "gold only": ("gold", True),
    "CE: pseudo-labels + gold": ("ce", True),
    "CE + PRODEN on the rest": ("proden", True),
    "CE + CC on the rest": ("cc", True),
    "multi-hot sigmoid + MSE": ("mse", False),
    "PRODEN, no pseudo-labels": ("proden", False),
    "CC, no pseudo-labels": ("cc", False),
}


def prepare(out: Path, n_per_class: int, seed: int, model: str) -> tuple[list, dict, dict, object]:
    """Generate the dataset (once) and run Whisper on every clip (cached)."""
    from benchmarks.synth import closed_class_dataset

    data_dir = out / f"closed-n{n_per_class}-s{seed}"
    if not (data_dir / "truth.jsonl").exists():
        t0 = time.perf_counter()
        closed_class_dataset(data_dir, n_per_class=n_per_class, seed=seed)
        print(f"generated {data_dir} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    truth = {r["id"]: r for r in map(json.loads, (data_dir / "truth.jsonl").read_text().splitlines())}
    read = read_notes(data_dir / "chats.jsonl", data_dir / "recordings")
    lm = load_model(model, "cpu")
    cache = ClipCache(out / "cache")
    t0 = time.perf_counter()
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if done[0] % 20 == 0 or done[0] == len(read.notes):
            print(f"  clips {done[0]}/{len(read.notes)} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)

    outcomes = run_clips(lm, read.notes, ClipOptions(), cache, on_done=tick)
    return read.notes, truth, outcomes, data_dir


def voice_folds(notes: list, truth: dict, k: int, seed: int) -> list[set[str]]:
    """Note ids of k test folds, each holding every recording of some voices, so test
    speakers are never heard in training and every recording is tested once."""
    voices = sorted({truth[n.id]["voice"] for n in notes})
    order = np.random.default_rng(seed).permutation(len(voices))
    fold_of = {voices[v]: i % k for i, v in enumerate(order)}
    return [{n.id for n in notes if fold_of[truth[n.id]["voice"]] == f} for f in range(k)]


def with_gold(notes: list, truth: dict, fraction: float, seed: int, test_ids: set[str]) -> list:
    """Copies of the notes where a random `fraction` of the training notes carry their true label."""
    rng = np.random.default_rng(seed)
    eligible = [i for i, n in enumerate(notes) if truth[n.id]["in_window"] and n.id not in test_ids]
    k = max(1, round(fraction * sum(n.id not in test_ids for n in notes)))
    chosen = set(rng.choice(eligible, min(k, len(eligible)), replace=False).tolist())
    out = []
    for i, n in enumerate(notes):
        cand_ids = {c.id for c in n.candidates}
        if i in chosen:
            tid = truth[n.id]["label_id"]
            text = next(c.text for c in n.candidates if c.id == tid)
            out.append(replace(n, gold_label_id=tid, gold_text=text, gold_in_window=tid in cand_ids))
        else:
            out.append(replace(n, gold_label_id=None, gold_text=None, gold_in_window=None))
    return out


def run_setting(notes, truth, outcomes, test_ids, fraction, seed, head, epochs) -> dict:
    """Label with this much gold, then train every recipe and score on held-out voices."""
    gold_notes = with_gold(notes, truth, fraction, seed, test_ids)
    train_notes = [n for n in gold_notes if n.id not in test_ids]
    test_notes = [n for n in gold_notes if n.id in test_ids]
    # The labeller sees the whole chat, as it would in use, but only training-voice notes carry gold.
    records, summary, _ = label_notes(gold_notes, outcomes, MatchOptions())
    by_id = {r["id"]: r for r in records}
    embs = {i: o.result.embedding for i, o in outcomes.items() if o.result is not None}
    classes = build_classes(class_texts(train_notes, by_id), min_count=2)
    data = build_dataset(train_notes, by_id, embs, classes)

    acc_rows = [i for i, r in enumerate(data.role) if r == "accepted"]
    pseudo_right = sum(data.classes.classes[data.target[i]] == normalize(truth[data.ids[i]]["class"]) for i in acc_rows)
    true_cls = [normalize(truth[n.id]["class"]) for n in test_notes]
    X_test = np.stack([embs[n.id] for n in test_notes])
    result = {
        "gold_fraction": fraction, "seed": seed,
        "train_notes": len(train_notes), "test_notes": len(test_notes),
        "gold": data.count("gold"), "accepted": data.count("accepted"), "partial": data.count("partial"),
        "outside": data.outside, "classes": len(classes.classes),
        "true_classes_found": len({normalize(p) for p in (truth[n.id]["class"] for n in notes)} & set(classes.classes)),
        "pseudo_label_precision": pseudo_right / len(acc_rows) if acc_rows else None,
        "labeller_gold_accuracy": summary.gold_accuracy,
        "recipes": {},
    }
    result["test_in_class_set"] = sum(t in set(classes.classes) for t in true_cls)
    labeller = {r["id"]: r for r in records}
    result["labeller_test_correct"] = sum(labeller[n.id]["label_id"] == truth[n.id]["label_id"] for n in test_notes)
    for name, (loss, pseudo) in RECIPES.items():
        t0 = time.perf_counter()
        opts = TrainOptions(loss=loss, pseudo_labels=pseudo, head=head, epochs=epochs, seed=seed)
        res = train(data, opts)
        pred = res.classifier.predict_proba(X_test).argmax(1)
        right = int(sum(res.classifier.classes[k] == t for k, t in zip(pred, true_cls)))
        result["recipes"][name] = {
            "test_correct": right, "holdout_accuracy": res.holdout_accuracy, "best_epoch": res.best_epoch,
            "seconds": round(time.perf_counter() - t0, 2),
        }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench-data" / "train")
    ap.add_argument("--n-per-class", type=int, default=8)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--gold", type=float, nargs="+", default=[0.05, 0.20])
    ap.add_argument("--seeds", type=int, default=3, help="Gold draws (and training seeds) per fold and setting.")
    ap.add_argument("--folds", type=int, default=3, help="Voice folds: each holds out the recordings of some voices.")
    ap.add_argument("--head", default="linear", choices=["linear", "mlp"])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--json", type=Path, default=None, help="Where to write the results (default: OUT/results.json).")
    ap.add_argument("--prepare-only", action="store_true")
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    notes, truth, outcomes, data_dir = prepare(args.out, args.n_per_class, args.data_seed, args.model)
    if args.prepare_only:
        return
    folds = voice_folds(notes, truth, args.folds, args.data_seed)
    runs = []
    for fraction in args.gold:
        for seed in range(args.seeds):
            for f, test_ids in enumerate(folds):
                r = run_setting(notes, truth, outcomes, test_ids, fraction, seed, args.head, args.epochs)
                r["fold"] = f
                runs.append(r)
            got = [r for r in runs if r["gold_fraction"] == fraction and r["seed"] == seed]
            print(f"  gold {fraction:.0%} draw {seed}: " + ", ".join(
                f"{RECIPES[k][0]}{'' if RECIPES[k][1] else '-'} {sum(r['recipes'][k]['test_correct'] for r in got) / len(notes):.3f}"
                for k in RECIPES), file=sys.stderr)

    def pooled(fraction: float, seed: int, key) -> float:
        got = [r for r in runs if r["gold_fraction"] == fraction and r["seed"] == seed]
        return sum(key(r) for r in got) / sum(r["test_notes"] for r in got)

    table = {f: {name: (float(np.mean(a := [pooled(f, s, lambda r: r["recipes"][name]["test_correct"])
                                            for s in range(args.seeds)])), float(np.std(a)))
                 for name in RECIPES} for f in args.gold}
    ref = {f: {"in_class_set": float(np.mean([pooled(f, s, lambda r: r["test_in_class_set"]) for s in range(args.seeds)])),
               "labeller_with_chat": float(np.mean([pooled(f, s, lambda r: r["labeller_test_correct"]) for s in range(args.seeds)]))}
           for f in args.gold}
    counts = {f: {k: float(np.mean([r[k] for r in runs if r["gold_fraction"] == f]))
                  for k in ("train_notes", "gold", "accepted", "partial", "outside", "classes")} for f in args.gold}
    prec = {f: [r["pseudo_label_precision"] for r in runs if r["gold_fraction"] == f and r["pseudo_label_precision"]]
            for f in args.gold}

    print(f"\nclosed-class set: {len(notes)} recordings of 30 phrases, {args.folds} voice folds (test voices never heard "
          f"in training), head {args.head}; accuracy on held-out recordings, no chat (mean ± sd over {args.seeds} gold draws)\n")
    cols = [f"{f:.0%} gold" for f in args.gold]
    print(f"{'recipe':<28}" + "".join(f"{c:>17}" for c in cols))
    for name in RECIPES:
        print(f"{name:<28}" + "".join(f"{table[f][name][0]:>10.3f} ±{table[f][name][1]:.3f}" for f in args.gold))
    print(f"{'(test class in class set)':<28}" + "".join(f"{ref[f]['in_class_set']:>17.3f}" for f in args.gold))
    print(f"{'(labeller, with the chat)':<28}" + "".join(f"{ref[f]['labeller_with_chat']:>17.3f}" for f in args.gold))
    for f in args.gold:
        c = counts[f]
        print(f"  {f:.0%} gold, per fold: {c['train_notes']:.0f} training notes = {c['gold']:.0f} gold + "
              f"{c['accepted']:.0f} accepted (precision {np.mean(prec[f]):.3f}) + {c['partial']:.0f} candidate-set only "
              f"+ {c['outside']:.0f} outside; {c['classes']:.0f} classes")

    path = args.json or (args.out / "results.json")
    import subprocess

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    path.write_text(json.dumps({
        "commit": commit or None, "dataset": str(data_dir), "recordings": len(notes), "folds": args.folds, "head": args.head,
        "epochs": args.epochs, "seeds": args.seeds,
        "table": {f"{f:.2f}": {k: {"mean": m, "sd": s} for k, (m, s) in v.items()} for f, v in table.items()},
        "reference": {f"{f:.2f}": v for f, v in ref.items()},
        "runs": runs,
    }, indent=1) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
