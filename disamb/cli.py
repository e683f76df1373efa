"""The `disamb` command line: options in, library calls, rich output out.

Only this module turns exceptions into one-line messages and exit codes:
0 all went well, 1 some notes or lines failed (reported), 2 bad usage or unreadable input.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Find which chat message each voice note says; train and evaluate on the result.",
)
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)


def fail(message: str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {message}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def version_callback(value: bool) -> None:
    if value:
        out.print(f"disamb {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True, help="Print the version."),
) -> None:
    """disamb: voice note -> chat message disambiguation."""


def check_writable(path: Path) -> None:
    """Fail now, not after hours of work, when the output cannot be written."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        fail(f"{path}: output folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".disamb-write-test-", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        fail(f"{path}: cannot write to {folder} ({e.strerror or e})")
    if path.exists() and path.is_dir():
        fail(f"{path}: is a folder, not a file")


@contextmanager
def progress_bar(total: int, label: str, quiet: bool):
    """A rich progress bar with items/s and ETA on stderr; a no-op when quiet."""
    if quiet or total == 0:
        yield lambda n=1: None
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task(label, total=total, rate="")

        def advance(n: int = 1) -> None:
            progress.advance(task, n)
            t = progress.tasks[task]
            speed = t.finished_speed or t.speed
            progress.update(task, rate=f"{speed:.2f} clips/s" if speed else "")

        yield advance


def print_line_errors(errors, quiet: bool, limit: int = 50) -> None:
    for e in errors[:limit]:
        err.print(f"[yellow]skipped[/yellow] {e}", markup=True, soft_wrap=True)
    if len(errors) > limit:
        err.print(f"... and {len(errors) - limit} more skipped lines", soft_wrap=True)


