"""The per-clip stage: decode audio ahead of the model, look results up in the cache,
run Whisper on what is missing in batches, and store what it found.

Independent per note, so it can run anywhere (a thread here, a Ray actor there);
only the matching afterwards needs neighbouring notes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from . import asr
from .audio import Decoded, content_hash, decode
from .cache import ClipCache, ClipResult, PriorCache, clip_key
from .chats import VoiceNote
from .models import LoadedModel
from .textsim import render_spoken


@dataclass
class ClipOptions:
    beam_size: int | None = None
    batch_size: int = 8
    audio_ctx: str = "auto"  # "full", "auto" or a frame count (auto: 2x faster, same accuracy, see benchmarks/speed.py)
    max_duration: float = 120.0
    decode_workers: int = 2
    mode: str = "full"  # "full": transcribe every clip; "score": only where the likelihood is unsure
    sure: float = 0.99  # score mode: top candidate's likelihood softmax at least this skips transcription

    def cache_tag(self) -> str:
        # Everything that changes a transcript, an embedding or a likelihood.
        return f"beam={self.beam_size}|ctx={self.audio_ctx}"


@dataclass
class StageTimes:
    """Seconds spent in each stage (summed over batches), for the speed benchmark."""

    decode: float = 0.0
    encoder: float = 0.0
    transcribe: float = 0.0
    likelihood: float = 0.0
    cache_io: float = 0.0
    clips_computed: int = 0
    clips_cached: int = 0
    transcripts_skipped: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ClipOutcome:
    note_id: str
    result: ClipResult | None
    error: str | None = None


def renderings_for(note: VoiceNote) -> list[str]:
    seen: dict[str, None] = {}
    for cand in note.candidates:
        for r in render_spoken(cand.text):
            seen.setdefault(r)
    return list(seen)


def best_candidate_scores(note: VoiceNote, scores: dict[str, tuple[float, int]]) -> list[float]:
    """Each candidate's best summed log-likelihood over its spoken renderings."""
    out = []
    for cand in note.candidates:
        vals = [scores[r][0] for r in render_spoken(cand.text) if r in scores]
        out.append(max(vals) if vals else -1e9)
    return out


def _sure(note: VoiceNote, scores: dict[str, tuple[float, int]], level: float) -> bool:
    """True when the likelihood alone already puts `level` of the mass on one candidate."""
    best = np.asarray(best_candidate_scores(note, scores))
    if best.size == 0:
        return False
    p = np.exp(best - best.max())
    return bool(p.max() / p.sum() >= level)


@dataclass
class _Prepared:
    note: VoiceNote
    key: str | None = None
    decoded: Decoded | None = None
    cached: ClipResult | None = None
    error: str | None = None
    wanted: list[str] = field(default_factory=list)


def run_clips(
    lm: LoadedModel,
    notes: list[VoiceNote],
    options: ClipOptions,
    cache: ClipCache,
    on_done: Callable[[int], None] | None = None,
    times: StageTimes | None = None,
) -> dict[str, ClipOutcome]:
    """Per-clip results for every note, computing only what the cache lacks.

    Each batch is written to the cache as soon as it is done, so an interrupted run
    loses at most the batch in flight.
    """
    times = times or StageTimes()
    outcomes: dict[str, ClipOutcome] = {}
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    pending: list[_Prepared] = []
    for prep in _prepare(notes, lm, options, cache, times):
        if prep.error is not None:
            outcomes[prep.note.id] = ClipOutcome(prep.note.id, None, prep.error)
            _tick(on_done)
        elif prep.cached is not None and not _missing(prep.cached, prep.wanted, options.mode):
            outcomes[prep.note.id] = ClipOutcome(prep.note.id, prep.cached)
            times.clips_cached += 1
            _tick(on_done)
        else:
            pending.append(prep)
            if len(pending) >= options.batch_size:
                _compute(lm, pending, options, cache, outcomes, times, on_done)
                pending = []
    if pending:
        _compute(lm, pending, options, cache, outcomes, times, on_done)
    return outcomes


def _tick(on_done: Callable[[int], None] | None, n: int = 1) -> None:
    if on_done is not None:
        on_done(n)


def _missing(result: ClipResult, wanted: list[str], mode: str = "full") -> bool:
    if result.transcript is None and mode == "full":
        return True
    return result.embedding is None or any(w not in result.scores for w in wanted)


