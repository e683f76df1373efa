"""Classes scored by what the decoder hears: the labeller's evidence, used by the classifier.

A head on the mean of the encoder frames forgets the order of the words and, learned
from a few hundred clips, learns the voices as much as the words: measured on the
closed-class benchmark it fell from the labeller's 0.83-0.87 to 0.72-0.76 on voices it
never heard. The decoder already knows how to read words from any voice, so every class
text is scored against the clip the way labelling scores a candidate: teacher-forced
log-likelihood of each typed variant's spoken renderings, best one kept, minus the same
text's likelihood under silent audio (PMI, `clips.text_priors`; `features.best_scores`
is the one definition both use). Scores go through `clips.run_clips` (mode "none"), so
they come from and go to the per-clip cache: after `disamb label` a clip already holds
the renderings of its own candidates, and a rerun of train or predict scores nothing.

With many classes the decoder pass per class is the cost (about 25 ms per rendering on
a shared CPU core with tiny.en), so `shortlist` keeps the head's top K and the
candidate-set classes, and only those are scored.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from . import metrics
from .cache import ClipCache, ClipResult
from .chats import Candidate, VoiceNote
from .classes import ClassSet
from .clips import ClipOptions, run_clips, text_priors
from .features import best_scores
from .textsim import normalize

MAX_VARIANTS = 3  # typed variants scored per class, most common first: each costs 1-3 decoder passes
TEXT_FEATURES = ("pmi", "pmi_per_char")


def scored_variants(classes: ClassSet, limit: int = MAX_VARIANTS) -> list[list[str]]:
    """Per class, the typed variants whose renderings are scored (most common first)."""
    return [classes.typed(c)[: max(1, limit)] for c in classes.classes]


def shortlist(head_logits: np.ndarray, k: int | None, must: np.ndarray | None = None) -> np.ndarray:
    """(n, C) bool: the classes to score per clip, the head's top `k` plus any in `must`.

    `k` None (or at least C) scores every class.
    """
    n, C = head_logits.shape
    if k is None or k >= C:
        keep = np.ones((n, C), bool)
    else:
        keep = np.zeros((n, C), bool)
        top = np.argsort(-head_logits, axis=1, kind="stable")[:, : max(1, k)]
        np.put_along_axis(keep, top, True, axis=1)
    if must is not None:
        keep |= must
    return keep


def _pseudo_note(note: VoiceNote, variants: list[list[str]], classes: np.ndarray | None) -> VoiceNote:
    """The note with the chosen classes' variants as its candidates, so the clip stage
    scores exactly their renderings (and caches them under the clip's usual key)."""
    ks = range(len(variants)) if classes is None else np.flatnonzero(classes)
    cands = [Candidate(id=f"{k}:{j}", text=v) for k in ks for j, v in enumerate(variants[k])]
    return replace(note, candidates=cands)


@dataclass
class ClipTexts:
    """What the classifier needs of each clip: the embedding and the class scores."""

    embeddings: dict[str, np.ndarray]
    results: dict[str, ClipResult]
    errors: dict[str, str]


def run_text_scoring(lm, notes: list[VoiceNote], variants: list[list[str]], clip_options: ClipOptions,
                     cache: ClipCache, which: dict[str, np.ndarray] | None = None,
                     on_done: Callable[[int], None] | None = None) -> ClipTexts:
    """Embeddings and likelihoods of the class renderings for every note (never a transcript).

    `which` (note id -> (C,) bool) limits the classes scored per note; a note left out of
    it gets none scored (its embedding only).
    """
    pseudo = []
    for n in notes:
        chosen = None if which is None else which.get(n.id, np.zeros(len(variants), bool))
        pseudo.append(_pseudo_note(n, variants, chosen))
    outcomes = run_clips(lm, pseudo, replace(clip_options, mode="none"), cache, on_done=on_done)
    embs, results, errors = {}, {}, {}
    for n in notes:
        oc = outcomes.get(n.id)
        if oc is not None and oc.result is not None and oc.result.embedding is not None:
            embs[n.id] = np.asarray(oc.result.embedding, np.float32)
            results[n.id] = oc.result
        else:
            errors[n.id] = (oc.error if oc is not None else None) or "no embedding"
    return ClipTexts(embs, results, errors)


def class_priors(lm, variants: list[list[str]], cache: ClipCache) -> dict[str, tuple[float, int]]:
    """Each class rendering's likelihood under silent audio (cached with labelling's priors)."""
    note = VoiceNote(id="", file="", audio=None,  # type: ignore[arg-type]
                     candidates=[Candidate(id=str(i), text=v) for i, v in enumerate(t for vs in variants for t in vs)])
    return text_priors(lm, [note], cache.root)


def text_features(results: list[ClipResult | None], variants: list[list[str]],
                  prior: dict[str, tuple[float, int]], scored: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(n, C, len(TEXT_FEATURES)) class scores and the (n, C) mask of classes scored.

    A class's PMI is its best variant's (each variant's best rendering, as labelling
    takes it); the per-character form counts the characters of that variant's
    normalised text, so long phrases are not favoured just for having more tokens to gain.
    A class none of whose renderings is in the clip's scores is not scored (mask False).
    """
    n, C = len(results), len(variants)
    feats = np.zeros((n, C, len(TEXT_FEATURES)), np.float64)
    ok = np.zeros((n, C), bool)
    chars = [[max(1, len(normalize(v))) for v in vs] for vs in variants]
    for i, res in enumerate(results):
        if res is None:
            continue
        for k, vs in enumerate(variants):
            if scored is not None and not scored[i, k]:
                continue
            best = None
            for v, nc in zip(vs, chars[k]):
                total, pmi, _, r = best_scores(v, res, prior)
                if not r:
                    continue  # none of its renderings scored on this clip
                if best is None or pmi > best[0]:
                    best = (pmi, pmi / nc)
            if best is not None:
                feats[i, k] = best
                ok[i, k] = True
    return feats, ok


def softmax_masked(z: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Row softmax over the entries where `ok` (zero elsewhere); rows without any are uniform."""
    z = np.where(ok, z, -np.inf)
    top = z.max(1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    p = np.where(ok, np.exp(z - top), 0.0)
    total = p.sum(1, keepdims=True)
    uniform = np.full_like(p, 1.0 / max(1, p.shape[1]))
    return np.where(total > 0, p / np.where(total > 0, total, 1.0), uniform)


def expected_calibration_error(proba: np.ndarray, true: np.ndarray, bins: int = 10) -> float:
    """ECE of the top class (`metrics.expected_calibration_error` on each row's top
    probability and whether it is `true`); NaN for no rows."""
    if not len(proba):
        return math.nan
    return metrics.expected_calibration_error(proba.max(1), proba.argmax(1) == np.asarray(true), bins)
