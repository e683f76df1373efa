import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from disamb import match, window_prior
from disamb.features import EVIDENCE


def test_assignment_gives_each_message_to_one_note():
    # two notes share m2; note 0 is sure about m2, note 1 slightly prefers it too
    probs = [np.array([0.05, 0.9, 0.05, 0.0]), np.array([0.55, 0.40, 0.05, 0.0])]
    ids = [["m1", "m2", "m3"], ["m2", "m3", "m4"]]
    d = match.assign(probs, ids)
    assert (d[0].index, d[1].index) == (1, 1)  # note 0 -> m2, note 1 -> m3
    # note 1's confidence is renormalised over what note 0 left it
    assert abs(d[1].confidence - 0.40 / 0.45) < 1e-9
    indep = match.decide_independently(probs)
    assert indep[1].index == 0


def test_none_option_wins_when_nothing_fits():
    d = match.assign([np.array([0.02, 0.02, 0.96])], [["a", "b"]])
    assert d[0].index is None
    # an unsure note keeps its best guess unless "none" is far more likely
    d = match.assign([np.array([0.1, 0.1, 0.8])], [["a", "b"]])
    assert d[0].index == 0 and abs(d[0].confidence - 0.1) < 1e-9


def test_blocks_split_disjoint_windows():
    blocks = match._blocks([["a", "b"], ["b", "c"], ["x"], ["c"]])
    assert blocks == [[0, 1, 3], [2]]


def test_long_chains_stay_one_to_one():
    rng = np.random.default_rng(0)
    n = 1000
    ids = [[f"m{i + k}" for k in range(10)] for i in range(n)]
    probs = [np.append(p := rng.dirichlet(np.ones(10)), 0.01) / (1 + 0.01) for _ in range(n)]
    d = match.assign(probs, ids)
    chosen = [ids[i][x.index] for i, x in enumerate(d) if x.index is not None]
    assert len(chosen) == len(set(chosen))
    assert len(chosen) > 0.9 * n


def test_fit_recovers_a_known_weight():
    rng = np.random.default_rng(1)
    Xs, ys = [], []
    true_w = np.zeros(len(match.FEATURES))
    true_w[match.FEATURES.index("cer")] = -3.0
    for _ in range(300):
        X = rng.normal(size=(10, len(match.FEATURES)))
        p = match.softmax(X @ true_w)
        Xs.append(X)
        ys.append(int(rng.choice(10, p=p)))
    m = match.fit(Xs, ys, l2=1e-4)
    w = m.weights * 1.0
    assert np.argmax(np.abs(w)) == match.FEATURES.index("cer")
    assert w[match.FEATURES.index("cer")] < -2.0
    acc = np.mean([np.argmax(m.probs(X)[:-1]) == y for X, y in zip(Xs, ys)])
    assert acc > 0.6


def test_matcher_round_trip(tmp_path):
    m = match.default_matcher()
    m.save(tmp_path / "m.json")
    m2 = match.Matcher.load(tmp_path / "m.json")
    X = np.random.default_rng(0).normal(size=(4, len(match.FEATURES)))
    np.testing.assert_allclose(m.probs(X), m2.probs(X))


def test_threshold_for_precision():
    conf = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6])
    ok = np.array([1, 1, 1, 0, 1, 0])
    # smoothed precision (right+1)/(n+2) down the list: .67 .75 .80 .67 .71 .63
    t, prec, cov = match.threshold_for_precision(conf, ok, 0.75)
    assert (t, prec, cov) == (0.9, 1.0, 0.5)
    t, prec, cov = match.threshold_for_precision(conf, ok, 0.7)
    assert (t, prec, cov) == (0.7, 0.8, 5 / 6)
    t, prec, cov = match.threshold_for_precision(conf, ok, 0.9)
    assert t > 1.0 and cov == 0.0  # three right answers are not evidence of 90% precision


