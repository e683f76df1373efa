"""Cross-fitted encoder adaptation (adapt.py) on generated speech and the real tiny.en."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from disamb import asr
from disamb.adapt import (
    Adapter,
    AdapterError,
    AdaptOptions,
    adapt_and_relabel,
    adapted_model,
    adapter_state,
    fold_of,
    load_adapter,
    merge,
    note_loss,
    save_adapter,
    sequences_for,
    train_adapter,
    _example,
)
from disamb.chats import read_notes
from disamb.clips import ClipOptions
from disamb.label import MatchOptions
from disamb.models import weights_key
from disamb.pipeline import label_all
from tests.conftest import speak

SAID = [
    ("v1", "see you at five at the gym", ["see u at 6 then", "see u at 5 at the gym"]),
    ("v2", "can you pick up some milk on the way home", ["can u pick up the kids", "can u pick up sum milk on the way home"]),
    ("v3", "the meeting moved to thursday afternoon", ["meeting moved to friday", "the meeting moved to thurs afternoon"]),
    ("v4", "happy birthday, have a wonderful day", ["happy anniversary", "happy bday have a wonderful day"]),
    ("v5", "call me when you land", ["call me when u land", "call me later"]),
]


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("adapt")
    rec = d / "recordings"
    rec.mkdir()
    lines = []
    for i, (vid, text, cands) in enumerate(SAID):
        speak(text, rec / f"{vid}.wav")
        voice = {"id": vid, "type": "voice", "file": f"{vid}.wav", "ts": f"2024-05-01T10:{i:02d}:00Z"}
        if i < 2:
            voice["label_id"] = f"{vid}m1"
        lines.append(voice)
        for j, t in enumerate(cands):
            lines.append({"id": f"{vid}m{j}", "type": "text", "text": t, "ts": f"2024-05-01T10:{i:02d}:{5 + j:02d}Z"})
    (d / "chats.jsonl").write_text("".join(json.dumps(o) + "\n" for o in lines), encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def notes(chat_dir):
    return read_notes(chat_dir / "chats.jsonl", chat_dir / "recordings", window=2).notes


def test_folds_are_balanced_and_fixed_by_the_ids():
    ids = [f"n{i}" for i in range(11)]
    folds = fold_of(ids, 2)
    assert sorted(folds.values()).count(0) == 6 and fold_of(list(reversed(ids)), 2) == folds


def test_each_note_is_scored_by_an_adapter_that_did_not_train_on_it_and_reruns_reuse_them(tiny_model, notes, tmp_path):
    cache = tmp_path / "cache"
    run = label_all(tiny_model, notes, ClipOptions(), MatchOptions(), cache)
    steps: list[int] = []
    rescored: dict[str, tuple[int, int]] = {}

    def on_progress(stage: str, n: int, total: int) -> None:  # what the label command's bars hear
        if stage.endswith("training"):
            steps.append(n)
        else:
            done, _ = rescored.get(stage, (0, total))
            rescored[stage] = (done + n, total)

    opts = AdaptOptions(epochs=1)
    res = adapt_and_relabel(tiny_model, notes, run.records, run.summary, ClipOptions(), MatchOptions(), cache, opts,
                            on_progress=on_progress)
    [rnd] = res.rounds
    assert sum(steps) == len(notes)  # 2 folds, every note trains exactly one adapter
    assert sorted(rescored) == ["adapter 1/2: rescoring", "adapter 2/2: rescoring"]
    assert sum(t for _, t in rescored.values()) == len(notes) and all(d == t for d, t in rescored.values())
    assert set(rnd.scored_by) == {n.id for n in notes}
    for note_id, fold in rnd.scored_by.items():
        assert note_id not in rnd.adapters[fold].train_ids
        assert any(note_id in a.train_ids for a in rnd.adapters)
    assert all(a.epoch_losses and a.epoch_losses[0] > 0 for a in rnd.adapters)
    assert [r["id"] for r in res.records] == [n.id for n in notes]
    assert all(r["transcript"] for r in res.records)
    files = sorted(cache.rglob("*.safetensors"))
    assert len(files) == 2

    # a resumed run loads both adapters instead of training, and labels the same
    steps.clear()
    again = adapt_and_relabel(tiny_model, notes, run.records, run.summary, ClipOptions(), MatchOptions(), cache, opts,
                              on_progress=on_progress)
    assert steps == [] and all(a.reused for a in again.rounds[0].adapters)
    assert [r["label_id"] for r in again.records] == [r["label_id"] for r in res.records]
    # label --adapt's labels: the same adapters, features averaged with the unadapted model's
    mixed = adapt_and_relabel(tiny_model, notes, run.records, run.summary, ClipOptions(), MatchOptions(), cache, opts,
                              on_progress=on_progress, unadapted_outcomes=run.outcomes,
                              unadapted_prior=run.prior)
    assert steps == [] and all(a.reused for a in mixed.rounds[0].adapters)
    for m, adapted, unadapted in zip(mixed.records, res.records, run.records):
        for cm, ca, cu in zip(m["candidates"], adapted["candidates"], unadapted["candidates"]):
            assert abs(cm["features"]["lik_sum"] - (ca["features"]["lik_sum"] + cu["features"]["lik_sum"]) / 2) < 1e-3
    # a changed input (other targets) trains again
    changed = [dict(r, candidates=[dict(c, prob=0.5) for c in r["candidates"]]) for r in run.records]
    adapt_and_relabel(tiny_model, notes, changed, run.summary, ClipOptions(), MatchOptions(), cache, opts,
                      on_progress=on_progress)
    assert sum(steps) > 0


def _random_adapter(f32, seed: int = 1) -> dict[str, torch.Tensor]:
    from disamb.adapt import trainable

    model = trainable(f32.model, AdaptOptions(seed=seed))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.02 * torch.randn(p.shape, generator=gen))
    return model, adapter_state(model)


def test_adapter_files_round_trip_and_refuse_another_base_model(tiny_model, tiny_model_f32, tmp_path):
    model, state = _random_adapter(tiny_model_f32)
    assert sum(v.numel() for v in state.values()) == 56064  # tiny.en: 9 LayerNorms + 8 rank-8 projections
    base = weights_key(tiny_model.key)
    adapter = Adapter(state, base, 1, "ab" * 32, ["v1", "v2"], [3.5], 1.0)
    path = tmp_path / "a.safetensors"
    save_adapter(path, adapter)
    back = load_adapter(path, base)
    assert back.fold == 1 and back.train_ids == ["v1", "v2"] and back.reused
    assert all(torch.equal(back.state[k], state[k]) for k in state)
    with pytest.raises(AdapterError, match="trained on model"):
        load_adapter(path, "base.en")
    with pytest.raises(AdapterError, match="trained on model"):
        adapted_model(replace(tiny_model, key="base.en|int8"), tiny_model_f32, back)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(AdapterError, match="not a readable adapter"):
        load_adapter(path, base)

    # merging the LoRA deltas gives the trained model's encoder output; the key is its own
    mel = torch.randn(1, tiny_model.model.dims.n_mels, 1000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = asr.run_encoder(model, mel, 500)
        got = asr.run_encoder(merge(tiny_model_f32.model, state), mel, 500)
    assert torch.allclose(want, got, atol=1e-4)
    alm = adapted_model(tiny_model, tiny_model_f32, back)
    assert alm.key != tiny_model.key and alm.key.endswith("|int8") and weights_key(alm.key) != base


def test_an_adapter_learns_its_own_training_labels_which_is_why_scores_are_cross_fitted(tiny_model_f32, notes):
    """Trained on deliberately wrong pseudo-labels, an adapter moves its own training notes
    towards them far more than notes it did not see: scoring a note with an adapter that
    trained on it would confirm whatever label it was given."""
    lm = tiny_model_f32
    truth = {"v1": 1, "v2": 1, "v3": 1, "v4": 1, "v5": 0}
    wrong = {n.id: n.candidates[1 - truth[n.id]].id for n in notes}
    train, held = ["v1", "v3"], ["v4", "v5"]
    by_id = {n.id: n for n in notes}
    examples = [_example(lm, by_id[i], {wrong[i]: 1.0}, ClipOptions()) for i in train]
    state, losses = train_adapter(lm, examples, AdaptOptions(epochs=4, lr=3e-3, batch_size=2), "auto")
    assert losses[-1] < losses[0]
    adapted = replace(lm, model=merge(lm.model, state).eval())

    def margin(m, note_id):  # log p(wrong label) - log p(the other candidate)
        note = by_id[note_id]
        [enc] = asr.encode(m, [_example(lm, note, {wrong[note_id]: 1.0}, ClipOptions()).audio], "auto")
        texts = [c.text for c in note.candidates]
        scores = [s for s, _ in asr.score_texts(m, enc, texts)]
        j = [c.id for c in note.candidates].index(wrong[note_id])
        return scores[j] - scores[1 - j]

    with torch.inference_mode():
        gain = {i: margin(adapted, i) - margin(lm, i) for i in train + held}
    assert min(gain[i] for i in train) > max(gain[i] for i in held) + 1.0, gain


def test_label_adapt_from_the_command_line(chat_dir, tmp_path):
    out = tmp_path / "labels.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "disamb.cli", "label", str(chat_dir / "recordings"), str(chat_dir / "chats.jsonl"),
         "-o", str(out), "--window", "2", "--cache-dir", str(tmp_path / "cache"), "--adapt", "--adapt-epochs", "1",
         "--json", "-q"],
        capture_output=True, text=True, env=dict(os.environ, COLUMNS="120"),
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    [rnd] = summary["adapt"]
    assert [f["fold"] for f in rnd["folds"]] == [0, 1] and all(len(f["epoch_losses"]) == 1 for f in rnd["folds"])
    assert sum(f["train_notes"] for f in rnd["folds"]) == len(SAID)
    assert rnd["gold_accuracy_before"] == 1.0 and summary["gold_accuracy"] == rnd["gold_accuracy_after"]
    records = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert [r["id"] for r in records] == [s[0] for s in SAID] and all(r["transcript"] for r in records)
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 2
    assert rnd["unadapted_weight"] == 0.5  # the labels come from both models' evidence
    shown = subprocess.run(
        [sys.executable, "-m", "disamb.cli", "label", str(chat_dir / "recordings"), str(chat_dir / "chats.jsonl"),
         "-o", str(out), "--window", "2", "--cache-dir", str(tmp_path / "cache"), "--adapt", "--adapt-epochs", "1"],
        capture_output=True, text=True, env=dict(os.environ, COLUMNS="200"),
    )
    assert shown.returncode == 0, shown.stderr
    assert "labels from" in shown.stdout and "unadapted 50% + adapted 50% of each feature" in shown.stdout
    assert "(reused)" in shown.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "disamb.cli", "label", str(chat_dir / "recordings"), str(chat_dir / "chats.jsonl"),
         "-o", str(tmp_path / "x.jsonl"), "--adapt", "--adapt-folds", "1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--adapt-folds" in bad.stderr


def test_the_loss_is_the_teacher_forced_likelihood_labelling_computes(tiny_model_f32, notes):
    """-log sum_c q_c sum_r p(r|x), with p(r|x) exactly asr.score_texts' sequence (incl. the end token)."""
    from disamb.textsim import render_spoken

    lm = tiny_model_f32
    note = notes[0]
    texts = {"a": note.candidates[1].text, "b": "code 4719"}  # the second has several spoken renderings
    ex = _example(lm, note, {"a": 0.7, "b": 0.3}, ClipOptions())
    ex = replace(ex, log_q=[torch.tensor(0.7).log().item(), torch.tensor(0.3).log().item()],
                 sequences=[sequences_for(lm, texts["a"]), sequences_for(lm, texts["b"])])
    with torch.no_grad():
        [enc] = asr.encode(lm, [ex.audio], "auto")
        got = float(note_loss(lm, enc.features, ex))
        per_cand = [torch.logsumexp(torch.tensor([s for s, _ in asr.score_texts(lm, enc, render_spoken(t))]), 0)
                    for t in texts.values()]
    assert len(render_spoken(texts["b"])) > 1
    want = -float(torch.logsumexp(torch.tensor([0.7, 0.3]).log() + torch.stack(per_cand), 0))
    assert abs(got - want) < 1e-3


