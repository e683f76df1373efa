import numpy as np

from disamb import match


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


def test_fit_starts_from_the_base_weights():
    rng = np.random.default_rng(3)
    base = match.default_matcher()
    Xs = [rng.normal(size=(10, len(match.FEATURES))) for _ in range(5)]
    ys = [int(rng.integers(10)) for _ in Xs]
    pulled = match.fit(Xs, ys, base=base, base_strength=1e6)
    np.testing.assert_allclose(pulled.weights, base.weights / base.temperature, atol=1e-3)
    free = match.fit(Xs, ys, base=base, base_strength=0.0)
    assert np.abs(free.weights - base.weights).max() > 1e-2


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
