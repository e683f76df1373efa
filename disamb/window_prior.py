"""Where in the window, and how long after the voice note, a chat's answers sit: a prior
learned by expectation-maximisation from every note of the run (gold notes at their
answer), added to the matcher's logits, and capped so it can tip a close call but
never overrule decisive evidence.

Apart from match.py because it is one job with its own data layout (every note's
window padded to one array) and is fitted on the whole run, not on the gold subset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .features import N_GAP_BINS
from .match import minimize_lbfgs

PRIOR_STRENGTH = 5.0  # Gaussian prior on the prior's logits: worth about this many notes per slot
PRIOR_CAP = math.log(10.0)  # the prior moves a candidate at most this many nats against another
PRIOR_ITERATIONS = 30


@dataclass
class WindowPrior:
    """Where in the window, and how long after the voice note, this chat's answers sit.

    Logits per window position and per gap bin (features.gap_bin; bin 0, no timestamps,
    stays 0). Within a note they are centred and clipped to a range of PRIOR_CAP nats,
    so a prior can tip a close call but never overrule evidence that is decisive.
    """

    position: np.ndarray
    gap: np.ndarray
    position_share: np.ndarray  # estimated share of answers at each position
    gap_share: np.ndarray  # ... in each gap bin
    iterations: int = 0

    def logits(self, slots: np.ndarray, best: int | None = None) -> np.ndarray:
        """Prior logits of a note's candidates; `best`, a candidate the evidence puts first
        on every count (`dominant`), keeps a prior at least as high as any other's."""
        raw = self.position[slots[:, 0]] + self.gap[slots[:, 1]]
        mid = (raw.max() + raw.min()) / 2 if len(raw) else 0.0
        out = np.clip(raw - mid, -PRIOR_CAP / 2, PRIOR_CAP / 2)
        return out if best is None else np.minimum(out, out[best])

    def as_dict(self) -> dict:
        return {"position": [round(float(x), 3) for x in self.position_share],
                "gap": [round(float(x), 3) for x in self.gap_share], "iterations": self.iterations}


def fit_window_prior(
    logits: list[np.ndarray],
    slots: list[np.ndarray],
    known: dict[int, int] | None = None,
    best: list[int | None] | None = None,
    strength: float = PRIOR_STRENGTH,
) -> WindowPrior:
    """Expectation-maximisation of the window prior from every note of the run.

    E: each note's posterior over its candidates and "none" under its evidence
    `logits[i]` (candidates then none) plus the current prior; notes in `known` (gold:
    note -> answer index, len = none) enter at their answer. M: the prior's logits
    maximise the posterior-weighted log-probability of the answer's slot among the
    note's slots (a conditional logit, so short windows and gaps that go with
    positions are handled), pulled towards uniform by a Gaussian prior of `strength`.
    Evidence that does not tell candidates apart leaves it near uniform. `best` (per
    note, see `dominant`) is applied as in `WindowPrior.logits`.
    """
    w = _Windows(logits, slots, known or {}, best or [None] * len(logits))
    theta = np.zeros(w.n_pos + N_GAP_BINS)
    q = w.posteriors(theta)
    it = 0
    for it in range(1, PRIOR_ITERATIONS + 1):
        new = minimize_lbfgs(lambda t: w.m_step_loss(t, q, strength), theta, max_iter=100)
        new[w.n_pos] = 0.0
        done = np.abs(new - theta).max() < 1e-3
        theta = new
        q = w.posteriors(theta)
        if done:
            break
    total = max(float(q.sum()), 1e-12)
    return WindowPrior(
        position=theta[: w.n_pos].copy(),
        gap=theta[w.n_pos :].copy(),
        position_share=np.bincount(w.pos[w.valid], weights=q[w.valid], minlength=w.n_pos) / total,
        gap_share=np.bincount(w.gap[w.valid], weights=q[w.valid], minlength=N_GAP_BINS) / total,
        iterations=it,
    )