def _prepare(
    notes: list[VoiceNote], lm: LoadedModel, options: ClipOptions, cache: ClipCache, times: StageTimes
) -> Iterator[_Prepared]:
    """Hash, look up and (when needed) decode each clip in a thread pool, in note order."""

    def work(note: VoiceNote) -> _Prepared:
        prep = _Prepared(note, wanted=renderings_for(note))
        t0 = time.perf_counter()
        try:
            h = content_hash(Path(note.audio))
        except OSError as e:
            prep.error = f"cannot read audio: {e.strerror or e}"
            return prep
        prep.key = clip_key(h, lm.key, options.cache_tag())
        prep.cached = cache.get(prep.key)
        t1 = time.perf_counter()
        times.cache_io += t1 - t0
        if prep.cached is not None and not _missing(prep.cached, prep.wanted, options.mode):
            return prep
        prep.decoded = decode(Path(note.audio), options.max_duration)
        times.decode += time.perf_counter() - t1
        if prep.decoded.error is not None:
            prep.error = prep.decoded.error
        return prep

    with ThreadPoolExecutor(max_workers=max(1, options.decode_workers)) as pool:
        yield from _ordered_prefetch(pool, work, notes, ahead=max(4, 2 * options.batch_size))


def _ordered_prefetch(pool: ThreadPoolExecutor, fn, items: Iterable, ahead: int) -> Iterator:
    """Like pool.map, but never more than `ahead` items in flight (memory stays flat)."""
    items = iter(items)
    window = []
    for item in items:
        window.append(pool.submit(fn, item))
        if len(window) >= ahead:
            yield window.pop(0).result()
    for fut in window:
        yield fut.result()


def _compute(
    lm: LoadedModel,
    batch: list[_Prepared],
    options: ClipOptions,
    cache: ClipCache,
    outcomes: dict[str, ClipOutcome],
    times: StageTimes,
    on_done: Callable[[int], None] | None,
) -> None:
    audios = [p.decoded.audio for p in batch]  # type: ignore[union-attr]
    seconds = [len(a) / 16000 for a in audios]
    with torch.inference_mode():
        t0 = time.perf_counter()
        encoded = asr.encode(lm, audios, options.audio_ctx)
        t1 = time.perf_counter()
        scores = asr.score_candidates(lm, encoded, [p.wanted for p in batch])
        t2 = time.perf_counter()
        todo = list(range(len(batch)))
        if options.mode == "score":
            todo = [i for i, p in enumerate(batch) if not _sure(p.note, dict(zip(p.wanted, scores[i])), options.sure)]
        transcripts: list[asr.Transcript | None] = [None] * len(batch)
        if todo:
            done = asr.transcribe(lm, [encoded[i] for i in todo], [seconds[i] for i in todo], options.beam_size)
            for i, tr in zip(todo, done):
                transcripts[i] = tr
        skipped = [i for i in range(len(batch)) if transcripts[i] is None]
        no_speech = asr.no_speech_probs(lm, [encoded[i] for i in skipped]) if skipped else []
        t3 = time.perf_counter()
        embs = asr.embeddings(encoded)
    times.encoder += t1 - t0
    times.likelihood += t2 - t1
    times.transcribe += t3 - t2
    times.transcripts_skipped += len(skipped)
    t4 = time.perf_counter()
    no_speech_of = dict(zip(skipped, no_speech))
    for i, (p, sec, tr, sc, emb) in enumerate(zip(batch, seconds, transcripts, scores, embs)):
        result = p.cached or ClipResult(seconds=sec)
        result.seconds = sec
        if tr is not None:
            result.transcript = tr.text
            result.avg_logprob = tr.avg_logprob
            result.no_speech_prob = tr.no_speech_prob
        elif result.transcript is None:
            result.no_speech_prob = float(no_speech_of[i])
        result.embedding = np.asarray(emb, np.float32)
        result.scores.update(zip(p.wanted, sc))
        if p.key is not None:
            cache.put(p.key, result)
        outcomes[p.note.id] = ClipOutcome(p.note.id, result)
    times.cache_io += time.perf_counter() - t4
    times.clips_computed += len(batch)
    _release_freed_memory()
    _tick(on_done, len(batch))


def _release_freed_memory() -> None:
    """Hand freed heap pages back to the OS after each batch (glibc only).

    Batches allocate tensors of varying shapes; glibc keeps the freed pieces in its
    arenas, which shows as resident memory creeping up over a night's run.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@lru_cache(maxsize=1)
def _malloc_trim():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def text_priors(
    lm: LoadedModel, notes: list[VoiceNote], cache: "PriorCache", batch: int = 128
) -> dict[str, tuple[float, int]]:
    """Likelihood of every candidate rendering under silent audio: the decoder's prior.

    Short and common texts ("ok", "👍") are cheap for the decoder whatever it hears;
    subtracting the prior leaves what the audio itself adds (a pointwise mutual
    information), which is what stops short chatter from winning.
    """
    texts = list(dict.fromkeys(r for n in notes for r in renderings_for(n)))
    found = cache.get_many(texts)
    todo = [t for t in texts if t not in found]
    if todo:
        new: dict[str, tuple[float, int]] = {}
        with torch.inference_mode():
            enc = asr.encode(lm, [np.zeros(16000, np.float32)], "full")
            for start in range(0, len(todo), batch):
                part = todo[start : start + batch]
                new.update(zip(part, asr.score_candidates(lm, enc, [part])[0]))
        cache.put_many(new)
        found.update(new)
    return found
