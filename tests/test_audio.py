"""disamb.audio: PyAV decodes like the ffmpeg CLI did, caps long files, and falls back."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
from scipy.io import wavfile

from disamb import audio
from tests.conftest import speak

FORMATS = {  # file name -> extra ffmpeg output options
    "clip.wav": [],
    "clip.ogg": ["-c:a", "libopus"],
    "clip.mp3": [],
    "clip.flac": [],
    "stereo48k.wav": ["-ac", "2", "-ar", "48000"],
}


def ffmpeg(*args) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("audio")
    src = speak("the meeting moved to thursday afternoon", d / "src.wav")
    for name, opts in FORMATS.items():
        ffmpeg("-i", src, *opts, d / name)
    t = np.arange(120 * 8000) / 8000  # two minutes of tone at 8 kHz
    wavfile.write(d / "long.wav", 8000, (3000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16))
    (d / "garbage.wav").write_text("this is not audio\n")
    ffmpeg("-f", "lavfi", "-i", "testsrc=d=0.5:s=32x32", "-c:v", "mpeg4", d / "video_only.mp4")
    return d


@pytest.fixture
def no_ffmpeg(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))


@pytest.mark.parametrize("name", list(FORMATS))
def test_pyav_matches_the_ffmpeg_cli(clips, name):
    with open(clips / name, "rb") as f, open(clips / name, "rb") as g:
        a = audio._decode_pyav(f, None)
        b = audio._decode_cli(g, None)
    assert a.error is None and b.error is None
    assert a.audio.dtype == np.float32 and b.audio.std() > 0.01  # real speech, not silence
    assert len(a.audio) == len(b.audio)
    assert np.abs(a.audio - b.audio).max() <= 4 / 32768  # a few s16 steps of rounding


@pytest.mark.parametrize("name", list(FORMATS))
def test_decode_needs_no_ffmpeg_cli_when_pyav_reads_the_file(clips, name, no_ffmpeg):
    d = audio.decode(clips / name, 30.0)
    assert d.error is None and abs(d.seconds - audio.decode(clips / "clip.wav").seconds) < 0.01


def test_max_duration_stops_reading_early(clips, monkeypatch):
    fed = []  # seconds of audio handed to the resampler
    real = av.AudioResampler

    def counting(**kw):
        inner = real(**kw)

        def resample(frame):
            if frame is not None:
                fed.append(frame.samples / frame.sample_rate)
            return inner.resample(frame)

        return SimpleNamespace(resample=resample)

    monkeypatch.setattr(av, "AudioResampler", counting)
    d = audio.decode(clips / "long.wav", 5.0)
    assert d.audio is None and d.error == "longer than --max-duration 5 s"
    assert 6.0 < sum(fed) < 7.0  # the limit plus the margin, not the whole 120 s
    fed.clear()
    d = audio.decode(clips / "long.wav", 200.0)
    assert d.error is None and abs(d.seconds - 120.0) < 0.01 and abs(sum(fed) - 120.0) < 0.01


def test_falls_back_to_the_cli_when_pyav_fails(clips, monkeypatch):
    calls = []

    def broken(f, max_seconds, *stop):
        raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input", "x")

    def cli(f, max_seconds, *stop):
        calls.append(f.name)
        return real_cli(f, max_seconds)

    real_cli = audio._decode_cli
    monkeypatch.setattr(audio, "_decode_pyav", broken)
    monkeypatch.setattr(audio, "_decode_cli", cli)
    d = audio.decode(clips / "clip.ogg", 30.0)
    assert len(calls) == 1  # the handle decode opened, not a second open of the path
    assert d.error is None
    with open(clips / "clip.ogg", "rb") as f:
        assert np.array_equal(d.audio, real_cli(f, None).audio)


def test_without_pyav_the_cli_decodes(clips, monkeypatch):
    monkeypatch.setattr(audio, "av", None)
    d = audio.decode(clips / "clip.mp3")
    assert d.error is None and d.seconds > 1.5


def test_garbage_is_a_one_line_error(clips):
    d = audio.decode(clips / "garbage.wav", 30.0)
    assert d.audio is None and d.error.startswith("cannot decode audio: ")
    assert "\n" not in d.error and "garbage" not in d.error  # the caller names the file
    with pytest.raises(av.FFmpegError), open(clips / "garbage.wav", "rb") as f:  # the message above came from the CLI
        audio._decode_pyav(f, 30.0)


def test_garbage_without_ffmpeg_cli_is_still_a_value(clips, no_ffmpeg):
    d = audio.decode(clips / "garbage.wav", 30.0)
    assert d.error == "cannot decode audio: Invalid data found when processing input"


def test_no_pyav_and_no_ffmpeg_cli_raises(clips, monkeypatch, no_ffmpeg):
    monkeypatch.setattr(audio, "av", None)
    with pytest.raises(audio.FfmpegMissingError):
        audio.decode(clips / "clip.wav")


def test_no_audio_stream(clips):
    d = audio.decode(clips / "video_only.mp4", 30.0)
    assert d.error == "cannot decode audio: no audio stream or zero samples"
