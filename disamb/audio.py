"""Decode any audio ffmpeg reads to 16 kHz mono float32.

Decoding failures come back as values (`Decoded.error`), not exceptions, because one
broken recording out of thousands must not stop a run.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
MIN_SECONDS = 0.1  # below this there is nothing Whisper can hear


class FfmpegMissingError(RuntimeError):
    """ffmpeg is not on PATH; nothing can be decoded."""


@dataclass
class Decoded:
    audio: np.ndarray | None  # float32 samples at 16 kHz, mono
    error: str | None = None

    @property
    def seconds(self) -> float:
        return 0.0 if self.audio is None else len(self.audio) / SAMPLE_RATE


def require_ffmpeg() -> None:
    if shutil.which("ffmpeg") is None:
        raise FfmpegMissingError("ffmpeg is not installed (apt-get install ffmpeg)")


def decode(path: Path, max_seconds: float | None = None) -> Decoded:
    """Decode `path` to 16 kHz mono; stop reading after `max_seconds` + a margin.

    Capping the read keeps a 3-hour file named `.ogg` from filling memory: we only need
    to know it is longer than the limit.
    """
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "0"]
    cmd += ["-i", str(Path(path).absolute())]
    if max_seconds is not None:
        cmd += ["-t", f"{max_seconds + 1.0:.3f}"]
    cmd += ["-f", "s16le", "-ac", "1", "-acodec", "pcm_s16le", "-ar", str(SAMPLE_RATE), "-"]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=600, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return Decoded(None, "decoding took longer than 10 minutes")
    except FileNotFoundError as e:
        raise FfmpegMissingError("ffmpeg is not installed (apt-get install ffmpeg)") from e
    if proc.returncode != 0:
        reason = _first_line(proc.stderr).replace(str(Path(path).absolute()) + ": ", "")
        return Decoded(None, f"cannot decode audio: {reason}")
    if len(proc.stdout) < 2:
        return Decoded(None, "cannot decode audio: no audio stream or zero samples")
    samples = np.frombuffer(proc.stdout[: len(proc.stdout) // 2 * 2], np.int16)
    audio = samples.astype(np.float32) / 32768.0
    if max_seconds is not None and len(audio) > max_seconds * SAMPLE_RATE:
        return Decoded(None, f"longer than --max-duration {max_seconds:g} s")
    if len(audio) < MIN_SECONDS * SAMPLE_RATE:
        return Decoded(None, f"too short to hold speech ({len(audio) / SAMPLE_RATE:.2f} s)")
    return Decoded(audio)


def content_hash(path: Path) -> str:
    """sha256 of the file's bytes: the cache key survives renames and moves."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _first_line(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace").strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "ffmpeg failed with no message"
    # ffmpeg repeats the input path in its messages; the caller names the file already
    return lines[-1][:200]
