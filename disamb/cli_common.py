"""What the commands share: their options (declared once, as Annotated types), the
consoles, one-line messages and exits, the checks made before work starts, the openers of
the cache and the model, and one helper for each step that several commands (or one long
command) take: reading notes and labels, the trained encoder, Ctrl-C, label's outputs and
Ray job, eval --model.

Kept apart from cli.py so that each command there reads as options in, one library call
per step, results out, on one screen.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text

from .display import progress_bar

# Markup and emoji codes off: file names, ids and chat text are printed as the characters they are.
err = Console(stderr=True, highlight=False, markup=False, emoji=False)
out = Console(highlight=False, markup=False, emoji=False)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def one_line(message: object) -> str:
    """The message with control characters (a newline in a file name, say) escaped as repr
    escapes them, so one problem is always one line and a terminal never sees raw escapes."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(message))


def say(message: object, tag: str = "", style: str = "yellow", console: Console | None = None) -> None:
    """Print one message as one line of plain text, after an optional coloured tag."""
    line = Text(one_line(message))
    if tag:
        line = Text.assemble((tag, style), " ", line)
    (console or err).print(line, soft_wrap=True)


def print_json(data: dict) -> None:
    """The --json summary on stdout: strict JSON (a number that is not finite is null), ASCII-safe."""
    from .files import finite_or_null

    sys.stdout.write(json.dumps(finite_or_null(data), allow_nan=False) + "\n")


