"""The teacher-forced likelihood pass, on real espeak-ng speech and the bundled model."""

import numpy as np
import pytest
import torch

from disamb import asr
from disamb.audio import decode
from tests.conftest import speak


@pytest.fixture(scope="module")
def encoded(tiny_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("asr")
    clips = [
        speak("I will be there in ten minutes", d / "a.wav"),
        speak("please buy some bread and milk", d / "b.wav", voice="en-us+f3", speed=170),
    ]
    audios = [decode(c).audio for c in clips]
    with torch.inference_mode():
        return audios, asr.encode(tiny_model, audios, "auto")  # the context `disamb label` uses


def test_transcript_comes_from_the_shared_encoder_output(tiny_model, encoded):
    audios, enc = encoded
    with torch.inference_mode():
        out = asr.transcribe(tiny_model, enc, [len(a) / 16000 for a in audios])
    assert "minutes" in out[0].text.lower()
    assert "bread" in out[1].text.lower()


def test_prefix_distractor_loses_because_the_end_token_counts(tiny_model, encoded):
    _, enc = encoded
    texts = [["I will be there in ten minutes.", "I will be there."]]
    with torch.inference_mode():
        (full, prefix), = asr.score_candidates(tiny_model, enc[:1], texts)
    assert full[0] > prefix[0]
    # the end-of-text token is scored: n = text tokens + 1
    n_text = len(asr.candidate_tokens(tiny_model, texts[0][0]))
    assert full[1] == n_text + 1


def test_a_score_does_not_depend_on_what_it_is_scored_with(tiny_model, encoded):
    """int8 activations share a scale per call: a text's score must come from a pass of
    its own, bit for bit the same whatever other clips and texts were asked about."""
    _, enc = encoded
    texts = [
        ["I will be there in ten minutes.", "See you soon!", "Buy bread."],
        ["Please buy some bread and milk.", "Nope."],
    ]
    with torch.inference_mode():
        together = asr.score_candidates(tiny_model, enc, texts)
        apart = [[asr.score_candidates(tiny_model, [e], [[t]])[0][0] for t in ts] for e, ts in zip(enc, texts)]
        shuffled = asr.score_candidates(tiny_model, enc[::-1], [texts[1][::-1] + ["ok"], texts[0][::-1]])
    assert together == apart
    assert together[0] == shuffled[1][::-1] and together[1] == shuffled[0][1::-1]
    # the right text wins on each clip
    assert np.argmax([x[0] for x in together[0]]) == 0
    assert np.argmax([x[0] for x in together[1]]) == 0


def test_int8_scores_embeddings_and_transcripts_do_not_depend_on_the_batch(tiny_model, encoded, tmp_path):
    from disamb.cache import ClipCache
    from disamb.chats import Candidate, VoiceNote
    from disamb.clips import ClipOptions, run_clips

    audios, _ = encoded
    paths = []
    for i, a in enumerate(audios * 2):  # four clips, so batches of 3 mix them differently
        path = tmp_path / f"c{i}.wav"
        import wave

        with wave.open(str(path), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
            w.writeframes((np.clip(a * (1.0 - 0.1 * i), -1, 1) * 32767).astype("<i2").tobytes())
        paths.append(path)
    cands = [Candidate("a", "I will be there in ten minutes."), Candidate("b", "Please buy some bread and milk."),
             Candidate("c", "See you soon!")]
    notes = [VoiceNote(f"n{i}", p.name, p, cands) for i, p in enumerate(paths)]
    runs = [run_clips(tiny_model, notes, ClipOptions(batch_size=bs), ClipCache(None)) for bs in (1, 3)]
    for note in notes:
        one, three = (r[note.id].result for r in runs)
        assert one.scores == three.scores
        np.testing.assert_array_equal(one.embedding, three.embedding)
        # the transcript too (decoded in batches, its avg_logprob moved with its batch mates)
        assert (one.transcript, one.avg_logprob, one.no_speech_prob) == (
            three.transcript, three.avg_logprob, three.no_speech_prob)


def test_scores_match_whisper_own_decoder(tiny_model, encoded):
    """Our shared-cross-attention pass equals openai-whisper's decoder forward."""
    _, enc = encoded
    text = "I will be there in ten minutes."
    tok = tiny_model.tokenizer
    seq = list(tok.sot_sequence_including_notimestamps) + asr.candidate_tokens(tiny_model, text) + [tok.eot]
    with torch.inference_mode():
        logits = tiny_model.model.decoder(torch.tensor([seq[:-1]]), enc[0].features[None])
        lp = logits.log_softmax(-1)[0]
        start = len(tok.sot_sequence_including_notimestamps) - 1
        expected = sum(float(lp[i, seq[i + 1]]) for i in range(start, len(seq) - 1))
        (got,), = asr.score_candidates(tiny_model, enc[:1], [[text]])
    assert got[0] == pytest.approx(expected, abs=1e-3)


def test_embeddings_pool_only_the_clip(tiny_model, encoded):
    audios, enc = encoded
    embs = asr.embeddings(enc)
    assert embs[0].shape == (tiny_model.model.dims.n_audio_state,)
    assert enc[0].valid_frames == int(np.ceil(len(audios[0]) / 16000 * 50))
    full_mean = enc[0].features.float().mean(0).numpy()
    assert not np.allclose(embs[0], full_mean)


def test_long_clip_is_encoded_in_chunks(tiny_model):
    audio = np.zeros(16000 * 65, np.float32)
    with torch.inference_mode():
        (e,) = asr.encode(tiny_model, [audio])
    assert e.features.shape[0] == 3 * tiny_model.model.dims.n_audio_ctx


def test_short_audio_context(tiny_model, encoded):
    audios, _ = encoded
    assert asr.audio_ctx_for(2.5, 1500, "auto") == 500
    assert asr.audio_ctx_for(14.2, 1500, "auto") == 800
    assert asr.audio_ctx_for(29.5, 1500, "auto") == 1500
    with torch.inference_mode():
        enc = asr.encode(tiny_model, audios, "auto")
        out = asr.transcribe(tiny_model, enc, [len(a) / 16000 for a in audios])
    assert enc[0].features.shape[0] == 500
    assert "minutes" in out[0].text.lower()


def test_score_mode_asks_the_matcher_it_is_given(tiny_model, encoded, tmp_path):
    """The clip stage's sure test uses the matcher its caller hands in (it loads none itself):
    one that is always sure skips every transcript, one that never is transcribes them all."""
    import wave

    from disamb.cache import ClipCache
    from disamb.chats import Candidate, VoiceNote
    from disamb.clips import ClipOptions, StageTimes, run_clips

    audios, _ = encoded
    notes = []
    for i, a in enumerate(audios):
        path = tmp_path / f"s{i}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
            w.writeframes((np.clip(a, -1, 1) * 32767).astype("<i2").tobytes())
        notes.append(VoiceNote(f"s{i}", path.name, path, [Candidate("a", "I will be there in ten minutes."),
                                                           Candidate("b", "Please buy some bread and milk.")]))

    class Fixed:
        def __init__(self, top: float):
            self.top = top

        def probs(self, X):
            p = np.full(len(X) + 1, (1.0 - self.top) / len(X))
            p[0] = self.top
            return p

    options = ClipOptions(mode="score")
    with pytest.raises(ValueError, match="sure_matcher"):
        run_clips(tiny_model, notes, options, ClipCache(None))
    for top, skipped in ((1.0, 2), (0.5, 0)):
        times = StageTimes()
        out = run_clips(tiny_model, notes, options, ClipCache(None), times=times, sure_matcher=Fixed(top))
        assert times.transcripts_skipped == skipped
        assert sum(out[n.id].result.transcript is None for n in notes) == skipped


def test_gpu_path_scores_and_transcribes_together_as_one_by_one(tiny_model_f32, tmp_path, monkeypatch):
    """On CUDA clips of one context length and all their texts go through together
    (`asr.batches`); forced on here (float32 CPU), the numbers equal the one-by-one pass
    to float precision and the transcripts are the same."""
    from disamb.cache import ClipCache
    from disamb.chats import Candidate, VoiceNote
    from disamb.clips import ClipOptions, run_clips

    lm = tiny_model_f32
    clips = [speak("I will be there in ten minutes", tmp_path / "a.wav"),
             speak("please buy some bread and milk", tmp_path / "b.wav", voice="en-us+f3", speed=170),
             speak("see you at the station", tmp_path / "c.wav", speed=150)]
    audios = [decode(c).audio for c in clips]
    texts = [["I will be there in ten minutes.", "See you soon!"],
             ["Please buy some bread and milk.", "Nope.", "Buy bread, please, and some milk too."],
             ["See you at the station."]]
    groups = []
    real_group = asr._score_group
    monkeypatch.setattr(asr, "_score_group", lambda m, e, t: groups.append(len(e)) or real_group(m, e, t))
    seconds = [len(a) / 16000 for a in audios]
    with torch.inference_mode():
        enc = asr.encode(lm, audios, "auto")
        alone = asr.score_candidates(lm, enc, texts)
        t_alone = asr.transcribe(lm, enc, seconds)
        assert not groups  # a CPU scores each text on its own
        monkeypatch.setattr(asr, "batches", lambda m: True)
        together = asr.score_candidates(lm, enc, texts)
        t_together = asr.transcribe(lm, enc, seconds)
    assert groups == [3]  # the three clips share a context length: one pass
    monkeypatch.undo()
    for a, b in zip(together, alone):
        assert [n for _, n in a] == [n for _, n in b]
        np.testing.assert_allclose([s for s, _ in a], [s for s, _ in b], atol=2e-3)
    assert [t.text for t in t_together] == [t.text for t in t_alone]
    np.testing.assert_allclose([t.avg_logprob for t in t_together], [t.avg_logprob for t in t_alone], atol=2e-3)

    # and through the clip stage, as `disamb label` runs it on a GPU
    cands = [Candidate(str(i), t[0]) for i, t in enumerate(texts)]
    notes = [VoiceNote(f"n{i}", c.name, c, cands) for i, c in enumerate(clips)]
    alone_run = run_clips(lm, notes, ClipOptions(batch_size=3), ClipCache(None))
    calls = []
    monkeypatch.setattr(asr, "batches", lambda m: True)
    monkeypatch.setattr(asr, "_score_group", lambda m, e, t: calls.append(len(e)) or real_group(m, e, t))
    gpu_run = run_clips(lm, notes, ClipOptions(batch_size=3), ClipCache(None))
    assert calls and max(calls) > 1  # clips really went through together
    for note in notes:
        one, many = alone_run[note.id].result, gpu_run[note.id].result
        assert one.transcript == many.transcript
        assert one.scores.keys() == many.scores.keys()
        np.testing.assert_allclose([one.scores[k][0] for k in one.scores], [many.scores[k][0] for k in one.scores],
                                   atol=2e-3)
        np.testing.assert_allclose(one.embedding, many.embedding, atol=1e-4)
