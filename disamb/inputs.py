"""What every reader of user files shares: per-line and whole-file errors, text bytes, safe audio paths.

A chat log or manifest is untrusted: a bad line must cost that line only (`LineError`),
a file that cannot be used at all raises `InputFileError` with a one-line reason, and an
audio path from it is checked against the recordings folder before anything opens it.
chats.py, exports.py and every reader of labels.jsonl build on this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AUDIO_TYPES = {
    ".wav": "audio/wav",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".mp4": "audio/mp4",
    ".aac": "audio/aac",
    ".flac": "audio/flac",
    ".webm": "audio/webm",
    ".amr": "audio/amr",
}
"""The one table of audio file endings disamb recognises, with the media type a browser
needs to play each (mimetypes does not know them all). Any format ffmpeg decodes is read
when a chat names it; this table is for finding recordings without one. The review server
serves audio only with these types (anything else as application/octet-stream), so a
recording named .html or .svg never becomes a page on the review page's origin."""

AUDIO_EXTENSIONS = frozenset(AUDIO_TYPES)


@dataclass
class LineError:
    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


class InputFileError(Exception):
    """The whole input file cannot be used (missing, a directory, not text, no valid record)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class AudioPathError(Exception):
    """An audio path from the input cannot be used; the message is the one-line reason."""


class UnsafePathError(AudioPathError):
    """The path would lead outside the recordings folder (absolute, `..`, or a link)."""


class MissingAudioError(AudioPathError):
    """The path is safe but there is no audio file there."""


def _show(value: Any, limit: int = 60) -> str:
    """Quote a value for an error message, cut short so one line stays one line."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"



# ---------------------------------------------------------------- audio paths


def resolve_audio(recordings: Path, rel: str) -> Path:
    """Resolve `rel` inside `recordings`, refusing anything that escapes it.

    Only path metadata is inspected (resolve/stat); the file is never opened, so a
    refused path cannot have side effects such as blocking on a FIFO.
    """
    if not rel:
        raise UnsafePathError("audio path is empty")
    if "\x00" in rel:
        raise UnsafePathError(f"audio path contains a NUL character: {_show(rel)}")
    rel_path = Path(rel)
    if rel_path.is_absolute() or rel.startswith(("/", "\\")):
        raise UnsafePathError(f"audio path is absolute (must be relative to the recordings folder): {rel}")
    if ".." in rel_path.parts:
        raise UnsafePathError(f"audio path leaves the recordings folder: {rel}")
    try:
        root = Path(recordings).resolve()
        target = (root / rel_path).resolve()
    except (OSError, RuntimeError) as exc:  # link loops, over-long names
        raise UnsafePathError(f"audio path cannot be resolved ({exc.__class__.__name__}): {rel}") from None
    if not target.is_relative_to(root):
        raise UnsafePathError(f"audio path leaves the recordings folder through a link: {rel}")
    try:
        exists = target.exists()
        is_file = target.is_file()
    except OSError:
        exists = is_file = False
    if not exists:
        raise MissingAudioError(f"audio file not found: {rel}")
    if not is_file:
        raise MissingAudioError(f"audio path is not a file: {rel}")
    return target


def read_text_bytes(path: Path) -> bytes:
    """The file's bytes without a UTF-8 BOM; InputFileError when it is missing or clearly not text.

    Shared by every reader so a wrong path gets the same one-line message everywhere.
    """
    shown = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputFileError(shown, "file not found") from None
    except IsADirectoryError:
        raise InputFileError(shown, "is a directory, not a file") from None
    except PermissionError:
        raise InputFileError(shown, "cannot read the file (permission denied)") from None
    except OSError as exc:
        raise InputFileError(shown, f"cannot read the file ({exc.strerror or exc})") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputFileError(shown, "file is UTF-16; save it as UTF-8")
    if b"\x00" in data:
        raise InputFileError(shown, "not a text file (contains NUL bytes)")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data