# Options, declared once so they read and behave alike. Those several commands share:
CacheDir = Annotated[Optional[Path], typer.Option("--cache-dir", help="Per-clip cache folder (default: user cache).")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the per-clip cache.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
SummaryJson = Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout (nothing else).")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]

# `label`'s per-clip work; `train` takes the same options "as given to `label`" (keeping the cache hits).
Model = Annotated[str, typer.Option("--model", help="tiny.en (bundled, offline), an openai-whisper name, or a .pt path.")]
Compute = Annotated[str, typer.Option("--compute", help="Weights: auto (int8 on CPU, float16 on CUDA), int8, float32 or float16.")]
Window = Annotated[int, typer.Option("--window", min=1, max=50, help="Candidates per voice note: the next N text messages.")]
BeamSize = Annotated[Optional[int], typer.Option("--beam-size", min=1, max=10, help="Beam search width (default: greedy).")]
AudioCtx = Annotated[str, typer.Option("--audio-ctx", help="Encoder context: full (30 s), auto (clip length, at least 10 s) or N (clip length, at least N frames of 20 ms).")]
TrainModel = Annotated[str, typer.Option("--model", help="Whisper encoder for the features; use the one `label` used.")]
TrainCompute = Annotated[str, typer.Option("--compute", help="As given to `label`: auto (int8 on CPU, float16 on CUDA), int8, float32 or float16.")]
TrainWindow = Annotated[int, typer.Option("--window", min=1, max=50, help="Candidates per voice note, as in `label`.")]
TrainBeamSize = Annotated[Optional[int], typer.Option("--beam-size", min=1, max=10, help="As given to `label` (keeps the cache hits).")]
TrainAudioCtx = Annotated[str, typer.Option("--audio-ctx", help="As given to `label`: full, auto or a frame count.")]

# `label`'s matching.
MinConfidence = Annotated[Optional[float], typer.Option("--min-confidence", min=0.0, max=1.0, help="Accept labels at or above this confidence.")]
TargetPrecision = Annotated[Optional[float], typer.Option("--target-precision", min=0.5, max=1.0, help="Choose the threshold on gold for this precision.")]
Assign = Annotated[bool, typer.Option("--assign/--no-assign", help="One-to-one assignment across overlapping windows.")]
Prior = Annotated[bool, typer.Option("--prior/--no-prior", help="Subtract each candidate's likelihood under silent audio (what the audio adds).")]
MatcherIn = Annotated[Optional[Path], typer.Option("--matcher", help="Matcher weights (JSON) to use instead of the shipped defaults.")]
GoldAnswers = Annotated[Optional[Path], typer.Option("--gold", help="Extra gold answers (the gold.jsonl written by disamb review); they win over the chat file's.")]
Refit = Annotated[bool, typer.Option("--refit/--no-refit", help="With 30+ gold notes, let the gold choose (cross-validated log-loss) among the starting weights, a refit and a minimal model.")]
PositionPrior = Annotated[bool, typer.Option("--position-prior/--no-position-prior", help="Learn from this run's notes where in the window (and how long after the note) answers sit.")]
SaveMatcher = Annotated[Optional[Path], typer.Option("--save-matcher", help="Write the matcher used (fitted or default) here.")]

# `label --engine ray`.
Engine = Annotated[str, typer.Option("--engine", help="local, or ray: per-clip work on a Ray cluster (pip install 'disamb[ray]').")]
Address = Annotated[Optional[str], typer.Option("--address", help="With --engine ray: the cluster to join (default: start a local Ray).")]
Workers = Annotated[Optional[int], typer.Option("--workers", min=1, help="With --engine ray: actors, each holding one model (default 1).")]
GpusPerWorker = Annotated[Optional[float], typer.Option("--num-gpus-per-worker", min=0.0, help="With --engine ray: GPUs per actor (e.g. 1, or 0.25 to share one).")]
Shards = Annotated[Optional[int], typer.Option("--shards", min=1, help="Also write the labels as N files OUTPUT-0000i-of-0000N.jsonl (input order).")]

# `label --adapt`.
Adapt = Annotated[bool, typer.Option("--adapt/--no-adapt", help="Then adapt the encoder to these recordings (cross-fitted, see README) and label again with it.")]
AdaptEpochs = Annotated[int, typer.Option("--adapt-epochs", min=1, max=20, help="With --adapt: passes over the notes per adapter.")]
AdaptFolds = Annotated[int, typer.Option("--adapt-folds", min=2, max=10, help="With --adapt: adapters, each scoring the notes it did not train on.")]
AdaptRounds = Annotated[int, typer.Option("--adapt-rounds", min=1, max=5, help="With --adapt: label-adapt-relabel rounds at most (stops when the gold log-loss stops falling).")]

# `train`'s text scoring.
TextScoring = Annotated[bool, typer.Option("--text-scoring/--head-only", help="Combine the head with the decoder's score of every class text (default), or train the head alone.")]
RescoreTop = Annotated[Optional[int], typer.Option("--rescore-top", min=1, help="Score only the head's top K classes with the decoder (default: every class).")]
TrainAdapt = Annotated[bool, typer.Option("--adapt/--no-adapt", help="First adapt the encoder to these recordings (one adapter on every labelled note, stored in the model folder; predict applies it).")]
TrainAdaptEpochs = Annotated[int, typer.Option("--adapt-epochs", min=1, max=20, help="With --adapt: passes over the notes.")]


def fail(message: str, code: int = 2) -> None:
    say(message, "error:", "red")
    raise typer.Exit(code)


def check_writable(path: Path, inputs=()) -> None:
    """Fail now, not after hours of work, when the output cannot be written, is one of the
    `inputs` (also through a link) or exists as something other than a regular file."""
    from .files import OutputPathError, check_output

    try:
        check_output(path, inputs)
    except OutputPathError as e:
        fail(str(e))
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        fail(f"{path}: output folder {folder} " + ("is not a folder" if folder.exists() else "does not exist"))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".disamb-write-test-", dir=folder)
        try:  # an empty file fits on a full disk; a few KiB of data do not
            os.write(fd, b"\0" * 65536)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(tmp)
    except OSError as e:
        fail(f"{path}: cannot write to {folder} ({e.strerror or e})")
    if path.exists() and path.is_dir():
        fail(f"{path}: is a folder, not a file")


