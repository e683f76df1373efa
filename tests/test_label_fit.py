"""The gold chooses the matcher honestly, and the window prior never hides decisive evidence."""

from dataclasses import replace
from pathlib import Path

import numpy as np

from disamb import match
from disamb.cache import ClipResult
from disamb.chats import Candidate, VoiceNote
from disamb.clips import ClipOutcome
from disamb.label import Heard, MatchOptions, label_notes
from disamb.textsim import render_spoken

WORDS = "apple river stone cloud green market violin candle harbor pepper tiger lemon".split()


def _notes(n: int, heard_right: float = 1.0, seed: int = 3):
    """Notes whose transcript is the truth's text, or with probability 1 - heard_right
    another candidate's (a mishearing the features cannot see through)."""
    rng = np.random.default_rng(seed)
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


def _matcher(path: Path, **weights: float) -> Path:
    f = len(match.FEATURES)
    w = np.array([weights.get(name, 0.0) for name in match.FEATURES])
    match.Matcher(list(match.FEATURES), np.zeros(f), np.ones(f), w, none_bias=-50.0).save(path)
    return path


def test_a_starting_matcher_blind_to_the_evidence_is_replaced(tmp_path):
    notes, outcomes = _notes(40)
    # every candidate has the same (missing) likelihood: this matcher cannot tell them apart
    opts = MatchOptions(matcher=_matcher(tmp_path / "m.json", lik_sum=1.0), assign=False)
    records, summary, used = label_notes(notes, outcomes, opts)
    assert used.source.split()[0] in ("refit", "minimal")
    losses = summary.matcher_losses
    assert losses[used.source.split()[0]] < losses["starting weights"]
    assert summary.cv_accuracy > 0.9


def test_a_small_gold_set_cannot_lock_in_a_bad_fit(tmp_path):
    # Weights fitted on 600 notes like these are about as good as it gets. Whatever
    # the 40 gold notes of another sample choose (the same weights, a refit or the
    # minimal model), it must label a fresh sample about as well.
    big, big_outcomes = _notes(600, heard_right=0.7, seed=10)
    _, _, good = label_notes(big, big_outcomes, MatchOptions(assign=False, position_prior=False))
    good.save(tmp_path / "good.json")
    notes, outcomes = _notes(40, heard_right=0.7)
    _, summary, used = label_notes(notes, outcomes, MatchOptions(matcher=tmp_path / "good.json", assign=False,
                                                                 position_prior=False))
    assert set(summary.matcher_losses) == {"starting weights", "refit", "minimal"}
    fresh, fresh_outcomes = _notes(300, heard_right=0.7, seed=11)
    used.save(tmp_path / "used.json")

    def accuracy(path):
        records, _, _ = label_notes(fresh, fresh_outcomes, MatchOptions(matcher=path, refit=False, assign=False,
                                                                        position_prior=False))
        return np.mean([r["label_id"] == n.gold_label_id for r, n in zip(records, fresh)])

    assert accuracy(tmp_path / "used.json") >= accuracy(tmp_path / "good.json") - 0.02


def _code_note(i: int, codes: list[str], heard: int, lik: list[float]) -> tuple[VoiceNote, ClipOutcome]:
    cands = [Candidate(f"m{i}_{j}", c) for j, c in enumerate(codes)]
    scores = {}
    for c, total in zip(codes, lik):
        for r in render_spoken(c):
            scores.setdefault(r, (total, 6))
    clip = ClipResult(seconds=2.0, transcript=" ".join(codes[heard].split()[0]), scores=scores)  # "5 1 2 7"
    return VoiceNote(f"v{i}", f"v{i}.wav", Path(f"v{i}.wav"), cands), ClipOutcome(f"v{i}", clip)


