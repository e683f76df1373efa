"""The `disamb` command line: options in, library calls, rich output out.

Only the CLI (this module and cli_common.py) turns exceptions into one-line messages and
exit codes:
0 all went well, 1 some notes or lines failed (reported), 2 bad usage or unreadable input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .cli_common import (
    Adapt, AdaptEpochs, AdaptFolds, AdaptRounds, Address, Assign, AudioCtx, BeamSize, CacheDir, Compute, Device,
    Engine, GoldAnswers, GpusPerWorker, MatcherIn, MinConfidence, Model, NoCache, PositionPrior, Prior, Quiet, Refit,
    RescoreTop, SaveMatcher, Shards, SummaryJson, TargetPrecision, TextScoring, TrainAdapt, TrainAdaptEpochs,
    TrainAudioCtx, TrainBeamSize, TrainCompute, TrainModel, TrainWindow, Window, Workers, apply_gold_answers,
    check_choice, check_encoder_key, check_ffmpeg, check_label_outputs, check_recordings,
    check_recordings_and_context, check_writable, embed_with_progress, err,
    eval_model, exit_on_interrupt, fail, label_stopped, load_trained_encoder, load_whisper, open_cache, out,
    prepare_model_folder, print_json, print_line_errors, print_summary, ray_clips, ray_job, read_labels_file,
    read_voice_notes, say, sigterm_as_interrupt, with_model_adapter, write_label_outputs,
)
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
    recordings: Annotated[Path, typer.Argument(help="Folder holding the audio files (paths in CHATS are relative to it).")],
    chats: Annotated[Path, typer.Argument(help="chats.jsonl, an explicit-candidates manifest, or a chat-app export.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write labels.jsonl.")] = Path("labels.jsonl"),
    model: Model = "tiny.en",
    device: Device = "auto",
    compute: Compute = "auto",
    window: Window = 10,
    beam_size: BeamSize = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=256, help="Clips per model batch.")] = 8,
    audio_ctx: AudioCtx = "auto",
    mode: Annotated[str, typer.Option("--mode", help="full: transcribe every clip; score: transcribe only where the likelihood is unsure (faster).")] = "full",
    max_duration: Annotated[float, typer.Option("--max-duration", min=1.0, help="Skip clips longer than this many seconds.")] = 120.0,
    min_confidence: MinConfidence = None,
    target_precision: TargetPrecision = None,
    assign: Assign = True,
    prior: Prior = True,
    matcher_in: MatcherIn = None,
    gold_file: GoldAnswers = None,
    refit: Refit = True,
    position_prior: PositionPrior = True,
    save_matcher: SaveMatcher = None,
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    quiet: Quiet = False,
    as_json: SummaryJson = False,
    engine: Engine = "local",
    address: Address = None,
    workers: Workers = None,
    gpus_per_worker: GpusPerWorker = None,
    shards: Shards = None,
    adapt: Adapt = False,
    adapt_epochs: AdaptEpochs = 2,
    adapt_folds: AdaptFolds = 2,
    adapt_rounds: AdaptRounds = 1,
) -> None:
    """Label every voice note with the chat message it says."""
    from .adapt import AdaptOptions, AdapterError
    from .clips import ClipOptions, StageTimes
    from .label import MatchOptions
    from .pipeline import label_all
    from .match import MatcherError

    check_recordings_and_context(recordings, audio_ctx)
    check_choice("--mode", mode, ("full", "score"))
    ray = ray_job(engine, model, device, compute, address, workers, gpus_per_worker)
    check_label_outputs(output, shards, save_matcher, chats, gold_file, matcher_in)
    read = read_voice_notes(chats, recordings, window)
    print_line_errors(read.errors)
    if not read.notes:
        fail(f"{chats}: no voice notes to label ({len(read.errors)} lines skipped)")
    if gold_file is not None:
        apply_gold_answers(read.notes, gold_file, verbose=not quiet and not as_json)

    stopped_by = sigterm_as_interrupt()
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
        adapt_options = AdaptOptions(folds=adapt_folds, epochs=adapt_epochs, rounds=adapt_rounds) if adapt else None
        try:
            with progress_bar(len(read.notes), "labelling", quiet or as_json, err) as advance:
                outcomes = None if ray is None else ray_clips(ray, read.notes, options, cache.root, lm.key, advance, times)
                run = label_all(lm, read.notes, options, match_options, cache.root, on_done=advance,
                                outcomes=outcomes, times=times, adapt=adapt_options, on_adapt_progress=advance.stage)
        except AdapterError as e:
            fail(str(e))
        except OSError as e:
            fail(f"{cache.root}: cannot write the cache ({e.strerror or e}); use --cache-dir elsewhere or --no-cache")
        except MatcherError as e:
            fail(f"{matcher_in}: {e}")
        run.summary.skipped_lines = len(read.errors)
        run.summary.short_windows = read.n_short_windows
        shard_files = write_label_outputs(output, run.records, shards, run.matcher, save_matcher)
    except KeyboardInterrupt:
        label_stopped(output, times.clips_computed, stopped_by)
    for r, note in zip(run.records, read.notes):  # records come in input order
        if r.get("error"):
            say(f"{chats}:{note.line}: {r['file']}: {r['error']}", "not labelled")
    data = run.summary.as_dict() | {"output": str(output), "model": lm.key, "device": str(lm.device),
                                    "clips_computed": times.clips_computed, "clips_cached": times.clips_cached,
                                    "engine": engine} | ({"shards": shard_files} if shards is not None else {})
    print_summary(data, as_json, label_table)
    if not as_json:
        for remark in data["remarks"]:
            say(f"note: {remark}")
    raise typer.Exit(1 if (run.summary.errors or run.summary.skipped_lines) else 0)


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
        result["classifier"], model_errors = eval_model(
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
    print_line_errors(problems, more="")
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


@app.command("train")
def train_command(
    recordings: Annotated[Path, typer.Argument(help="Folder holding the audio files.")],
    chats: Annotated[Path, typer.Argument(help="The chats.jsonl / manifest / export that was labelled.")],
    labels: Annotated[Path, typer.Argument(help="labels.jsonl written by `disamb label`.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Model folder to write (created if needed).")],
    model: TrainModel = "tiny.en",
    device: Device = "auto",
    compute: TrainCompute = "auto",
    window: TrainWindow = 10,
    beam_size: TrainBeamSize = None,
    audio_ctx: TrainAudioCtx = "auto",
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
    text_scoring: TextScoring = True,
    rescore_top: RescoreTop = None,
    adapt: TrainAdapt = False,
    adapt_epochs: TrainAdaptEpochs = 2,
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    as_json: SummaryJson = False,
) -> None:
    """Train a classifier from labels.jsonl (pseudo-labels, gold and candidate sets): the decoder's
    score of each class text combined with a head on Whisper embeddings."""
    from .adapt import AdaptOptions
    from .clips import ClipOptions
    from .model_adapter import adapter_meta, store_model_adapter
    from .train import ClassFileError, TrainOptions, build_classes, build_dataset, class_texts, default_loss, read_class_file

    check_recordings_and_context(recordings, audio_ctx)
    check_choice("--head", head, ("linear", "mlp"))
    if loss is not None:
        check_choice("--loss", loss, ("gold", "ce", "proden", "cc", "mse"))
    prepare_model_folder(output, (chats, labels, classes))
    read = read_voice_notes(chats, recordings, window)
    records, labels_errors = read_labels_file(labels)
    try:
        fixed = read_class_file(classes) if classes is not None else None
    except ClassFileError as e:
        fail(str(e))
    print_line_errors(read.errors + labels_errors)
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
        "notes": len(read.notes), "with_embedding": len(embs), "errors": len(clip_errors),
        "skipped_lines": len(read.errors) + len(labels_errors),
        "classes": len(class_set.classes), "class_source": class_set.source,
        "labels_below_min_count": sum(class_set.dropped.values()) if fixed is None else 0,
        "outside_class_set": data.outside, "rows": result.rows_used, "loss": options.loss, "head": options.head,
        "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
        "holdout_gold": len(result.holdout_ids), "holdout_accuracy": result.holdout_accuracy,
        "text_scoring": None if text is None else {
            "holdout_accuracy": text.combine.holdout_accuracy, "holdout_gold": text.combine.holdout_size,
            "weights": text.classifier.describe()["weights"], "temperature": text.classifier.combiner.temperature,
            "classes_scored_per_clip": round(text.scored_per_clip, 1), "rescore_top": rescore_top,
        },
        "model": lm.key, "adapter": encoder.get("adapter"), "output": str(output),
    }
    print_summary(summary, as_json, lambda data: train_table(data, min_count, fixed))
    raise typer.Exit(1 if (clip_errors or read.errors or labels_errors) else 0)


def _adapt_encoder(lm, notes, records, clip_options, cache, epochs: int, quiet: bool):
    """`train --adapt`: (adapted model, adapter) trained on every labelled note, behind a bar."""
    from .adapt import AdapterError, AdaptOptions
    from .model_adapter import train_model_adapter

    try:
        with exit_on_interrupt("interrupted: nothing written"), stage_bars(quiet, err) as bars:
            return train_model_adapter(lm, notes, records, clip_options, cache.root, AdaptOptions(epochs=epochs),
                                       on_progress=bars.stage)
    except AdapterError as e:
        fail(str(e))


def _fit_text_scoring(head, data, options, lm, notes, clip_options, cache, rescore_top, quiet: bool):
    """Score the class texts on the training clips (behind a bar) and fit the combination."""
    from .combine import fit_text_classifier
    from .train import TrainError

    try:
        with exit_on_interrupt("interrupted: nothing written; scored clips are cached"), \
                progress_bar(len(data.ids), "class texts", quiet, err) as advance:
            return fit_text_classifier(head, data, options, lm, notes, clip_options, cache, rescore_top,
                                       on_done=advance)
    except TrainError as e:
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
    from .predict import find_recordings, predict_notes, write_predictions
    from .combine import TextClassifier, load_classifier
    from .train import ModelFileError

    check_recordings(recordings)
    if restrict and chats is None:
        fail("--restrict-to-candidates needs a chat log or manifest (CHATS)")
    check_writable(output, (chats, labels, model_dir / "model.json", model_dir / "model.safetensors"))
    try:
        clf = load_classifier(model_dir)
    except ModelFileError as e:
        fail(str(e))
    check_ffmpeg()
    records, skipped = read_labels_file(labels) if labels is not None else (None, [])
    if chats is not None:
        read = read_voice_notes(chats, recordings, window)
        notes, skipped = read.notes, skipped + read.errors
    else:
        notes, refused = find_recordings(recordings)
        skipped += refused
    print_line_errors(skipped)
    if not notes:
        fail(f"{chats or recordings}: no recordings to predict")

    enc, lm, clip_options = load_trained_encoder(clf.meta, device, context=f"{model_dir}: encoder: ")
    check_encoder_key(model_dir, enc, lm)
    lm = with_model_adapter(model_dir, enc, lm)
    cache = open_cache(cache_dir, no_cache)
    interrupted = f"interrupted: {output} left as it was; finished clips are cached"
    proba = None
    if isinstance(clf, TextClassifier):
        try:
            with exit_on_interrupt(interrupted), progress_bar(len(notes), "class texts", quiet or as_json, err) as advance:
                proba, embs, clip_errors = clf.predict(lm, notes, clip_options, cache, on_done=advance)
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
    print_summary(data, as_json, lambda data: predict_table(data, restrict))
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
    from .review import ORDERS, ReviewError, Session
    from .review_server import bind, is_loopback, make_server, url_for

    check_recordings(recordings)
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
        "messages": result.n_messages, "voice_notes": result.n_voice, "voice_notes_with_audio": result.n_voice_present,
        "texts": result.n_text, "notices": result.n_notices, "placeholders": result.n_placeholders,
        "skipped": result.skipped, "assumed": result.assumed, "not_understood": [str(e) for e in result.errors],
        "records": len(result.records), "output": str(output), "recordings": str(result.folder),
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
