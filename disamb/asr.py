"""Whisper work on a batch of clips: one encoder pass, then transcripts, candidate
log-likelihoods and pooled embeddings all read from that same encoder output.

The encoder is most of the cost on CPU, so nothing here ever encodes a clip twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import whisper
from whisper.audio import CHUNK_LENGTH, N_SAMPLES, SAMPLE_RATE
from whisper.decoding import DecodingOptions, DecodingTask

from .models import LoadedModel
from .quantize import vocabulary_logits

FRAMES_PER_SECOND = 50  # encoder output frames per second of audio (after the stride-2 conv)
LOGIT_CHUNK = 512  # positions turned into full-vocabulary logits at once on the batched path (bounds memory)


def batches(lm: LoadedModel) -> bool:
    """Whether clips and texts go through the model together: on CUDA only.

    A GPU sits idle on one clip's matrices, so there the clips of one context length are
    encoded, scored and transcribed together. On a CPU one clip's matrices already run
    at full speed, and a pass per clip and per text keeps every number independent of
    what it was computed with, so resumed, Ray and fresh runs write the same bytes (see
    `score_texts`). GPU kernels are picked by shape, so bit-identity across batchings
    is not on offer there anyway; the numbers agree to float precision.
    """
    return lm.device.type == "cuda"


@dataclass
class Encoded:
    """Encoder output of one clip: `features` (n_chunks * ctx, d) and its valid frame count."""

    features: torch.Tensor
    valid_frames: int


def audio_ctx_for(seconds: float, full_ctx: int, mode: str | int) -> int:
    """Encoder frames to use for a clip: all 1500, or just what the clip needs.

    `mode` is "full", "auto" (clip length + 1 s margin, rounded up to whole seconds,
    at least 10 s) or a number N: the same with at least N frames. The clip itself is
    never cut.
    """
    if mode == "full":
        return full_ctx
    floor = 10 * FRAMES_PER_SECOND if mode == "auto" else max(FRAMES_PER_SECOND, int(mode))
    need = math.ceil(min(seconds, CHUNK_LENGTH) + 1.0) * FRAMES_PER_SECOND
    return int(min(full_ctx, max(floor, need)))


def clip_context(lm: LoadedModel, n_samples: int, mode: str | int) -> int:
    """Encoder frames a clip gets on its own (clips over 30 s always get all of them)."""
    full_ctx = lm.model.dims.n_audio_ctx
    if n_samples > N_SAMPLES:
        return full_ctx
    return audio_ctx_for(n_samples / SAMPLE_RATE, full_ctx, mode)


def encode(lm: LoadedModel, audios: list[np.ndarray], ctx_mode: str | int = "full") -> list[Encoded]:
    """Encode clips in one batch; clips longer than 30 s are cut into 30 s chunks.

    With a shortened context the positional embedding is sliced, which is why this
    runs the encoder's layers itself instead of calling `model.encoder`.
    """
    model = lm.model
    chunks: list[np.ndarray] = []
    owner: list[int] = []
    for i, audio in enumerate(audios):
        n = max(1, math.ceil(len(audio) / N_SAMPLES))
        for c in range(n):
            chunks.append(audio[c * N_SAMPLES : (c + 1) * N_SAMPLES])
            owner.append(i)
    ctx = max(clip_context(lm, len(a), ctx_mode) for a in audios)
    on_gpu = lm.device.type == "cuda"
    mels = []
    for c in chunks:
        samples = whisper.pad_or_trim(torch.from_numpy(c))
        if on_gpu:  # pinned host memory lets the copy overlap; the STFT then runs on the GPU
            samples = samples.pin_memory().to(lm.device, non_blocking=True)
        mels.append(whisper.log_mel_spectrogram(samples, model.dims.n_mels)[:, : 2 * ctx])
    mels = torch.stack(mels).to(lm.device, lm.dtype)
    feats = run_encoder(model, mels, ctx)
    out: list[Encoded] = []
    for i, audio in enumerate(audios):
        parts = [feats[j] for j in range(len(chunks)) if owner[j] == i]
        seconds = len(audio) / SAMPLE_RATE
        valid = min(sum(p.shape[0] for p in parts), max(1, math.ceil(seconds * FRAMES_PER_SECOND)))
        out.append(Encoded(torch.cat(parts) if len(parts) > 1 else parts[0], valid))
    return out


def run_encoder(model: whisper.model.Whisper, mel: torch.Tensor, ctx: int) -> torch.Tensor:
    enc = model.encoder
    x = F.gelu(enc.conv1(mel))
    x = F.gelu(enc.conv2(x)).permute(0, 2, 1)
    x = (x + enc.positional_embedding[:ctx]).to(x.dtype)
    for block in enc.blocks:
        x = block(x)
    return enc.ln_post(x)


def embeddings(encoded: list[Encoded]) -> list[np.ndarray]:
    """Mean of the encoder frames that hold the clip (the 30 s padding is left out)."""
    return [e.features[: e.valid_frames].float().mean(0).cpu().numpy() for e in encoded]


class _EncodedTask(DecodingTask):
    """openai-whisper's decoding loop, fed with encoder output we already have."""

    def _get_audio_features(self, mel: torch.Tensor) -> torch.Tensor:
        return mel


