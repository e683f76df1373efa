"""Shared fixtures: the bundled model (converted once per session) and espeak-ng clips."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


def skip_unless_ci(reason: str) -> None:
    """Skip for a missing tool, except under CI (`DISAMB_REQUIRE_TOOLS=1`, set by .ci/run),
    where .ci/install should have installed it: there the test fails instead."""
    if os.environ.get("DISAMB_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{reason} (DISAMB_REQUIRE_TOOLS=1: CI must run this test)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


@pytest.fixture(scope="session")
def tiny_model():
    from disamb.models import load_model

    return load_model("tiny.en", "cpu")  # int8 weights, the CPU default


@pytest.fixture(scope="session")
def tiny_model_f32():
    """The same weights in float32, where batched and one-by-one passes agree exactly."""
    from disamb.models import load_model

    return load_model("tiny.en", "cpu", compute="float32")


def default_sigint() -> None:
    """preexec_fn for a child that is sent SIGINT: give it the default disposition.

    A shell without job control starts background commands (`bash .ci/run &`, nohup)
    with SIGINT ignored, children inherit that, and Python then never raises
    KeyboardInterrupt: the interrupt tests would test the launcher, not disamb.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


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
