"""The `disamb` command line: options in, library calls, rich output out.

Only the CLI (this module and cli_common.py) turns exceptions into one-line messages and
exit codes:
0 all went well, 1 some notes or lines failed (reported), 2 bad usage or unreadable input.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer

from . import __version__
from .cli_common import (CacheDir, Device, NoCache, Quiet, SummaryJson, check_choice, check_recordings_and_context,
                         check_writable, embed_with_progress, err, fail, load_whisper, open_cache, out,
                         print_json, print_line_errors, say)
from .display import epoch_progress, import_table, label_table, predict_table, progress_bar, stage_bars, train_table

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Find which chat message each voice note says; train and evaluate on the result.",
)


def version_callback(value: bool) -> None:
    if value:
        out.print(f"disamb {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True, help="Print the version."),
) -> None:
    """disamb: voice note -> chat message disambiguation."""


@app.command()
def label(
    recordings: Path = typer.Argument(..., help="Folder holding the audio files (paths in CHATS are relative to it)."),
    chats: Path = typer.Argument(..., help="chats.jsonl, an explicit-candidates manifest, or a chat-app export."),
    output: Path = typer.Option(Path("labels.jsonl"), "-o", "--output", help="Where to write labels.jsonl."),
    model: str = typer.Option("tiny.en", "--model", help="tiny.en (bundled, offline), an openai-whisper name, or a .pt path."),
    device: Device = "auto",
    compute: str = typer.Option("auto", "--compute", help="Weights: auto (int8 on CPU, float16 on CUDA), int8, float32 or float16."),
    window: int = typer.Option(10, "--window", min=1, max=50, help="Candidates per voice note: the next N text messages."),
    beam_size: Optional[int] = typer.Option(None, "--beam-size", min=1, max=10, help="Beam search width (default: greedy)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, max=256, help="Clips per model batch."),
    audio_ctx: str = typer.Option("auto", "--audio-ctx", help="Encoder context: full (30 s), auto (clip length, at least 10 s) or N (clip length, at least N frames of 20 ms)."),
    mode: str = typer.Option("full", "--mode", help="full: transcribe every clip; score: transcribe only where the likelihood is unsure (faster)."),
    max_duration: float = typer.Option(120.0, "--max-duration", min=1.0, help="Skip clips longer than this many seconds."),
    min_confidence: Optional[float] = typer.Option(None, "--min-confidence", min=0.0, max=1.0, help="Accept labels at or above this confidence."),
    target_precision: Optional[float] = typer.Option(None, "--target-precision", min=0.5, max=1.0, help="Choose the threshold on gold for this precision."),
    assign: bool = typer.Option(True, "--assign/--no-assign", help="One-to-one assignment across overlapping windows."),
    prior: bool = typer.Option(True, "--prior/--no-prior", help="Subtract each candidate's likelihood under silent audio (what the audio adds)."),
    matcher_in: Optional[Path] = typer.Option(None, "--matcher", help="Matcher weights (JSON) to use instead of the shipped defaults."),
    gold_file: Optional[Path] = typer.Option(None, "--gold", help="Extra gold answers (the gold.jsonl written by disamb review); they win over the chat file's."),
    refit: bool = typer.Option(True, "--refit/--no-refit", help="With 30+ gold notes, let the gold choose (cross-validated log-loss) among the starting weights, a refit and a minimal model."),
    position_prior: bool = typer.Option(True, "--position-prior/--no-position-prior", help="Learn from this run's notes where in the window (and how long after the note) answers sit."),
    save_matcher: Optional[Path] = typer.Option(None, "--save-matcher", help="Write the matcher used (fitted or default) here."),
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    quiet: Quiet = False,
    as_json: SummaryJson = False,
    engine: str = typer.Option("local", "--engine", help="local, or ray: per-clip work on a Ray cluster (pip install 'disamb[ray]')."),
    address: Optional[str] = typer.Option(None, "--address", help="With --engine ray: the cluster to join (default: start a local Ray)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="With --engine ray: actors, each holding one model (default 1)."),
    gpus_per_worker: Optional[float] = typer.Option(None, "--num-gpus-per-worker", min=0.0, help="With --engine ray: GPUs per actor (e.g. 1, or 0.25 to share one)."),
    shards: Optional[int] = typer.Option(None, "--shards", min=1, help="Also write the labels as N files OUTPUT-0000i-of-0000N.jsonl (input order)."),
    adapt: bool = typer.Option(False, "--adapt/--no-adapt", help="Then adapt the encoder to these recordings (cross-fitted, see README) and label again with it."),
    adapt_epochs: int = typer.Option(2, "--adapt-epochs", min=1, max=20, help="With --adapt: passes over the notes per adapter."),
    adapt_folds: int = typer.Option(2, "--adapt-folds", min=2, max=10, help="With --adapt: adapters, each scoring the notes it did not train on."),
    adapt_rounds: int = typer.Option(1, "--adapt-rounds", min=1, max=5, help="With --adapt: label-adapt-relabel rounds at most (stops when the gold log-loss stops falling)."),
) -> None:
    """Label every voice note with the chat message it says."""
    from .adapt import AdaptOptions, AdapterError
    from .chats import InputFileError, read_notes
    from .clips import ClipOptions, StageTimes
    from .label import MatchOptions
    from .pipeline import label_all
    from .match import MatcherError
    from .audio import FfmpegMissingError, require_ffmpeg

    check_recordings_and_context(recordings, audio_ctx)
    check_choice("--mode", mode, ("full", "score"))
    check_choice("--engine", engine, ("local", "ray"))
    if engine == "local" and (address is not None or workers is not None or gpus_per_worker is not None):
        fail("--address, --workers and --num-gpus-per-worker go with --engine ray")
    inputs = (chats, gold_file, matcher_in)
    check_writable(output, inputs)
    if save_matcher is not None:
        check_writable(save_matcher, (chats, gold_file))  # the --matcher file itself may be updated
    if shards is not None:
        from .distributed import shard_paths

        for shard in shard_paths(output, shards):
            check_writable(shard, inputs)
    try:
        require_ffmpeg()
        read = read_notes(chats, recordings, window=window)
    except (InputFileError, FfmpegMissingError) as e:
        fail(str(e))
    print_line_errors(read.errors)
    if not read.notes:
        fail(f"{chats}: no voice notes to label ({len(read.errors)} lines skipped)")
    if gold_file is not None:
        _apply_gold_file(read.notes, gold_file, verbose=not quiet and not as_json)

    stopped_by: list[int] = []

    def on_sigterm(signum, frame) -> None:  # a kill (or a scheduler's timeout) stops us like Ctrl-C
        stopped_by.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    times = StageTimes()
    try:
        lm = load_whisper(model, device, compute)
        cache = open_cache(cache_dir, no_cache)
        options = ClipOptions(
            beam_size=beam_size, batch_size=batch_size, audio_ctx=audio_ctx, max_duration=max_duration, mode=mode
        )
        match_options = MatchOptions(
            assign=assign, prior=prior, position_prior=position_prior, refit=refit, matcher=matcher_in,
            min_confidence=min_confidence, target_precision=target_precision,
        )
        try:
            with progress_bar(len(read.notes), "labelling", quiet or as_json, err) as advance:
                outcomes = None
                if engine == "ray":
                    job = RayJob(model, device, compute, address, workers, gpus_per_worker)
                    outcomes = _ray_clips(job, read.notes, options, cache.root, lm.key, advance, times)
                adapt_options = AdaptOptions(folds=adapt_folds, epochs=adapt_epochs, rounds=adapt_rounds) if adapt else None
                run = label_all(lm, read.notes, options, match_options, cache.root, on_done=advance,
                                outcomes=outcomes, times=times, adapt=adapt_options, on_adapt_progress=advance.stage)
            records, summary, matcher_used = run.records, run.summary, run.matcher
        except AdapterError as e:
            fail(str(e))
        except OSError as e:
            fail(f"{cache.root}: cannot write the cache ({e.strerror or e}); use --cache-dir elsewhere or --no-cache")
        except MatcherError as e:
            fail(f"{matcher_in}: {e}")
        summary.skipped_lines = len(read.errors)
        summary.short_windows = read.n_short_windows
        shard_files = _write_label_outputs(output, records, shards, matcher_used, save_matcher)
    except KeyboardInterrupt:
        what = "SIGTERM" if stopped_by else "interrupted"
        say(
            f"{what}: stopped; previous output {output} is intact (nothing partial written); "
            f"{times.clips_computed} clips computed in this run are cached, rerun the same command to resume"
        )
        raise typer.Exit(143 if stopped_by else 130)
    for r, note in zip(records, read.notes):  # records come in input order
        if r.get("error"):
            say(f"{chats}:{note.line}: {r['file']}: {r['error']}", "not labelled")
    data = summary.as_dict() | {"output": str(output), "model": lm.key, "device": str(lm.device),
                                "clips_computed": times.clips_computed, "clips_cached": times.clips_cached,
                                "engine": engine} | ({"shards": shard_files} if shards is not None else {})
    if as_json:
        print_json(data)
    else:
        out.print(label_table(data))
        for remark in data["remarks"]:
            say(f"note: {remark}")
    raise typer.Exit(1 if (summary.errors or summary.skipped_lines) else 0)


def _apply_gold_file(notes, gold_file: Path, verbose: bool) -> None:
    """`label --gold`: answers from `disamb review` set the gold of the notes they name."""
    from .answers import ReviewError, apply_gold_file

    try:
        n_gold = apply_gold_file(notes, gold_file)
    except (ReviewError, OSError) as e:
        fail(f"{gold_file}: {e}")
    if verbose:
        say(f"{n_gold} gold answers applied from {gold_file}")


def _write_label_outputs(output: Path, records, shards: int | None, matcher, save_matcher: Path | None):
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


def _ray_clips(job: RayJob, notes, options, cache_root, model_key, advance, times):
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


@app.command("eval")
def eval_(
    labels: Path = typer.Argument(..., help="labels.jsonl written by disamb label."),
    gold: Optional[Path] = typer.Option(None, "--gold", help="Gold to use instead: chats.jsonl/manifest with labels, or lines {id, label_id|label}."),
    threshold: Optional[float] = typer.Option(None, "--threshold", min=0.0, max=1.0, help="Acceptance threshold (default: lowest confidence among accepted notes)."),
    bins: int = typer.Option(10, "--bins", min=1, max=100, help="Equal-width confidence bins for calibration."),
    worst: int = typer.Option(10, "--worst", min=0, help="How many confident mistakes to list."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write PNG plots and index.html into this folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the evaluation as one JSON object on stdout."),
    model_dir: Optional[Path] = typer.Option(None, "--model", help="Also evaluate this classifier folder (from disamb train) on gold."),
    recordings: Optional[Path] = typer.Option(None, "--recordings", help="Folder of the audio files (needed with --model)."),
    cv: Optional[int] = typer.Option(None, "--cv", min=2, max=50, help="With --model: K-fold retraining on gold instead of the model's held-out notes."),
    device: str = typer.Option("auto", "--device", help="With --model: auto, cpu or cuda."),
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    quiet: Quiet = False,
) -> None:
    """Measure labels on the gold subset: accuracy, precision/coverage, calibration, WER, worst mistakes.

    With --model, also a trained classifier: accuracy, top-3, per-class precision/recall, confusion matrix.
    """
    from .evaluate import EvalError, evaluate_labels, read_gold, read_labels
    from .report import PLOTS, rich_tables, write_report

    if report is not None and report.is_dir():  # a new folder holds nothing to protect
        for name in [*PLOTS, "confusion.png", "index.html"]:
            check_writable(report / name, (labels, gold))
    try:
        read = read_labels(labels)
        gold_read = read_gold(gold) if gold is not None else None
        result = evaluate_labels(read.records, gold_read, threshold=threshold, bins=bins, worst=worst)
    except EvalError as e:
        fail(str(e))
    problems = read.problems + result["problems"]
    result["source"] = f"{labels}" + (f" with gold from {gold}" if gold else "")
    if model_dir is not None:
        result["classifier"], model_errors = _eval_model(
            model_dir, recordings, read.records, gold_read, cv, device, cache_dir, no_cache, quiet or as_json)
        problems += model_errors
    elif recordings is not None or cv is not None:
        fail("--recordings and --cv go with --model DIR")
    written = []
    if report is not None:
        try:
            written = write_report(result, report)
        except (EvalError, OSError) as e:
            fail(f"{report}: {e}")
    for p in problems[:50]:
        say(f"{p}", "skipped")
    if len(problems) > 50:
        say(f"... and {len(problems) - 50} more")
    unmatched = result["gold"]["unmatched_ids"]
    if unmatched:
        say(", ".join(unmatched[:50]) + (" ..." if len(unmatched) > 50 else ""),
            f"gold ids matching no note ({len(unmatched)}):")
    if as_json:
        print_json(result)
    else:
        for table in rich_tables(result):
            out.print(table)
        if written:
            say(f"report: {report / 'index.html'}", console=out)
    raise typer.Exit(1 if (problems or unmatched) else 0)


def _eval_model(model_dir, recordings, records, gold, cv, device, cache_dir, no_cache, quiet) -> tuple[dict, list[str]]:
    """`eval --model`: embeddings of the notes needed (cache hits after label/train), then the scores."""
    from .audio import FfmpegMissingError, require_ffmpeg
    from .clips import ClipOptions
    from .classifier_eval import evaluate_classifier, model_notes
    from .evaluate import EvalError
    from .models import trained_compute
    from .train import Classifier, ModelFileError

    if recordings is None or not recordings.is_dir():
        fail("--model needs --recordings DIR, the folder of the audio files" + (f" ({recordings} is not a folder)" if recordings else ""))
    try:
        clf = Classifier.load(model_dir)
        require_ffmpeg()
    except (ModelFileError, FfmpegMissingError) as e:
        fail(str(e))
    if "text_scoring" in clf.meta:  # not yet wired here: say so rather than pass the head off as the model
        say(f"{model_dir}: eval --model scores the head alone, without the model's text scoring", "note")
    encoder = clf.meta.get("encoder") or {}
    notes, path_errors = model_notes(records, gold, recordings)
    held = set(clf.meta.get("holdout_ids") or [])
    wanted = notes if cv is not None else [n for n in notes if n.has_gold and n.id in held]
    lm = _with_model_adapter(model_dir, encoder, load_whisper(encoder.get("name") or "tiny.en", device, trained_compute(encoder)))
    cache = open_cache(cache_dir, no_cache)
    options = ClipOptions(beam_size=encoder.get("beam_size"), audio_ctx=encoder.get("audio_ctx") or "auto")
    embs, clip_errors = embed_with_progress(lm, wanted, options, cache, quiet, "interrupted: finished clips are cached")
    try:
        scored = evaluate_classifier(clf, notes, embs, records, cv=cv)
    except EvalError as e:
        fail(f"{model_dir}: {e}")
    scored["model_dir"] = str(model_dir)
    errors = [f"{i}: {m}" for i, m in path_errors.items()] + [f"{i}: {m}" for i, m in clip_errors.items()]
    return scored, errors


@app.command("train")
def train_command(
    recordings: Path = typer.Argument(..., help="Folder holding the audio files."),
    chats: Path = typer.Argument(..., help="The chats.jsonl / manifest / export that was labelled."),
    labels: Path = typer.Argument(..., help="labels.jsonl written by `disamb label`."),
    output: Path = typer.Option(..., "-o", "--output", help="Model folder to write (created if needed)."),
    model: str = typer.Option("tiny.en", "--model", help="Whisper encoder for the features; use the one `label` used."),
    device: Device = "auto",
    compute: str = typer.Option("auto", "--compute", help="As given to `label`: auto (int8 on CPU, float16 on CUDA), int8, float32 or float16."),
    window: int = typer.Option(10, "--window", min=1, max=50, help="Candidates per voice note, as in `label`."),
    beam_size: Optional[int] = typer.Option(None, "--beam-size", min=1, max=10, help="As given to `label` (keeps the cache hits)."),
    audio_ctx: str = typer.Option("auto", "--audio-ctx", help="As given to `label`: full, auto or a frame count."),
    head: str = typer.Option("linear", "--head", help="linear or mlp (one hidden layer)."),
    hidden: int = typer.Option(256, "--hidden", min=4, max=8192, help="Hidden units of the mlp head."),
    loss: Optional[str] = typer.Option(None, "--loss", help="gold, ce, proden, cc or mse (default: proden when some notes have only candidate sets, else ce)."),
    gold_weight: float = typer.Option(3.0, "--gold-weight", min=0.0, help="Weight of a gold note relative to a pseudo-label."),
    confidence_weight: bool = typer.Option(True, "--confidence-weight/--no-confidence-weight", help="Weight accepted pseudo-labels by their confidence."),
    min_count: int = typer.Option(2, "--min-count", min=1, help="Keep classes with at least this many gold/accepted labels."),
    classes: Optional[Path] = typer.Option(None, "--classes", help="Text file with one class per line, instead of classes from the labels."),
    epochs: int = typer.Option(200, "--epochs", min=1, max=100000, help="Maximum full-batch epochs."),
    lr: float = typer.Option(0.01, "--lr", min=1e-6, help="Adam learning rate."),
    seed: int = typer.Option(0, "--seed", help="Seed for the held-out split and initial weights."),
    holdout: float = typer.Option(0.3, "--holdout", min=0.0, max=0.9, help="Share of gold notes held out for early stopping and selection."),
    text_scoring: bool = typer.Option(True, "--text-scoring/--head-only", help="Combine the head with the decoder's score of every class text (default), or train the head alone."),
    rescore_top: Optional[int] = typer.Option(None, "--rescore-top", min=1, help="Score only the head's top K classes with the decoder (default: every class)."),
    adapt: bool = typer.Option(False, "--adapt/--no-adapt", help="First adapt the encoder to these recordings (one adapter on every labelled note, stored in the model folder; predict applies it)."),
    adapt_epochs: int = typer.Option(2, "--adapt-epochs", min=1, max=20, help="With --adapt: passes over the notes."),
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    as_json: SummaryJson = False,
) -> None:
    """Train a classifier from labels.jsonl (pseudo-labels, gold and candidate sets): the decoder's
    score of each class text combined with a head on Whisper embeddings."""
    from .audio import FfmpegMissingError, require_ffmpeg
    from .chats import InputFileError, read_notes
    from .clips import ClipOptions
    from .train import (
        ClassFileError, TrainOptions, build_classes, build_dataset, class_texts, default_loss,
        read_class_file,
    )
    from .gold import read_labels
    from .adapt import AdaptOptions
    from .model_adapter import adapter_meta, store_model_adapter

    check_recordings_and_context(recordings, audio_ctx)
    check_choice("--head", head, ("linear", "mlp"))
    if loss is not None:
        check_choice("--loss", loss, ("gold", "ce", "proden", "cc", "mse"))
    if output.exists() and not output.is_dir():
        fail(f"{output}: exists and is not a folder")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"{output}: cannot create the model folder ({e.strerror or e})")
    check_writable(output / "model.json", (chats, labels, classes))
    check_writable(output / "model.safetensors", (chats, labels, classes))
    try:
        require_ffmpeg()
        read = read_notes(chats, recordings, window=window)
        labels_read = read_labels(labels)
        fixed = read_class_file(classes) if classes is not None else None
    except (InputFileError, FfmpegMissingError, ClassFileError) as e:
        fail(str(e))
    records = {rec["id"]: rec for rec in labels_read.records}
    print_line_errors(read.errors + labels_read.errors)
    if not read.notes:
        fail(f"{chats}: no voice notes ({len(read.errors)} lines skipped)")
    if not records:
        fail(f"{labels}: no labels.jsonl records")

    lm = load_whisper(model, device, compute)
    cache = open_cache(cache_dir, no_cache)
    clip_options = ClipOptions(beam_size=beam_size, audio_ctx=audio_ctx)
    base_key = lm.key
    lm, adapter = _adapt_encoder(lm, read.notes, records, clip_options, cache, adapt_epochs, quiet or as_json) if adapt else (lm, None)
    embs, clip_errors = embed_with_progress(lm, read.notes, clip_options, cache, quiet or as_json,
                                            "interrupted: nothing written; finished clips are cached")

    class_set = build_classes(class_texts(read.notes, records), min_count, fixed,
                              source=str(classes) if classes is not None else "labels")
    data = build_dataset(read.notes, records, embs, class_set)
    if len(class_set.classes) < 2:
        hint = "" if fixed is not None else f" (labels seen {min_count}+ times; try a lower --min-count or --classes FILE)"
        fail(f"{labels}: {len(class_set.classes)} classes, need at least 2{hint}")
    options = TrainOptions(
        loss=loss or default_loss(data), head=head, hidden=hidden, gold_weight=gold_weight,
        confidence_weight=confidence_weight, epochs=epochs, lr=lr, seed=seed, holdout=holdout,
    )
    encoder = {"name": model, "key": base_key, "compute": lm.compute, "beam_size": beam_size, "audio_ctx": audio_ctx,
               "window": window} | ({"adapter": adapter_meta(adapter, AdaptOptions(epochs=adapt_epochs))} if adapter else {})
    result = _fit_head(data, options, encoder, quiet or as_json)
    text = None
    if text_scoring:
        text = _fit_text_scoring(result.classifier, data, options, lm, read.notes, clip_options, cache, rescore_top,
                                 quiet or as_json)
    store_model_adapter(output, adapter)  # first: a model.json naming an adapter never meets an older file
    (result.classifier if text is None else text.classifier).save(output)

    summary = {
        "notes": len(read.notes),
        "with_embedding": len(embs),
        "errors": len(clip_errors),
        "skipped_lines": len(read.errors) + len(labels_read.errors),
        "classes": len(class_set.classes),
        "class_source": class_set.source,
        "labels_below_min_count": sum(class_set.dropped.values()) if fixed is None else 0,
        "outside_class_set": data.outside,
        "rows": result.rows_used,
        "loss": options.loss,
        "head": options.head,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "holdout_gold": len(result.holdout_ids),
        "holdout_accuracy": result.holdout_accuracy,
        "text_scoring": None if text is None else {
            "holdout_accuracy": text.combine.holdout_accuracy, "holdout_gold": text.combine.holdout_size,
            "weights": text.classifier.describe()["weights"], "temperature": text.classifier.combiner.temperature,
            "classes_scored_per_clip": round(text.scored_per_clip, 1), "rescore_top": rescore_top,
        },
        "model": lm.key,
        "adapter": encoder.get("adapter"),
        "output": str(output),
    }
    if as_json:
        print_json(summary)
    else:
        out.print(train_table(summary, min_count, fixed))
    raise typer.Exit(1 if (clip_errors or read.errors or labels_read.errors) else 0)


def _fit_text_scoring(head, data, options, lm, notes, clip_options, cache, rescore_top, quiet: bool):
    """Score the class texts on the training clips (behind a bar) and fit the combination."""
    from .combine import fit_text_classifier
    from .train import TrainError

    try:
        with progress_bar(len(data.ids), "class texts", quiet, err) as advance:
            return fit_text_classifier(head, data, options, lm, notes, clip_options, cache, rescore_top,
                                       on_done=advance)
    except TrainError as e:
        fail(str(e))
    except KeyboardInterrupt:
        say("interrupted: nothing written; scored clips are cached")
        raise typer.Exit(130)


def _adapt_encoder(lm, notes, records, clip_options, cache, epochs: int, quiet: bool):
    """`train --adapt`: (adapted model, adapter) trained on every labelled note, behind a bar."""
    from .adapt import AdapterError, AdaptOptions
    from .model_adapter import train_model_adapter

    try:
        with stage_bars(quiet, err) as bars:
            return train_model_adapter(lm, notes, records, clip_options, cache.root, AdaptOptions(epochs=epochs),
                                       on_progress=bars.stage)
    except AdapterError as e:
        fail(str(e))
    except KeyboardInterrupt:
        say("interrupted: nothing written")
        raise typer.Exit(130)


def _with_model_adapter(model_dir: Path, encoder: dict, lm):
    """The model a classifier's clips are embedded and scored with: `lm` plus the folder's adapter, if any."""
    from .adapt import AdapterError
    from .model_adapter import apply_model_adapter

    try:
        return apply_model_adapter(model_dir, encoder, lm)
    except AdapterError as e:
        fail(str(e))


def _fit_head(data, options, encoder: dict, quiet: bool):
    """Train the head, with a per-epoch bar of the loss and held-out accuracy unless quiet."""
    from .train import TrainError
    from .train import train as fit_head

    bar = epoch_progress(options.epochs, quiet, err)
    try:
        if bar is None:
            return fit_head(data, options, encoder)
        with bar:
            task = bar.add_task("train", total=options.epochs, loss="", acc="-")

            def on_epoch(info) -> None:
                acc = "-" if info.holdout_accuracy is None else f"{info.holdout_accuracy:.3f}"
                bar.update(task, completed=info.epoch, loss=f"{info.loss:.4f}", acc=acc)

            result = fit_head(data, options, encoder, on_epoch=on_epoch)
            bar.update(task, total=result.epochs_run, completed=result.epochs_run)
            return result
    except TrainError as e:
        fail(str(e))


@app.command("predict")
def predict_command(
    recordings: Path = typer.Argument(..., help="Folder of recordings (searched recursively without CHATS)."),
    chats: Optional[Path] = typer.Argument(None, help="Optional chat log or manifest: predict its voice notes only."),
    model_dir: Path = typer.Option(..., "--model", help="Model folder written by `disamb train`."),
    output: Path = typer.Option(Path("predictions.jsonl"), "-o", "--output", help="Where to write predictions.jsonl."),
    top_k: int = typer.Option(3, "--top-k", min=1, max=100, help="Classes listed per recording."),
    restrict: bool = typer.Option(False, "--restrict-to-candidates", help="Choose only among the classes of each note's candidates (needs CHATS)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="labels.jsonl to report agreement with the labeller."),
    window: int = typer.Option(10, "--window", min=1, max=50, help="Candidates per voice note in CHATS."),
    device: Device = "auto",
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    quiet: Quiet = False,
    as_json: SummaryJson = False,
) -> None:
    """Say which class each recording carries, with a model from `disamb train`."""
    from .audio import FfmpegMissingError, require_ffmpeg
    from .chats import InputFileError, read_notes
    from .clips import ClipOptions
    from .models import trained_compute
    from .predict import find_recordings, predict_notes, write_predictions
    from .gold import read_labels
    from .combine import TextClassifier, load_classifier
    from .train import ModelFileError

    if not recordings.is_dir():
        fail(f"{recordings}: not a folder of recordings")
    if restrict and chats is None:
        fail("--restrict-to-candidates needs a chat log or manifest (CHATS)")
    check_writable(output, (chats, labels, model_dir / "model.json", model_dir / "model.safetensors"))
    try:
        clf = load_classifier(model_dir)
    except ModelFileError as e:
        fail(str(e))
    skipped: list = []
    try:
        require_ffmpeg()
        if labels is not None:
            labels_read = read_labels(labels)
            records = {rec["id"]: rec for rec in labels_read.records}
            skipped += labels_read.errors
        else:
            records = None
        if chats is not None:
            read = read_notes(chats, recordings, window=window)
            notes, skipped = read.notes, skipped + read.errors
        else:
            notes, refused = find_recordings(recordings)
            skipped += refused
    except (InputFileError, FfmpegMissingError) as e:
        fail(str(e))
    print_line_errors(skipped)
    if not notes:
        fail(f"{chats or recordings}: no recordings to predict")

    enc = clf.meta.get("encoder") or {}
    lm = load_whisper(enc.get("name") or "tiny.en", device, trained_compute(enc), context=f"{model_dir}: encoder: ")
    if enc.get("key") and enc["key"] != lm.key:
        fail(f"{model_dir}: trained on encoder {enc['key']}, but {enc.get('name')} now loads {lm.key}")
    lm = _with_model_adapter(model_dir, enc, lm)
    cache = open_cache(cache_dir, no_cache)
    clip_options = ClipOptions(beam_size=enc.get("beam_size"), audio_ctx=enc.get("audio_ctx") or "auto")
    interrupted = f"interrupted: {output} left as it was; finished clips are cached"
    proba = None
    if isinstance(clf, TextClassifier):
        try:
            with progress_bar(len(notes), "class texts", quiet or as_json, err) as advance:
                proba, embs, clip_errors = clf.predict(lm, notes, clip_options, cache, on_done=advance)
        except KeyboardInterrupt:
            say(interrupted)
            raise typer.Exit(130)
        except ValueError as e:  # an embedding of another size reaches the head
            fail(f"{model_dir}: model expects {clf.dim}-d features, the encoder does not give them ({e})")
    else:
        embs, clip_errors = embed_with_progress(lm, notes, clip_options, cache, quiet or as_json, interrupted)
    bad_dim = [i for i, e in embs.items() if e.shape != (clf.dim,)]
    if bad_dim:
        fail(f"{model_dir}: model expects {clf.dim}-d features, the encoder gives {embs[bad_dim[0]].shape[0]}")
    rows, summary = predict_notes(clf, notes, embs, clip_errors, top_k=top_k, restrict=restrict, records=records,
                                  proba=proba)
    write_predictions(output, rows)
    for r in rows:
        if r.get("error"):
            say(f"{r['file']}: {r['error']}", "not predicted")
    data = summary.as_dict() | {"output": str(output), "model": str(model_dir), "classes": len(clf.classes)}
    if as_json:
        print_json(data)
    else:
        out.print(predict_table(data, restrict))
    raise typer.Exit(1 if (summary.errors or skipped) else 0)


@app.command()
def review(
    recordings: Path = typer.Argument(..., help="Folder holding the audio files (as given to disamb label)."),
    labels: Path = typer.Argument(..., help="labels.jsonl written by disamb label."),
    gold: Optional[Path] = typer.Option(None, "--gold", help="Answers file, appended to (default: gold.jsonl next to LABELS)."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port to listen on (0 picks a free one)."),
    host: Optional[str] = typer.Option(None, "--host", help="Address to listen on (default 127.0.0.1; anything else only when given here)."),
    order: str = typer.Option("uncertain", "--order", help="Which note next: uncertain (lowest top probability), margin (closest top two), random, file, disagree (needs --predictions)."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="predictions.jsonl from disamb predict: with --order disagree, notes where classifier and labeller differ come first."),
    seed: int = typer.Option(0, "--seed", help="Seed for --order random."),
    save_matcher: Optional[Path] = typer.Option(None, "--save-matcher", help="Write the matcher here each time the page refits it."),
) -> None:
    """Confirm labels in a local web page, hardest notes first; answers grow the gold set."""
    from .review import ORDERS, ReviewError, Session, bind, is_loopback, make_server, url_for

    if not recordings.is_dir():
        fail(f"{recordings}: not a folder of recordings")
    if order not in ORDERS:
        fail(f"--order must be one of {', '.join(ORDERS)}, got {order!r}")
    gold_path = gold if gold is not None else labels.with_name("gold.jsonl")
    check_writable(gold_path, (labels, predictions))
    if save_matcher is not None:
        check_writable(save_matcher, (labels, gold_path, predictions))
    address = host if host is not None else "127.0.0.1"
    try:
        if order == "disagree" and predictions is None:
            fail("--order disagree needs --predictions predictions.jsonl (from disamb predict)")
        session = Session.open(recordings, labels, gold_path, order=order, seed=seed, matcher_out=save_matcher)
        if predictions is not None:
            from .review import mark_disagreements

            n_disagree = mark_disagreements(session.items, predictions)
            say(f"{n_disagree} notes where the classifier disagrees with the labeller", console=out)
        sock = bind(address, port, allow_remote=host is not None)
    except ReviewError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot listen on {address}:{port} ({e.strerror or e})")
    stats = session.stats()
    unplayable = session.unplayable()
    if unplayable:
        say(
            f"warning: {len(unplayable)} of {stats['total']} notes have no playable audio in {recordings} "
            f"(first: {unplayable[0]}); is it the folder given to disamb label?"
        )
    if host is not None and not is_loopback(address):
        say(f"warning: listening on {address}: anyone who can reach this machine can hear the clips and write answers")
    say(f"reviewing {stats['total']} notes ({stats['answered']} answered) from {labels}; answers go to {gold_path}", console=out)
    say(f"open {url_for(address, sock.getsockname()[1])}  (Ctrl-C to stop)", console=out)
    try:
        make_server(session, address).run(sockets=[sock])
    finally:
        sock.close()


@app.command("import")
def import_export(
    kind: str = typer.Argument(..., help="telegram (Telegram Desktop result.json) or whatsapp (_chat.txt)."),
    path: Path = typer.Argument(..., help="The export file, or the export folder holding it."),
    output: Path = typer.Option(Path("chats.jsonl"), "-o", "--output", help="Where to write chats.jsonl."),
    voice_types: str = typer.Option("voice_message", "--voice-types", help="Telegram media types to treat as voice notes, comma-separated (voice_message,audio_file,video_message)."),
    date_order: Optional[str] = typer.Option(None, "--date-order", help="WhatsApp dates: dmy or mdy (default: detect from the file)."),
    as_json: SummaryJson = False,
) -> None:
    """Turn a chat app's export into chats.jsonl (paths relative to the export folder)."""
    from .chats import InputFileError
    from .exports import import_command

    if kind not in ("telegram", "whatsapp"):
        fail(f"unknown export kind {kind!r}: use telegram or whatsapp")
    if date_order is not None:
        check_choice("--date-order", date_order, ("dmy", "mdy"))
    check_writable(output, (path, path / "_chat.txt", path / "result.json"))
    types = tuple(t.strip() for t in voice_types.split(",") if t.strip())
    try:
        result = import_command(kind, path, output, voice_types=types, date_order=date_order)
    except (InputFileError, ValueError) as e:
        fail(str(e))
    except OSError as e:
        fail(f"{output}: cannot write ({e.strerror or e})")
    data = {
        "messages": result.n_messages,
        "voice_notes": result.n_voice,
        "voice_notes_with_audio": result.n_voice_present,
        "texts": result.n_text,
        "notices": result.n_notices,
        "placeholders": result.n_placeholders,
        "skipped": result.skipped,
        "assumed": result.assumed,
        "not_understood": [str(e) for e in result.errors],
        "records": len(result.records),
        "output": str(output),
        "recordings": str(result.folder),
    }
    if as_json:
        print_json(data)
    else:
        for e in result.errors[:50]:
            say(f"{e}", "not imported")
        out.print(import_table(result, kind, output))
        say(f"next: disamb label {result.folder} {output}", console=out)
    raise typer.Exit(1 if result.errors else 0)


if __name__ == "__main__":  # pragma: no cover
    app()
