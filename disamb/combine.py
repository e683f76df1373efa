"""The classifier users get: the decoder's class scores and the head's logits in one small model.

    logit_c = (w_pmi · PMI_c + w_char · PMI_c/chars_c + w_head · head_c + b_c) / T

Three non-negative weights (every term is evidence for its class), one bias per class and
a temperature. So few parameters learn from a few hundred pseudo-labels without learning
the voices; the head's share is what the words alone miss. It trains with the head's own
recipes (`train._objective_rows`: CE on gold and accepted notes, PRODEN / CC / MSE through
the candidate sets of the rest). The head's logits it learns from are out-of-fold (heads
trained without the note), since a head's logits on its own training notes are far surer
than on a new recording and the weights would trust them too much; the folds keep each
sender's notes together (`oof_folds`), so the head is judged on voices it did not hear.

The temperature is fitted on the held-out gold when there are at least MIN_CALIBRATION
notes; with fewer it stays 1: the weights were fitted by cross-entropy on scores that
never saw the notes (PMI needs no training, head logits are out-of-fold), which already
leaves the probabilities close to calibrated (benchmarks/train.py reports the ECE).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .cache import ClipCache
from .chats import VoiceNote
from .clips import ClipOptions
from .textclass import (
    TEXT_FEATURES, class_priors, run_text_scoring, scored_variants, shortlist, softmax_masked, text_features,
)
from .train import (
    META_FILE, WEIGHTS_FILE, Classifier, Dataset, ModelFileError, TrainError, TrainOptions, _objective_rows,
    proden_update, recipe_total, split_holdout, train,
)

FEATURES = TEXT_FEATURES + ("head",)
MIN_CALIBRATION = 20  # held-out gold notes needed to fit the temperature
OOF_FOLDS = 3
NEG = -1e4  # logit of a class not scored for a clip (exp underflows to 0, no NaN in the losses)


@dataclass
class Combiner:
    weights: np.ndarray  # (F,) on the scaled features, non-negative
    bias: np.ndarray  # (C,)
    scale: np.ndarray  # (F,) features are divided by it
    temperature: float = 1.0

    def logits(self, feats: np.ndarray, ok: np.ndarray) -> np.ndarray:
        """(n, C) logits, −inf for classes not scored."""
        z = (feats / self.scale) @ self.weights + self.bias
        return np.where(ok, z / self.temperature, -np.inf)

    def proba(self, feats: np.ndarray, ok: np.ndarray) -> np.ndarray:
        return softmax_masked(self.logits(feats, ok), ok)


def features_with_head(text_feats: np.ndarray, head_logits: np.ndarray) -> np.ndarray:
    """(n, C, F): the text scores with the head's logit as the last feature."""
    return np.concatenate([text_feats, head_logits[:, :, None]], axis=2)


def subset(data: Dataset, rows) -> Dataset:
    rows = np.asarray(rows, int)
    return replace(data, ids=[data.ids[i] for i in rows], X=data.X[rows], role=[data.role[i] for i in rows],
                   target=data.target[rows], confidence=data.confidence[rows], mask=data.mask[rows],
                   init=data.init[rows])


def oof_folds(senders: list[str | None], k: int, seed: int) -> tuple[np.ndarray, str]:
    """The fold of each row for the out-of-fold head logits, and how the folds were made.

    The combiner learns how far to trust the head from these logits, and a classifier is
    used on voices it never heard. With random folds a speaker's other notes sit in the
    head's training rows, so the head looks surer than it is on a new voice. Measured on
    benchmarks/train.py (5% gold, voice fold 1) the effect is small: 0.888 → 0.899, the
    head's weight already near 0.05 (the gap to the text scores' 0.933 was the weight on
    PMI per character). A chat's sender is the best voice label we
    have (a person's voice notes are their voice), so when at least k senders are known
    each sender's rows stay in one fold (largest first into the emptiest fold); rows
    without a sender are groups of one. Otherwise (a manifest, one or two senders) the
    folds are random: k-means on the clips' mean embeddings was tried as a stand-in for
    voices and does not follow them (benchmark, 240 clips of 18 voices: voice purity 0.21
    at 18 clusters against 0.20 by chance; the clusters follow noise and phrase).
    """
    n = len(senders)
    rng = np.random.default_rng(seed)
    known = {s for s in senders if s is not None}
    if len(known) < k:
        return rng.permutation(n) % k, "random"
    groups: dict[object, list[int]] = {}
    for i, s in enumerate(senders):
        groups.setdefault(s if s is not None else ("row", i), []).append(i)
    members = list(groups.values())
    order = sorted(rng.permutation(len(members)).tolist(), key=lambda g: -len(members[g]))  # ties in random order
    fold, size = np.zeros(n, int), np.zeros(k, int)
    for g in order:
        f = int(size.argmin())
        fold[members[g]] = f
        size[f] += len(members[g])
    return fold, f"by sender ({len(known)} senders)"