@pytest.mark.parametrize("losses, kept", [((1.0, 0.8, 0.7), [True, True]), ((1.0, 0.8, 0.8), [True, False]),
                                          ((1.0, 1.1, None), [False])])
def test_a_further_round_stands_only_when_it_lowers_the_cross_validated_gold_log_loss(monkeypatch, losses, kept):
    """--adapt-rounds: the loop itself (adapt_and_relabel), with the training and matching
    stubbed out: round r's labels are the records "r", its gold log-loss `losses[r]`."""
    import disamb.adapt as adapt
    from disamb.label import Summary

    trained_on: list[str] = []

    def fake_round(lm, f32, notes, records, *args):
        trained_on.append(records[0]["round"])  # each round learns from the labels that stand
        return [], {}, {}, {}

    def fake_label(notes, outcomes, *args, **kwargs):
        r = len(trained_on)
        return [{"round": str(r)}], Summary(matcher_losses={"refit": losses[r]}, gold_accuracy=0.5), f"matcher {r}"

    monkeypatch.setattr(adapt, "float32_model", lambda lm: lm)
    monkeypatch.setattr(adapt, "truncated_texts", lambda lm, notes: set())
    monkeypatch.setattr(adapt, "adapt_round", fake_round)
    monkeypatch.setattr(adapt, "label_notes", fake_label)
    base = Summary(matcher_losses={"refit": losses[0]}, gold_accuracy=0.5)
    done = adapt_and_relabel(None, [], [{"round": "0"}], base, ClipOptions(), MatchOptions(), None,
                             AdaptOptions(rounds=2))
    assert [r.kept for r in done.rounds] == kept
    assert trained_on == ["0", "1"][: len(kept)]
    standing = max((r.round for r in done.rounds if r.kept), default=0)
    assert done.records == [{"round": str(standing)}]
    assert done.matcher == (f"matcher {standing}" if standing else None)
    assert [r.gold_log_loss_after for r in done.rounds] == list(losses[1 : len(kept) + 1])
    assert any("did not lower" in m for m in done.summary.remarks) == (False in kept)