def test_exact_and_likeliest_answer_wins_from_the_last_place_of_an_early_chat():
    """A chat whose answers nearly all come first teaches the prior to favour the first
    place; a note whose transcript equals its last candidate, which also has the best
    likelihood, is still labelled with it, against a one-digit-off distractor in first place."""
    rng = np.random.default_rng(0)
    notes, outcomes = [], {}
    for i in range(300):
        codes = [str(rng.integers(1000, 9999)) for _ in range(10)]
        lik = list(rng.normal(-30, 1, 10))
        lik[0] = -18.0  # the answer sits first
        note, oc = _code_note(i, codes, 0, lik)
        notes.append(note)
        outcomes[note.id] = oc
    codes = ["5127 ok"] + [str(rng.integers(1000, 9999)) for _ in range(8)] + ["5128 ok"]
    codes[0], codes[9] = "5128 ok", "5127 ok"  # the distractor first, the answer last
    lik = list(rng.normal(-30, 1, 10))
    lik[0], lik[9] = -21.0, -19.0
    note, oc = _code_note(300, codes, 9, lik)
    notes.append(note)
    outcomes[note.id] = oc
    records, summary, _ = label_notes(notes, outcomes, MatchOptions())
    assert summary.window_prior["position"][0] > 0.5  # it did learn that answers come first (uniform: 0.1)
    assert records[-1]["label"] == "5127 ok"


def test_the_gold_keeps_the_starting_weights_unless_it_shows_them_wrong_more_often():
    from disamb.label import _choose

    # every gold note right either way: a sharper refit's lower log-loss is no reason to move
    losses = {"starting weights": 0.05, "refit": 0.0001, "minimal": 0.05}
    assert _choose(losses, {"starting weights": 0, "refit": 0, "minimal": 0}) == "starting weights"
    # the gold shows the starting weights wrong more often: the fewest errors, then the lowest loss
    assert _choose(losses, {"starting weights": 3, "refit": 1, "minimal": 1}) == "refit"
    assert _choose(losses, {"starting weights": 3, "refit": 2, "minimal": 1}) == "minimal"


def test_the_starting_weights_get_their_temperature_from_the_gold_too(tmp_path):
    """Weights fitted elsewhere can be scaled for other notes (other voices; after
    --adapt, the mean of two models' features). The refit and the minimal model get a
    temperature from the gold, so the starting weights get one too: however they came
    scaled, the gold sees them the same. With every gold note right that fit has no
    optimum (sharper is always better), so they keep their own."""
    big, big_outcomes = _notes(600, heard_right=0.7, seed=10)
    _, _, good = label_notes(big, big_outcomes, MatchOptions(assign=False, position_prior=False))

    def starting(notes, outcomes, factor):
        path = tmp_path / f"x{factor}.json"
        replace(good, temperature=good.temperature * factor).save(path)
        _, summary, used = label_notes(notes, outcomes, MatchOptions(matcher=path, assign=False, position_prior=False))
        return summary, used

    notes, outcomes = _notes(40, heard_right=0.7)
    runs = {factor: starting(notes, outcomes, factor) for factor in (0.25, 1.0, 4.0)}
    losses = [summary.matcher_losses["starting weights"] for summary, _ in runs.values()]
    assert runs[1.0][0].matcher_errors["starting weights"] > 0
    assert max(losses) - min(losses) < 0.005
    for summary, used in runs.values():
        if summary.matcher_choice == "starting weights":
            assert abs(np.log(used.temperature / runs[1.0][1].temperature)) < 0.1

    clean, clean_outcomes = _notes(40)
    summary, used = starting(clean, clean_outcomes, 4.0)
    assert summary.matcher_errors["starting weights"] == 0 and summary.matcher_choice == "starting weights"
    assert used.temperature == good.temperature * 4.0


def test_the_summary_says_what_the_gold_chose_and_why(tmp_path):
    notes, outcomes = _notes(40)
    opts = MatchOptions(matcher=_matcher(tmp_path / "m.json", lik_sum=1.0), assign=False)
    _, summary, used = label_notes(notes, outcomes, opts)
    assert set(summary.matcher_errors) == {"starting weights", "refit", "minimal"}
    assert summary.matcher_choice == used.source.split()[0]
    assert summary.matcher_errors[summary.matcher_choice] < summary.matcher_errors["starting weights"]


