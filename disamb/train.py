"""A small classifier on pooled Whisper encoder embeddings, trained from labels.jsonl.

The point is to use every note: gold notes and accepted pseudo-labels train with
cross-entropy, and the notes the labeller was unsure about still train through their
candidate sets (a partial-label loss) instead of being thrown away. Classes are label
texts in their spoken form (`classes.class_key`), so typed variants of one phrase are
one class.

Model files are a safetensors file (weights and feature statistics) plus a JSON file
(everything else); nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from .chats import VoiceNote
from .classes import KEY_VERSION, ClassFileError, ClassSet, build_classes, class_key, read_class_file, rekeyed  # noqa: F401 (their old home)
from .files import dumps, write_atomic

LOSSES = ("gold", "ce", "proden", "cc", "mse")
HEADS = ("linear", "mlp")
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
FORMAT_VERSION = 1


class TrainError(Exception):
    """The data cannot train a model (no classes, no labelled examples, bad option)."""


class ModelFileError(Exception):
    """A model directory is missing, incomplete or inconsistent."""


# ------------------------------------------------------------------ dataset


@dataclass
class Dataset:
    """One row per note that can train: features, role, targets in class space."""

    ids: list[str]
    X: np.ndarray  # (n, d) raw embeddings
    role: list[str]  # "gold", "accepted" or "partial"
    target: np.ndarray  # (n,) class index, -1 for partial notes
    confidence: np.ndarray  # (n,) labeller confidence (1 for gold)
    mask: np.ndarray  # (n, C) bool: the note's candidate classes (one-hot for gold)
    init: np.ndarray  # (n, C) starting weights over the mask (matcher probabilities)
    classes: ClassSet
    outside: int = 0  # notes with an embedding but nothing inside the class set
    no_embedding: int = 0  # notes whose clip failed or had no record

    @property
    def n_classes(self) -> int:
        return len(self.classes.classes)

    def count(self, role: str) -> int:
        return sum(r == role for r in self.role)


def read_labels(path: Path) -> dict[str, dict]:
    """labels.jsonl records by note id, every field type-checked (`gold.read_labels` has the
    lines left out, for callers that report them)."""
    from .gold import read_labels as read_checked

    return {rec["id"]: rec for rec in read_checked(path).records}


def gold_text(note: VoiceNote) -> str | None:
    """The true text of a gold note, wherever it was given (text, or the id of a candidate)."""
    if note.gold_text:
        return note.gold_text
    if note.gold_label_id is not None:
        for c in note.candidates:
            if c.id == note.gold_label_id:
                return c.text
    return None


def class_texts(notes: list[VoiceNote], records: dict[str, dict], accepted_only: bool = False) -> list[str]:
    """The label texts classes are built from: gold truth, else the labeller's label.

    Labels below the acceptance threshold count too (unless `accepted_only`): a phrase
    the labeller was unsure about on most of its notes still deserves a class, and a
    wrong label picks some unrelated message, which rarely reaches --min-count.
    """
    texts = []
    for note in notes:
        g = gold_text(note)
        if g is not None:
            texts.append(g)
            continue
        rec = records.get(note.id)
        if rec and rec.get("label") and (rec.get("accepted") or not accepted_only):
            texts.append(rec["label"])
    return texts


def build_dataset(notes: list[VoiceNote], records: dict[str, dict], embeddings: dict[str, np.ndarray],
                  classes: ClassSet) -> Dataset:
    """Put each note in one role: gold (truth in class set), accepted (pseudo-label in the
    class set) or partial (some candidate in the class set); otherwise it is outside."""
    index = classes.index()
    C = len(classes.classes)
    ids, rows, roles, targets, confs, masks, inits = [], [], [], [], [], [], []
    outside = no_emb = 0
    for note in notes:
        emb = embeddings.get(note.id)
        if emb is None:
            no_emb += 1
            continue
        rec = records.get(note.id) or {}
        probs = {c.get("id"): c.get("prob") for c in rec.get("candidates", []) if isinstance(c, dict)}
        mask = np.zeros(C, bool)
        init = np.zeros(C, np.float64)
        for cand in note.candidates:
            k = index.get(class_key(cand.text))
            if k is None:
                continue
            mask[k] = True
            p = probs.get(cand.id)
            init[k] += float(p) if isinstance(p, (int, float)) and math.isfinite(p) and p > 0 else 0.0
        g = gold_text(note)
        label = rec.get("label") if rec.get("accepted") else None
        if g is not None:
            k = index.get(class_key(g))
            if k is None:
                outside += 1
                continue
            role, target, conf = "gold", k, 1.0
            mask = np.zeros(C, bool)
            mask[k] = True
        elif label:
            k = index.get(class_key(label))
            if k is None:
                outside += 1
                continue
            role, target, conf = "accepted", k, float(rec.get("confidence") or 0.0)
            mask[k] = True
        elif mask.any():
            role, target, conf = "partial", -1, float(rec.get("confidence") or 0.0)
        else:
            outside += 1
            continue
        init = np.where(mask, init, 0.0)
        init = init / init.sum() if init.sum() > 0 else mask / mask.sum()
        ids.append(note.id)
        rows.append(np.asarray(emb, np.float32))
        roles.append(role)
        targets.append(target)
        confs.append(conf)
        masks.append(mask)
        inits.append(init)
    d = rows[0].shape[0] if rows else 0
    return Dataset(
        ids=ids, X=np.stack(rows) if rows else np.zeros((0, d), np.float32), role=roles,
        target=np.asarray(targets, np.int64), confidence=np.asarray(confs, np.float32),
        mask=np.stack(masks) if masks else np.zeros((0, C), bool),
        init=np.stack(inits).astype(np.float32) if inits else np.zeros((0, C), np.float32),
        classes=classes, outside=outside, no_embedding=no_emb,
    )


# ------------------------------------------------------------------ head and losses


def make_head(dim: int, n_classes: int, kind: str = "linear", hidden: int = 256, dropout: float = 0.2) -> nn.Sequential:
    """Linear, or one hidden ReLU layer; module names are fixed so saved weights stay loadable."""
    if kind == "linear":
        return nn.Sequential(OrderedDict(out=nn.Linear(dim, n_classes)))
    if kind == "mlp":
        return nn.Sequential(OrderedDict(
            hidden=nn.Linear(dim, hidden), act=nn.ReLU(), drop=nn.Dropout(dropout), out=nn.Linear(hidden, n_classes)))
    raise TrainError(f"unknown head {kind!r} (expected one of {', '.join(HEADS)})")


def ce_terms(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-example −log p_y."""
    return nn.functional.cross_entropy(logits, target, reduction="none")


