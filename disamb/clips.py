"""The per-clip stage: decode audio ahead of the model, look results up in the cache,
run Whisper on what is missing in batches, and store what it found.

Independent per note, so it can run anywhere (a thread here, a Ray actor there);
only the matching afterwards needs neighbouring notes.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from . import asr
from .audio import SAMPLE_RATE, AudioOpenError, Decoded, decode_file, file_hash, open_audio
from .cache import ClipCache, ClipResult, PriorCache, clip_key
from .chats import VoiceNote
from .features import candidate_features
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
    # ("none": never; the classifier's text scoring needs only likelihoods and embeddings)
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
    priors: float = 0.0  # text_priors, in pipeline.label_all
    matching: float = 0.0  # label.label_notes, in pipeline.label_all
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


def _sure(note: VoiceNote, scores: dict[str, tuple[float, int]], prior: dict | None, matcher, level: float) -> bool:
    """True when `matcher` (the shipped one in `disamb label`), fed only the likelihoods
    (and cheap text features against the likeliest rendering), already puts `level` of
    the mass on one candidate."""
    if not note.candidates:
        return False
    X, _ = candidate_features(note, ClipResult(seconds=0.0, scores=scores), prior)
    return bool(matcher.probs(X).max() >= level)


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
    prior: dict[str, tuple[float, int]] | None = None,
    sure_matcher=None,
) -> dict[str, ClipOutcome]:
    """Per-clip results for every note, computing only what the cache lacks.

    Each clip is written to the cache as soon as it is done, so an interrupted run
    loses at most the batches in flight. Score mode's sure test asks `sure_matcher` (a
    `match.Matcher`, handed in so that this stage does not reach up to the matching
    stage for it; `disamb label` passes the shipped one); `prior` (from `text_priors`)
    makes that test the one the matcher will apply.
    """
    if options.mode == "score" and sure_matcher is None:
        raise ValueError("score mode needs the matcher for its sure test (sure_matcher)")
    matcher = sure_matcher if options.mode == "score" else None
    times = times or StageTimes()
    outcomes: dict[str, ClipOutcome] = {}
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    pending: list[_Prepared] = []

    def compute(batch: list[_Prepared]) -> None:
        scored = _encode_and_score(lm, batch, options, times)
        sure = [options.mode == "none" or (matcher is not None and _sure(s.prep.note, s.scores, prior, matcher,
                                                                        options.sure)) for s in scored]
        _finish(lm, [s for s, ok in zip(scored, sure) if ok], options, cache, outcomes, times, on_done,
                transcribe=False)
        _finish(lm, [s for s, ok in zip(scored, sure) if not ok], options, cache, outcomes, times, on_done,
                transcribe=True)
        _release_freed_memory()

    # closed on any exit, so an interrupt stops the decoding threads at once
    with contextlib.closing(_prepare(notes, lm, options, cache, times)) as prepared:
        for prep in prepared:
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
                    compute(pending)
                    pending = []
    if pending:
        compute(pending)
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
    """Hash, look up and (when needed) decode each clip in a thread pool, in note order.

    Each recording is opened once (`open_audio`); the hash and the decode read that
    same handle, so what was checked is what is decoded.
    """
    stop = threading.Event()  # set when the consumer stops early: decodes in flight end

    def work(note: VoiceNote) -> _Prepared:
        prep = _Prepared(note, wanted=renderings_for(note))
        t0 = time.perf_counter()
        try:
            f = open_audio(Path(note.audio), options.max_duration)
        except AudioOpenError as e:
            prep.error = str(e)
            return prep
        except OSError as e:
            prep.error = f"cannot read audio: {e.strerror or e}"
            return prep
        with f:
            try:
                h = file_hash(f)
            except OSError as e:
                prep.error = f"cannot read audio: {e.strerror or e}"
                return prep
            prep.key = clip_key(h, lm.key, options.cache_tag())
            prep.cached = cache.get(prep.key)
            t1 = time.perf_counter()
            times.cache_io += t1 - t0
            if prep.cached is not None and not _missing(prep.cached, prep.wanted, options.mode):
                return prep
            prep.decoded = decode_file(f, options.max_duration, stop)
        times.decode += time.perf_counter() - t1
        if prep.decoded.error is not None:
            prep.error = prep.decoded.error
        return prep

    yield from _ordered_prefetch(work, notes, ahead=max(4, 2 * options.batch_size),
                                 workers=max(1, options.decode_workers), stop=stop)


def _ordered_prefetch(fn, items: Iterable, ahead: int, workers: int, stop: threading.Event) -> Iterator:
    """Like a thread pool's map, but never more than `ahead` items in flight (memory
    stays flat), on daemon threads: when the consumer stops (Ctrl-C, SIGTERM) the queued
    work is dropped, `stop` is set to abort decodes in flight, and the workers get a
    second to wind down; one stuck longer is left behind instead of joined
    (ThreadPoolExecutor joins its threads at exit, however long). When every item was
    consumed, the idle workers are joined."""
    jobs: queue.SimpleQueue = queue.SimpleQueue()
    threads = [threading.Thread(target=_worker, args=(jobs,), daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    window: list[Future] = []
    finished = False
    try:
        for item in items:
            window.append(_submit(jobs, fn, item))
            if len(window) >= ahead:
                yield window.pop(0).result()
        for fut in window:
            yield fut.result()
        finished = True
    finally:
        for fut in window:
            fut.cancel()
        for _ in threads:
            jobs.put(None)
        if not finished:
            stop.set()  # decodes in flight abort; a worker stuck anyway is left after the wait below
        # a worker still winding down while the interpreter exits aborted 1 run in 6 ("terminate
        # called without an active exception", exit code -6), and interrupted runs under load too
        deadline = time.monotonic() + (10.0 if finished else 1.0)  # interrupted: out within seconds
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))


def _submit(jobs: queue.SimpleQueue, fn, item) -> Future:
    fut: Future = Future()
    jobs.put((fut, fn, item))
    return fut


def _worker(jobs: queue.SimpleQueue) -> None:
    """Run jobs until the None that ends the pool; cancelled ones are skipped."""
    while (job := jobs.get()) is not None:
        fut, fn, item = job
        if not fut.set_running_or_notify_cancel():
            continue
        try:
            fut.set_result(fn(item))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer with the result
            fut.set_exception(e)


@dataclass
class _Scored:
    """A clip through the encoder and the likelihood pass, not yet stored."""

    prep: _Prepared
    encoded: asr.Encoded
    scores: dict[str, tuple[float, int]]
    seconds: float


def _encode_and_score(lm: LoadedModel, batch: list[_Prepared], options: ClipOptions, times: StageTimes) -> list[_Scored]:
    """Encoder and likelihood pass. Every clip gets the context it would get alone, and
    texts the cache already has for a clip are not scored again.

    On a CPU each clip and each text goes alone: a clip's numbers must not depend on
    the clips it shares a batch with (int8 activations share one scale per call,
    measured: 0.9 nats on average between batch sizes 4 and 8; float32 sums depend on a
    call's shapes), and one clip's matrices already run at full speed there. On a GPU
    (`asr.batches`) the clips of one context length go through together.
    """
    audios = [p.decoded.audio for p in batch]  # type: ignore[union-attr]
    groups: dict[object, list[int]] = {}
    for i, a in enumerate(audios):
        groups.setdefault(asr.clip_context(lm, len(a), options.audio_ctx) if asr.batches(lm) else i, []).append(i)
    encoded: list = [None] * len(batch)
    scores: list = [None] * len(batch)
    with torch.inference_mode():
        for idx in groups.values():
            t0 = time.perf_counter()
            for i, e in zip(idx, asr.encode(lm, [audios[i] for i in idx], options.audio_ctx)):
                encoded[i] = e
            t1 = time.perf_counter()
            have = [batch[i].cached.scores if batch[i].cached is not None else {} for i in idx]
            todo = [[w for w in batch[i].wanted if w not in h] for i, h in zip(idx, have)]
            got = asr.score_candidates(lm, [encoded[i] for i in idx], todo)
            for i, h, t, g in zip(idx, have, todo, got):
                new = dict(zip(t, g))
                scores[i] = [new[w] if w in new else h[w] for w in batch[i].wanted]
            times.encoder += t1 - t0
            times.likelihood += time.perf_counter() - t1
    for p in batch:
        p.decoded = None  # the samples are not needed again; clips may wait for transcription
    return [
        _Scored(p, e, dict(zip(p.wanted, sc)), len(a) / SAMPLE_RATE)
        for p, e, sc, a in zip(batch, encoded, scores, audios)
    ]


def _finish(lm, scored: list[_Scored], options, cache, outcomes, times, on_done, transcribe: bool) -> None:
    """Transcribe (or only take the no-speech probability of) clips (`asr.transcribe`: each
    on its own on a CPU, together on a GPU), then store them."""
    if not scored:
        return
    encoded = [s.encoded for s in scored]
    t0 = time.perf_counter()
    with torch.inference_mode():
        if transcribe:
            transcripts = asr.transcribe(lm, encoded, [s.seconds for s in scored], options.beam_size)
            no_speech = [tr.no_speech_prob for tr in transcripts]
        else:
            transcripts = [None] * len(scored)
            no_speech = asr.no_speech_probs(lm, encoded)
        embs = asr.embeddings(encoded)
    times.transcribe += time.perf_counter() - t0
    times.transcripts_skipped += 0 if transcribe else len(scored)
    t1 = time.perf_counter()
    for s, tr, ns, emb in zip(scored, transcripts, no_speech, embs):
        p = s.prep
        result = p.cached or ClipResult(seconds=s.seconds)
        result.seconds = s.seconds
        if tr is not None:
            result.transcript = tr.text
            result.avg_logprob = tr.avg_logprob
        if tr is not None or result.transcript is None:
            result.no_speech_prob = float(ns)
        result.embedding = np.asarray(emb, np.float32)
        result.scores.update(s.scores)
        if p.key is not None:
            cache.put(p.key, result)
        outcomes[p.note.id] = ClipOutcome(p.note.id, result)
    times.cache_io += time.perf_counter() - t1
    times.clips_computed += len(scored)
    _tick(on_done, len(scored))


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
    lm: LoadedModel, notes: list[VoiceNote], cache_root: Path | None, batch: int = 128
) -> dict[str, tuple[float, int]]:
    """Likelihood of every candidate rendering under silent audio: the decoder's prior.

    Short and common texts ("ok", "👍") are cheap for the decoder whatever it hears;
    subtracting the prior leaves what the audio itself adds (a pointwise mutual
    information), which is what stops short chatter from winning. The silence gets
    the full 30 s context whatever context the clips get: measured on the hard set,
    a prior from a 10 s context made PMI alone pick right 0.67 of the time, the full
    context 0.83. Each text is scored on its own (`asr.score_texts`), so a text's prior
    is the same whichever notes, run or worker asked for it first; `batch` texts are
    stored at a time, so an interrupted run keeps what it computed.
    """
    cache = PriorCache(cache_root, lm.key)
    texts = list(dict.fromkeys(r for n in notes for r in renderings_for(n)))
    found = cache.get_many(texts)
    todo = [t for t in texts if t not in found]
    if todo:
        with torch.inference_mode():
            [silence] = asr.encode(lm, [np.zeros(16000, np.float32)], "full")
            for start in range(0, len(todo), batch):
                part = todo[start : start + batch]
                new = dict(zip(part, asr.score_candidates(lm, [silence], [part])[0]))
                cache.put_many(new)
                found.update(new)
    return found


def embed_notes(
    lm, notes: list[VoiceNote], clip_options, cache, sure_matcher, on_done=None
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Pooled encoder embeddings by note id (cache hits after `disamb label`), and errors by id.

    Runs the clip stage in score mode: a cached clip without a transcript (labelled with
    `--mode score`) still has its embedding, and a new clip is transcribed only when
    `sure_matcher` is unsure of it.
    """
    outcomes = run_clips(lm, notes, replace(clip_options, mode="score"), cache, on_done=on_done,
                         sure_matcher=sure_matcher)
    embs, errors = {}, {}
    for note in notes:
        oc = outcomes.get(note.id)
        if oc is not None and oc.result is not None and oc.result.embedding is not None:
            embs[note.id] = np.asarray(oc.result.embedding, np.float32)
        else:
            errors[note.id] = (oc.error if oc is not None else None) or "no embedding"
    return embs, errors
