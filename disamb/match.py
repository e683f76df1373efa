"""From per-candidate features to labels: a linear score with a softmax over each
note's window (plus a "none of these" option), fitted on the gold subset as a
conditional logit, temperature-scaled, then a one-to-one assignment and an
acceptance threshold chosen for a target precision.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment, minimize

FEATURES = (
    # Lengths are characters of the normalised text, the same for every rendering of a
    # candidate: per-token means favoured whichever rendering has the fewest tokens
    # ("67381." beat a better-scoring "six, six, three, eight, one.").
    "lik_per_char",  # best rendering's log-likelihood per character
    "lik_sum",  # summed log-likelihood (best rendering)
    "lik_prior",  # summed log-likelihood minus the same text's under silent audio (PMI; 0 when off)
    "pmi_per_char",  # the same per character
    "pmi_typed",  # PMI of the text as typed (cleaned only: no filler words dropped)
    "log_chars",  # log of the length: long texts pay more in lik_sum
    "cer",
    "wer",
    "ratio",
    "token_set",
    "partial",
    "digit_dist",
    "len_ratio",
    "position",  # index in the window / window size
    "gap",  # log1p(seconds between voice note and message) / 5, 0 without timestamps
)

DEFAULT_MATCHER = Path(__file__).with_name("default_matcher.json")
MIN_GOLD_TO_FIT = 30
# "None of these" must beat a note's best free candidate by this many nats before the
# note is left unlabelled: an unsure note keeps its best guess (with a low confidence,
# so it is not accepted) and goes without a label only when others took its messages.
NONE_MARGIN = math.log(20.0)
BLOCK_LIMIT = 400  # notes per assignment block before a chain of windows is cut


class MatcherError(Exception):
    """A matcher file cannot be read or does not fit the features."""


@dataclass
class Matcher:
    """Linear scores over FEATURES on standardised values; index n is "none of these"."""

    features: list[str]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    none_bias: float
    temperature: float = 1.0
    platt: tuple[float, float] = (1.0, 0.0)  # confidence calibration after assignment
    source: str = "default"
    info: dict = field(default_factory=dict)

    def logits(self, X: np.ndarray) -> np.ndarray:
        z = ((X - self.mean) / self.scale) @ self.weights
        return np.append(z, self.none_bias) / self.temperature

    def probs(self, X: np.ndarray) -> np.ndarray:
        return softmax(self.logits(X))

    def to_json(self) -> dict:
        return {
            "features": list(self.features),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "weights": self.weights.tolist(),
            "none_bias": self.none_bias,
            "temperature": self.temperature,
            "platt": list(self.platt),
            "source": self.source,
            "info": self.info,
        }

    @classmethod
    def from_json(cls, data: dict) -> "Matcher":
        try:
            m = cls(
                features=list(data["features"]),
                mean=np.asarray(data["mean"], float),
                scale=np.asarray(data["scale"], float),
                weights=np.asarray(data["weights"], float),
                none_bias=float(data["none_bias"]),
                temperature=float(data.get("temperature", 1.0)),
                platt=tuple(data.get("platt", (1.0, 0.0))),
                source=str(data.get("source", "file")),
                info=dict(data.get("info", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise MatcherError(f"not a matcher file ({e})") from e
        if m.features != list(FEATURES):
            raise MatcherError("matcher was fitted on other features; refit it")
        return m

    def save(self, path: Path) -> None:
        from .cache import write_atomic

        write_atomic(Path(path), json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: Path) -> "Matcher":
        try:
            data = json.loads(Path(path).read_text("utf-8"))
        except (OSError, ValueError) as e:
            raise MatcherError(f"{path}: cannot read matcher ({e})") from e
        return cls.from_json(data)


def default_matcher() -> Matcher:
    """The weights shipped with the package (fitted on the synthetic hard benchmark)."""
    if DEFAULT_MATCHER.exists():
        try:
            m = Matcher.load(DEFAULT_MATCHER)
            m.source = "default"
            return m
        except MatcherError:
            pass  # shipped weights from another feature set: fall back to the hand-set ones
    # Hand-set fallback: likelihood and text agreement up, distances down.
    w = dict(lik_per_char=1.0, lik_sum=1.0, cer=-1.0, token_set=0.5, digit_dist=-0.5)
    return Matcher(
        features=list(FEATURES),
        mean=np.zeros(len(FEATURES)),
        scale=np.ones(len(FEATURES)),
        weights=np.array([w.get(f, 0.0) for f in FEATURES]),
        none_bias=-1e3,  # without fitted weights, never claim "none of these"
        source="built-in",
    )


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - np.max(z)
    e = np.exp(z)
    return e / e.sum()


# ---------------------------------------------------------------- fitting


def fit(
    Xs: list[np.ndarray],
    targets: list[int],
    l2: float = 0.001,
    none_allowed: bool = True,
    base: Matcher | None = None,
    base_strength: float = 20.0,
) -> Matcher:
    """Conditional-logit fit: maximise the log-probability of each gold note's answer
    under the softmax over its own candidates (+ none). `targets[i] == len(Xs[i])` means
    the truth is not in the window.

    With `base`, the weights are pulled towards the base matcher's (a Gaussian prior
    worth about `base_strength` notes) instead of towards zero: a gold subset of a few
    dozen notes then adjusts the shipped weights rather than replacing them.
    """
    allX = np.concatenate(Xs)
    if base_strength <= 0:
        base = None
    if base is not None:
        mean, scale = base.mean.copy(), base.scale.copy()
    else:
        mean = allX.mean(0)
        scale = allX.std(0)
        scale[scale < 1e-6] = 1.0
    n, k, f = len(Xs), max(len(x) for x in Xs), allX.shape[1]
    X = torch.zeros(n, k, f, dtype=torch.float64)
    mask = torch.full((n, k + 1), float("-inf"), dtype=torch.float64)
    for i, x in enumerate(Xs):
        X[i, : len(x)] = torch.from_numpy((x - mean) / scale)
        mask[i, : len(x)] = 0.0
        mask[i, k] = 0.0 if none_allowed else float("-inf")
    y = torch.tensor([t if t < len(x) else k for t, x in zip(targets, Xs)])
    if base is not None:
        w0 = torch.from_numpy(base.weights / base.temperature).double()
        b0 = torch.tensor([base.none_bias / base.temperature], dtype=torch.float64)
        strength = base_strength / n
    else:
        w0, b0, strength = torch.zeros(f, dtype=torch.float64), torch.tensor([-3.0], dtype=torch.float64), l2

    def loss_and_grad(params: np.ndarray) -> tuple[float, np.ndarray]:
        p = torch.from_numpy(params).requires_grad_(True)
        w, b = p[:f], p[f:]
        z = torch.cat([X @ w, b.expand(n, 1)], 1) + mask
        penalty = ((w - w0) ** 2).sum() + (0.0 if base is None else ((b - b0) ** 2).sum())
        loss = torch.nn.functional.cross_entropy(z, y) + strength * penalty
        loss.backward()
        return float(loss.detach()), p.grad.detach().numpy().copy()

    found = minimize_lbfgs(loss_and_grad, torch.cat([w0, b0]).numpy(), max_iter=200)
    w, b = found[:f], found[f:]
    return Matcher(
        features=list(FEATURES),
        mean=mean,
        scale=scale,
        weights=w.copy(),
        none_bias=float(b[0]),
        source=f"fitted on {n} gold notes",
    )


def log_loss(logits: list[np.ndarray], targets: list[int]) -> float:
    """Mean negative log-probability of each note's answer under the softmax of its logits."""
    return float(np.mean([-math.log(max(softmax(z)[y], 1e-12)) for z, y in zip(logits, targets)]))


