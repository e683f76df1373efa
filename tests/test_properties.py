"""Property-based tests (issue 7, part 3): the matcher and the small parsers that
see user data. (Chat-stream, export and normaliser properties live next to their unit
tests in test_chats.py, test_exports.py and test_textsim.py.)"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from disamb import match
from disamb.cache import ClipCache, ClipResult, clip_key
from disamb.chats import InputFileError, LineError, loose_text, parse_ts, read_notes
from disamb.textsim import TEXT_FEATURES, normalize, render_spoken, text_features

F = len(match.FEATURES)
finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)
fn_settings = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------- Matcher.probs


@st.composite
def matchers(draw):
    return match.Matcher(
        features=list(match.FEATURES),
        mean=draw(arrays(float, F, elements=finite)),
        scale=draw(arrays(float, F, elements=st.floats(1e-3, 1e3))),
        weights=draw(arrays(float, F, elements=st.floats(-50, 50))),
        none_bias=draw(st.floats(-1e3, 1e3)),
        temperature=draw(st.floats(0.05, 20)),
    )


@settings(max_examples=200, deadline=None)
@given(m=matchers(), X=st.integers(1, 12).flatmap(lambda n: arrays(float, (n, F), elements=finite)))
def test_probs_are_a_distribution_over_candidates_and_none(m, X):
    p = m.probs(X)
    assert p.shape == (len(X) + 1,)
    assert np.all(np.isfinite(p)) and np.all(p >= 0)
    assert abs(p.sum() - 1.0) < 1e-9


@settings(max_examples=100, deadline=None)
@given(m=matchers(), X=st.integers(2, 8).flatmap(lambda n: arrays(float, (n, F), elements=finite)),
       perm_seed=st.integers(0, 1000))
def test_probs_follow_their_candidates_when_the_window_is_reordered(m, X, perm_seed):
    perm = np.random.default_rng(perm_seed).permutation(len(X))
    p, q = m.probs(X), m.probs(X[perm])
    np.testing.assert_allclose(q[:-1], p[:-1][perm], atol=1e-9)
    assert abs(q[-1] - p[-1]) < 1e-9


@settings(max_examples=100, deadline=None)
@given(z=arrays(float, st.integers(1, 12), elements=st.floats(-1e300, 1e300)))
def test_softmax_never_overflows(z):
    p = match.softmax(z)
    assert np.all(np.isfinite(p)) and abs(p.sum() - 1) < 1e-9


# ---------------------------------------------------------------- assignment


@st.composite
def windows(draw, max_notes=5, max_msgs=7, max_window=4):
    """Notes with overlapping windows over a small pool of messages, and their probabilities."""
    n = draw(st.integers(1, max_notes))
    pool = [f"m{k}" for k in range(draw(st.integers(1, max_msgs)))]
    ids, probs = [], []
    for _ in range(n):
        k = draw(st.integers(0, min(max_window, len(pool))))
        cand = draw(st.permutations(pool))[:k]
        w = draw(arrays(float, k + 1, elements=st.floats(0.0, 1.0)))
        if w.sum() == 0:
            w[-1] = 1.0
        ids.append(cand)
        probs.append(w / w.sum())
    return probs, ids


def _check_decisions(decisions, probs, ids):
    assert len(decisions) == len(probs)
    given_to: dict[str, int] = {}
    for i, d in enumerate(decisions):
        assert 0.0 <= d.confidence <= 1.0 + 1e-12
        if d.index is None:
            continue
        assert 0 <= d.index < len(ids[i])
        cid = ids[i][d.index]
        assert cid not in given_to, f"{cid} given to notes {given_to[cid]} and {i}"
        given_to[cid] = i


@settings(max_examples=300, deadline=None)
@given(w=windows())
def test_assign_never_gives_one_message_to_two_notes(w):
    probs, ids = w
    _check_decisions(match.assign(probs, ids), probs, ids)


def _score(choice, probs) -> float:
    """Joint log-probability of a choice, "none" paying the assignment's margin."""
    return sum(
        math.log(max(probs[i][j if j is not None else -1], 1e-12)) - (match.NONE_MARGIN if j is None else 0.0)
        for i, j in enumerate(choice)
    )


@settings(max_examples=200, deadline=None)
@given(w=windows(max_notes=4, max_msgs=5, max_window=3))
def test_assign_finds_the_best_one_to_one_choice(w):
    """Against brute force: no one-to-one choice has a higher joint score."""
    probs, ids = w
    decisions = match.assign(probs, ids)
    got = _score([d.index for d in decisions], probs)
    best = -math.inf
    for choice in itertools.product(*[[*range(len(c)), None] for c in ids]):
        used = [ids[i][j] for i, j in enumerate(choice) if j is not None]
        if len(used) == len(set(used)):
            best = max(best, _score(choice, probs))
    assert got >= best - 1e-6


@settings(max_examples=100, deadline=None)
@given(w=windows())
def test_confidence_is_the_probability_left_to_the_note(w):
    probs, ids = w
    decisions = match.assign(probs, ids)
    taken = {ids[i][d.index]: i for i, d in enumerate(decisions) if d.index is not None}
    for i, d in enumerate(decisions):
        p = probs[i].copy()
        for j, cid in enumerate(ids[i]):
            if taken.get(cid, i) != i:
                p[j] = 0.0
        pick = p[-1] if d.index is None else p[d.index]
        assert abs(d.confidence - (pick / p.sum() if p.sum() > 0 else 0.0)) < 1e-9