def test_a_second_models_evidence_is_averaged_into_the_features():
    """`also` (label --adapt: the unadapted model beside the adapted one): each feature is
    the weighted mean of the two models', so a note one model hears clearly and the other
    faintly the other way goes to the clear one; weight 0 or 1 is either model alone, and
    a clip the second model found silent leaves the first model's features."""
    codes = ["5127 ok", "8830 thx", "4411", "9006 ok"]
    note, clear = _code_note(0, codes, 0, [-12.0, -40.0, -40.0, -40.0])
    _, faint = _code_note(0, codes, 1, [-31.0, -29.0, -33.0, -33.0])
    opts = MatchOptions(assign=False, position_prior=False)

    def run(outcome, also=None):
        return label_notes([note], {"v0": outcome}, opts, also=also)[0][0]

    by_clear, by_faint = run(clear), run(faint)
    assert (by_clear["label"], by_faint["label"]) == ("5127 ok", "8830 thx")
    both = run(faint, Heard({"v0": clear}, None, 0.5))
    assert both["label"] == "5127 ok"
    for j, c in enumerate(both["candidates"]):
        for k in ("lik_sum", "cer", "digit_dist"):
            mean = (by_clear["candidates"][j]["features"][k] + by_faint["candidates"][j]["features"][k]) / 2
            assert abs(c["features"][k] - mean) < 1e-3
    assert run(faint, Heard({"v0": clear}, None, 0.0)) == by_faint
    assert run(faint, Heard({"v0": clear}, None, 1.0))["candidates"] == by_clear["candidates"]
    silent = ClipOutcome("v0", ClipResult(seconds=2.0, transcript="", no_speech_prob=0.99, avg_logprob=-2.0))
    assert run(faint, Heard({"v0": silent}, None, 0.5)) == by_faint


def test_gold_notes_lacking_their_message_do_not_bend_the_matcher():
    """A user's gold holds notes whose message was never typed ("not in the window"). No
    weight on these features tells them apart, so if they took part in the refit they
    would only flatten every note (temperature, weights); they count in the Platt map."""
    notes, outcomes = _notes(90, heard_right=0.85, seed=5)
    for k in range(50, 90):  # the last 40 are not gold
        notes[k] = VoiceNote(notes[k].id, notes[k].file, notes[k].audio, notes[k].candidates)
    rng = np.random.default_rng(9)
    lacking, extra = [], {}
    for i in range(90, 96):  # heard clearly, but what was said is none of the candidates
        said = " ".join(rng.choice(WORDS, 3, replace=False))
        cands = [Candidate(f"m{i}_{j}", " ".join(rng.choice(WORDS, 3, replace=False))) for j in range(4)]
        lacking.append(VoiceNote(f"v{i}", f"v{i}.wav", Path(f"v{i}.wav"), cands, gold_text=said, gold_in_window=False))
        extra[f"v{i}"] = ClipOutcome(f"v{i}", ClipResult(seconds=1.0, transcript=said))
    records, summary, matcher = label_notes(notes, outcomes, MatchOptions())
    records2, summary2, matcher2 = label_notes(notes + lacking, {**outcomes, **extra}, MatchOptions())
    assert summary.matcher_choice != "starting weights"  # the gold did refit
    assert summary2.matcher_choice == summary.matcher_choice and summary2.matcher_losses == summary.matcher_losses
    assert matcher2.temperature == matcher.temperature
    assert np.allclose(matcher2.weights, matcher.weights) and matcher2.none_bias == matcher.none_bias
    for a, b in zip(records, records2):
        assert a["label_id"] == b["label_id"]
        assert [c["prob"] for c in a["candidates"]] == [c["prob"] for c in b["candidates"]]
    assert summary2.gold == summary.gold + len(lacking)