def top1_accuracy(logits: list[np.ndarray], targets: list[int]) -> float:
    return float(np.mean([int(np.argmax(z)) == y for z, y in zip(logits, targets)]))


def fit_temperature(logits: list[np.ndarray], targets: list[int]) -> float:
    """The single temperature that makes out-of-fold probabilities honest (min NLL)."""
    best_t, best_nll = 1.0, math.inf
    for t in np.exp(np.linspace(math.log(0.1), math.log(10), 121)):
        nll = log_loss([z / t for z in logits], targets)
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return best_t


PLATT_PRIOR_NOTES = 20.0  # the identity map is worth this many gold notes


def fit_platt(confidences: np.ndarray, correct: np.ndarray) -> tuple[float, float]:
    """Logistic map from logit(confidence) to P(correct); identity if one class is absent.

    Pulled towards the identity (a prior worth PLATT_PRIOR_NOTES notes): on a gold
    subset of a hundred notes an unpulled fit chases a handful of mistakes, and on the
    hard benchmark it doubled the calibration error of the notes it did not see.
    """
    if len(set(correct.tolist())) < 2:
        return (1.0, 0.0)
    c = np.clip(confidences, 1e-6, 1 - 1e-6)
    x = torch.tensor(np.log(c / (1 - c)))
    y = torch.tensor(correct, dtype=torch.float64)
    strength = PLATT_PRIOR_NOTES / len(c)

    def loss_and_grad(params: np.ndarray) -> tuple[float, np.ndarray]:
        ab = torch.from_numpy(params).requires_grad_(True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(ab[0] * x + ab[1], y)
        loss = loss + strength * ((ab[0] - 1) ** 2 + ab[1] ** 2)
        loss.backward()
        return float(loss.detach()), ab.grad.detach().numpy().copy()

    a, b = minimize_lbfgs(loss_and_grad, np.array([1.0, 0.0]), max_iter=100)
    return (float(a), float(b))


def minimize_lbfgs(loss_and_grad, start: np.ndarray, max_iter: int) -> np.ndarray:
    """scipy's L-BFGS on a torch-computed loss and gradient.

    torch.optim would do the same, but constructing any torch optimizer imports
    torch._dynamo, which costs 1.8 s per run: more than all of matching.
    """
    result = minimize(loss_and_grad, start.astype(np.float64), jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iter})
    return result.x