def _random_fit(seed: int, wrong_sign: str = "cer") -> match.Matcher:
    """A fit on data where one feature points the wrong way (as correlated columns can)."""
    rng = np.random.default_rng(seed)
    f = len(match.FEATURES)
    true_w = np.array([0.5 * EVIDENCE[name] for name in match.FEATURES])
    true_w[match.FEATURES.index(wrong_sign)] = -2.0 * EVIDENCE[wrong_sign]
    Xs, ys = [], []
    for _ in range(200):
        X = rng.normal(size=(8, f))
        Xs.append(X)
        ys.append(int(rng.choice(8, p=match.softmax(X @ true_w))))
    return match.fit(Xs, ys)


def test_fitted_weights_keep_the_evidence_signs():
    for seed, name in ((0, "cer"), (1, "lik_sum"), (2, "digit_dist")):
        m = _random_fit(seed, name)
        signs = np.array([EVIDENCE[n] for n in m.features])
        assert np.all(m.weights * signs >= 0), dict(zip(m.features, m.weights))
        assert m.weights[m.features.index(name)] == 0.0  # the data pulled it the wrong way: it stops at zero


def test_features_outside_use_stay_at_zero():
    rng = np.random.default_rng(4)
    Xs = [rng.normal(size=(6, len(match.FEATURES))) for _ in range(50)]
    ys = [int(rng.integers(6)) for _ in Xs]
    m = match.fit(Xs, ys, use=("lik_sum", "cer"))
    unused = [i for i, n in enumerate(match.FEATURES) if n not in ("lik_sum", "cer")]
    assert np.all(m.weights[unused] == 0.0)


@settings(max_examples=200, deadline=None)
@given(
    base=st.lists(st.floats(-5, 5), min_size=len(match.FEATURES), max_size=len(match.FEATURES)),
    better=st.lists(st.floats(0, 3), min_size=len(match.FEATURES), max_size=len(match.FEATURES)),
    others=st.integers(0, 5),
    seed=st.integers(0, 3),
)
def test_a_candidate_at_least_as_good_on_every_evidence_is_never_less_likely(base, better, others, seed):
    m = _FITS[seed]
    a = np.array(base)
    b = a + np.array([EVIDENCE[n] for n in match.FEATURES]) * np.array(better)  # better or equal everywhere
    rest = np.random.default_rng(seed).normal(size=(others, len(match.FEATURES)))
    p = m.probs(np.vstack([a, b, rest]))
    assert p[1] >= p[0] - 1e-12


_FITS = [_random_fit(s, n) for s, n in enumerate(("cer", "lik_sum", "token_set", "lik_prior"))]


def _simulated_run(n: int, true_share: np.ndarray, evidence: float, seed: int = 0):
    """Notes of 10 candidates whose truth sits at a position drawn from `true_share`.
    Each candidate's score is N(evidence, 1) for the truth and N(0, 1) otherwise; the
    calibrated logit of that is evidence * score."""
    rng = np.random.default_rng(seed)
    logits, slots, truth = [], [], []
    for _ in range(n):
        t = int(rng.choice(10, p=true_share))
        z = rng.normal(size=10)
        z[t] += evidence
        logits.append(np.append(evidence * z, -20.0))
        slots.append(np.column_stack([np.arange(10), np.zeros(10, int)]))
        truth.append(t)
    return logits, slots, truth


def test_em_recovers_a_known_position_distribution():
    share = np.array([0.3, 0.2, 0.15, 0.1, 0.08, 0.06, 0.04, 0.03, 0.02, 0.02])
    logits, slots, _ = _simulated_run(3000, share, evidence=2.0)
    prior = window_prior.fit_window_prior(logits, slots)
    assert np.abs(prior.position_share - share).max() < 0.03, prior.position_share
    late = share[::-1]
    logits, slots, _ = _simulated_run(3000, late, evidence=2.0, seed=1)
    prior = window_prior.fit_window_prior(logits, slots)
    assert np.abs(prior.position_share - late).max() < 0.03


