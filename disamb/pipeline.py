"""The whole labelling run in one call: per-clip stage, text priors, matching.

The CLI, the benchmarks and the distributed engine all label through here, so they
cannot drift apart in how a note is labelled.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import match
from .adapt import AdaptOptions, adapt_and_relabel
from .cache import ClipCache
from .chats import VoiceNote
from .clips import ClipOptions, ClipOutcome, StageTimes, run_clips, text_priors
from .label import MatchOptions, Summary, label_notes, truncated_texts
from .match import Matcher
from .models import LoadedModel


@dataclass
class LabelRun:
    records: list[dict]
    summary: Summary
    matcher: Matcher
    outcomes: dict[str, ClipOutcome]
    times: StageTimes
    prior: dict[str, tuple[float, int]] | None  # each rendering's likelihood under silence, as matched with


def label_all(
    lm: LoadedModel,
    notes: list[VoiceNote],
    clip_options: ClipOptions | None = None,
    match_options: MatchOptions | None = None,
    cache_root: Path | None = None,
    on_done: Callable[[int], None] | None = None,
    outcomes: dict[str, ClipOutcome] | None = None,
    times: StageTimes | None = None,
    adapt: AdaptOptions | None = None,
    on_adapt_progress: Callable[[str, int, int], None] | None = None,
) -> LabelRun:
    """Label `notes`; `outcomes` may come from elsewhere (e.g. Ray workers) to skip the per-clip stage.

    The priors come first: score mode's sure test needs them as much as the matcher.
    That test asks the shipped matcher (also with --matcher), handed to the clip stage here.
    With `adapt`, the labels then train cross-fitted encoder adapters and every note is
    scored, transcribed and matched again with the adapter that did not see it (adapt.py);
    the records, summary and outcomes returned are those of the adapted run (its priors
    differ per fold, so `prior` is then None). `on_adapt_progress(stage, n, total)` hears
    of each adapter's training steps and rescored clips.
    """
    clip_options = clip_options or ClipOptions()
    match_options = match_options or MatchOptions()
    times = times if times is not None else StageTimes()
    t0 = time.perf_counter()
    wants_prior = match_options.prior or (outcomes is None and clip_options.mode == "score")
    prior = text_priors(lm, notes, cache_root) if wants_prior else None
    times.priors += time.perf_counter() - t0
    if outcomes is None:
        sure_matcher = match.default_matcher() if clip_options.mode == "score" else None
        outcomes = run_clips(lm, notes, clip_options, ClipCache(cache_root), on_done=on_done, times=times, prior=prior,
                             sure_matcher=sure_matcher)
    t1 = time.perf_counter()
    matched_prior = prior if match_options.prior else None
    records, summary, matcher = label_notes(notes, outcomes, match_options, matched_prior,
                                            truncated=truncated_texts(lm, notes))
    times.matching += time.perf_counter() - t1
    if adapt is not None:
        done = adapt_and_relabel(lm, notes, records, summary, clip_options, match_options, cache_root, adapt,
                                 on_progress=on_adapt_progress, unadapted_outcomes=outcomes,
                                 unadapted_prior=matched_prior)
        if done.matcher is not None:  # else the gold preferred the unadapted labels (a remark says so)
            records, summary, matcher, outcomes = done.records, done.summary, done.matcher, done.outcomes
            matched_prior = None
        summary.adapt = [r.as_dict() for r in done.rounds]
    return LabelRun(records, summary, matcher, outcomes, times, matched_prior)
