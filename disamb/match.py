"""From per-candidate features to labels: a linear score over the evidence with a
softmax over each note's window (plus a "none of these" option), fitted on the gold
subset as a conditional logit whose weights keep their evidence signs (the prior over
where in the window the answer sits is window_prior.py); then temperature scaling, a one-to-one assignment and an acceptance threshold chosen for a
target precision.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment, minimize

from .features import EVIDENCE, FEATURES

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
        if len(m.weights) != len(FEATURES) or len(m.mean) != len(FEATURES) or len(m.scale) != len(FEATURES):
            raise MatcherError("not a matcher file (weights, mean and scale must have one value per feature)")
        if not (np.all(np.isfinite(m.weights)) and np.all(np.isfinite(m.mean)) and np.all(m.scale > 0)
                and math.isfinite(m.none_bias) and m.temperature > 0):
            raise MatcherError("not a matcher file (non-finite weights or a scale that is not positive)")
        against = [f for f, w in zip(FEATURES, m.weights) if w * EVIDENCE[f] < 0]
        if against:
            raise MatcherError(f"weights against the evidence for {', '.join(against)} (more likelihood or a "
                               "closer text must never lower a score); refit it")
        return m

    def save(self, path: Path) -> None:
        from .files import dumps, write_atomic

        write_atomic(Path(path), dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: Path) -> "Matcher":
        try:
            data = json.loads(Path(path).read_text("utf-8"))
        except (OSError, ValueError) as e:
            raise MatcherError(f"{path}: cannot read matcher ({e})") from e
        return cls.from_json(data)


def default_matcher() -> Matcher:
    """The evidence weights shipped with the package: chosen by the worst held-out family
    of the benchmark's data shapes (benchmarks/accuracy.py --fit-default), and carrying
    no window position, which belongs to each user's chat."""
    m = Matcher.load(DEFAULT_MATCHER)
    m.source = "default"
    return m


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - np.max(z)
    e = np.exp(z)
    return e / e.sum()


# ---------------------------------------------------------------- fitting


