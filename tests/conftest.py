"""Shared fixtures: the bundled model (converted once per session) and espeak-ng clips."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model():
    from disamb.models import load_model

    return load_model("tiny.en", "cpu")  # int8 weights, the CPU default


@pytest.fixture(scope="session")
def tiny_model_f32():
    """The same weights in float32, where batched and one-by-one passes agree exactly."""
    from disamb.models import load_model

    return load_model("tiny.en", "cpu", compute="float32")


def speak(text: str, out: Path, voice: str = "en-us", speed: int = 150) -> Path:
    """Synthesise `text` with espeak-ng into `out` (wav, or any format ffmpeg writes)."""
    wav = out.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text], check=True)
    if out.suffix == ".wav":
        wav.rename(out)
    else:
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), str(out)], check=True
        )
        wav.unlink()
    return out