@dataclass
class Transcript:
    text: str
    avg_logprob: float
    no_speech_prob: float


def transcribe(
    lm: LoadedModel, encoded: list[Encoded], seconds: list[float], beam_size: int | None = None
) -> list[Transcript]:
    """Deterministic (temperature 0) transcription of each clip from its encoder output.

    On a CPU each clip is decoded in a call of its own, with a token budget from its own
    length (so a hallucination loop cannot run to Whisper's 224-token limit on a
    2-second clip). Decoded in batches, a transcript depended on the clips beside it
    (int8 activations share one scale per call, float32 sums depend on shapes, the
    budget was the longest clip's): measured on the first 50 notes of the hard set, a
    run resumed from a half-filled cache wrote 11 of the 25 transcripts it computed
    differently, moving confidences by up to 0.027. On a GPU (`batches`) the clips of
    one encoder length are decoded in one call with the largest budget among them.
    Long clips are decoded 30 s chunk by chunk, their chunks together.
    """
    ctx = lm.model.dims.n_audio_ctx
    out: list[Transcript | None] = [None] * len(encoded)
    groups: dict[int, list[int]] = {}
    for i, e in enumerate(encoded):
        if e.features.shape[0] > ctx:
            parts = e.features.split(ctx)
            decoded = _decode(lm, torch.stack(parts), min(224, 8 * CHUNK_LENGTH + 12), beam_size)
            out[i] = Transcript(
                " ".join(d.text for d in decoded if d.text).strip(),
                float(np.mean([d.avg_logprob for d in decoded])),
                float(min(d.no_speech_prob for d in decoded)),
            )
        else:
            groups.setdefault(e.features.shape[0] if batches(lm) else i, []).append(i)
    for idx in groups.values():
        feats = torch.stack([encoded[i].features for i in idx])
        budget = max(max(24, math.ceil(seconds[i] * 8) + 12) for i in idx)
        for i, t in zip(idx, _decode(lm, feats, budget, beam_size)):
            out[i] = t
    return out  # type: ignore[return-value]


