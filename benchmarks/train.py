"""Which loss should train the classifier? Recipes side by side on a closed-class set.

A synthetic closed-class chat (benchmarks.synth.closed_class_dataset: 30 fixed phrases said
by varied espeak-ng voices, speeds and noise, typed with variations, 10 candidates per
note) is labelled with the real pipeline (pipeline.label_all, as `disamb label`) with 5%
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
import os
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from disamb.cache import ClipCache  # noqa: E402
from disamb.chats import read_notes  # noqa: E402
from disamb.clips import ClipOptions  # noqa: E402
from disamb.label import MatchOptions  # noqa: E402
from disamb.models import load_model  # noqa: E402
from disamb.pipeline import label_all  # noqa: E402
from disamb.classes import class_key  # noqa: E402
from disamb.combine import fit_text_classifier  # noqa: E402
from disamb.textclass import (  # noqa: E402
    class_priors, expected_calibration_error, run_text_scoring, softmax_masked, text_features,
)
from disamb.train import (  # noqa: E402
    TrainOptions, build_classes, build_dataset, class_texts, train,
)

# The labeller's matching, as `disamb label` runs it (with the text prior, PMI). Figures measured
# before 2026-12-06 labelled without it (a weaker labeller: 0.917 against 0.958 on the first voice fold).
LABELLER = MatchOptions()

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


def prepare(out: Path, n_per_class: int, seed: int, model: str, mode: str = "full",
            max_notes: int | None = None) -> tuple[list, dict, dict, object, object]:
    """Generate the dataset (once) and run Whisper on every clip (cached); also the model."""
    from benchmarks.synth import closed_class_dataset

    data_dir = out / f"closed-n{n_per_class}-s{seed}"
    if not (data_dir / "truth.jsonl").exists():
        t0 = time.perf_counter()
        closed_class_dataset(data_dir, n_per_class=n_per_class, seed=seed)
        print(f"generated {data_dir} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    truth = {r["id"]: r for r in map(json.loads, (data_dir / "truth.jsonl").read_text().splitlines())}
    read = read_notes(data_dir / "chats.jsonl", data_dir / "recordings")
    if max_notes is not None:  # the first notes of the chat (their windows as in the whole chat)
        read.notes = read.notes[:max_notes]
    lm = load_model(model, "cpu")
    t0 = time.perf_counter()
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if done[0] % 20 == 0 or done[0] == len(read.notes):
            print(f"  clips {done[0]}/{len(read.notes)} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)

    # the clip stage as `disamb label` runs it (score mode's sure test with the shipped matcher and the priors)
    run = label_all(lm, read.notes, ClipOptions(mode=mode), LABELLER, out / "cache", on_done=tick)
    return read.notes, truth, run.outcomes, data_dir, lm


def senders_as_voices(notes: list, truth: dict) -> list:
    """The notes with the voice as the sender, as in a real chat where a person's notes are
    their voice (closed_class_dataset draws the sender apart from the voice: each of its
    6 senders speaks with ~16 of the 18 voices). Only the out-of-fold folds of the
    combination read the sender; the labeller and the audio do not, so the cache stays valid."""
    return [replace(n, sender=truth[n.id]["voice"]) for n in notes]


def phrase_keys(truth: dict) -> dict[str, str]:
    """Phrase -> the class a model trained on this chat names it by: the key its recordings
    were most often typed as (a class is named by its most common typed form; ties to the
    first key in sort order).

    The same as the phrase's own key wherever the typists typed the phrase, but nobody
    typed "the code is 4712": they typed "4712", "its 4712", "4712 ok". Scored against
    the phrase's own key, those recordings could never be classified right (before
    2026-12-07 they were: 8 of the 240, the gap between the ceiling and 1.0).
    """
    typed: dict[str, Counter] = {}
    for r in truth.values():
        typed.setdefault(r["class"], Counter())[class_key(r["text"])] += 1
    return {p: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for p, c in typed.items()}


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


LAST_MODEL: list = [None]  # the last combination trained: its class texts start the speed figure's lists


def text_models(lm, cache, data, head_res, opts, train_notes, test_notes, true_cls, rescore_top, max_variants) -> dict:
    """Head on the mean, text scoring alone (argmax PMI, no training) and the combination,
    scored on the held-out voices: accuracy, ECE and what each needed."""
    classes = data.classes.classes
    index = {c: i for i, c in enumerate(classes)}
    inside = np.array([t in index for t in true_cls])
    y = np.array([index.get(t, -1) for t in true_cls])
    out = {}

    def score(name: str, proba: np.ndarray, seconds: float) -> None:
        right = proba.argmax(1) == y  # a class outside the set is always wrong
        out[name] = {"test_correct": int(right.sum()),
                     "ece": expected_calibration_error(proba, np.where(inside, y, -1)),
                     "seconds": round(seconds, 2)}

    t0 = time.perf_counter()
    text = fit_text_classifier(head_res.classifier, data, opts, lm, train_notes, ClipOptions(), cache, rescore_top,
                               max_variants)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    proba, embs, errors = text.classifier.predict(lm, test_notes, ClipOptions(), cache)
    assert not errors, errors
    P = np.stack([proba[n.id] for n in test_notes])
    score("combination", P, t_fit + time.perf_counter() - t0)
    X = np.stack([embs[n.id] for n in test_notes])
    score("head on mean", head_res.classifier.predict_proba(X), 0.0)
    # text scoring alone: the class with the highest PMI, its softmax as the probability
    clf = text.classifier
    t0 = time.perf_counter()
    texts = run_text_scoring(lm, test_notes, clf.variants, ClipOptions(), cache)
    prior = class_priors(lm, clf.variants, cache)
    feats, ok = text_features([texts.results[n.id] for n in test_notes], clf.variants, prior)
    alone = softmax_masked(feats[..., 0], ok)
    score("text scoring alone", alone, time.perf_counter() - t0)
    out["mistakes"] = mistakes(test_notes, classes, y, P, alone, feats[..., 0], ok,
                               head_res.classifier.predict_proba(X))
    LAST_MODEL[0] = clf
    out["combination"]["weights"] = clf.describe()["weights"]
    out["combination"]["temperature"] = clf.combiner.temperature
    out["combination"]["holdout_accuracy"] = text.combine.holdout_accuracy
    out["combination"]["classes_scored_per_training_clip"] = text.scored_per_clip
    return out


def mistakes(test_notes, classes, y, comb, alone, pmi, ok, head) -> list[dict]:
    """The held-out notes the combination or the text scores alone got wrong: what each chose,
    the true class's PMI rank (1 = best, None: outside the class set) and the head's choice."""
    out = []
    for r, n in enumerate(test_notes):
        if comb[r].argmax() == y[r] and alone[r].argmax() == y[r]:
            continue
        pm = np.where(ok[r], pmi[r], -np.inf)
        out.append({"id": n.id, "truth": classes[y[r]] if y[r] >= 0 else None,
                    "combination": classes[comb[r].argmax()], "p": round(float(comb[r].max()), 3),
                    "text_alone": classes[alone[r].argmax()], "head": classes[head[r].argmax()],
                    "truth_pmi_rank": int((pm > pm[y[r]]).sum()) + 1 if y[r] >= 0 else None,
                    "pmi_gap": round(float(pm.max() - pm[y[r]]), 3) if y[r] >= 0 else None})
    return out


def run_setting(notes, truth, outcomes, test_ids, fraction, seed, head, epochs, recipes, labeller, lm=None,
                cache=None, rescore_top=None, max_variants=None, adapt_epochs=0) -> dict:
    """Label with this much gold (`labeller`: the Whisper model the clips were run with), then
    train every recipe and score on held-out voices; `lm` also the text-scoring models.

    `adapt_epochs` > 0: as `disamb train --adapt`, one encoder adapter trained on the
    training voices' labelled notes (never on a held-out voice), and everything after the
    labelling (embeddings, head, text scoring, combination) runs on the adapted model."""
    gold_notes = with_gold(notes, truth, fraction, seed, test_ids)
    train_notes = [n for n in gold_notes if n.id not in test_ids]
    test_notes = [n for n in gold_notes if n.id in test_ids]
    # The labeller sees the whole chat, as it would in use, but only training-voice notes carry gold.
    run = label_all(labeller, gold_notes, match_options=LABELLER, outcomes=outcomes)
    records, summary = run.records, run.summary
    by_id = {r["id"]: r for r in records}
    embs = {i: o.result.embedding for i, o in outcomes.items() if o.result is not None}
    adapted = None
    if adapt_epochs and lm is not None:
        lm, embs, adapted = adapt_encoder(lm, train_notes, by_id, gold_notes, cache, adapt_epochs)
    classes = build_classes(class_texts(train_notes, by_id), min_count=2)
    data = build_dataset(train_notes, by_id, embs, classes)

    acc_rows = [i for i, r in enumerate(data.role) if r == "accepted"]
    key_of = phrase_keys(truth)
    pseudo_right = sum(data.classes.classes[data.target[i]] == key_of[truth[data.ids[i]]["class"]] for i in acc_rows)
    true_cls = [key_of[truth[n.id]["class"]] for n in test_notes]
    X_test = np.stack([embs[n.id] for n in test_notes])
    result = {
        "gold_fraction": fraction, "seed": seed,
        "train_notes": len(train_notes), "test_notes": len(test_notes),
        "gold": data.count("gold"), "accepted": data.count("accepted"), "partial": data.count("partial"),
        "outside": data.outside, "classes": len(classes.classes),
        "true_classes_found": len({key_of[truth[n.id]["class"]] for n in notes} & set(classes.classes)),
        "pseudo_label_precision": pseudo_right / len(acc_rows) if acc_rows else None,
        "labeller_gold_accuracy": summary.gold_accuracy,
        "recipes": {},
    } | ({"adapter": adapted} if adapted else {})
    result["test_in_class_set"] = sum(t in set(classes.classes) for t in true_cls)
    labeller = {r["id"]: r for r in records}
    result["labeller_test_correct"] = sum(labeller[n.id]["label_id"] == truth[n.id]["label_id"] for n in test_notes)
    for name in recipes:
        loss, pseudo = RECIPES[name]
        t0 = time.perf_counter()
        opts = TrainOptions(loss=loss, pseudo_labels=pseudo, head=head, epochs=epochs, seed=seed)
        res = train(data, opts)
        pred = res.classifier.predict_proba(X_test).argmax(1)
        right = int(sum(res.classifier.classes[k] == t for k, t in zip(pred, true_cls)))
        result["recipes"][name] = {
            "test_correct": right, "holdout_accuracy": res.holdout_accuracy, "best_epoch": res.best_epoch,
            "seconds": round(time.perf_counter() - t0, 2),
        }
    if lm is not None:
        opts = TrainOptions(loss="proden", head=head, epochs=epochs, seed=seed)
        t0 = time.perf_counter()
        head_res = train(data, opts)
        t_head = time.perf_counter() - t0
        result["models"] = text_models(lm, cache, data, head_res, opts, train_notes, test_notes, true_cls, rescore_top,
                                       max_variants)
        result["models"]["head on mean"]["seconds"] = round(t_head, 2)
        result["mistakes"] = result["models"].pop("mistakes")
    return result


def adapt_encoder(lm, train_notes, records, all_notes, cache, epochs: int):
    """(adapted model, embeddings of every note by it, what the adapter cost): `train --adapt`'s
    adapter, trained on the training voices' notes only."""
    from disamb.adapt import AdaptOptions
    from disamb.clips import embed_notes
    from disamb.match import default_matcher
    from disamb.model_adapter import train_model_adapter

    t0 = time.perf_counter()
    adapted, adapter = train_model_adapter(lm, train_notes, {n.id: records[n.id] for n in train_notes},
                                           ClipOptions(), cache.root, AdaptOptions(epochs=epochs))
    t_train = time.perf_counter() - t0
    embs, errors = embed_notes(adapted, all_notes, ClipOptions(), cache, default_matcher())
    assert not errors, errors
    info = {"train_notes": len(adapter.train_ids), "epochs": epochs, "reused": adapter.reused,
            "epoch_losses": [round(x, 4) for x in adapter.epoch_losses], "train_seconds": round(t_train, 1),
            "embed_seconds": round(time.perf_counter() - t0 - t_train, 1)}
    print(f"  adapter: {info}", file=sys.stderr)
    return adapted, embs, info