def out_of_fold_logits(data: Dataset, opts: TrainOptions, folds: int = OOF_FOLDS,
                       senders: list[str | None] | None = None) -> tuple[np.ndarray, str]:
    """Head logits for every row from a head trained on the other folds (`oof_folds`), and
    how the folds were made."""
    n = len(data.ids)
    out = np.zeros((n, data.n_classes), np.float64)
    k = max(2, min(folds, n))
    fold, how = oof_folds(senders if senders is not None else [None] * n, k, opts.seed)
    for f in range(k):
        test = np.flatnonzero(fold == f)
        if not len(test):
            continue
        try:
            head = train(subset(data, np.flatnonzero(fold != f)), opts).classifier
        except TrainError:  # a fold without a training example: no head evidence for its rows
            continue
        out[test] = head.logits(data.X[test])
    return out, how


@dataclass
class CombineResult:
    combiner: Combiner
    holdout_accuracy: float | None
    holdout_size: int
    temperature_from: str


def fit_combiner(feats: np.ndarray, ok: np.ndarray, data: Dataset, opts: TrainOptions,
                 bias_decay: float = 0.01, epochs: int = 300, lr: float = 0.05) -> CombineResult:
    """Fit the weights and biases with the recipe's losses on the training rows (the head's
    held-out gold left out), then the temperature on that held-out gold."""
    opts.check()
    holdout = split_holdout(data, opts.holdout, opts.seed)
    held = set(holdout)
    train_rows = np.array([i for i in range(len(data.ids)) if i not in held], int)
    parts = _objective_rows(data, opts, train_rows)
    if len(parts["ce"]) + len(parts["set"]) == 0:
        raise TrainError(f"no training examples for loss {opts.loss!r}")
    scale = np.array([max(1e-3, float(np.std(feats[..., j][ok]))) if ok.any() else 1.0
                      for j in range(feats.shape[2])])
    F_ = torch.from_numpy((feats / scale).astype(np.float32))
    okt = torch.from_numpy(ok)
    target = torch.from_numpy(data.target)
    mask = torch.from_numpy(data.mask)
    ce_rows = torch.from_numpy(parts["ce"].astype(np.int64))
    ce_w = torch.from_numpy(parts["ce_w"].astype(np.float32))
    set_rows = torch.from_numpy(parts["set"].astype(np.int64))
    set_w = torch.from_numpy(parts.get("set_w", np.zeros(0, np.float32)).astype(np.float32))
    start = data.init if opts.pseudo_labels else data.mask / data.mask.sum(1, keepdims=True).clip(1)
    weights = torch.from_numpy(start[parts["set"]].astype(np.float32))
    norm = max(float(ce_w.sum() + set_w.sum()), 1e-12)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opts.seed)
        raw = torch.full((F_.shape[2],), math.log(math.e - 1), requires_grad=True)  # softplus -> 1
        bias = torch.zeros(F_.shape[1], requires_grad=True)
        optim = torch.optim.Adam([raw, bias], lr=lr)

        def logits() -> torch.Tensor:
            z = F_ @ torch.nn.functional.softplus(raw) + bias
            return z.masked_fill(~okt, NEG)

        for _ in range(epochs):
            optim.zero_grad()
            z = logits()
            total = recipe_total(z, target, mask & okt, ce_rows, ce_w, set_rows, set_w, weights, opts.loss)
            loss = total / norm + bias_decay * (bias ** 2).mean()
            loss.backward()
            optim.step()
            if opts.loss == "proden" and len(set_rows):
                with torch.no_grad():
                    weights = proden_update(logits()[set_rows], mask[set_rows] & okt[set_rows])
        w = torch.nn.functional.softplus(raw).detach().numpy().astype(np.float64)
        b = bias.detach().numpy().astype(np.float64)
    comb = Combiner(weights=w, bias=b, scale=scale)
    acc, source = None, "none (too little held-out gold: fitted weights kept as they are)"
    if holdout:
        h = np.asarray(holdout)
        z = (feats[h] / scale) @ w + b
        z = np.where(ok[h], z, -np.inf)
        y = data.target[h]
        acc = float((z.argmax(1) == y).mean())
        if len(holdout) >= MIN_CALIBRATION:
            comb.temperature = fit_temperature(z, y)
            source = f"{len(holdout)} held-out gold notes"
    return CombineResult(comb, acc, len(holdout), source)