def fit(
    Xs: list[np.ndarray],
    targets: list[int],
    offsets: list[np.ndarray] | None = None,
    use: tuple[str, ...] | None = None,
    l2: float = 0.001,
    none_allowed: bool = True,
    features: tuple[str, ...] = FEATURES,
) -> Matcher:
    """Conditional-logit fit: maximise the log-probability of each gold note's answer
    under the softmax over its own candidates (+ none). `targets[i] == len(Xs[i])` means
    the truth is not in the window.

    Each weight keeps the sign its feature has in EVIDENCE (bounded at zero), so a fit
    cannot learn that more likelihood or a closer transcript makes a candidate less
    likely; correlated features then cannot be played against each other. Features
    outside `use` stay at zero. `offsets` (per candidate, e.g. the window prior; a
    trailing entry for "none" is ignored) enter the score as they are. `features` names the columns of Xs.
    """
    use = features if use is None else use
    allX = np.concatenate(Xs)
    mean = allX.mean(0)
    scale = allX.std(0)
    scale[scale < 1e-6] = 1.0
    n, f = len(Xs), allX.shape[1]
    X, offset, valid = pad([(x - mean) / scale for x in Xs], offsets)
    k = X.shape[1]
    if not none_allowed:
        offset[:, k] = -np.inf
    y = np.array([t if t < len(x) else k for t, x in zip(targets, Xs)])
    onehot = np.zeros((n, k + 1))
    onehot[np.arange(n), y] = 1.0

    def loss_and_grad(params: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = params[:f], params[f]
        z = np.concatenate([X @ w, np.full((n, 1), b)], 1) + offset
        logp = log_softmax_rows(z)
        p = np.exp(logp)
        loss = -logp[np.arange(n), y].mean() + l2 * (w**2).sum()
        d = (p - onehot) / n  # d loss / d z
        grad_w = np.einsum("nk,nkf->f", d[:, :k], X) + 2 * l2 * w
        return float(loss), np.append(grad_w, d[:, k].sum())

    bounds = [_sign_bounds(name, name in use) for name in features] + [(None, None)]
    start = np.array([0.1 * EVIDENCE[name] if name in use else 0.0 for name in features] + [-3.0])
    found = minimize_lbfgs(loss_and_grad, start, max_iter=200, bounds=bounds)
    return Matcher(
        features=list(features),
        mean=mean,
        scale=scale,
        weights=found[:f].copy(),
        none_bias=float(found[f]),
        source=f"fitted on {n} gold notes",
    )


def _sign_bounds(name: str, used: bool) -> tuple[float | None, float | None]:
    if not used:
        return (0.0, 0.0)
    return (0.0, None) if EVIDENCE[name] > 0 else (None, 0.0)


def pad(rows: list[np.ndarray], offsets: list[np.ndarray] | None = None):
    """Notes of different window lengths as one array: (notes, positions, features),
    the per-candidate offsets with a "none" column (-inf where a note has no candidate),
    and the mask of real candidates."""
    n, k = len(rows), max(len(r) for r in rows)
    f = rows[0].shape[1] if rows[0].ndim == 2 else 0
    X = np.zeros((n, k, f))
    offset = np.full((n, k + 1), -np.inf)
    valid = np.zeros((n, k), bool)
    for i, r in enumerate(rows):
        m = len(r)
        if f:
            X[i, :m] = r
        offset[i, :m] = 0.0 if offsets is None else np.asarray(offsets[i], float)[:m]
        offset[i, k] = 0.0
        valid[i, :m] = True
    return X, offset, valid


def log_softmax_rows(z: np.ndarray) -> np.ndarray:
    top = np.max(z, axis=-1, keepdims=True)
    top[~np.isfinite(top)] = 0.0
    return z - top - np.log(np.exp(z - top).sum(-1, keepdims=True))


def _padded_logits(logits: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Logits (candidates then none) as one (notes, positions + 1) array, and each note's none column."""
    k = max(len(z) for z in logits) - 1
    out = np.full((len(logits), k + 1), -np.inf)
    for i, z in enumerate(logits):
        out[i, : len(z) - 1], out[i, k] = z[:-1], z[-1]
    return out, np.array([len(z) - 1 for z in logits])


def _targets(targets: list[int], lengths: np.ndarray, k: int) -> np.ndarray:
    return np.array([t if t < m else k for t, m in zip(targets, lengths)])


def log_loss(logits: list[np.ndarray], targets: list[int]) -> float:
    """Mean negative log-probability of each note's answer under the softmax of its logits."""
    z, lengths = _padded_logits(logits)
    y = _targets(targets, lengths, z.shape[1] - 1)
    logp = log_softmax_rows(z)[np.arange(len(y)), y]
    return float(np.mean(-np.maximum(logp, math.log(1e-12))))


def fit_temperature(logits: list[np.ndarray], targets: list[int], offsets: list[np.ndarray] | None = None) -> float:
    """The single temperature that makes out-of-fold probabilities honest (min NLL).

    `offsets` (the window prior) are added after scaling: they are log-probabilities already.
    """
    z, lengths = _padded_logits(logits)
    off = _padded_logits(offsets)[0] if offsets else np.zeros_like(z)
    off = np.where(np.isfinite(z), off, 0.0)
    y = _targets(targets, lengths, z.shape[1] - 1)
    best_t, best_nll = 1.0, math.inf
    for t in np.exp(np.linspace(math.log(0.1), math.log(10), 121)):
        logp = log_softmax_rows(z / t + off)[np.arange(len(y)), y]
        nll = float(np.mean(-np.maximum(logp, math.log(1e-12))))
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return best_t


PLATT_PRIOR_NOTES = 20.0  # the matcher's own map is worth this many gold notes


def fit_platt(confidences: np.ndarray, correct: np.ndarray, prior: tuple[float, float] = (1.0, 0.0)
              ) -> tuple[float, float]:
    """Logistic map from logit(confidence) to P(correct); `prior` if one class is absent.

    Pulled towards `prior` (worth PLATT_PRIOR_NOTES notes): on a gold subset of a hundred
    notes an unpulled fit chases a handful of mistakes, and on the hard benchmark it
    doubled the calibration error of the notes it did not see. The prior is the matcher's
    own map (the shipped one was measured on logs its weights never saw), so a gold
    subset without a single mistake keeps it rather than falling back to the identity.
    """
    a0, b0 = prior
    if len(set(correct.tolist())) < 2:
        return (float(a0), float(b0))
    c = np.clip(confidences, 1e-6, 1 - 1e-6)
    x = np.log(c / (1 - c))
    y = np.asarray(correct, float)
    strength = PLATT_PRIOR_NOTES / len(c)

    def loss_and_grad(params: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = params
        z = a * x + b
        loss = np.mean(np.logaddexp(0.0, z) - y * z) + strength * ((a - a0) ** 2 + (b - b0) ** 2)
        d = (1.0 / (1.0 + np.exp(-z)) - y) / len(x)
        return float(loss), np.array([(d * x).sum() + 2 * strength * (a - a0), d.sum() + 2 * strength * (b - b0)])

    a, b = minimize_lbfgs(loss_and_grad, np.array([a0, b0], float), max_iter=100)
    return (float(a), float(b))


def minimize_lbfgs(loss_and_grad, start: np.ndarray, max_iter: int, bounds=None) -> np.ndarray:
    """scipy's L-BFGS on a numpy loss and gradient.

    Not torch: constructing any torch optimizer imports torch._dynamo (1.8 s per run),
    and autograd on these small arrays spent 0.1 s per step in thread start-up.
    """
    result = minimize(loss_and_grad, start.astype(np.float64), jac=True, method="L-BFGS-B",
                      bounds=bounds, options={"maxiter": max_iter})
    return result.x


def apply_platt(conf: float, platt: tuple[float, float]) -> float:
    c = min(max(conf, 1e-6), 1 - 1e-6)
    z = platt[0] * math.log(c / (1 - c)) + platt[1]
    return 1.0 / (1.0 + math.exp(-z))


def fold_ids(n: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(n) % k)


def dominant(X: np.ndarray, features: tuple[str, ...] = FEATURES) -> int | None:
    """The candidate at least as good as every other on every evidence feature and
    better on one (more likelihood, closer text, nearer digits), or None.

    Its evidence is decisive whatever the weights: the window prior may not put
    another candidate above it. Measured on codes read over the phone, 13 of 23
    mistakes were such notes lost to a one-digit-off distractor earlier in the window.
    """
    if len(X) < 2:
        return None
    signed = X * np.array([EVIDENCE[f] for f in features])
    at_max = np.flatnonzero((signed >= signed.max(0)).all(1))
    if len(at_max) != 1:  # none best on every count, or two alike on all of them
        return None
    return int(at_max[0])


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
