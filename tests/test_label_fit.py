"""The matcher is refitted on gold only when the gold says the refit is better."""

from pathlib import Path

import numpy as np

from disamb import match
from disamb.cache import ClipResult
from disamb.chats import Candidate, VoiceNote
from disamb.clips import ClipOutcome
from disamb.label import MatchOptions, label_notes

WORDS = "apple river stone cloud green market violin candle harbor pepper tiger lemon".split()


def _notes(n: int, heard_right: float = 1.0):
    """Notes whose transcript is the truth's text, or with probability 1 - heard_right
    another candidate's (a mishearing the features cannot see through)."""
    rng = np.random.default_rng(3)
    notes, outcomes = [], {}
    for i in range(n):
        texts = [" ".join(rng.choice(WORDS, 3, replace=False)) for _ in range(4)]
        truth = int(rng.integers(4))
        cands = [Candidate(f"m{i}_{j}", t) for j, t in enumerate(texts)]
        notes.append(VoiceNote(f"v{i}", f"v{i}.wav", Path(f"v{i}.wav"), cands,
                               gold_label_id=cands[truth].id, gold_in_window=True))
        heard = truth if rng.random() < heard_right else (truth + 1 + int(rng.integers(3))) % 4
        outcomes[f"v{i}"] = ClipOutcome(f"v{i}", ClipResult(seconds=1.0, transcript=texts[heard]))
    return notes, outcomes


def _matcher(path: Path, cer_weight: float) -> Path:
    f = len(match.FEATURES)
    w = np.zeros(f)
    w[match.FEATURES.index("cer")] = cer_weight
    match.Matcher(list(match.FEATURES), np.zeros(f), np.ones(f), w, none_bias=-50.0).save(path)
    return path


def test_a_wrong_starting_matcher_is_refitted(tmp_path):
    notes, outcomes = _notes(40)
    opts = MatchOptions(matcher=_matcher(tmp_path / "m.json", +5.0), assign=False, base_strength=0.0)  # prefers the worst match
    records, summary, used = label_notes(notes, outcomes, opts)
    assert used.source.startswith("fitted on 40")
    assert "refit" not in summary.extra
    assert summary.cv_accuracy > 0.9


def test_a_starting_matcher_the_gold_cannot_improve_is_kept(tmp_path):
    # 70% heard right among 4 candidates: the best weight gives the match ln(7) nats;
    # a refit from zero on 32 notes per fold can only be noisier than that
    notes, outcomes = _notes(40, heard_right=0.7)
    opts = MatchOptions(matcher=_matcher(tmp_path / "m.json", -2.4), assign=False, base_strength=0.0)
    records, summary, used = label_notes(notes, outcomes, opts)
    assert not used.source.startswith("fitted")
    assert summary.extra["refit"].startswith("kept")
    # every note gets the starting matcher's own probabilities
    unfitted, _, _ = label_notes(notes, outcomes, MatchOptions(matcher=opts.matcher, refit=False, assign=False))
    assert [r["candidates"] for r in records] == [r["candidates"] for r in unfitted]


def test_platt_is_pulled_towards_identity_on_little_gold():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1, 4000)
    correct = (rng.uniform(size=4000) < conf**3).astype(float)
    a_many, b_many = match.fit_platt(conf, correct)
    a_few, b_few = match.fit_platt(conf[:25], correct[:25])
    assert abs(a_few - 1) + abs(b_few) < abs(a_many - 1) + abs(b_many)
