"""Decode any audio ffmpeg reads to 16 kHz mono float32.

PyAV decodes in-process (about 10x less CPU per short clip than starting ffmpeg); the
ffmpeg CLI is the fallback for anything PyAV cannot read. Decoding failures come back as
values (`Decoded.error`), not exceptions, because one broken recording out of thousands
must not stop a run.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

try:
    import av
except ImportError:  # every file goes through the ffmpeg CLI
    av = None

SAMPLE_RATE = 16000
MIN_SECONDS = 0.1  # below this there is nothing Whisper can hear
# The most bytes a second of audio can take in any format people record in (192 kHz,
# 8 channels, 32-bit PCM), plus room for headers and cover art: a file larger than
# that for --max-duration is padding, and demuxers scan padding at only ~9 MB/s.
MAX_BYTES_PER_SECOND = 192_000 * 8 * 4
HEADER_BYTES = 16 << 20


class FfmpegMissingError(RuntimeError):
    """ffmpeg is not on PATH; nothing can be decoded."""


@dataclass
class Decoded:
    audio: np.ndarray | None  # float32 samples at 16 kHz, mono
    error: str | None = None

    @property
    def seconds(self) -> float:
        return 0.0 if self.audio is None else len(self.audio) / SAMPLE_RATE


class AudioOpenError(Exception):
    """The recording cannot be opened safely (a link, not a regular file, too large);
    the message is the one-line reason."""


def require_ffmpeg() -> None:
    if shutil.which("ffmpeg") is None:
        raise FfmpegMissingError("ffmpeg is not installed (apt-get install ffmpeg)")


def byte_limit(max_seconds: float | None) -> int | None:
    """The largest file that can hold `max_seconds` of audio in any format we accept."""
    return None if max_seconds is None else int(max_seconds * MAX_BYTES_PER_SECOND) + HEADER_BYTES


def open_audio(path: Path, max_seconds: float | None = None) -> BinaryIO:
    """Open a checked recording exactly once, for hashing and decoding from the handle.

    `path` is the resolved path the chat reader checked. Every component is opened
    without following links and the last one without blocking, so a file swapped for
    a link out of the folder, or for a FIFO, after the check is refused, not read or
    waited on. Files too large for `max_seconds` are refused before any byte is read.
    """
    path = Path(path).absolute()
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    folder_flags = flags | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_PATH", 0)
    fd = os.open(path.anchor, folder_flags)
    try:
        for part in path.parts[1:-1]:
            parent, fd = fd, -1  # _open_at closes the parent whatever happens
            fd = _open_at(part, folder_flags, parent)
        parent, fd = fd, -1
        fd = _open_at(path.name, flags | getattr(os, "O_NONBLOCK", 0), parent)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise AudioOpenError("cannot read audio: not a regular file (replaced after the check)")
        limit = byte_limit(max_seconds)
        if limit is not None and info.st_size > limit:
            raise AudioOpenError(
                f"file of {info.st_size / 1e6:.0f} MB is too large for --max-duration {max_seconds:g} s"
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise


def _open_at(name: str, flags: int, folder_fd: int) -> int:
    """Open `name` inside `folder_fd` and close the folder; errors as AudioOpenError."""
    try:
        return os.open(name, flags, dir_fd=folder_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):  # what O_NOFOLLOW says about a link
            reason = "a link where a file was checked (replaced after the check)"
        else:
            reason = e.strerror or str(e)
        raise AudioOpenError(f"cannot read audio: {reason}") from None
    finally:
        os.close(folder_fd)


def decode(path: Path, max_seconds: float | None = None) -> Decoded:
    """Decode `path` to 16 kHz mono, opened once with `open_audio`."""
    try:
        f = open_audio(path, max_seconds)
    except AudioOpenError as e:
        return Decoded(None, str(e))
    with f:
        return decode_file(f, max_seconds)


def decode_file(f: BinaryIO, max_seconds: float | None = None, stop: threading.Event | None = None) -> Decoded:
    """Decode an open recording to 16 kHz mono; stop reading after `max_seconds` + a margin.

    Capping the read keeps a 3-hour file named `.ogg` from filling memory: we only need
    to know it is longer than the limit. The bytes read are capped too (`byte_limit`),
    because a demuxer may scan gigabytes of padding without producing a sample. Setting
    `stop` aborts the decode within a fraction of a second (an interrupted run).
    """
    f.seek(0)
    if av is None:
        return _decode_cli(f, max_seconds, stop)
    reader = _CappedReader(f, max_seconds, stop)
    try:
        decoded = _decode_pyav(reader, max_seconds)
    except Exception as e:  # noqa: BLE001 - whatever PyAV trips on, the ffmpeg CLI gets a try
        if reader.ended:
            return Decoded(None, reader.ended)
        reason = _pyav_reason(e)
    else:
        return Decoded(None, reader.ended) if reader.ended else decoded
    try:
        f.seek(0)
        return _decode_cli(f, max_seconds, stop)
    except FfmpegMissingError:  # PyAV decodes the other files; this one fails alone
        return Decoded(None, f"cannot decode audio: {reason}")


class _CappedReader:
    """The file as PyAV reads it: counts the bytes handed out and ends the decode at the
    cap, or as soon as `stop` is set, by answering end-of-file and saying why in `ended`.

    Not by raising: an exception raised inside PyAV's read callback is printed to stderr
    with its traceback ("PyAV library exception being dropped"), which an interrupted
    run showed its user (tests/test_interrupt.py, 1 run in 12)."""

    def __init__(self, f: BinaryIO, max_seconds: float | None, stop: threading.Event | None = None) -> None:
        limit = byte_limit(max_seconds)
        self.f, self.limit, self.stop, self.read_bytes = f, limit, stop, 0
        self.max_seconds = max_seconds
        self.ended: str | None = None  # why reading was cut short

    def read(self, n: int = -1) -> bytes:
        if self.ended is None and self.stop is not None and self.stop.is_set():
            self.ended = "decoding stopped"
        if self.ended is not None:
            return b""
        data = self.f.read(n)
        self.read_bytes += len(data)
        if self.limit is not None and self.read_bytes > self.limit:
            self.ended = (f"cannot decode audio: read more than the {self.limit} bytes any format "
                          f"takes for --max-duration {self.max_seconds:g} s")
            return b""
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.f.seek(offset, whence)

    def tell(self) -> int:
        return self.f.tell()


def _decode_pyav(f: _CappedReader, max_seconds: float | None) -> Decoded:
    """First audio stream, resampled like the CLI path (s16, then /32768). Raises on failure."""
    limit = None if max_seconds is None else (max_seconds + 1.0) * SAMPLE_RATE
    chunks: list[np.ndarray] = []
    n = 0
    with av.open(f, metadata_errors="replace") as container:
        if not container.streams.audio:
            return _checked(np.zeros(0, np.int16), max_seconds)
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        for frame in container.decode(container.streams.audio[0]):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
                n += out.samples
            if limit is not None and n > limit:
                break
        else:  # read to the end: flush what the resampler holds back
            chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return _checked(np.concatenate(chunks) if chunks else np.zeros(0, np.int16), max_seconds)


def _decode_cli(f: BinaryIO, max_seconds: float | None, stop: threading.Event | None = None) -> Decoded:
    """One ffmpeg process per clip, reading the handle we opened (through /dev/fd, which
    keeps it seekable); raises FfmpegMissingError if ffmpeg is not on PATH."""
    source = f"/dev/fd/{f.fileno()}"
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "0"]
    cmd += ["-i", f"file:{source}"]
    if max_seconds is not None:
        cmd += ["-t", f"{max_seconds + 1.0:.3f}"]
    cmd += ["-f", "s16le", "-ac", "1", "-acodec", "pcm_s16le", "-ar", str(SAMPLE_RATE), "-"]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                pass_fds=(f.fileno(),))
    except FileNotFoundError as e:
        raise FfmpegMissingError("ffmpeg is not installed (apt-get install ffmpeg)") from e
    deadline = time.monotonic() + 600
    while True:
        try:
            out, err = proc.communicate(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            stopped = stop is not None and stop.is_set()
            if stopped or time.monotonic() > deadline:
                proc.kill()
                proc.communicate()
                return Decoded(None, "decoding stopped" if stopped else "decoding took longer than 10 minutes")
    if proc.returncode != 0:
        reason = _first_line(err).replace(f"file:{source}: ", "").replace(source + ": ", "")
        return Decoded(None, f"cannot decode audio: {reason}")
    return _checked(np.frombuffer(out[: len(out) // 2 * 2], np.int16), max_seconds)


def _checked(samples: np.ndarray, max_seconds: float | None) -> Decoded:
    """int16 samples -> float32, or the error both decoders share."""
    if len(samples) == 0:
        return Decoded(None, "cannot decode audio: no audio stream or zero samples")
    audio = samples.astype(np.float32) / 32768.0
    if max_seconds is not None and len(audio) > max_seconds * SAMPLE_RATE:
        return Decoded(None, f"longer than --max-duration {max_seconds:g} s")
    if len(audio) < MIN_SECONDS * SAMPLE_RATE:
        return Decoded(None, f"too short to hold speech ({len(audio) / SAMPLE_RATE:.2f} s)")
    return Decoded(audio)


def content_hash(path: Path) -> str:
    """sha256 of the file's bytes: the cache key survives renames and moves."""
    with open_audio(path) as f:
        return file_hash(f)


def file_hash(f: BinaryIO) -> str:
    """sha256 of an open file's bytes, from its start."""
    f.seek(0)
    h = hashlib.sha256()
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


def _pyav_reason(e: Exception) -> str:
    """One line without the file name: the caller names the file already."""
    reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return " ".join(reason.split())[:200]
