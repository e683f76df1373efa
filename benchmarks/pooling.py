"""Attention pooling over a clip's own encoder frames against the mean, for the classifier head.

Issue 17 item 4. The head `disamb train` fits sees the mean of tiny.en's encoder frames
(`asr.embeddings`), which forgets where in the clip the words are. Here a head attends:
a learned query scores each of the clip's valid encoder frames, a softmax over those
frames (the padding never counts) weighs them, and the weighted sum goes through the same
linear layer. Frames are standardised with the statistics of the clip means, so a query of
zero pools exactly the mean head's input; the query starts at zero and, with one head, the
linear layer draws the same start as the mean head's, so the two differ only by what the
attention learns.

Both heads train with the product's recipe on the product's labels and targets, as
benchmarks/train.py does it (`run_setting`): the chat labelled by `pipeline.label_all` with
5% or 20% of the training notes carrying gold, classes from `train.build_classes`, rows
from `train.build_dataset`, CE on gold and accepted notes plus PRODEN through the
candidate sets of the rest (`train.make_objective` / `train.fit_head`, the loop the mean
head trains with), the same epochs, early stopping on held-out gold. Scored on the
recordings of voices never heard in training (3 voice folds, every recording tested once),
unrestricted choice among all classes, no chat.

Frames come from `asr.encode` with the context the labeller used (`ClipOptions().audio_ctx`),
computed once per clip and kept in memory as float16; the script checks that their mean is
the cached embedding the mean head uses.

Measured (benchmarks/results/pooling.json: 240 recordings, 3 voice folds, 3 gold draws, 200
epochs, pooled held-out accuracy / ECE; the mean head is the 0.82 of benchmarks/train.py):

    head                         5% gold         20% gold
    mean                         0.819 / 0.099   0.817 / 0.104
    attention, 1 head            0.717 / 0.187   0.690 / 0.179
    attention, 4 heads           0.731 / 0.193   0.767 / 0.162
    attention, 1 head, scaled    0.843 / 0.115   0.835 / 0.102

The plain query (the design as planned) sharpens within a few epochs (the held-out gold
picked epoch 6 or earlier in 8 of 18 settings) onto a median 3-27% of a clip's ~98 frames
(exp of the weights' entropy) and loses 10-13 points: a few frames of a new voice carry its timbre more
than its words, and its extra mistakes are unrelated phrases ("running late" -> "dinner is
ready"), worst on voices the mean handles (en-gb-x-rp+f1: 31 wrong against 5). Scores scaled
by 1/sqrt(d), added after the first settings showed that collapse (so chosen with a look at
held-out figures), stay near the mean (weights spread over a median 68-90% of the frames): +2.4
points at 5% gold, +1.8 at 20%, ECE no better, 62 of the mean's mistakes fixed and 32 new.

Decision: that is short of a clear margin (2 points at both gold levels) and below the text
scoring's 0.93, so `disamb train` has no `--head attention`; this script and its JSON are the
measured comparison. The frames cost an extra encoder pass per clip here (166 s for 240
clips on the shared machine); the product would need them cached as well.

    python benchmarks/pooling.py --out /work/bench-data/train          # the full comparison
    python benchmarks/pooling.py --out /work/bench-data/train --seeds 1  # one gold draw
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.special import softmax
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.train import LABELLER, phrase_keys, prepare, voice_folds, with_gold  # noqa: E402
from disamb import asr  # noqa: E402
from disamb.audio import decode  # noqa: E402
from disamb.clips import ClipOptions  # noqa: E402
from disamb.pipeline import label_all  # noqa: E402
from disamb.textclass import expected_calibration_error  # noqa: E402
from disamb.train import TrainOptions, build_classes, build_dataset, class_texts, fit_head, make_objective, train  # noqa: E402

# ------------------------------------------------------------------ the attention head


def attention_pool(frames: torch.Tensor, valid: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool (n, T, d) frames with (n, T, h) scores: a softmax over each clip's valid frames
    per head (padding gets weight exactly zero), the weighted sums side by side, (n, h*d).
    Returns (pooled, weights (n, T, h))."""
    scores = scores.masked_fill(~valid[..., None], float("-inf"))
    weights = torch.softmax(scores, dim=1)
    pooled = torch.einsum("nth,ntd->nhd", weights, frames)
    return pooled.reshape(frames.shape[0], -1), weights