def weighted_mean(terms: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (terms * weights).sum() / weights.sum().clamp_min(1e-12)


def proden_terms(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-example −Σ_j w_j log p_j; the weights are zero outside the candidate set."""
    return -(weights * torch.log_softmax(logits, dim=1)).sum(1)


def proden_update(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """New PRODEN weights: the model's probabilities restricted to the set, renormalised."""
    p = torch.softmax(logits.detach(), dim=1) * mask
    total = p.sum(1, keepdim=True)
    fallback = mask / mask.sum(1, keepdim=True).clamp_min(1)
    return torch.where(total > 0, p / total.clamp_min(1e-30), fallback)


def cc_terms(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-example −log Σ_{j∈S} p_j: the set as a whole must be likely."""
    inside = logits.masked_fill(~mask.bool(), float("-inf"))
    return torch.logsumexp(logits, 1) - torch.logsumexp(inside, 1)


def multihot_mse_terms(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-example mean of (sigmoid(z_j) − [j ∈ S])²: the naive multi-label reading of a set."""
    return ((torch.sigmoid(logits) - mask.float()) ** 2).mean(1)


# ------------------------------------------------------------------ training


@dataclass
class TrainOptions:
    loss: str = "proden"
    head: str = "linear"
    hidden: int = 256
    dropout: float = 0.2
    gold_weight: float = 3.0
    confidence_weight: bool = True
    partial_weight: float = 1.0
    # False: ignore the labeller (accepted notes train through their candidate sets too and
    # PRODEN starts from uniform weights), the plain partial-label setting, for comparison.
    pseudo_labels: bool = True
    epochs: int = 200
    lr: float = 0.01
    weight_decay: float = 1e-3
    patience: int = 50
    holdout: float = 0.3
    seed: int = 0

    def check(self) -> None:
        if self.loss not in LOSSES:
            raise TrainError(f"unknown loss {self.loss!r} (expected one of {', '.join(LOSSES)})")
        if self.head not in HEADS:
            raise TrainError(f"unknown head {self.head!r} (expected one of {', '.join(HEADS)})")
        if not 0.0 <= self.holdout < 1.0:
            raise TrainError(f"holdout must be in [0, 1), got {self.holdout}")
        if self.epochs < 1 or self.lr <= 0:
            raise TrainError("epochs must be at least 1 and lr positive")


def default_loss(data: Dataset) -> str:
    """PRODEN when some notes can only train through their candidate sets, else cross-entropy."""
    return "proden" if data.count("partial") else "ce"


def split_holdout(data: Dataset, fraction: float, seed: int) -> list[int]:
    """Rows of gold notes kept out of training for early stopping and model selection."""
    gold = [i for i, r in enumerate(data.role) if r == "gold"]
    if fraction <= 0 or len(gold) < 2:
        return []
    n = min(len(gold) - 1, max(1, round(fraction * len(gold))))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(gold, n, replace=False))


@dataclass
class EpochInfo:
    epoch: int
    loss: float
    holdout_accuracy: float | None


@dataclass
class TrainResult:
    classifier: "Classifier"
    holdout_ids: list[str]
    best_epoch: int
    epochs_run: int
    holdout_accuracy: float | None
    rows_used: dict[str, int]
    history: list[EpochInfo] = field(default_factory=list)


def _objective_rows(data: Dataset, opts: TrainOptions, train_rows: np.ndarray) -> dict:
    """Which training rows enter which term, and with what weight."""
    role = np.asarray(data.role)
    gold = train_rows[role[train_rows] == "gold"]
    acc = train_rows[role[train_rows] == "accepted"]
    part = train_rows[role[train_rows] == "partial"]
    if not opts.pseudo_labels:
        part, acc = np.sort(np.concatenate([acc, part])), acc[:0]
    acc_w = data.confidence[acc] if opts.confidence_weight else np.ones(len(acc), np.float32)
    if opts.loss == "gold":
        return {"ce": gold, "ce_w": np.full(len(gold), opts.gold_weight, np.float32), "set": np.array([], int)}
    if opts.loss == "mse":  # every note, gold as a one-hot set, the rest as its candidate set
        rows = np.concatenate([gold, acc, part])
        w = np.concatenate([np.full(len(gold), opts.gold_weight), np.full(len(acc) + len(part), 1.0)])
        return {"ce": np.array([], int), "ce_w": np.zeros(0, np.float32), "set": rows, "set_w": w.astype(np.float32)}
    ce = np.concatenate([gold, acc])
    ce_w = np.concatenate([np.full(len(gold), opts.gold_weight, np.float32), acc_w]).astype(np.float32)
    if opts.loss == "ce":
        return {"ce": ce, "ce_w": ce_w, "set": np.array([], int)}
    return {"ce": ce, "ce_w": ce_w, "set": part, "set_w": np.full(len(part), opts.partial_weight, np.float32)}


@dataclass
class Objective:
    """The recipe as tensors over the dataset's rows: which rows train with which loss and
    weight, PRODEN's starting weights, the held-out gold rows. Any head that maps the rows'
    inputs to (n, C) logits trains with it (`fit_head`)."""

    holdout: list[int]
    parts: dict
    n_classes: int
    target: torch.Tensor
    mask: torch.Tensor
    ce_rows: torch.Tensor
    ce_w: torch.Tensor
    set_rows: torch.Tensor
    set_w: torch.Tensor
    weights: torch.Tensor
    hold_rows: torch.Tensor


def make_objective(data: Dataset, opts: TrainOptions) -> Objective:
    """Check the options and the data, split off held-out gold, and lay out the recipe's rows."""
    opts.check()
    C = data.n_classes
    if C < 2:
        raise TrainError(f"need at least 2 classes to train, found {C}")
    holdout = split_holdout(data, opts.holdout, opts.seed)
    held = set(holdout)
    train_rows = np.array([i for i in range(len(data.ids)) if i not in held], int)
    parts = _objective_rows(data, opts, train_rows)
    if len(parts["ce"]) + len(parts["set"]) == 0:
        raise TrainError(f"no training examples for loss {opts.loss!r} "
                         f"({data.count('gold')} gold, {data.count('accepted')} accepted, {data.count('partial')} partial)")
    start = data.init if opts.pseudo_labels else data.mask / data.mask.sum(1, keepdims=True).clip(1)
    return Objective(
        holdout=holdout, parts=parts, n_classes=C,
        target=torch.from_numpy(data.target), mask=torch.from_numpy(data.mask),
        ce_rows=torch.from_numpy(parts["ce"].astype(np.int64)), ce_w=torch.from_numpy(parts["ce_w"]),
        set_rows=torch.from_numpy(parts["set"].astype(np.int64)),
        set_w=torch.from_numpy(parts.get("set_w", np.zeros(0, np.float32))),
        weights=torch.from_numpy(start[parts["set"]].astype(np.float32)) if len(parts["set"]) else torch.zeros(0, C),
        hold_rows=torch.tensor(holdout, dtype=torch.long),
    )


def fit_head(inputs, obj: Objective, opts: TrainOptions, build: Callable[[], nn.Module] | None = None,
             on_epoch: Callable[[EpochInfo], None] | None = None) -> tuple[nn.Module, list[EpochInfo], int, int]:
    """Train a head on `inputs` (whatever it takes: `head(inputs)` gives every row's logits)
    with the recipe; `build` makes the head (default: `make_head` on (n, d) features, opts'
    kind), called after seeding so a seed means the same start.
    Returns (head, history, best epoch, epochs run)."""
    threads = torch.get_num_threads()
    # The matrices are tiny: one thread is faster than several fighting over shared cores.
    torch.set_num_threads(1)
    try:
        return _fit(inputs, obj.target, obj.mask, obj.ce_rows, obj.ce_w, obj.set_rows, obj.set_w, obj.weights,
                    obj.hold_rows, obj.n_classes, opts, on_epoch, build)
    finally:
        torch.set_num_threads(threads)


def train(data: Dataset, opts: TrainOptions, encoder: dict | None = None,
          on_epoch: Callable[[EpochInfo], None] | None = None) -> TrainResult:
    """Fit the head full-batch with Adam; keep the epoch best on held-out gold."""
    obj = make_objective(data, opts)
    holdout, parts, C = obj.holdout, obj.parts, data.n_classes
    mean = data.X.mean(0)
    std = data.X.std(0) + 1e-6
    X = torch.from_numpy(((data.X - mean) / std).astype(np.float32))
    head, history, best_epoch, epoch = fit_head(X, obj, opts, on_epoch=on_epoch)
    hold_acc = None
    if holdout:
        hold_acc = next(h.holdout_accuracy for h in history if h.epoch == best_epoch)
    used = np.concatenate([parts["ce"], parts["set"]]).astype(int)
    used_roles = Counter(data.role[i] for i in used)
    rows_used = {
        "gold": used_roles.get("gold", 0),
        "gold_holdout": len(holdout),
        "accepted": used_roles.get("accepted", 0),
        "partial": used_roles.get("partial", 0),
        "outside": data.outside,
        "no_embedding": data.no_embedding,
    }
    clf = Classifier(
        classes=list(data.classes.classes), head=head, mean=mean.astype(np.float32), std=std.astype(np.float32),
        meta={
            "head": {"kind": opts.head, "hidden": opts.hidden if opts.head == "mlp" else None,
                     "dropout": opts.dropout if opts.head == "mlp" else None},
            "encoder": encoder or {},
            "options": asdict(opts),
            "class_counts": data.classes.counts,
            "class_source": data.classes.source,
            "class_names": {c: data.classes.name(c) for c in data.classes.classes},
            "class_variants": {c: data.classes.variants.get(c, {}) for c in data.classes.classes},
            "holdout_ids": [data.ids[i] for i in holdout],
            "metrics": {"holdout_accuracy": hold_acc, "holdout_size": len(holdout), "best_epoch": best_epoch,
                        "epochs_run": epoch, "rows": rows_used},
        },
    )
    return TrainResult(clf, [data.ids[i] for i in holdout], best_epoch, epoch, hold_acc, rows_used, history)


def recipe_total(logits, target, mask, ce_rows, ce_w, set_rows, set_w, weights, loss: str) -> torch.Tensor:
    """The recipe's summed, weighted loss: cross-entropy on the labelled rows plus the
    partial-label loss (`loss`: proden, cc or mse) through the candidate sets of the rest.
    Shared by the head and the text-scoring combination (combine.py)."""
    total = logits.new_zeros(())
    if len(ce_rows):
        total = total + (ce_terms(logits[ce_rows], target[ce_rows]) * ce_w).sum()
    if len(set_rows):
        z, m = logits[set_rows], mask[set_rows]
        if loss == "proden":
            terms = proden_terms(z, weights)
        elif loss == "cc":
            terms = cc_terms(z, m)
        else:
            terms = multihot_mse_terms(z, m)
        total = total + (terms * set_w).sum()
    return total


def _fit(X, target, mask, ce_rows, ce_w, set_rows, set_w, weights, hold_rows, C: int, opts: TrainOptions,
         on_epoch: Callable[[EpochInfo], None] | None,
         build: Callable[[], nn.Module] | None = None) -> tuple[nn.Module, list[EpochInfo], int, int]:
    """The epoch loop: one full-batch Adam step, PRODEN re-weighting, held-out check, early stop."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opts.seed)
        head = build() if build is not None else make_head(X.shape[1], C, opts.head, opts.hidden, opts.dropout)
        optim = torch.optim.Adam(head.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
        n_terms = float(len(ce_rows) + len(set_rows))
        best_key, best_state, best_epoch, since = None, None, 0, 0
        history: list[EpochInfo] = []
        epoch = 0
        for epoch in range(1, opts.epochs + 1):
            head.train()
            optim.zero_grad()
            logits = head(X)
            total = recipe_total(logits, target, mask, ce_rows, ce_w, set_rows, set_w, weights, opts.loss)
            # Normalise by the summed weights so the learning rate means the same at any size.
            norm = float(ce_w.sum() + set_w.sum()) if n_terms else 1.0
            loss = total / max(norm, 1e-12)
            loss.backward()
            optim.step()
            head.eval()
            with torch.no_grad():
                z_all = head(X)
                if opts.loss == "proden" and len(set_rows):
                    weights = proden_update(z_all[set_rows], mask[set_rows])
                acc = None
                key = (float(epoch),)  # no held-out gold: the last epoch wins
                if len(hold_rows):
                    zh = z_all[hold_rows]
                    acc = float((zh.argmax(1) == target[hold_rows]).float().mean())
                    hl = float(ce_terms(zh, target[hold_rows]).mean())
                    key = (acc, -hl)
            info = EpochInfo(epoch, loss.item(), acc)
            history.append(info)
            if on_epoch is not None:
                on_epoch(info)
            if best_key is None or key > best_key:
                best_key, best_epoch, since = key, epoch, 0
                best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
            else:
                since += 1
                if len(hold_rows) and since >= opts.patience:
                    break
        head.load_state_dict(best_state)
        head.eval()
    return head, history, best_epoch, epoch


# ------------------------------------------------------------------ the saved model


@dataclass
class Classifier:
    classes: list[str]
    head: nn.Sequential
    mean: np.ndarray
    std: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def logits(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, np.float32).reshape(-1, self.dim)
        with torch.no_grad():
            self.head.eval()
            return self.head(torch.from_numpy((X - self.mean) / self.std)).numpy()

    def predict_proba(self, X: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
        """Class probabilities; with a boolean `allowed` (n, C), renormalised over the allowed classes."""
        z = self.logits(X).astype(np.float64)
        if allowed is not None:
            z = np.where(allowed, z, -np.inf)
        z = z - z.max(1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(1, keepdims=True)

    def save(self, folder: Path, extra_tensors: dict[str, torch.Tensor] | None = None,
             extra_meta: dict | None = None) -> None:
        """model.safetensors and model.json; `extra_*` carry what a model built on the head adds."""
        from safetensors.torch import save

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"head.{k}": v.detach().contiguous() for k, v in self.head.state_dict().items()}
        tensors["feature_mean"] = torch.from_numpy(self.mean.copy())
        tensors["feature_std"] = torch.from_numpy(self.std.copy())
        tensors |= {k: v.detach().contiguous() for k, v in (extra_tensors or {}).items()}
        write_atomic(folder / WEIGHTS_FILE, save(tensors))
        shapes = {k: list(v.shape) for k, v in tensors.items()}
        meta = self.meta | (extra_meta or {}) | {
            "format": FORMAT_VERSION, "package": "disamb", "package_version": __version__,
            "class_key_version": KEY_VERSION, "classes": self.classes, "feature_dim": self.dim, "tensors": shapes,
        }
        write_atomic(folder / META_FILE, dumps(meta, indent=1) + "\n")

    @classmethod
    def load(cls, folder: Path) -> "Classifier":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        if not folder.is_dir():
            raise ModelFileError(f"{folder}: not a model folder")
        try:
            meta = rekeyed(json.loads((folder / META_FILE).read_text("utf-8")))
        except FileNotFoundError:
            raise ModelFileError(f"{folder}: no {META_FILE} (not a disamb model folder)") from None
        except (OSError, ValueError) as e:
            raise ModelFileError(f"{folder / META_FILE}: unreadable ({e})") from None
        try:
            classes = [str(c) for c in meta["classes"]]
            dim = int(meta["feature_dim"])
            head_info = meta["head"]
            if meta.get("format") != FORMAT_VERSION:
                raise ModelFileError(f"{folder}: model format {meta.get('format')!r}, expected {FORMAT_VERSION}")
        except (KeyError, TypeError, ValueError):
            raise ModelFileError(f"{folder / META_FILE}: missing classes, feature_dim or head") from None
        kind, hidden, dropout = _head_shape(folder / META_FILE, head_info)
        try:
            tensors = load_file(str(folder / WEIGHTS_FILE))
        except FileNotFoundError:
            raise ModelFileError(f"{folder}: no {WEIGHTS_FILE}") from None
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelFileError(f"{folder / WEIGHTS_FILE}: unreadable ({e})") from None
        try:
            head = make_head(dim, len(classes), kind, hidden, dropout)
            state = {k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")}
            head.load_state_dict(state, strict=True)
            mean, std = tensors["feature_mean"].numpy(), tensors["feature_std"].numpy()
        except (TrainError, KeyError, RuntimeError) as e:
            raise ModelFileError(f"{folder}: weights do not match {META_FILE} ({str(e).splitlines()[0]})") from None
        if mean.shape != (dim,) or std.shape != (dim,):
            raise ModelFileError(f"{folder}: feature statistics do not have {dim} dimensions")
        for what, bad in (("feature scale must be positive and finite", ~(np.isfinite(std) & (std > 0))),
                          ("feature mean must be finite", ~np.isfinite(mean))):
            if bad.any():  # features scaled by it would turn every probability into NaN
                raise ModelFileError(f"{folder / WEIGHTS_FILE}: {what} (dimension {np.flatnonzero(bad)[0]})")
        head.eval()
        return cls(classes=classes, head=head, mean=mean, std=std, meta=meta)


def _head_shape(meta_path: Path, info: object) -> tuple[str, int, float]:
    """(kind, hidden, dropout) of the head model.json describes, checked before any is used."""
    if not isinstance(info, dict):
        raise ModelFileError(f'{meta_path}: "head" must be an object, got {type(info).__name__}')
    kind = info.get("kind", "linear")
    hidden = 256 if info.get("hidden") is None else info["hidden"]  # a linear head writes null
    dropout = 0.0 if info.get("dropout") is None else info["dropout"]
    if kind not in ("linear", "mlp"):
        raise ModelFileError(f'{meta_path}: "head"."kind" must be linear or mlp, got {kind!r}')
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise ModelFileError(f'{meta_path}: "head"."hidden" must be a positive integer, got {hidden!r}')
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ModelFileError(f'{meta_path}: "head"."dropout" must be a number in [0, 1), got {dropout!r}')
    return kind, hidden, float(dropout)