def check_recordings(recordings: Path) -> None:
    """Every command that reads recordings refuses a path that is not a folder, alike."""
    if not recordings.is_dir():
        fail(f"{recordings}: not a folder of recordings")


def check_recordings_and_context(recordings: Path, audio_ctx: str) -> None:
    """The checks `label` and `train` share, so both refuse the same inputs alike."""
    check_recordings(recordings)
    if audio_ctx not in ("full", "auto") and not audio_ctx.isdigit():
        fail(f"--audio-ctx must be full, auto or a number of frames, got {audio_ctx!r}")


def print_line_errors(errors, limit: int = 50, more: str = " skipped lines") -> None:
    """Skipped lines are always reported, even with --quiet or --json (they go to stderr)."""
    for e in errors[:limit]:
        say(f"{e}", "skipped")
    if len(errors) > limit:
        say(f"... and {len(errors) - limit} more{more}")


def print_summary(data: dict, as_json: bool, table) -> None:
    """The command's summary: strict JSON on stdout with --json, else the rich `table(data)`."""
    if as_json:
        print_json(data)
    else:
        out.print(table(data))


def check_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    """One message for every option that takes one of a few words."""
    if value not in choices:
        words = choices[0] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"
        fail(f"{option} must be {words}, got {value!r}")


def open_cache(cache_dir: Path | None, no_cache: bool):
    """The per-clip cache of every command that runs the model: --no-cache, --cache-dir or the user cache."""
    from .cache import ClipCache, default_cache_dir

    return ClipCache(None if no_cache else (cache_dir or default_cache_dir()))


def load_whisper(name: str, device: str, compute: str, context: str = ""):
    """The Whisper model, or a one-line error (prefixed with `context`) and exit code 2."""
    from .models import ModelError, load_model

    try:
        return load_model(name, device, compute=compute)
    except ModelError as e:
        fail(f"{context}{e}")


@contextmanager
def exit_on_interrupt(message: str):
    """Ctrl-C inside says `message` (what was kept) and exits 130."""
    try:
        yield
    except KeyboardInterrupt:
        say(message)
        raise typer.Exit(130)


def read_voice_notes(chats: Path, recordings: Path, window: int):
    """The notes of a chat log, manifest or export (ffmpeg checked first), or a one-line error and exit 2."""
    from .audio import FfmpegMissingError, require_ffmpeg
    from .chats import read_notes
    from .inputs import InputFileError

    try:
        require_ffmpeg()
        return read_notes(chats, recordings, window=window)
    except (InputFileError, FfmpegMissingError) as e:
        fail(str(e))


def read_labels_file(labels: Path):
    """labels.jsonl records by id and the lines skipped, or a one-line error and exit 2."""
    from .gold import read_labels
    from .inputs import InputFileError

    try:
        read = read_labels(labels)
    except InputFileError as e:
        fail(str(e))
    return {rec["id"]: rec for rec in read.records}, read.errors


def load_trained_encoder(meta: dict, device: str, context: str = ""):
    """(encoder description, Whisper model, clip options) a trained classifier's `meta` names, so
    its clips are read exactly as in training (and hit the same cache entries)."""
    from .clips import ClipOptions
    from .models import trained_compute

    enc = meta.get("encoder") or {}
    lm = load_whisper(enc.get("name") or "tiny.en", device, trained_compute(enc), context)
    return enc, lm, ClipOptions(beam_size=enc.get("beam_size"), audio_ctx=enc.get("audio_ctx") or "auto")


def check_encoder_key(model_dir: Path, encoder: dict, lm) -> None:
    """Exit in one line when the encoder a model names now loads other weights than it was trained on."""
    if encoder.get("key") and encoder["key"] != lm.key:
        fail(f"{model_dir}: trained on encoder {encoder['key']}, but {encoder.get('name')} now loads {lm.key}")