def _decode(lm: LoadedModel, feats: torch.Tensor, budget: int, beam_size: int | None) -> list[Transcript]:
    options = DecodingOptions(
        task="transcribe",
        language="en",
        temperature=0.0,
        beam_size=beam_size,
        without_timestamps=True,
        sample_len=min(budget, lm.model.dims.n_text_ctx // 2),
        fp16=lm.dtype == torch.float16,
    )
    out = _EncodedTask(lm.model, options).run(feats)
    return [Transcript(r.text.strip(), float(r.avg_logprob), float(r.no_speech_prob)) for r in out]


def no_speech_probs(lm: LoadedModel, encoded: list[Encoded]) -> list[float]:
    """Whisper's probability of "no speech" for each clip: one decoder step at the
    start-of-transcript token, as openai-whisper computes it while decoding."""
    if not encoded:
        return []
    out = []
    tok = lm.tokenizer
    sot = torch.tensor([[tok.sot]], device=lm.device)
    for e in encoded:
        logits = lm.model.decoder(sot, e.features[None].to(lm.dtype))
        out.append(float(logits[0, 0].float().softmax(-1)[tok.no_speech]))
    return out


def candidate_tokens(lm: LoadedModel, text: str) -> list[int]:
    """Tokens of a rendering as Whisper would emit them: leading space, cut to fit the context."""
    toks = text_tokens(lm, " " + text.strip())
    return toks[: _text_room(lm)]


def text_tokens(lm: LoadedModel, text: str) -> list[int]:
    """Tokens of the characters of `text`: a user's "<|endoftext|>" is text, never the control token."""
    return lm.tokenizer.encode(text, disallowed_special=())


def _text_room(lm: LoadedModel) -> int:
    return lm.model.dims.n_text_ctx - len(lm.tokenizer.sot_sequence_including_notimestamps) - 1


def is_truncated(lm: LoadedModel, text: str) -> bool:
    """True when `candidate_tokens` cuts this rendering to fit Whisper's 448-token context."""
    room = _text_room(lm)
    spaced = " " + text.strip()
    # a token covers at least one byte: short texts need no tokenizing
    return len(spaced.encode("utf-8", "surrogatepass")) > room and len(text_tokens(lm, spaced)) > room


def score_candidates(
    lm: LoadedModel, encoded: list[Encoded], texts: list[list[str]]
) -> list[list[tuple[float, int]]]:
    """Teacher-forced log-likelihood of every text of every clip: on a CPU one decoder pass
    per text (`score_texts`), on a GPU (`batches`) one pass per encoder length (`_score_group`)."""
    if not batches(lm):
        return [score_texts(lm, e, clip_texts) for e, clip_texts in zip(encoded, texts)]
    lengths: dict[int, list[int]] = {}
    for i, e in enumerate(encoded):
        lengths.setdefault(e.features.shape[0], []).append(i)
    out: list[list[tuple[float, int]]] = [[] for _ in encoded]
    for idx in lengths.values():
        for i, scores in zip(idx, _score_group(lm, [encoded[i] for i in idx], [texts[i] for i in idx])):
            out[i] = scores
    return out


def score_texts(lm: LoadedModel, encoded: Encoded, texts: list[str]) -> list[tuple[float, int]]:
    """Teacher-forced log-likelihood of each text given one clip, one text per decoder pass.

    Each sequence is start-of-transcript, no-timestamps, the text's tokens, end-of-text;
    the score sums the log-probabilities of the text tokens AND the end token (without
    it a truncated distractor always wins). Returns (sum, number of scored tokens).

    One text at a time, because a score must not depend on what it was computed with:
    int8 activations share one scale per call and float32 sums depend on a call's
    shapes, so batched texts (or clips) moved near-ties between a resumed, a Ray and a
    fresh run. The clip's cross-attention keys and values are computed once and shared
    by its texts (the same input every time, so the same bits).
    """
    if not texts:
        return []
    model, tok = lm.model, lm.tokenizer
    dec = model.decoder
    prefix = list(tok.sot_sequence_including_notimestamps)
    xa = encoded.features[None].to(lm.device, lm.dtype)
    cross_kv = [(b.cross_attn.key(xa), b.cross_attn.value(xa)) for b in dec.blocks]
    out = []
    for text in texts:
        seq = prefix + candidate_tokens(lm, text) + [tok.eot]
        inputs = torch.tensor([seq[:-1]], device=lm.device)
        x = (dec.token_embedding(inputs) + dec.positional_embedding[: inputs.shape[1]]).to(lm.dtype)
        for block, (k, v) in zip(dec.blocks, cross_kv):
            x = x + block.attn(block.attn_ln(x), mask=dec.mask)[0]
            q = block.cross_attn.query(block.cross_attn_ln(x))
            x = x + block.cross_attn.out(block.cross_attn.qkv_attention(q, k, v)[0])
            x = x + block.mlp(block.mlp_ln(x))
        hidden = dec.ln(x)[0, len(prefix) - 1 :]  # the positions that predict the text and the end
        wanted = torch.tensor(seq[len(prefix) :], device=lm.device)
        lp = vocabulary_logits(dec, hidden).log_softmax(-1).gather(1, wanted[:, None])[:, 0]
        out.append((float(lp.sum()), len(wanted)))
    return out


def _score_group(lm: LoadedModel, encoded: list[Encoded], texts: list[list[str]]) -> list[list[tuple[float, int]]]:
    """The texts of clips of one encoder length in one decoder pass, the same sequences and
    sums as `score_texts`. A clip's texts are laid side by side along the query axis,
    (clips*texts, T, d) -> (clips, texts*T, d), so its cross-attention keys and values are
    computed once; that is exact because cross-attention has no mask and every query
    attends on its own. Texts are padded at the end, which the causal mask keeps out of
    every scored position."""
    tok, dec = lm.tokenizer, lm.model.decoder
    prefix = list(tok.sot_sequence_including_notimestamps)
    seqs = [[prefix + candidate_tokens(lm, t) + [tok.eot] for t in clip] for clip in texts]
    n_clips, per_clip = len(encoded), max(1, max(len(clip) for clip in seqs))
    width = max((len(s) for clip in seqs for s in clip), default=len(prefix) + 1) - 1
    inputs = torch.full((n_clips, per_clip, width), tok.eot, dtype=torch.long)
    targets = torch.full((n_clips, per_clip, width), -1, dtype=torch.long)
    for b, clip in enumerate(seqs):
        for r, s in enumerate(clip):
            inputs[b, r, : len(s) - 1] = torch.tensor(s[:-1])
            targets[b, r, len(prefix) - 1 : len(s) - 1] = torch.tensor(s[len(prefix) :])  # the text and the end
    inputs = inputs.view(n_clips * per_clip, width).to(lm.device)
    targets = targets.view(n_clips * per_clip, width).to(lm.device)
    xa = torch.stack([e.features for e in encoded]).to(lm.device, lm.dtype)
    x = (dec.token_embedding(inputs) + dec.positional_embedding[:width]).to(lm.dtype)
    d = x.shape[-1]
    for block in dec.blocks:
        x = x + block.attn(block.attn_ln(x), mask=dec.mask)[0]
        cross = block.cross_attn
        q = cross.query(block.cross_attn_ln(x)).reshape(n_clips, per_clip * width, d)
        wv, _ = cross.qkv_attention(q, cross.key(xa), cross.value(xa))
        x = x + cross.out(wv).reshape(n_clips * per_clip, width, d)
        x = x + block.mlp(block.mlp_ln(x))
    x = dec.ln(x)
    valid = targets >= 0
    hidden, wanted = x[valid], targets[valid]
    token_lp = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], LOGIT_CHUNK):
        part = slice(start, start + LOGIT_CHUNK)
        token_lp[part] = vocabulary_logits(dec, hidden[part]).log_softmax(-1).gather(1, wanted[part, None])[:, 0]
    per_row = torch.zeros(valid.shape, dtype=torch.float32, device=hidden.device)
    per_row[valid] = token_lp
    sums = per_row.sum(1).view(n_clips, per_clip).cpu()
    counts = valid.sum(1).view(n_clips, per_clip).cpu()
    return [[(float(sums[b, r]), int(counts[b, r])) for r in range(len(texts[b]))] for b in range(n_clips)]