def test_em_stays_near_uniform_when_the_evidence_says_nothing():
    share = np.array([0.5] + [0.5 / 9] * 9)  # the truth is mostly first, but nothing shows it
    logits, slots, _ = _simulated_run(300, share, evidence=0.0, seed=2)
    prior = window_prior.fit_window_prior(logits, slots)
    np.testing.assert_allclose(prior.position_share, 0.1, atol=1e-6)
    rng = np.random.default_rng(5)  # scores that claim something but are unrelated to the truth
    noisy = [z + np.append(rng.normal(scale=0.3, size=10), 0.0) for z in _simulated_run(3000, share, 0.0, 6)[0]]
    prior = window_prior.fit_window_prior(noisy, _simulated_run(3000, share, 0.0, 6)[1])
    assert np.abs(prior.position_share - 0.1).max() < 0.03


def test_gold_notes_enter_the_em_at_their_answer():
    logits, slots, truth = _simulated_run(200, np.full(10, 0.1), evidence=0.0, seed=3)
    known = {i: 9 for i in range(200)}  # every note known to be answered last
    prior = window_prior.fit_window_prior(logits, slots, known)
    assert prior.position_share[9] > 0.95
    assert prior.position[9] > prior.position[0]


def test_the_prior_cannot_overrule_decisive_evidence():
    share = np.array([0.6] + [0.4 / 9] * 9)
    logits, slots, _ = _simulated_run(2000, share, evidence=3.0, seed=4)
    prior = window_prior.fit_window_prior(logits, slots)
    spread = prior.logits(slots[0])
    assert spread.max() - spread.min() <= window_prior.PRIOR_CAP + 1e-9
    z = np.append(np.zeros(10), -20.0)
    z[9] = window_prior.PRIOR_CAP + 0.5  # the last candidate's evidence beats the prior's whole range
    assert int(np.argmax(window_prior.with_prior(z, slots[0], prior))) == 9


def test_temperature_and_platt_calibrate():
    rng = np.random.default_rng(0)
    logits, ys = [], []
    for _ in range(400):
        z = rng.normal(size=5) * 3
        p = match.softmax(z / 3.0)  # true temperature 3
        logits.append(z)
        ys.append(int(rng.choice(5, p=p)))
    t = match.fit_temperature(logits, ys)
    assert 2.2 < t < 4.0
    conf = rng.uniform(0.5, 1, 2000)
    correct = (rng.uniform(size=2000) < conf**2).astype(float)  # overconfident
    a, b = match.fit_platt(conf, correct)
    assert match.apply_platt(0.9, (a, b)) < 0.9


def test_platt_on_a_little_gold_starts_from_the_matchers_own_map():
    shipped = (1.2, 0.6)  # an under-confident labeller's map, measured on logs its weights never saw
    conf = np.array([0.6, 0.7, 0.8, 0.9, 0.95] * 6)
    assert match.fit_platt(conf, np.ones(30), prior=shipped) == shipped  # no mistake: nothing to move it
    correct = np.array([1.0, 1.0, 1.0, 1.0, 1.0] * 5 + [0.0, 1.0, 1.0, 1.0, 1.0])
    near = match.fit_platt(conf, correct, prior=shipped)
    far = match.fit_platt(conf, correct)  # pulled towards the identity instead
    assert abs(near[0] - shipped[0]) + abs(near[1] - shipped[1]) < abs(far[0] - shipped[0]) + abs(far[1] - shipped[1])
    assert match.fit_platt(conf, np.ones(30)) == (1.0, 0.0)


def test_a_matcher_file_against_the_evidence_is_refused(tmp_path):
    m = match.default_matcher()
    data = m.to_json()
    data["weights"][match.FEATURES.index("cer")] = 1.0  # a closer transcript would lower the score
    (tmp_path / "m.json").write_text(json.dumps(data))
    with pytest.raises(match.MatcherError, match="against the evidence for cer"):
        match.Matcher.load(tmp_path / "m.json")
    data = m.to_json()
    data["scale"][0] = 0.0
    (tmp_path / "m.json").write_text(json.dumps(data))
    with pytest.raises(match.MatcherError, match="not positive"):
        match.Matcher.load(tmp_path / "m.json")