def with_model_adapter(model_dir: Path, encoder: dict, lm):
    """The model a classifier's clips are embedded and scored with: `lm` plus the folder's adapter, if any."""
    from .adapt import AdapterError
    from .model_adapter import apply_model_adapter

    try:
        return apply_model_adapter(model_dir, encoder, lm)
    except AdapterError as e:
        fail(str(e))


def embed_with_progress(lm, notes, clip_options, cache, quiet: bool, interrupted: str):
    """(embeddings, clip errors) for `notes` behind a progress bar; Ctrl-C says `interrupted` and exits 130."""
    from .clips import embed_notes
    from .match import default_matcher

    with exit_on_interrupt(interrupted), progress_bar(len(notes), "embeddings", quiet, err) as advance:
        return embed_notes(lm, notes, clip_options, cache, default_matcher(), on_done=advance)


def check_ffmpeg() -> None:
    from .audio import FfmpegMissingError, require_ffmpeg

    try:
        require_ffmpeg()
    except FfmpegMissingError as e:
        fail(str(e))


def prepare_model_folder(output: Path, inputs) -> None:
    """`train -o`: the model folder, created now, and both its files writable, before any work."""
    if output.exists() and not output.is_dir():
        fail(f"{output}: exists and is not a folder")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"{output}: cannot create the model folder ({e.strerror or e})")
    check_writable(output / "model.json", inputs)
    check_writable(output / "model.safetensors", inputs)


# ---------------------------------------------------------------- label's steps


@dataclass
class RayJob:
    """`label --engine ray` as given: the model and device as named, so each node resolves
    auto (device, compute) for itself, and the cluster to use."""

    model: str
    device: str
    compute: str
    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float | None = None


def ray_job(engine: str, model: str, device: str, compute: str, address, workers, gpus_per_worker) -> RayJob | None:
    """The Ray job `--engine ray` asks for, None for the local engine (which takes no cluster options)."""
    check_choice("--engine", engine, ("local", "ray"))
    if engine == "local":
        if address is not None or workers is not None or gpus_per_worker is not None:
            fail("--address, --workers and --num-gpus-per-worker go with --engine ray")
        return None
    return RayJob(model, device, compute, address, workers, gpus_per_worker)


def check_label_outputs(output: Path, shards: int | None, save_matcher: Path | None, chats, gold_file, matcher_in) -> None:
    """labels.jsonl, its shards and the saved matcher: each writable and none of them an input."""
    inputs = (chats, gold_file, matcher_in)
    check_writable(output, inputs)
    if save_matcher is not None:
        check_writable(save_matcher, (chats, gold_file))  # the --matcher file itself may be updated
    if shards is not None:
        from .distributed import shard_paths

        for shard in shard_paths(output, shards):
            check_writable(shard, inputs)


def apply_gold_answers(notes, gold_file: Path, verbose: bool) -> None:
    """`label --gold`: answers from `disamb review` set the gold of the notes they name."""
    from .answers import ReviewError, apply_gold_file

    try:
        n_gold = apply_gold_file(notes, gold_file)
    except (ReviewError, OSError) as e:
        fail(f"{gold_file}: {e}")
    if verbose:
        say(f"{n_gold} gold answers applied from {gold_file}")


def sigterm_as_interrupt() -> list[int]:
    """From now on a kill (or a scheduler's timeout) stops the command like Ctrl-C; the list
    returned gets the signal number when it does."""
    stopped_by: list[int] = []

    def on_sigterm(signum, frame) -> None:
        stopped_by.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    return stopped_by


def label_stopped(output: Path, clips_computed: int, stopped_by: list[int]) -> None:
    """Ctrl-C or SIGTERM during `label`: say what is kept and exit 130 (143 for SIGTERM)."""
    what = "SIGTERM" if stopped_by else "interrupted"
    say(
        f"{what}: stopped; previous output {output} is intact (nothing partial written); "
        f"{clips_computed} clips computed in this run are cached, rerun the same command to resume"
    )
    raise typer.Exit(143 if stopped_by else 130)