@settings(max_examples=100, deadline=None)
@given(w=windows())
def test_disjoint_windows_are_decided_independently(w):
    """With no shared message, the assignment is each note's own best option."""
    probs, ids = w
    ids = [[f"{i}:{c}" for c in cand] for i, cand in enumerate(ids)]
    for i, d in enumerate(match.assign(probs, ids)):
        p = np.log(np.clip(probs[i], 1e-12, 1))
        p[-1] -= match.NONE_MARGIN  # "none" must win by the margin
        assert p[d.index if d.index is not None else -1] >= p.max() - 1e-9


def test_long_chain_with_identical_probabilities_stays_one_to_one():
    """More notes than BLOCK_LIMIT all wanting the same few messages."""
    n = match.BLOCK_LIMIT + 50
    ids = [[f"m{(i + k) % 7}" for k in range(3)] for i in range(n)]
    probs = [np.array([0.3, 0.3, 0.3, 0.1])] * n
    _check_decisions(match.assign(probs, ids), probs, ids)


# ---------------------------------------------------------------- calibration and thresholds


@settings(max_examples=100, deadline=None)
@given(conf=st.floats(0.0, 1.0), a=st.floats(-20, 20), b=st.floats(-20, 20))
def test_platt_maps_into_zero_one(conf, a, b):
    p = match.apply_platt(conf, (a, b))
    assert 0.0 <= p <= 1.0


@settings(max_examples=150, deadline=None)
@given(pairs=st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=1, max_size=30),
       target=st.floats(0.5, 1.0))
def test_threshold_reaches_the_target_precision_on_what_it_accepts(pairs, target):
    conf = np.array([c for c, _ in pairs])
    ok = np.array([o for _, o in pairs])
    t, prec, cov = match.threshold_for_precision(conf, ok, target)
    if t > 1.0:
        assert cov == 0.0
        return
    accepted = conf >= t
    assert abs(cov - accepted.mean()) < 1e-9
    assert ok[accepted].mean() >= target - 1e-9 and abs(ok[accepted].mean() - prec) < 1e-9


# ---------------------------------------------------------------- parsers and text


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40),
                 st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)))
def test_parse_ts_returns_a_finite_number_or_value_error(value):
    try:
        t = parse_ts(value)
    except ValueError as exc:
        assert str(exc).startswith('"ts" ')
        return
    assert t is None or math.isfinite(t)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_loose_text_is_idempotent(text):
    once = loose_text(text)
    assert loose_text(once) == once


@settings(max_examples=200, deadline=None)
@given(a=st.text(max_size=60), b=st.text(max_size=60))
def test_text_features_are_bounded_and_finite(a, b):
    f = text_features(a, b)
    assert set(f) == set(TEXT_FEATURES)
    for k, v in f.items():
        assert math.isfinite(v) and 0.0 <= v <= 2.0, (k, v)
    assert all(r == r.strip() and r for r in render_spoken(a)) or not normalize(a)


_manifest_obj = st.fixed_dictionaries(
    {"id": st.one_of(st.sampled_from(["r1", "r2"]), st.integers(), st.none()),
     "audio": st.sampled_from(["a.wav", "../a.wav", "/etc/passwd", "", "missing.wav"]),
     "candidates": st.one_of(st.lists(st.one_of(st.text(max_size=8), st.integers()), max_size=4), st.text(max_size=3))},
    optional={"label": st.one_of(st.text(max_size=8), st.integers()),
              "label_index": st.one_of(st.integers(-2, 5), st.booleans(), st.text(max_size=2))},
)


@pytest.fixture
def rec(tmp_path):
    d = tmp_path / "rec"
    d.mkdir()
    (d / "a.wav").write_bytes(b"RIFF")
    return d


@fn_settings
@given(objs=st.lists(_manifest_obj, min_size=1, max_size=6))
def test_manifest_lines_never_raise_anything_but_input_file_error(tmp_path, rec, objs):
    path = tmp_path / "manifest.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    try:
        result = read_notes(path, rec)
    except InputFileError as exc:
        assert str(exc).startswith(f"{path}: ")
        return
    assert all(isinstance(e, LineError) and 1 <= e.line <= len(objs) for e in result.errors)
    assert len(result.notes) + len(result.errors) == len(objs)
    for note in result.notes:
        assert note.audio == (rec / "a.wav").resolve() and note.candidates
        if note.gold_label_id is not None:
            assert note.gold_label_id in [c.id for c in note.candidates]


@fn_settings
@given(data=st.binary(max_size=400))
def test_damaged_cache_entries_are_misses_never_errors(tmp_path, data):
    cache = ClipCache(tmp_path / "cache")
    key = clip_key("h", "m", "o")
    path = cache._path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    got = cache.get(key)
    assert got is None or isinstance(got, ClipResult)


@settings(max_examples=100, deadline=None)
@given(transcript=st.one_of(st.none(), st.text(max_size=30)),
       emb=st.one_of(st.none(), arrays(np.float32, st.integers(1, 8), elements=st.floats(-1e3, 1e3, width=32))),
       scores=st.dictionaries(st.text(max_size=10), st.tuples(finite, st.integers(1, 500)), max_size=4))
def test_cache_entries_round_trip(transcript, emb, scores):
    r = ClipResult(seconds=1.5, transcript=transcript, no_speech_prob=0.1, avg_logprob=-0.2, embedding=emb,
                   scores=scores)
    back = ClipResult.from_json(json.loads(json.dumps(r.to_json())))
    assert back.transcript == transcript and back.scores == {k: (float(v[0]), v[1]) for k, v in scores.items()}
    if emb is None:
        assert back.embedding is None
    else:
        np.testing.assert_array_equal(back.embedding, emb)