MAX_EVERY = 100  # classes up to which predict_speed also times scoring every class


def predict_speed(lm, clf, notes: list, extra_texts: list[str], sizes: tuple[int, ...], top_k: int, root: Path) -> dict:
    """Clips per second of `predict` on fresh clips (nothing cached but the text priors, which
    a model computes once): the head alone, every class scored, and the head's top K scored.

    Class lists beyond the trained ones are other typed texts of the chat, one class each,
    with a random head and weights: the speed does not depend on what was learned.
    """
    import shutil

    import torch

    from disamb.combine import Combiner, TextClassifier
    from disamb.train import Classifier, make_head

    out = {}
    for C in sizes:
        variants = (clf.variants + [[t] for t in extra_texts])[:C]
        if len(variants) < C:
            continue
        torch.manual_seed(0)
        head = Classifier(classes=[f"c{k}" for k in range(C)], head=make_head(clf.dim, C), mean=clf.head.mean,
                          std=clf.head.std, meta={})
        comb = Combiner(np.abs(np.random.default_rng(0).normal(size=3)), np.zeros(C), np.ones(3))
        row = {}
        # every class scored costs one decoder pass per rendering per clip: timed up to MAX_EVERY classes
        modes = (("head only", 0),) + ((("every class", None),) if C <= MAX_EVERY else ()) + ((f"top {top_k}", top_k),)
        for name, top in modes:
            cache_dir = root / f"speed-{C}-{name.replace(' ', '_')}"
            shutil.rmtree(cache_dir, ignore_errors=True)
            cache = ClipCache(cache_dir)
            model = TextClassifier(head, comb, variants, top)
            class_priors(lm, variants, cache)  # once per model, cached: not part of the per-clip cost
            t0 = time.perf_counter()
            if top == 0:
                got = run_text_scoring(lm, notes, variants, ClipOptions(), cache, which={})
                assert not got.errors
            else:
                proba, _, errors = model.predict(lm, notes, ClipOptions(), cache)
                assert not errors and len(proba) == len(notes)
            row[name] = round(len(notes) / (time.perf_counter() - t0), 3)
            shutil.rmtree(cache_dir, ignore_errors=True)
        out[str(C)] = row
        print(f"  predict speed, {C} classes: " + ", ".join(f"{k} {v:.2f} clips/s" for k, v in row.items()),
              file=sys.stderr)
    return out


