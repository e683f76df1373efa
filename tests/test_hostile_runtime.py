"""Hostile inputs, round two (issue 19, classes 4 and 5): a recording swapped after its
path was checked, a sparse file with gigabytes of padding, and a decode stuck while
the user presses Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from disamb.cache import ClipCache
from disamb.chats import read_notes
from disamb.clips import ClipOptions, StageTimes, _prepare
from tests.conftest import default_sigint, speak

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def world(tmp_path):
    """A recordings folder with two notes, a wav outside it, and the notes already read
    (so their paths were checked): the tests then swap a file before the decode."""
    rec = tmp_path / "rec"
    rec.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    speak("see you at five", rec / "a.wav")
    speak("the secret is outside", outside / "secret.wav")
    (rec / "b.wav").write_bytes((rec / "a.wav").read_bytes())
    lines = [{"id": "va", "type": "voice", "file": "a.wav"}, {"id": "t1", "type": "text", "text": "see u at 5"},
             {"id": "vb", "type": "voice", "file": "b.wav"}, {"id": "t2", "type": "text", "text": "ok"}]
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps(o) + "\n" for o in lines))
    notes = read_notes(tmp_path / "chats.jsonl", rec).notes
    assert [n.id for n in notes] == ["va", "vb"]
    return SimpleNamespace(rec=rec, secret=outside / "secret.wav", notes=notes)


def prepared(notes, max_duration=120.0) -> dict:
    """What the per-clip stage made of each note before the model: error or samples."""
    lm = SimpleNamespace(key="test-model")
    preps = _prepare(notes, lm, ClipOptions(max_duration=max_duration), ClipCache(None), StageTimes())
    return {p.note.id: p for p in preps}


def in_thread(fn, timeout: float):
    """fn() in a daemon thread; None if it did not return in time (a hang)."""
    box = []
    t = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    t.start()
    t.join(timeout)
    return box[0] if box else None


def test_recording_swapped_for_a_link_out_of_the_folder_is_not_read(world):
    (world.rec / "a.wav").unlink()
    (world.rec / "a.wav").symlink_to(world.secret)  # after the check, before the decode
    preps = prepared(world.notes)
    assert preps["va"].decoded is None or preps["va"].decoded.audio is None
    assert preps["va"].error == "cannot read audio: a link where a file was checked (replaced after the check)"
    assert preps["vb"].error is None and preps["vb"].decoded.seconds > 0.5  # the others go on


def test_folder_swapped_for_a_link_out_of_the_recordings_is_not_read(world, tmp_path):
    sub = world.rec / "sub"
    sub.mkdir()
    (sub / "c.wav").write_bytes((world.rec / "a.wav").read_bytes())
    (tmp_path / "chats2.jsonl").write_text(json.dumps({"id": "vc", "type": "voice", "file": "sub/c.wav"}) + "\n"
                                           + json.dumps({"id": "t", "type": "text", "text": "hi"}) + "\n")
    notes = read_notes(tmp_path / "chats2.jsonl", world.rec).notes
    (sub / "c.wav").unlink()
    sub.rmdir()
    (tmp_path / "outside" / "c.wav").write_bytes(world.secret.read_bytes())
    sub.symlink_to(tmp_path / "outside")  # a parent component becomes a link
    assert prepared(notes)["vc"].error.startswith("cannot read audio: a link where a file was checked")


def test_recording_swapped_for_a_fifo_is_refused_without_hanging(world):
    fifo = world.rec / "a.wav"
    fifo.unlink()
    os.mkfifo(fifo)
    try:
        preps = in_thread(lambda: prepared(world.notes), timeout=30)
        assert preps is not None, "the run hung on a FIFO"
        assert preps["va"].error == "cannot read audio: not a regular file (replaced after the check)"
        assert preps["vb"].error is None
    finally:  # release a reader stuck in open() (the code before the fix)
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass


def test_review_style_decode_of_a_swapped_path_is_refused(world):
    from disamb.audio import decode

    (world.rec / "a.wav").unlink()
    (world.rec / "a.wav").symlink_to(world.secret)
    d = decode(world.notes[0].audio, 120.0)
    assert d.audio is None and d.error.startswith("cannot read audio: a link")


# ---------------------------------------------------------------- unbounded work


SPARSE = """
import sys, time
from pathlib import Path
from types import SimpleNamespace
from disamb.cache import ClipCache
from disamb.clips import ClipOptions, StageTimes, _prepare
from disamb.chats import VoiceNote
note = VoiceNote(id="v", file="big.wav", audio=Path(sys.argv[1]), candidates=[])
t0 = time.monotonic()
[p] = _prepare([note], SimpleNamespace(key="m"), ClipOptions(max_duration=120.0), ClipCache(None), StageTimes())
print(p.error)
print(time.monotonic() - t0)
"""


def test_sparse_file_with_a_huge_tail_is_refused_without_reading_it(world, tmp_path):
    big = world.rec / "big.wav"
    big.write_bytes((world.rec / "a.wav").read_bytes())
    with open(big, "r+b") as f:
        f.truncate(20 * 10**9)  # 20 GB of zeros after a valid wav: no disk used
    r = subprocess.run([sys.executable, "-c", SPARSE, str(big)], capture_output=True, text=True, cwd=ROOT,
                       timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr
    error, seconds = r.stdout.splitlines()
    assert error == "file of 20000 MB is too large for --max-duration 120 s"
    assert float(seconds) < 5


def test_byte_limit_follows_max_duration():
    from disamb.audio import byte_limit

    assert byte_limit(None) is None
    assert byte_limit(120) > 120 * 192_000 * 8 * 2  # 192 kHz 8-channel 16-bit audio still fits
    assert byte_limit(120) < 10**9


def test_decode_stops_reading_at_the_byte_cap(world, monkeypatch):
    """A file that grows after it was opened (or a demuxer that keeps asking) is cut
    off at the cap, as an error value."""
    from disamb import audio

    monkeypatch.setattr(audio, "HEADER_BYTES", 1000)  # the cap: 1000 bytes + 6 kB for 1 ms
    with open(world.notes[0].audio, "rb") as f:  # opened without open_audio's size check
        d = audio.decode_file(f, 0.001)
    assert d.audio is None and d.error == (
        "cannot decode audio: read more than the 7144 bytes any format takes for --max-duration 0.001 s")


SLOW_DECODE = """
import itertools, sys, threading, time
import disamb.audio as audio
real = audio._decode_pyav
count = itertools.count()
def slow(*args):
    if next(count) >= 2:  # the first two clips decode, the rest hang like a stuck file
        time.sleep(600)
    return real(*args)