class AttentionHead(nn.Module):
    """Learned queries score each frame (a linear map per head), `attention_pool`, then a
    linear layer to the classes. The output layer is made first, as `train.make_head`
    makes the mean head's, so with one head and the same seed both start from the same
    weights; the queries start at zero (uniform weights: the mean)."""

    def __init__(self, dim: int, n_classes: int, heads: int = 1, scale: float = 1.0):
        super().__init__()
        self.scale = scale  # 1/sqrt(dim): scaled dot-product scores, a query that learns ~sqrt(dim) times slower
        self.out = nn.Linear(dim * heads, n_classes)
        self.query = nn.Linear(dim, heads)
        nn.init.zeros_(self.query.weight)
        nn.init.zeros_(self.query.bias)

    def pool(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        frames, valid = inputs
        return attention_pool(frames, valid, self.query(frames) * self.scale)

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.out(self.pool(inputs)[0])


def padded(frames: dict[str, np.ndarray], ids: list[str], mean: np.ndarray, std: np.ndarray
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised frames of these clips, zero-padded to the longest, and the valid mask."""
    T = max(frames[i].shape[0] for i in ids)
    x = np.zeros((len(ids), T, mean.shape[0]), np.float32)
    valid = np.zeros((len(ids), T), bool)
    for r, i in enumerate(ids):
        f = frames[i]
        x[r, : len(f)] = (f.astype(np.float32) - mean) / std
        valid[r, : len(f)] = True
    return torch.from_numpy(x), torch.from_numpy(valid)


def clip_frames(lm, notes: list, ctx_mode) -> dict[str, np.ndarray]:
    """Each clip's valid encoder frames (float16), one clip per encoder pass as labelling runs it on a CPU."""
    out = {}
    t0 = time.perf_counter()
    with torch.inference_mode():
        for k, note in enumerate(notes):
            got = decode(note.audio)
            if got.audio is None:
                continue
            [e] = asr.encode(lm, [got.audio], ctx_mode)
            out[note.id] = e.features[: e.valid_frames].float().cpu().numpy().astype(np.float16)
            if (k + 1) % 40 == 0:
                print(f"  frames {k + 1}/{len(notes)} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return out


# ------------------------------------------------------------------ one setting


def _scores(proba: np.ndarray, y: np.ndarray) -> dict:
    right = proba.argmax(1) == y  # a class outside the set is always wrong
    return {"test_correct": int(right.sum()), "ece": expected_calibration_error(proba, y)}


def run_setting(notes, truth, outcomes, frames, test_ids, fraction, seed, epochs, heads: list[tuple[int, bool]],
                labeller) -> dict:
    """Label with this much gold, train the mean head and the attention heads on the same
    rows, targets and recipe, score all on the held-out voices."""
    gold_notes = with_gold(notes, truth, fraction, seed, test_ids)
    train_notes = [n for n in gold_notes if n.id not in test_ids]
    test_notes = [n for n in gold_notes if n.id in test_ids]
    run = label_all(labeller, gold_notes, match_options=LABELLER, outcomes=outcomes)
    by_id = {r["id"]: r for r in run.records}
    embs = {i: o.result.embedding for i, o in outcomes.items() if o.result is not None}
    classes = build_classes(class_texts(train_notes, by_id), min_count=2)
    data = build_dataset(train_notes, by_id, embs, classes)
    index = {c: k for k, c in enumerate(classes.classes)}
    key_of = phrase_keys(truth)
    true_cls = [key_of[truth[n.id]["class"]] for n in test_notes]
    y = np.array([index.get(t, -1) for t in true_cls])
    test_ids_list = [n.id for n in test_notes]
    opts = TrainOptions(loss="proden", head="linear", epochs=epochs, seed=seed)
    result = {"gold_fraction": fraction, "seed": seed, "train_rows": len(data.ids), "test_notes": len(test_notes),
              "classes": len(classes.classes), "test_in_class_set": int((y >= 0).sum()), "heads": {}}
    preds = {}

    t0 = time.perf_counter()
    res = train(data, opts)
    proba = res.classifier.predict_proba(np.stack([embs[i] for i in test_ids_list]))
    result["heads"]["mean"] = _scores(proba, y) | {
        "seconds": round(time.perf_counter() - t0, 2), "best_epoch": res.best_epoch,
        "holdout_accuracy": res.holdout_accuracy}
    preds["mean"] = proba

    mean, std = data.X.mean(0), data.X.std(0) + 1e-6  # the mean head's statistics (train.train)
    for h, scaled in heads:
        name = f"attention, {h} head" + ("s" if h > 1 else "") + (", scaled" if scaled else "")
        scale = mean.shape[0] ** -0.5 if scaled else 1.0
        t0 = time.perf_counter()
        obj = make_objective(data, opts)
        inputs = padded(frames, data.ids, mean, std)
        head, history, best, _ = fit_head(inputs, obj, opts, build=lambda: AttentionHead(mean.shape[0], len(index), h, scale))
        seconds = time.perf_counter() - t0
        test_in = padded(frames, test_ids_list, mean, std)
        with torch.no_grad():
            z = head(test_in).numpy().astype(np.float64)
            _, w = head.pool(test_in)
        valid = test_in[1]
        # how spread the weights are: exp(entropy) / valid frames (1 = uniform, the mean)
        ent = -(w * torch.log(w.clamp_min(1e-30))).sum(1).mean(1)
        spread = (ent.exp() / valid.sum(1)).numpy()
        peak = (w.argmax(1)[:, 0].float() / valid.sum(1)).numpy()  # where the first head looks, 0..1 of the clip
        hold = next((e.holdout_accuracy for e in history if e.epoch == best), None)
        proba = softmax(z, axis=1)
        result["heads"][name] = _scores(proba, y) | {
            "seconds": round(seconds, 2), "best_epoch": best, "holdout_accuracy": hold,
            "weight_spread_median": float(np.median(spread)), "peak_position_median": float(np.median(peak))}
        preds[name] = proba
    result["notes"] = [
        {"id": i, "voice": truth[i]["voice"], "true": t} | {
            k: classes.classes[int(p[r].argmax())] for k, p in preds.items()}
        for r, (i, t) in enumerate(zip(test_ids_list, true_cls))]
    return result


# ------------------------------------------------------------------ the table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench-data" / "train",
                    help="benchmarks/train.py's folder (dataset and clip cache).")
    ap.add_argument("--n-per-class", type=int, default=8)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--gold", type=float, nargs="+", default=[0.05, 0.20])
    ap.add_argument("--seeds", type=int, default=3, help="Gold draws (and training seeds) per fold and setting.")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--heads", type=int, nargs="+", default=[1, 4], help="Attention heads to compare (each a model).")
    ap.add_argument("--scaled", type=int, nargs="*", default=[1],
                    help="Head counts also run with scores scaled by 1/sqrt(d) (a slower query).")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "pooling.json")
    ap.add_argument("--resume", action="store_true", help="Keep the settings JSON.partial.json already holds.")
    args = ap.parse_args()

    torch.set_num_threads(1)  # the machine is shared; one clip's encoder pass fits one core
    t_start = time.perf_counter()
    notes, truth, outcomes, data_dir, lm = prepare(args.out, args.n_per_class, args.data_seed, args.model)
    t_prepare = time.perf_counter() - t_start
    ctx = ClipOptions().audio_ctx
    folds = voice_folds(notes, truth, args.folds, args.data_seed)
    heads = [(h, False) for h in args.heads] + [(h, True) for h in args.scaled]
    partial = args.json.with_suffix(".partial.json")  # the runs so far, after each setting
    args.json.parent.mkdir(parents=True, exist_ok=True)
    settings = [(seed, f, fraction) for seed in range(args.seeds) for f in range(args.folds) for fraction in args.gold]
    done, frame_info = {}, None
    if args.resume and partial.exists():  # settings a stopped run finished (same options assumed)
        prev = json.loads(partial.read_text())
        done = {(r["seed"], r["fold"], r["gold_fraction"]): r for r in prev["runs"]}
        frame_info = prev.get("frames")
    frames = {}
    if any(s not in done for s in settings):
        t0 = time.perf_counter()
        frames = clip_frames(lm, notes, ctx)
        t_frames = time.perf_counter() - t0
        # the frames' mean must be the embedding the mean head sees (same model, same context)
        gap = max(float(np.abs(frames[i].astype(np.float32).mean(0) - outcomes[i].result.embedding).max())
                  for i in frames if outcomes.get(i) is not None and outcomes[i].result is not None)
        lengths = [len(f) for f in frames.values()]
        frame_info = {"seconds": round(t_frames, 1), "median_valid": float(np.median(lengths)),
                      "max_valid": int(max(lengths)), "max_abs_gap_to_cached_embedding": gap}
        print(f"frames of {len(frames)} clips in {t_frames:.0f} s ({np.median(lengths):.0f} valid frames median, "
              f"max {max(lengths)}); largest |mean of frames - cached embedding| {gap:.4f}", file=sys.stderr)

    runs = []
    for seed, f, fraction in settings:
        if (seed, f, fraction) in done:
            runs.append(done[seed, f, fraction])
            continue
        r = run_setting(notes, truth, outcomes, frames, folds[f], fraction, seed, args.epochs, heads, lm)
        r["fold"] = f
        runs.append(r)
        print(f"  gold {fraction:.0%} draw {seed} fold {f}: " + ", ".join(
            f"{k} {v['test_correct'] / r['test_notes']:.3f} ({v['seconds']:.1f} s)" for k, v in r["heads"].items()),
            file=sys.stderr)
        partial.write_text(json.dumps({"command": "python " + " ".join(sys.argv), "frames": frame_info, "runs": runs},
                                      indent=1))
    names = list(runs[0]["heads"])

    def pooled(sel: list[dict], name: str) -> dict:
        n = sum(r["test_notes"] for r in sel)
        return {"accuracy": sum(r["heads"][name]["test_correct"] for r in sel) / n,
                "ece": sum(r["heads"][name]["ece"] * r["test_notes"] for r in sel) / n,
                "seconds": float(np.mean([r["heads"][name]["seconds"] for r in sel]))}

    table = {}
    for fraction in args.gold:
        row = {}
        for name in names:
            per_fold = {str(f): pooled([r for r in runs if r["gold_fraction"] == fraction and r["fold"] == f], name)
                        for f in range(args.folds)}
            per_draw = [pooled([r for r in runs if r["gold_fraction"] == fraction and r["seed"] == s], name)["accuracy"]
                        for s in range(args.seeds)]
            row[name] = {"pooled": pooled([r for r in runs if r["gold_fraction"] == fraction], name),
                         "pooled_sd_over_draws": float(np.std(per_draw)), "folds": per_fold}
        table[f"{fraction:.2f}"] = row

    # mistakes side by side: held-out notes one head gets wrong and the other right
    mistakes = {}
    for name in names[1:]:
        both = only_mean = only_att = 0
        confusions: dict[str, int] = {}
        for r in runs:
            for n in r["notes"]:
                wm, wa = n["mean"] != n["true"], n[name] != n["true"]
                both += wm and wa
                only_mean += wm and not wa
                only_att += wa and not wm
                if wa:
                    key = f"{n['true']} -> {n[name]}"
                    confusions[key] = confusions.get(key, 0) + 1
        mistakes[name] = {"both_wrong": both, "only_mean_wrong": only_mean, "only_attention_wrong": only_att,
                          "top_confusions": dict(sorted(confusions.items(), key=lambda kv: -kv[1])[:12])}
    mean_conf: dict[str, int] = {}
    for r in runs:
        for n in r["notes"]:
            if n["mean"] != n["true"]:
                key = f"{n['true']} -> {n['mean']}"
                mean_conf[key] = mean_conf.get(key, 0) + 1
    mistakes["mean"] = {"top_confusions": dict(sorted(mean_conf.items(), key=lambda kv: -kv[1])[:12])}

    print(f"\n{len(notes)} recordings of 30 phrases, {args.folds} voice folds (test voices never heard in training), "
          f"PRODEN recipe, {args.epochs} epochs, {args.seeds} gold draws; held-out accuracy / ECE, pooled over folds\n")
    print(f"{'head':<22}" + "".join(f"{f'{float(f):.0%} gold':>28}" for f in table))
    for name in names:
        cells = []
        for f in table:
            c = table[f][name]
            folds_txt = "/".join(f"{c['folds'][str(k)]['accuracy']:.2f}" for k in range(args.folds))
            cells.append(f"{c['pooled']['accuracy']:.3f} ±{c['pooled_sd_over_draws']:.3f} ECE {c['pooled']['ece']:.3f}"
                         f" ({folds_txt})")
        print(f"{name:<22}" + "   ".join(cells))
    for name, m in mistakes.items():
        if name != "mean":
            print(f"  {name}: both wrong {m['both_wrong']}, only the mean wrong {m['only_mean_wrong']}, "
                  f"only attention wrong {m['only_attention_wrong']} (note-runs over all settings)")

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "commit": commit or None, "command": "python " + " ".join(sys.argv), "dataset": str(data_dir),
        "recordings": len(notes), "folds": args.folds, "epochs": args.epochs, "seeds": args.seeds,
        "recipe": "CE on gold + accepted, PRODEN on the rest (TrainOptions(loss='proden'), linear output layer)",
        "audio_ctx": ctx, "frames": frame_info, "settings_resumed": sum(s in done for s in settings),
        "prepare_seconds": round(t_prepare, 1), "seconds": round(time.perf_counter() - t_start, 1),
        "loadavg": list(os.getloadavg()),
        "table": table, "mistakes": mistakes, "runs": runs,
    }, indent=1) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