@app.command()
def label(
    recordings: Path = typer.Argument(..., help="Folder holding the audio files (paths in CHATS are relative to it)."),
    chats: Path = typer.Argument(..., help="chats.jsonl, an explicit-candidates manifest, or a chat-app export."),
    output: Path = typer.Option(Path("labels.jsonl"), "-o", "--output", help="Where to write labels.jsonl."),
    model: str = typer.Option("tiny.en", "--model", help="tiny.en (bundled, offline), an openai-whisper name, or a .pt path."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    window: int = typer.Option(10, "--window", min=1, max=50, help="Candidates per voice note: the next N text messages."),
    beam_size: Optional[int] = typer.Option(None, "--beam-size", min=1, max=10, help="Beam search width (default: greedy)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, max=256, help="Clips per model batch."),
    audio_ctx: str = typer.Option("full", "--audio-ctx", help="Encoder context: full (30 s), auto (clip length) or a frame count."),
    max_duration: float = typer.Option(120.0, "--max-duration", min=1.0, help="Skip clips longer than this many seconds."),
    min_confidence: Optional[float] = typer.Option(None, "--min-confidence", min=0.0, max=1.0, help="Accept labels at or above this confidence."),
    target_precision: Optional[float] = typer.Option(None, "--target-precision", min=0.5, max=1.0, help="Choose the threshold on gold for this precision."),
    assign: bool = typer.Option(True, "--assign/--no-assign", help="One-to-one assignment across overlapping windows."),
    prior: bool = typer.Option(False, "--prior/--no-prior", help="Subtract each candidate's likelihood under silent audio."),
    matcher_in: Optional[Path] = typer.Option(None, "--matcher", help="Matcher weights (JSON) to use instead of the shipped defaults."),
    refit: bool = typer.Option(True, "--refit/--no-refit", help="Fit the matcher on the gold subset when it has 30+ notes."),
    save_matcher: Optional[Path] = typer.Option(None, "--save-matcher", help="Write the matcher used (fitted or default) here."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Per-clip cache folder (default: user cache)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the per-clip cache."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout (nothing else)."),
) -> None:
    """Label every voice note with the chat message it says."""
    from .cache import ClipCache, default_cache_dir
    from .chats import InputFileError, read_notes
    from .clips import ClipOptions, run_clips, silence_scores, renderings_for
    from .label import MatchOptions, label_notes, write_labels
    from .match import MatcherError
    from .models import ModelError, load_model
    from .audio import FfmpegMissingError, require_ffmpeg

    if not recordings.is_dir():
        fail(f"{recordings}: not a folder of recordings")
    if audio_ctx not in ("full", "auto") and not audio_ctx.isdigit():
        fail(f"--audio-ctx must be full, auto or a number of frames, got {audio_ctx!r}")
    check_writable(output)
    try:
        require_ffmpeg()
        read = read_notes(chats, recordings, window=window)
    except (InputFileError, FfmpegMissingError) as e:
        fail(str(e))
    print_line_errors(read.errors, quiet)
    if not read.notes:
        fail(f"{chats}: no voice notes to label ({len(read.errors)} lines skipped)")

    try:
        lm = load_model(model, device)
    except ModelError as e:
        fail(str(e))
    cache = ClipCache(None if no_cache else (cache_dir or default_cache_dir()))
    options = ClipOptions(beam_size=beam_size, batch_size=batch_size, audio_ctx=audio_ctx, max_duration=max_duration)
    try:
        with progress_bar(len(read.notes), "labelling", quiet or as_json) as advance:
            outcomes = run_clips(lm, read.notes, options, cache, on_done=advance)
        prior_memo: dict | None = None
        if prior:
            prior_memo = {}
            silence_scores(lm, [r for n in read.notes for r in renderings_for(n)], prior_memo)
    except KeyboardInterrupt:
        err.print(
            f"interrupted: {output} left as it was; {cache.misses + cache.hits} clips done are cached, rerun to resume",
            soft_wrap=True,
        )
        raise typer.Exit(130)

    try:
        match_options = MatchOptions(
            window=window, assign=assign, prior=prior, refit=refit, matcher=matcher_in,
            min_confidence=min_confidence, target_precision=target_precision,
        )
        records, summary, matcher_used = label_notes(read.notes, outcomes, match_options, prior_memo)
    except MatcherError as e:
        fail(f"{matcher_in}: {e}")
    summary.skipped_lines = len(read.errors)
    summary.short_windows = read.n_short_windows
    write_labels(output, records)
    if save_matcher is not None:
        matcher_used.save(save_matcher)
    for r in records:
        if r.get("error"):
            err.print(f"[yellow]not labelled[/yellow] {chats}:{_line_of(read.notes, r['id'])}: {r['file']}: {r['error']}", markup=True, soft_wrap=True)
    data = summary.as_dict() | {"output": str(output), "model": lm.key, "device": str(lm.device)}
    if as_json:
        sys.stdout.write(json.dumps(data) + "\n")
    else:
        print_label_summary(data)
    raise typer.Exit(1 if (summary.errors or summary.skipped_lines) else 0)


def _line_of(notes, note_id: str) -> int:
    for n in notes:
        if n.id == note_id:
            return n.line
    return 0


def print_label_summary(d: dict) -> None:
    table = Table(title="disamb label", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("voice notes read", str(d["notes"]))
    table.add_row("labelled", str(d["labelled"]))
    cov = f" ({d['accepted'] / d['notes']:.0%})" if d["notes"] else ""
    table.add_row(f"accepted (confidence ≥ {d['threshold']:.3g})", f"{d['accepted']}{cov}")
    table.add_row("threshold from", d["threshold_source"])
    table.add_row("errors (not labelled)", str(d["errors"]))
    table.add_row("input lines skipped", str(d["skipped_lines"]))
    table.add_row("notes with < window candidates", str(d["short_windows"]))
    table.add_row("matcher", d["matcher"])
    if d["gold"]:
        table.add_row("gold notes", f"{d['gold']} ({d['gold_in_window']} with truth in window)")
        if d["gold_accuracy"] is not None:
            table.add_row("accuracy on gold", f"{d['gold_accuracy']:.3f} ({d['gold_correct']}/{d['gold_in_window']})")
        if d["gold_accepted"]:
            table.add_row(
                "precision of accepted on gold",
                f"{d['gold_accepted_correct'] / d['gold_accepted']:.3f} ({d['gold_accepted_correct']}/{d['gold_accepted']})",
            )
        if d["cv_accuracy"] is not None:
            table.add_row("matcher cross-validated accuracy", f"{d['cv_accuracy']:.3f}")
    else:
        table.add_row("gold notes", "0 (add label_id to some voice notes to measure accuracy)")
    table.add_row("model", f"{d['model']} on {d['device']}")
    table.add_row("written", d["output"])
    out.print(table)
    for k, v in d.get("extra", {}).items():
        err.print(f"note: {v}", soft_wrap=True)


if __name__ == "__main__":  # pragma: no cover
    app()