class _Windows:
    """Every note's candidates padded to one (notes x positions) array, for the EM."""

    def __init__(self, logits: list[np.ndarray], slots: list[np.ndarray], known: dict[int, int],
                 best: list[int | None]):
        n = len(logits)
        self.n_pos = k = max((len(s) for s in slots), default=0)
        self.valid = np.zeros((n, k), bool)
        self.pos = np.zeros((n, k), np.int64)
        self.gap = np.zeros((n, k), np.int64)
        self.z = np.full((n, k + 1), -np.inf)
        for i, (z, s) in enumerate(zip(logits, slots)):
            m = len(s)
            self.valid[i, :m] = True
            self.pos[i, :m], self.gap[i, :m] = s[:, 0], s[:, 1]
            self.z[i, :m], self.z[i, k] = z[:m], z[-1]
        self.best = np.array([-1 if b is None else b for b in best], np.int64)
        self.known = np.zeros((n, k + 1))
        self.is_known = np.zeros(n, bool)
        for i, t in known.items():
            self.known[i, min(t, k) if t < len(slots[i]) else k] = 1.0
            self.is_known[i] = True

    def raw(self, theta: np.ndarray) -> np.ndarray:
        return np.where(self.valid, theta[self.pos] + theta[self.n_pos + self.gap], -np.inf)

    def posteriors(self, theta: np.ndarray) -> np.ndarray:
        """Posterior mass of each (note, position); the rest of each row is "none"."""
        off = _centred_clipped(self.raw(theta), self.valid)
        has = self.best >= 0
        off[has] = np.minimum(off[has], off[has, self.best[has]][:, None])
        z = self.z + np.column_stack([off, np.zeros(len(off))])
        p = _row_softmax(z)
        p[self.is_known] = self.known[self.is_known]
        return np.where(self.valid, p[:, :-1], 0.0)

    def m_step_loss(self, theta: np.ndarray, q: np.ndarray, strength: float) -> tuple[float, np.ndarray]:
        t = theta.copy()
        t[self.n_pos] = 0.0  # no timestamps: no information
        p = _row_softmax(self.raw(t))
        weight = q.sum(1, keepdims=True)
        loss = -(q * np.log(np.where(self.valid, np.maximum(p, 1e-300), 1.0))).sum() + 0.5 * strength * (t**2).sum()
        resid = np.where(self.valid, q - weight * p, 0.0)
        grad = np.bincount(self.pos.ravel(), weights=resid.ravel(), minlength=len(t))
        grad += np.bincount(self.n_pos + self.gap.ravel(), weights=resid.ravel(), minlength=len(t))
        grad = strength * t - grad
        grad[self.n_pos] = 0.0
        return float(loss), grad


def _row_softmax(z: np.ndarray) -> np.ndarray:
    top = np.max(z, axis=1, keepdims=True)
    top[~np.isfinite(top)] = 0.0
    e = np.exp(z - top)
    return e / np.maximum(e.sum(1, keepdims=True), 1e-300)


def _centred_clipped(raw: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per row: centred on the middle of its range, clipped to PRIOR_CAP nats in all."""
    hi = np.max(np.where(valid, raw, -np.inf), axis=1, keepdims=True)
    lo = np.min(np.where(valid, raw, np.inf), axis=1, keepdims=True)
    mid = np.where(np.isfinite(hi) & np.isfinite(lo), (hi + lo) / 2, 0.0)
    return np.where(valid, np.clip(raw - mid, -PRIOR_CAP / 2, PRIOR_CAP / 2), 0.0)


def with_prior(logits: np.ndarray, slots: np.ndarray, prior: WindowPrior | None, best: int | None = None) -> np.ndarray:
    """A note's logits (candidates then none) with the window prior added."""
    if prior is None:
        return logits
    return logits + np.append(prior.logits(slots, best), 0.0)
