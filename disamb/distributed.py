"""The per-clip stage on a Ray cluster: Ray Data streams groups of notes through an
actor pool whose actors each load Whisper once, and the driver matches the results.

Why this split: decoding, the encoder, transcripts, likelihoods and embeddings are
independent per note and cost almost all the time, so they go to the cluster. The
matcher is fitted on the gold notes of the whole log and the one-to-one assignment
needs neighbouring notes, so both run once on the driver through the same
`pipeline.label_all` as a local run: that is what makes the labels identical.

Retries are Ray's: actors are restarted and their tasks re-run when a worker dies
(Ray Data's actor pools default to unlimited `max_restarts` and
`max_task_retries`), and a restarted task finds the clips its
predecessor finished in the shared cache. Ray is imported only in here, and only when
the engine is used, so the local engine works without it (`pip install disamb[ray]`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import match
from .cache import ClipCache, ClipResult
from .files import write_jsonl
from .chats import Candidate, VoiceNote
from .clips import ClipOptions, ClipOutcome, StageTimes, run_clips, text_priors
from .models import weights_key


class RayEngineError(Exception):
    """Ray is missing, the cluster cannot be reached, or its results do not cover the notes."""


@dataclass
class RayOptions:
    address: str | None = None  # None: use the Ray already initialised, else start a local one
    workers: int = 1  # actors in the pool, each holding one copy of the model
    num_gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    max_notes_per_task: int = match.BLOCK_LIMIT  # notes per Ray row (one actor call)
    ray_progress: bool = False  # Ray Data's own progress bars (we draw ours)


# ---------------------------------------------------------------- planning


def plan_tasks(notes: list[VoiceNote], max_notes: int = match.BLOCK_LIMIT) -> list[list[int]]:
    """Note indices for each Ray row: whole blocks of overlapping windows, packed in order.

    A block is never split between rows unless it is longer than `max_notes`; it is then
    cut every `max_notes` notes from its start, which with the default equals the places
    where `match.assign` cuts long chains. Rows therefore line up with assignment work.
    """
    if max_notes < 1:
        raise ValueError("max_notes must be at least 1")
    rows: list[list[int]] = []
    current: list[int] = []
    for block in match._blocks([[c.id for c in n.candidates] for n in notes]):
        for start in range(0, len(block), max_notes):
            piece = block[start : start + max_notes]
            if current and len(current) + len(piece) > max_notes:
                rows.append(current)
                current = []
            current.extend(piece)
    if current:
        rows.append(current)
    return rows


# ---------------------------------------------------------------- wire format


def note_to_json(note: VoiceNote) -> dict:
    d = asdict(note)
    d["audio"] = str(note.audio)
    return d


def note_from_json(d: dict) -> VoiceNote:
    return VoiceNote(
        **{k: v for k, v in d.items() if k not in ("audio", "candidates")},
        audio=Path(d["audio"]),
        candidates=[Candidate(**c) for c in d["candidates"]],
    )


def outcome_to_json(o: ClipOutcome) -> dict:
    return {"id": o.note_id, "result": o.result.to_json() if o.result is not None else None, "error": o.error}


def outcome_from_json(d: dict) -> ClipOutcome:
    result = ClipResult.from_json(d["result"]) if d["result"] is not None else None
    return ClipOutcome(d["id"], result, d["error"])


class ClipWorker:
    """A Ray Data callable class: one per actor, so the model is loaded once per actor."""

    def __init__(self, model: str, device: str, options: dict, cache_root: str | None, compute: str = "auto"):
        from .models import load_model

        self.lm = load_model(model, device, compute=compute)
        self.options = ClipOptions(**options)
        self.cache = ClipCache(Path(cache_root) if cache_root else None)
        self.sure_matcher = match.default_matcher() if self.options.mode == "score" else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results, stats = [], []
        for text in batch["notes"]:
            notes = [note_from_json(d) for d in json.loads(text)]
            times = StageTimes()
            prior = None
            if self.options.mode == "score":  # the sure test weighs what the audio adds
                prior = text_priors(self.lm, notes, self.cache.root)
            outcomes = run_clips(self.lm, notes, self.options, self.cache, times=times, prior=prior,
                                 sure_matcher=self.sure_matcher)
            results.append(json.dumps([outcome_to_json(outcomes[n.id]) for n in notes]))
            stats.append(json.dumps(times.as_dict()))
        return {
            "task": np.asarray(batch["task"]),
            "outcomes": np.asarray(results, dtype=object),
            "times": np.asarray(stats, dtype=object),
            "model_key": np.asarray([self.lm.key] * len(results), dtype=object),
        }


# ---------------------------------------------------------------- running


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise RayEngineError(f"the ray engine needs Ray Data: pip install 'disamb[ray]' ({e})") from e
    return ray


def _connect(ray, options: RayOptions) -> bool:
    """Join the given cluster or start a local instance; True when we must shut it down."""
    if ray.is_initialized():
        return False
    try:
        if options.address:
            ray.init(address=options.address, log_to_driver=False, logging_level="WARNING")
        else:
            ray.init(include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = options.address or "a local instance"
        raise RayEngineError(f"cannot start Ray on {where}: {e}") from e
    return True


def run_clips_ray(
    notes: list[VoiceNote],
    model: str,
    device: str,
    clip_options: ClipOptions,
    cache_root: Path | None,
    options: RayOptions | None = None,
    on_done: Callable[[int], None] | None = None,
    times: StageTimes | None = None,
    model_key: str | None = None,
    compute: str = "auto",
) -> dict[str, ClipOutcome]:
    """The per-clip stage of `clips.run_clips`, computed by a Ray actor pool.

    `cache_root` must be on storage every node sees, so that a retried task or a
    restarted job skips what is done. With `model_key`, every worker must have loaded
    the same model weights; `compute` auto lets each node pick its own (int8 on a CPU
    node, float16 on a GPU node), and the cache keys tell them apart. Raises RayEngineError when a note comes back
    missing or twice (Ray's retries must neither lose nor repeat work).
    """
    options = options or RayOptions()
    if options.workers < 1:
        raise ValueError("workers must be at least 1")
    ray = import_ray()
    times = times if times is not None else StageTimes()
    if not notes:
        return {}
    if Path(model).is_file():
        model = str(Path(model).resolve())  # workers do not start in our folder
    started = _connect(ray, options)
    data_log = logging.getLogger("ray.data")
    log_level = data_log.level
    if not options.ray_progress:  # our progress bar and summary say it; keep stderr readable
        data_log.setLevel(logging.ERROR)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = options.ray_progress
        context.print_on_execution_start = options.ray_progress
        plan = plan_tasks(notes, options.max_notes_per_task)
        rows = [
            {"task": k, "notes": json.dumps([note_to_json(notes[i]) for i in idx], ensure_ascii=False)}
            for k, idx in enumerate(plan)
        ]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        ds = ds.map_batches(
            ClipWorker,
            batch_size=1,  # one row (a group of whole blocks) per call
            compute=ray.data.ActorPoolStrategy(size=options.workers),
            fn_constructor_kwargs={
                "model": model,
                "device": device,
                "options": asdict(clip_options),
                "cache_root": str(cache_root) if cache_root is not None else None,
                "compute": compute,
            },
            num_cpus=options.cpus_per_worker,
            num_gpus=options.num_gpus_per_worker or None,
            # Fault tolerance: Ray Data starts actor-pool actors with max_restarts=-1 and
            # max_task_retries=-1, so a dead actor is replaced and its unfinished call re-run
            # on the replacement (passing them here is deprecated since Ray 2.5x).
        )
        found: dict[str, ClipOutcome] = {}
        seen_tasks: set[int] = set()
        for row in ds.iter_rows():
            task = int(row["task"])
            if model_key is not None and weights_key(row["model_key"]) != weights_key(model_key):
                raise RayEngineError(
                    f"a worker loaded model {row['model_key']}, the driver {model_key}: install the same disamb and model on every node"
                )
            if task in seen_tasks:
                raise RayEngineError(f"task {task} came back twice")
            seen_tasks.add(task)
            expected = [notes[i].id for i in plan[task]]
            got = [outcome_from_json(d) for d in json.loads(row["outcomes"])]
            if [o.note_id for o in got] != expected:
                raise RayEngineError(f"task {task} returned other notes than it was given")
            for o in got:
                if o.note_id in found:
                    raise RayEngineError(f"note {o.note_id} came back twice")
                found[o.note_id] = o
            for k, v in json.loads(row["times"]).items():
                setattr(times, k, getattr(times, k) + v)
            if on_done is not None:
                on_done(len(got))
        missing = [n.id for n in notes if n.id not in found]
        if missing:
            raise RayEngineError(f"{len(missing)} notes never came back from Ray (first: {missing[0]})")
        return {n.id: found[n.id] for n in notes}
    finally:
        data_log.setLevel(log_level)
        if started:
            ray.shutdown()


def label_on_ray(
    lm,
    notes: list[VoiceNote],
    clip_options: ClipOptions,
    match_options,
    cache_root: Path | None,
    options: RayOptions | None = None,
    on_done: Callable[[int], None] | None = None,
    device: str = "auto",
    compute: str = "auto",
):
    """Label `notes` with the per-clip stage on Ray and matching on the driver.

    `lm` is the driver's model (for the text priors); workers load the same model by
    name and `device` ("auto" picks a worker's GPU when it has one). Returns a `pipeline.LabelRun` whose `times` count the workers' clips.
    """
    from .pipeline import label_all

    times = StageTimes()
    outcomes = run_clips_ray(notes, lm.name, device, clip_options, cache_root, options, on_done, times, lm.key, compute)
    run = label_all(lm, notes, clip_options, match_options, cache_root, outcomes=outcomes)
    run.times = times
    return run


def shard_paths(output: Path, shards: int) -> list[Path]:
    stem, suffix = output.stem, output.suffix or ".jsonl"
    return [output.with_name(f"{stem}-{i:05d}-of-{shards:05d}{suffix}") for i in range(shards)]


def write_shards(output: Path, records: list[dict], shards: int) -> list[Path]:
    """Split labels.jsonl into `shards` files of consecutive records, each written atomically.

    Input order is kept: concatenating the shards in name order gives labels.jsonl.
    """
    if shards < 1:
        raise ValueError("shards must be at least 1")
    paths = shard_paths(Path(output), shards)
    bounds = np.linspace(0, len(records), shards + 1).round().astype(int)
    for path, lo, hi in zip(paths, bounds[:-1], bounds[1:]):
        write_jsonl(path, records[lo:hi])
    return paths