def apply_platt(conf: float, platt: tuple[float, float]) -> float:
    c = min(max(conf, 1e-6), 1 - 1e-6)
    z = platt[0] * math.log(c / (1 - c)) + platt[1]
    return 1.0 / (1.0 + math.exp(-z))


def fold_ids(n: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(n) % k)


# ---------------------------------------------------------------- assignment


@dataclass
class Decision:
    index: int | None  # chosen candidate, None = none of these
    confidence: float  # before Platt calibration


def decide_independently(probs: list[np.ndarray]) -> list[Decision]:
    out = []
    for p in probs:
        j = int(np.argmax(p[:-1])) if len(p) > 1 else None
        out.append(Decision(j, float(p[j])) if j is not None else Decision(None, 0.0))
    return out


def assign(probs: list[np.ndarray], cand_ids: list[list[str]]) -> list[Decision]:
    """One-to-one assignment: each typed message answers at most one voice note.

    Notes are grouped into blocks of overlapping windows (connected through shared
    message ids) and each block is solved exactly with `linear_sum_assignment` on
    -log p, each note having its own "none" column. A chain longer than BLOCK_LIMIT
    is cut and solved piece by piece, messages taken by earlier pieces removed, so the
    work stays linear in the length of the log.

    The confidence of a decision is the note's probability renormalised over the
    options the other notes left to it, so it stays a probability of being right.
    """
    n = len(probs)
    decisions: list[Decision | None] = [None] * n
    taken: dict[str, int] = {}
    for block in _blocks(cand_ids):
        for start in range(0, len(block), BLOCK_LIMIT):
            piece = block[start : start + BLOCK_LIMIT]
            _solve(piece, probs, cand_ids, taken, decisions)
    # confidence given what the other notes took
    for i in range(n):
        d = decisions[i]
        assert d is not None
        p = probs[i].copy()
        for j, cid in enumerate(cand_ids[i]):
            if taken.get(cid, i) != i:
                p[j] = 0.0
        total = p.sum()
        if d.index is None:
            decisions[i] = Decision(None, float(p[-1] / total) if total > 0 else 0.0)
        else:
            decisions[i] = Decision(d.index, float(p[d.index] / total) if total > 0 else 0.0)
    return decisions  # type: ignore[return-value]


def _blocks(cand_ids: list[list[str]]) -> list[list[int]]:
    """Connected groups of notes sharing any candidate message, in note order."""
    parent = list(range(len(cand_ids)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    first_owner: dict[str, int] = {}
    for i, ids in enumerate(cand_ids):
        for cid in ids:
            if cid in first_owner:
                ra, rb = find(first_owner[cid]), find(i)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
            else:
                first_owner[cid] = i
    groups: dict[int, list[int]] = {}
    for i in range(len(cand_ids)):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def _solve(piece, probs, cand_ids, taken, decisions) -> None:
    cols: dict[str, int] = {}
    for i in piece:
        for cid in cand_ids[i]:
            if cid not in taken and cid not in cols:
                cols[cid] = len(cols)
    m = len(cols)
    big = 1e9
    cost = np.full((len(piece), m + len(piece)), big)
    for r, i in enumerate(piece):
        p = np.clip(probs[i], 1e-12, 1.0)
        for j, cid in enumerate(cand_ids[i]):
            if cid in cols:
                cost[r, cols[cid]] = min(cost[r, cols[cid]], -math.log(p[j]))
        cost[r, m + r] = -math.log(p[-1]) + NONE_MARGIN
    rows, colsel = linear_sum_assignment(cost)
    inv = {c: cid for cid, c in cols.items()}
    for r, c in zip(rows, colsel):
        i = piece[r]
        if c < m:
            cid = inv[c]
            taken[cid] = i
            decisions[i] = Decision(cand_ids[i].index(cid), 0.0)
        else:
            decisions[i] = Decision(None, 0.0)


# ---------------------------------------------------------------- thresholds


def threshold_for_precision(conf: np.ndarray, correct: np.ndarray, target: float) -> tuple[float, float, float]:
    """Lowest threshold whose accepted set reaches `target` precision.

    Precision is Laplace-smoothed, (right + 1) / (accepted + 2), so that a handful of
    gold notes, all right by luck, cannot justify a threshold. Returns (threshold,
    raw precision, coverage); threshold 1.01 when no threshold reaches the target.
    """
    order = np.argsort(-conf, kind="stable")
    c, ok = conf[order], correct[order].astype(float)
    smoothed = (np.cumsum(ok) + 1) / (np.arange(1, len(ok) + 1) + 2)
    prec = np.cumsum(ok) / np.arange(1, len(ok) + 1)
    best = None
    for k in range(len(c)):
        # only cut between distinct confidence values
        if k + 1 < len(c) and c[k + 1] == c[k]:
            continue
        if smoothed[k] >= target:
            best = k
    if best is None:
        return (1.01, float("nan"), 0.0)
    return (float(c[best]), float(prec[best]), (best + 1) / len(c))