def fit_temperature(z: np.ndarray, y: np.ndarray) -> float:
    """The T minimising the negative log-likelihood of softmax(z / T) on (z, y)."""
    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        s = z / math.exp(log_t)
        top = s.max(1, keepdims=True)
        lse = np.log(np.exp(s - top).sum(1)) + top[:, 0]
        return float(np.mean(lse - s[np.arange(len(y)), y]))

    return float(math.exp(minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded").x))


# ------------------------------------------------------------------ the model users get


@dataclass
class TextClassifier:
    head: Classifier
    combiner: Combiner
    variants: list[list[str]]  # per class, the typed variants scored
    rescore_top: int | None = None  # score only the head's top K classes (None: all)
    info: dict = field(default_factory=dict)  # written under "text_scoring" in model.json

    @property
    def classes(self) -> list[str]:
        return self.head.classes

    @property
    def meta(self) -> dict:
        return self.head.meta | {"text_scoring": self.describe()}

    @property
    def dim(self) -> int:
        return self.head.dim

    def describe(self) -> dict:
        return self.info | {
            "features": list(FEATURES), "rescore_top": self.rescore_top,
            "variants": {c: v for c, v in zip(self.classes, self.variants)},
            "weights": dict(zip(FEATURES, map(float, self.combiner.weights))),
            "temperature": self.combiner.temperature,
        }

    def save(self, folder: Path) -> None:
        c = self.combiner
        tensors = {"combine.weights": torch.from_numpy(c.weights.astype(np.float32)),
                   "combine.bias": torch.from_numpy(c.bias.astype(np.float32)),
                   "combine.scale": torch.from_numpy(c.scale.astype(np.float32)),
                   "combine.temperature": torch.tensor([c.temperature], dtype=torch.float32)}
        self.head.save(folder, tensors, {"text_scoring": self.describe()})

    @classmethod
    def load(cls, folder: Path) -> "TextClassifier":
        from safetensors.torch import load_file

        head = Classifier.load(folder)  # checks the folder, the JSON and the head's weights
        path = Path(folder) / META_FILE
        ts = head.meta.get("text_scoring")
        C = len(head.classes)
        variants = ts.get("variants") if isinstance(ts, dict) else None
        if not isinstance(variants, dict) or any(
                not isinstance(variants.get(c), list) or not variants[c]
                or not all(isinstance(v, str) and v for v in variants[c]) for c in head.classes):
            raise ModelFileError(f'{path}: "text_scoring"."variants" must list typed texts for every class')
        top = ts.get("rescore_top")
        if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
            raise ModelFileError(f'{path}: "text_scoring"."rescore_top" must be a positive integer or null')
        t = load_file(str(Path(folder) / WEIGHTS_FILE))
        try:
            w, b, s = (t[f"combine.{k}"].double().numpy() for k in ("weights", "bias", "scale"))
            temp = float(t["combine.temperature"][0])
        except (KeyError, IndexError):
            raise ModelFileError(f"{Path(folder) / WEIGHTS_FILE}: no combine.* weights (not a text-scoring model)") from None
        F = len(FEATURES)
        if w.shape != (F,) or s.shape != (F,) or b.shape != (C,):
            raise ModelFileError(f"{Path(folder) / WEIGHTS_FILE}: combine.* weights do not match {F} features and {C} classes")
        if not (np.isfinite(w).all() and np.isfinite(b).all() and np.isfinite(s).all() and (s > 0).all()
                and math.isfinite(temp) and temp > 0):
            raise ModelFileError(f"{Path(folder) / WEIGHTS_FILE}: combine.* weights must be finite (scale, temperature positive)")
        info = {k: v for k, v in ts.items() if k not in ("variants", "rescore_top", "weights", "temperature", "features")}
        return cls(head, Combiner(w, b, s, temp), [list(variants[c]) for c in head.classes], top, info)

    def predict(self, lm, notes: list[VoiceNote], clip_options: ClipOptions, cache: ClipCache,
                on_done: Callable[[int], None] | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, str]]:
        """(probabilities over all classes by note id, embeddings by id, errors by id).

        With `rescore_top` the clips are embedded first (cache hits after label) and only
        the head's top K classes are scored; the rest get probability 0.
        """
        which = None
        if self.rescore_top is not None and self.rescore_top < len(self.classes):
            first = run_text_scoring(lm, notes, self.variants, clip_options, cache, which={})
            ids = [n.id for n in notes if n.id in first.embeddings]
            z = self.head.logits(np.stack([first.embeddings[i] for i in ids])) if ids else np.zeros((0, len(self.classes)))
            keep = shortlist(z, self.rescore_top)
            which = dict(zip(ids, keep))
            notes = [n for n in notes if n.id in which]
        texts = run_text_scoring(lm, notes, self.variants, clip_options, cache, which=which, on_done=on_done)
        ids = [n.id for n in notes if n.id in texts.results]
        proba = self.proba_of(lm, [texts.results[i] for i in ids], np.stack([texts.embeddings[i] for i in ids])
                              if ids else np.zeros((0, self.dim), np.float32), cache,
                              None if which is None else np.stack([which[i] for i in ids]))
        return dict(zip(ids, proba)), texts.embeddings, texts.errors

    def proba_of(self, lm, results, X: np.ndarray, cache: ClipCache, scored: np.ndarray | None = None) -> np.ndarray:
        prior = class_priors(lm, self.variants, cache)
        feats, ok = text_features(results, self.variants, prior, scored)
        return self.combiner.proba(features_with_head(feats, self.head.logits(X).astype(np.float64)), ok)


def load_classifier(folder: Path) -> Classifier | TextClassifier:
    """The model `disamb train` wrote: a text-scoring classifier, or a head alone (--head-only)."""
    try:
        meta = json.loads((Path(folder) / META_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        meta = None  # Classifier.load reports what is wrong
    if isinstance(meta, dict) and "text_scoring" in meta:
        return TextClassifier.load(folder)
    return Classifier.load(folder)


@dataclass
class TextTrainResult:
    classifier: TextClassifier
    combine: CombineResult
    scored_per_clip: float  # classes scored per training clip
    clip_errors: dict[str, str]


def fit_text_classifier(head: Classifier, data: Dataset, opts: TrainOptions, lm, notes: list[VoiceNote],
                        clip_options: ClipOptions, cache: ClipCache, rescore_top: int | None = None,
                        max_variants: int | None = None,
                        on_done: Callable[[int], None] | None = None) -> TextTrainResult:
    """Score the class texts on the training clips and fit the combination on `head`.

    With `rescore_top` only the out-of-fold head's top K classes and the note's candidate
    classes are scored per clip, as predict will score its top K.
    """
    from .textclass import MAX_VARIANTS

    variants = scored_variants(data.classes, max_variants or MAX_VARIANTS)
    by_id = {n.id: n for n in notes}
    oof, folds = out_of_fold_logits(data, opts, senders=[by_id[i].sender for i in data.ids])
    which_rows = shortlist(oof, rescore_top, data.mask)
    wanted = {i: which_rows[r] for r, i in enumerate(data.ids)}
    texts = run_text_scoring(lm, [by_id[i] for i in data.ids], variants, clip_options, cache, which=wanted,
                             on_done=on_done)
    prior = class_priors(lm, variants, cache)
    feats, ok = text_features([texts.results.get(i) for i in data.ids], variants, prior, which_rows)
    combined = fit_combiner(features_with_head(feats, oof), ok, data, opts)
    info = {"holdout_accuracy": combined.holdout_accuracy, "holdout_size": combined.holdout_size,
            "temperature_from": combined.temperature_from, "head_out_of_fold": folds}
    clf = TextClassifier(head, combined.combiner, variants, rescore_top, info)
    return TextTrainResult(clf, combined, float(which_rows.sum(1).mean()) if len(data.ids) else 0.0, texts.errors)