def speed_only(args, notes: list, data_dir: Path) -> None:
    """`--speed-only`: the predict speed with the 30 phrases as classes (untrained weights)."""
    import torch

    from benchmarks.synth import CLASS_PHRASES
    from disamb.combine import Combiner, TextClassifier
    from disamb.train import Classifier, make_head

    lm = load_model(args.model, "cpu")
    dim = lm.model.dims.n_audio_state
    head = Classifier(classes=[class_key(p) for p in CLASS_PHRASES], head=make_head(dim, len(CLASS_PHRASES)),
                      mean=np.zeros(dim, np.float32), std=np.ones(dim, np.float32), meta={})
    torch.manual_seed(0)
    clf = TextClassifier(head, Combiner(np.ones(3), np.zeros(len(CLASS_PHRASES)), np.ones(3)),
                         [[p] for p in CLASS_PHRASES])
    known = set(head.classes)
    extra = list(dict.fromkeys(c.text for n in notes for c in n.candidates if class_key(c.text) not in known))
    test = notes[-args.speed_clips:]
    speed = {"clips": len(test), "top_k": args.speed_top, "loadavg_before": list(os.getloadavg()),
             "clips_per_second": predict_speed(lm, clf, test, extra, tuple(args.speed_classes), args.speed_top, args.out),
             "loadavg_after": list(os.getloadavg())}
    path = args.json or (args.out / "speed.json")
    path.write_text(json.dumps({"command": "python " + " ".join(sys.argv), "dataset": str(data_dir),
                                "predict_speed": speed}, indent=1) + "\n")
    print(f"wrote {path}")


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
    ap.add_argument("--clip-mode", default="full", choices=["full", "score"],
                    help="The labeller's clip stage: transcribe every clip, or only where the likelihood is unsure.")
    ap.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES), metavar="RECIPE",
                    help="Head recipes to compare (default: all).")
    ap.add_argument("--max-notes", type=int, default=None, help="Use only the chat's first N voice notes.")
    ap.add_argument("--max-variants", type=int, default=None, help="Typed variants scored per class (default: the package's).")
    ap.add_argument("--no-text", action="store_true", help="Leave out text scoring and the combination.")
    ap.add_argument("--rescore-top", type=int, default=None, help="Combination: score only the head's top K classes.")
    ap.add_argument("--speed-clips", type=int, default=6, help="Fresh clips timed for the predict speed (0: skip).")
    ap.add_argument("--speed-classes", type=int, nargs="*", default=[30, 300])
    ap.add_argument("--speed-top", type=int, default=10)
    ap.add_argument("--senders", default="voice", choices=["voice", "chat"],
                    help="A note's sender: its voice, as in a real chat (default), or the generator's (drawn apart from the voice).")
    ap.add_argument("--adapt-epochs", type=int, default=0,
                    help="As `train --adapt`: an encoder adapter trained on the training voices (0: none).")
    ap.add_argument("--speed-only", action="store_true",
                    help="Only the predict speed, with the benchmark's 30 phrases as the first classes.")
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    notes, truth, outcomes, data_dir, labeller = prepare(args.out, args.n_per_class, args.data_seed, args.model,
                                                        args.clip_mode, args.max_notes)
    if args.prepare_only:
        return
    if args.speed_only:
        speed_only(args, notes, data_dir)
        return
    if args.senders == "voice":
        notes = senders_as_voices(notes, truth)
    lm = cache = None
    if not args.no_text:
        lm, cache = labeller, ClipCache(args.out / "cache")
    folds = voice_folds(notes, truth, args.folds, args.data_seed)
    runs = []
    t_start = time.perf_counter()
    partial = (args.json or (args.out / "results.json")).with_suffix(".partial.json")
    # fold by fold, every gold fraction on a fold before the next fold: the Whisper work of a fold
    # serves all its settings, and the runs so far are written after each one
    for seed in range(args.seeds):
        for f, test_ids in enumerate(folds):
            for fraction in args.gold:
                r = run_setting(notes, truth, outcomes, test_ids, fraction, seed, args.head, args.epochs, args.recipes,
                                labeller, lm, cache, args.rescore_top, args.max_variants, args.adapt_epochs)
                r["fold"] = f
                runs.append(r)
                print(f"  gold {fraction:.0%} draw {seed} fold {f}: " + ", ".join(
                    f"{name} {r[where][name]['test_correct'] / r['test_notes']:.3f}"
                    for where, names in (("recipes", args.recipes), ("models", list(r.get("models", {}))))
                    for name in names) + f", labeller {r['labeller_test_correct'] / r['test_notes']:.3f} "
                    f"({time.perf_counter() - t_start:.0f} s)", file=sys.stderr)
                partial.write_text(json.dumps({"command": "python " + " ".join(sys.argv), "runs": runs}, indent=1))

    def pooled(fraction: float, seed: int, key) -> float:
        got = [r for r in runs if r["gold_fraction"] == fraction and r["seed"] == seed]
        return sum(key(r) for r in got) / sum(r["test_notes"] for r in got)

    def mean_sd(fraction: float, key) -> tuple[float, float]:
        a = [pooled(fraction, s, key) for s in range(args.seeds)]
        return float(np.mean(a)), float(np.std(a))

    table = {f: {name: mean_sd(f, lambda r, n=name: r["recipes"][n]["test_correct"]) for name in args.recipes}
             for f in args.gold}
    model_names = list(runs[0].get("models", {})) if runs else []
    models = {f: {name: {"accuracy": mean_sd(f, lambda r, n=name: r["models"][n]["test_correct"]),
                         "ece": mean_sd(f, lambda r, n=name: r["models"][n]["ece"] * r["test_notes"])}
                  for name in model_names} for f in args.gold}
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
    for name in args.recipes:
        print(f"{name:<28}" + "".join(f"{table[f][name][0]:>10.3f} ±{table[f][name][1]:.3f}" for f in args.gold))
    for name in model_names:
        print(f"{name:<28}" + "".join(f"{models[f][name]['accuracy'][0]:>10.3f} ±{models[f][name]['accuracy'][1]:.3f}"
                                      for f in args.gold)
              + "   ECE " + " ".join(f"{models[f][name]['ece'][0]:.3f}" for f in args.gold))
    print(f"{'(test class in class set)':<28}" + "".join(f"{ref[f]['in_class_set']:>17.3f}" for f in args.gold))
    print(f"{'(labeller, with the chat)':<28}" + "".join(f"{ref[f]['labeller_with_chat']:>17.3f}" for f in args.gold))
    for f in args.gold:
        c = counts[f]
        print(f"  {f:.0%} gold, per fold: {c['train_notes']:.0f} training notes = {c['gold']:.0f} gold + "
              f"{c['accepted']:.0f} accepted (precision {np.mean(prec[f]):.3f}) + {c['partial']:.0f} candidate-set only "
              f"+ {c['outside']:.0f} outside; {c['classes']:.0f} classes")

    speed = None
    if lm is not None and args.speed_clips > 0:
        by_id = {n.id: n for n in notes}
        last = runs[-1]
        test = [by_id[i] for i in sorted(folds[last["fold"]])][: args.speed_clips]
        known = set(LAST_MODEL[0].classes)
        extra = list(dict.fromkeys(c.text for n in notes for c in n.candidates if class_key(c.text) not in known))
        speed = {"clips": len(test), "top_k": args.speed_top, "loadavg_before": list(os.getloadavg()),
                 "clips_per_second": predict_speed(lm, LAST_MODEL[0], test, extra, tuple(args.speed_classes),
                                                   args.speed_top, args.out),
                 "loadavg_after": list(os.getloadavg())}

    path = args.json or (args.out / "results.json")
    import subprocess

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    path.write_text(json.dumps({
        "commit": commit or None, "command": "python " + " ".join(sys.argv), "dataset": str(data_dir),
        "recordings": len(notes), "folds": args.folds, "head": args.head, "clip_mode": args.clip_mode,
        "epochs": args.epochs, "seeds": args.seeds, "senders": args.senders, "rescore_top": args.rescore_top, "max_variants": args.max_variants,
        "adapt_epochs": args.adapt_epochs,
        "seconds": round(time.perf_counter() - t_start, 1),
        "table": {f"{f:.2f}": {k: {"mean": m, "sd": s} for k, (m, s) in v.items()} for f, v in table.items()},
        "models": {f"{f:.2f}": {k: {m: {"mean": v[m][0], "sd": v[m][1]} for m in v} for k, v in d.items()}
                   for f, d in models.items()},
        "reference": {f"{f:.2f}": v for f, v in ref.items()},
        "predict_speed": speed,
        "runs": runs,
    }, indent=1) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
