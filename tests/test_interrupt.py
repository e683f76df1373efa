"""Never lose work (issue 7, part 2): interrupted runs, resuming from the cache, and an
output that cannot be written found out before the work starts, not after it."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import default_sigint, speak

ROOT = Path(__file__).resolve().parents[1]
PHRASES = [
    "see you at five", "pick up some milk", "the meeting moved to thursday", "happy birthday to you",
    "call me when you land", "the code is four one seven", "running ten minutes late", "dinner is ready",
]
N = len(PHRASES)
BATCH = 2
PREFETCH = max(4, 2 * BATCH)  # clips.run_clips decodes this many ahead


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "disamb.cli", *map(str, args)]


def run_cli(*args, timeout=600):
    return subprocess.run(cli(*args), capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env=dict(os.environ, COLUMNS="200"))


@pytest.fixture(scope="module")
def notes_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("interrupt")
    rec = d / "rec"
    rec.mkdir()
    lines = []
    for i, said in enumerate(PHRASES):
        speak(said, rec / f"v{i}.wav", speed=170)
        lines += [{"id": f"v{i}", "type": "voice", "file": f"v{i}.wav"},
                  {"id": f"t{i}", "type": "text", "text": said}, {"id": f"x{i}", "type": "text", "text": f"ok {i}"}]
    (d / "chats.jsonl").write_text("".join(json.dumps(o) + "\n" for o in lines))
    return d


def cache_entries(cache: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in cache.rglob("*.json")} if cache.exists() else {}


@pytest.mark.parametrize("sig,code,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "SIGTERM")])
def test_interrupted_run_keeps_old_output_and_resumes(notes_dir, tmp_path, sig, code, word):
    out = tmp_path / "labels.jsonl"
    out.write_text('{"previous": "run"}\n')
    cache = tmp_path / "cache"
    args = ("label", notes_dir / "rec", notes_dir / "chats.jsonl", "-o", out, "--cache-dir", cache,
            "--batch-size", BATCH, "-q", "--json")
    proc = subprocess.Popen(cli(*args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)
    try:
        deadline = time.monotonic() + 300
        while len(cache_entries(cache)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        at_signal = len(cache_entries(cache))
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert 2 <= at_signal < N
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and stdout == ""
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"{word}: stopped; previous output {out} is intact (nothing partial written); "), last
    assert last.endswith("clips computed in this run are cached, rerun the same command to resume")
    reported = int(last.split("); ")[1].split(" clips")[0])

    assert out.read_text() == '{"previous": "run"}\n'  # the previous output, untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    kept = cache_entries(cache)
    # no half entries (the priors live in SQLite, which commits or rolls back whole)
    assert [p for p in cache.rglob("*") if p.is_file() and p.suffix != ".json" and p.name != "priors.sqlite"] == []
    for p in kept:
        json.loads(p.read_text())
    # nothing cached was lost; at most the batch finishing while the signal was on its way was added
    assert at_signal <= len(kept) <= at_signal + BATCH
    assert reported == len(kept)

    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    # the rerun takes every finished clip from the cache and computes only the rest:
    # the work lost to the interrupt is at most the clips in flight (a batch + the prefetched ones)
    assert s["clips_cached"] == len(kept) and s["clips_computed"] == N - len(kept)
    lost = (at_signal + BATCH + PREFETCH) - len(kept)  # clips the interrupted run may have started
    assert 0 <= lost <= BATCH + PREFETCH
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # cached entries not redone
    assert len(cache_entries(cache)) == N
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["id"] for x in recs] == [f"v{i}" for i in range(N)]


def test_output_whose_folder_is_a_file_fails_before_any_work(notes_dir, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    # the chat file does not even exist: the output is checked first, before any reading or loading
    r = run_cli("label", notes_dir / "rec", tmp_path / "missing.jsonl", "-o", blocker / "labels.jsonl")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"error: {blocker / 'labels.jsonl'}: output folder {blocker} is not a folder"


@pytest.mark.parametrize("folder", ["/proc", "/sys"])
def test_read_only_output_folder_fails_before_any_work(notes_dir, tmp_path, folder):
    target = Path(folder) / "labels.jsonl"
    r = run_cli("label", notes_dir / "rec", tmp_path / "missing.jsonl", "-o", target)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    msg = r.stderr.strip()
    assert msg.startswith(f"error: {target}: cannot write to {folder} ("), msg
    assert len(msg.splitlines()) == 1


def test_output_that_is_a_folder(notes_dir, tmp_path):
    (tmp_path / "labels.jsonl").mkdir()
    r = run_cli("label", notes_dir / "rec", tmp_path / "missing.jsonl", "-o", tmp_path / "labels.jsonl")
    assert r.returncode == 2 and r.stderr.strip() == f"error: {tmp_path / 'labels.jsonl'}: is a folder, not a file"


def test_disk_full_at_the_end_is_one_line_and_keeps_the_old_output(notes_dir, tmp_path, monkeypatch):
    """The disk fills during the run: a clear error, the old output intact, the cache kept."""
    from typer.testing import CliRunner

    import disamb.label
    from disamb.cli import app

    def full(path, records):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(disamb.label, "write_labels", full)
    out = tmp_path / "labels.jsonl"
    out.write_text("old\n")
    chats = tmp_path / "two.jsonl"
    chats.write_text((notes_dir / "chats.jsonl").read_text().splitlines()[0] + "\n"
                     + "\n".join((notes_dir / "chats.jsonl").read_text().splitlines()[1:3]) + "\n")
    previous = signal.getsignal(signal.SIGTERM)
    try:
        r = CliRunner().invoke(app, ["label", str(notes_dir / "rec"), str(chats), "-o", str(out),
                                     "--cache-dir", str(tmp_path / "cache"), "-q"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert f"{out}: cannot write (No space left on device); the per-clip cache keeps the work" in r.output
    assert out.read_text() == "old\n"
    assert len(cache_entries(tmp_path / "cache")) == 1