audio._decode_pyav = slow
from disamb.cli import app
sys.argv = ["disamb"] + sys.argv[1:]
app()
"""


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_during_a_stuck_decode_stops_within_seconds(tmp_path, sig, code):
    rec = tmp_path / "rec"
    rec.mkdir()
    lines = []
    for i, said in enumerate(["see you at five", "pick up some milk", "dinner is ready", "call me"]):
        speak(said, rec / f"v{i}.wav")
        lines += [{"id": f"v{i}", "type": "voice", "file": f"v{i}.wav"}, {"id": f"t{i}", "type": "text", "text": said}]
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps(o) + "\n" for o in lines))
    cache = tmp_path / "cache"
    args = ["label", str(rec), str(tmp_path / "chats.jsonl"), "-o", str(tmp_path / "labels.jsonl"),
            "--cache-dir", str(cache), "--batch-size", "1", "-q", "--json"]
    proc = subprocess.Popen([sys.executable, "-c", SLOW_DECODE, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            preexec_fn=default_sigint)
    try:
        deadline = time.monotonic() + 300
        while len(list(cache.rglob("*.json"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(1.0)  # the third decode is now stuck
        kept = sorted(cache.rglob("*.json"))
        assert len(kept) == 2
        t0 = time.monotonic()
        proc.send_signal(sig)
        try:
            _, stderr = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail("the run did not stop within 15 s of the signal")
        assert time.monotonic() - t0 < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert sorted(cache.rglob("*.json")) == kept  # the finished clips stay cached
    assert not (tmp_path / "labels.jsonl").exists()
