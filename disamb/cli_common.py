"""What every command shares: the consoles, one-line messages and exits, the checks made
before work starts, and the openers of the cache and the model.

Kept apart from cli.py so that each command there reads as options in, one library call,
results out.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
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


# Options several commands share, declared once so they read and behave alike.
CacheDir = Annotated[Optional[Path], typer.Option("--cache-dir", help="Per-clip cache folder (default: user cache).")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the per-clip cache.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
SummaryJson = Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout (nothing else).")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]


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


def check_recordings_and_context(recordings: Path, audio_ctx: str) -> None:
    """The checks `label` and `train` share, so both refuse the same inputs alike."""
    if not recordings.is_dir():
        fail(f"{recordings}: not a folder of recordings")
    if audio_ctx not in ("full", "auto") and not audio_ctx.isdigit():
        fail(f"--audio-ctx must be full, auto or a number of frames, got {audio_ctx!r}")


def print_line_errors(errors, limit: int = 50) -> None:
    """Skipped lines are always reported, even with --quiet or --json (they go to stderr)."""
    for e in errors[:limit]:
        say(f"{e}", "skipped")
    if len(errors) > limit:
        say(f"... and {len(errors) - limit} more skipped lines")


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


def embed_with_progress(lm, notes, clip_options, cache, quiet: bool, interrupted: str):
    """(embeddings, clip errors) for `notes` behind a progress bar; Ctrl-C says `interrupted` and exits 130."""
    from .clips import embed_notes
    from .match import default_matcher

    try:
        with progress_bar(len(notes), "embeddings", quiet, err) as advance:
            return embed_notes(lm, notes, clip_options, cache, default_matcher(), on_done=advance)
    except KeyboardInterrupt:
        say(interrupted)
        raise typer.Exit(130)