def ray_clips(job: RayJob, notes, options, cache_root, model_key, advance, times):
    """The per-clip stage on Ray (`disamb label --engine ray`); errors become one line."""
    from .cache import default_cache_dir
    from .distributed import RayEngineError, RayOptions, run_clips_ray

    if job.address and cache_root == default_cache_dir():  # each node would keep its own
        say(f"note: the cache {cache_root} is this machine's; give --cache-dir on storage all nodes share")
    ray_options = RayOptions(address=job.address, workers=job.workers or 1, num_gpus_per_worker=job.gpus_per_worker or 0.0)
    try:
        return run_clips_ray(notes, job.model, job.device, options, cache_root, ray_options, advance, times,
                             model_key, job.compute)
    except RayEngineError as e:
        fail(str(e))


def write_label_outputs(output: Path, records, shards: int | None, matcher, save_matcher: Path | None):
    """labels.jsonl, its shards (whose names are returned) and the matcher, each written whole or not at all."""
    from .label import write_labels

    shard_files = None
    try:
        write_labels(output, records)
        if shards is not None:
            from .distributed import write_shards

            shard_files = [str(p) for p in write_shards(output, records, shards)]
        if save_matcher is not None:
            matcher.save(save_matcher)
    except OSError as e:
        fail(f"{e.filename or output}: cannot write ({e.strerror or e}); the per-clip cache keeps the work, rerun to finish")
    return shard_files


# ---------------------------------------------------------------- eval --model


def eval_model(model_dir, recordings, records, gold, cv, device, cache_dir, no_cache, quiet) -> tuple[dict, list[str]]:
    """`eval --model`: embeddings of the notes needed (cache hits after label/train), then the scores."""
    from .audio import FfmpegMissingError, require_ffmpeg
    from .classifier_eval import evaluate_classifier, model_notes
    from .evaluate import EvalError
    from .combine import TextClassifier, load_classifier
    from .train import ModelFileError

    if recordings is None or not recordings.is_dir():
        fail("--model needs --recordings DIR, the folder of the audio files" + (f" ({recordings} is not a folder)" if recordings else ""))
    try:
        clf = load_classifier(model_dir)
        require_ffmpeg()
    except (ModelFileError, FfmpegMissingError) as e:
        fail(str(e))
    text_model = isinstance(clf, TextClassifier)
    if text_model and cv is not None:  # K retrainings of the text scoring would rescore every clip K times
        say(f"{model_dir}: --cv retrains and scores the head alone, without the model's text scoring", "note")
    notes, path_errors = model_notes(records, gold, recordings)
    held = set(clf.meta.get("holdout_ids") or [])
    wanted = notes if cv is not None else [n for n in notes if n.has_gold and n.id in held]
    enc, lm, options = load_trained_encoder(clf.meta, device, context=f"{model_dir}: encoder: ")
    check_encoder_key(model_dir, enc, lm)
    lm = with_model_adapter(model_dir, enc, lm)
    cache = open_cache(cache_dir, no_cache)
    interrupted = "interrupted: finished clips are cached"
    proba = None
    if text_model and cv is None:  # the whole model, as predict runs it
        with exit_on_interrupt(interrupted), progress_bar(len(wanted), "class texts", quiet, err) as advance:
            proba, embs, clip_errors = clf.predict(lm, wanted, options, cache, on_done=advance)
    else:
        embs, clip_errors = embed_with_progress(lm, wanted, options, cache, quiet, interrupted)
    try:
        scored = evaluate_classifier(clf.head if text_model else clf, notes, embs, records, cv=cv, proba_by_id=proba)
    except EvalError as e:
        fail(f"{model_dir}: {e}")
    scored["model_dir"] = str(model_dir)
    errors = [f"{i}: {m}" for i, m in path_errors.items()] + [f"{i}: {m}" for i, m in clip_errors.items()]
    return scored, errors