def test_train_adapt_stores_one_adapter_that_predict_applies(chat_dir, tmp_path, monkeypatch):
    """train --adapt through the CLI: the folder holds the adapter, predict applies it (the
    model it scores with is the adapted one, and its probabilities differ from the same
    classifier on the base model's clips), and a folder whose adapter belongs to another
    base model, or has lost its file, is refused in one line."""
    from typer.testing import CliRunner

    from disamb.cli import app
    from disamb.combine import TextClassifier

    seen = []  # (model key, unrounded probabilities) of every predict
    original = TextClassifier.predict

    def spy(self, lm, *args, **kwargs):
        proba, embs, errors = original(self, lm, *args, **kwargs)
        seen.append((lm.key, proba))
        return proba, embs, errors

    monkeypatch.setattr(TextClassifier, "predict", spy)

    run = CliRunner().invoke
    rec, chats, cache = str(chat_dir / "recordings"), str(chat_dir / "chats.jsonl"), str(tmp_path / "cache")
    labels, model = tmp_path / "labels.jsonl", tmp_path / "model"
    r = run(app, ["label", rec, chats, "-o", str(labels), "--window", "2", "--cache-dir", cache, "-q", "--json"])
    assert r.exit_code == 0, r.output
    r = run(app, ["train", rec, chats, str(labels), "-o", str(model), "--window", "2", "--cache-dir", cache, "-q",
                  "--json", "--min-count", "1", "--epochs", "30", "--adapt", "--adapt-epochs", "1"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["adapter"]["train_notes"] == len(SAID) and len(summary["adapter"]["epoch_losses"]) == 1
    assert "+adapter:" in summary["model"]  # the classifier's embeddings and class scores came from the adapted model
    meta = json.loads((model / "model.json").read_text("utf-8"))
    assert meta["encoder"]["adapter"]["base"] == weights_key(meta["encoder"]["key"])
    assert (model / "adapter.safetensors").is_file()
    assert load_adapter(model / "adapter.safetensors", meta["encoder"]["adapter"]["base"]).train_ids == sorted(s[0] for s in SAID)

    def predict(folder: Path) -> tuple[int, str]:
        res = run(app, ["predict", rec, chats, "--model", str(folder), "-o", str(tmp_path / f"{folder.name}.jsonl"),
                        "--window", "2", "--cache-dir", cache, "-q", "--json"])
        return res.exit_code, res.stderr

    assert predict(model)[0] == 0
    [(key, adapted)] = seen
    assert key == summary["model"] and len(adapted) == len(SAID)
    plain = tmp_path / "plain"  # the same classifier without its adapter: clips from the base model
    plain.mkdir()
    for name in ("model.json", "model.safetensors"):
        (plain / name).write_bytes((model / name).read_bytes())
    (plain / "model.json").write_text(json.dumps(dict(meta, encoder={k: v for k, v in meta["encoder"].items()
                                                                      if k != "adapter"})), encoding="utf-8")
    assert predict(plain)[0] == 0
    key, base = seen[1]
    assert "+adapter:" not in key and set(base) == set(adapted)
    assert max(float(np.abs(np.log(adapted[i] + 1e-300) - np.log(base[i] + 1e-300)).max()) for i in base) > 1e-3

    other = tmp_path / "other"  # the adapter belongs to another base model
    other.mkdir()
    for name in ("model.safetensors", "adapter.safetensors"):
        (other / name).write_bytes((model / name).read_bytes())
    wrong = dict(meta, encoder=dict(meta["encoder"], adapter=dict(meta["encoder"]["adapter"], base="small.en")))
    (other / "model.json").write_text(json.dumps(wrong), encoding="utf-8")
    code, stderr = predict(other)
    assert code == 2 and "trained on model 'small.en'" in stderr and len(stderr.strip().splitlines()) == 1
    (model / "adapter.safetensors").unlink()
    code, stderr = predict(model)
    assert code == 2 and "adapter.safetensors is missing" in stderr and len(stderr.strip().splitlines()) == 1


def test_adaptation_stages_get_a_bar_each_beside_the_labelling_bar_and_quiet_shows_none():
    import io

    from rich.console import Console

    from disamb.display import progress_bar, stage_bars

    def shown(quiet: bool, main: bool) -> str:
        buf = io.StringIO()
        console = Console(file=buf, width=150)  # not a terminal: only the final state is written, as for every bar
        with (progress_bar(4, "labelling", quiet, console) if main else stage_bars(quiet, console)) as bars:
            bars(4)
            for _ in range(3):
                bars.stage("adapter 1/2: training", 2, 6)
            bars.stage("adapter 1/2: rescoring", 2, 2)
        return buf.getvalue()

    text = shown(False, True)
    assert "labelling" in text and "4/4" in text
    assert "adapter 1/2: training" in text and "6/6" in text and "adapter 1/2: rescoring" in text and "2/2" in text
    assert "labelling" not in shown(False, False) and "6/6" in shown(False, False)
    assert shown(True, True) == "" and shown(True, False) == ""
