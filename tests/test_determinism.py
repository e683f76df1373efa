"""Every number that reaches the matcher is independent of batch composition (issue 19):
a text's prior and a clip's scores are the same bits whichever notes were computed
with them, so a resumed run, a Ray run and a fresh run write the same labels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from disamb.chats import Candidate, VoiceNote
from disamb.clips import text_priors
from tests.conftest import speak

ROOT = Path(__file__).resolve().parents[1]
SAID = ["see you at five", "pick up some milk", "the code is four one seven", "dinner is ready"]
TYPED = ["see u at 5", "milk pls", "code 417", "dinner ready", "call when u land", "10 min late", "ok", "👍",
         "see you at nine", "pick up some bread"]


def note(i: int, texts: list[str]) -> VoiceNote:
    return VoiceNote(f"n{i}", "x.wav", Path("x.wav"), [Candidate(f"m{i}_{j}", t) for j, t in enumerate(texts)])


def test_a_texts_prior_is_the_same_whatever_notes_asked_for_it(tiny_model):
    with torch.inference_mode():
        alone = {}  # priors are keyed by spoken rendering ("see u at 5" -> "see you at five", ...)
        for t in TYPED[:4]:
            alone.update(text_priors(tiny_model, [note(0, [t])], None))
        together = text_priors(tiny_model, [note(1, TYPED), note(2, TYPED[::-1])], None)
        other_order = text_priors(tiny_model, [note(3, TYPED[::-1] + ["a much longer message than the rest"])], None)
    assert len(alone) >= 4
    for t, prior in alone.items():
        assert together[t] == prior and other_order[t] == prior  # bit for bit


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "disamb.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=900, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def write_chat(path: Path, n: int) -> None:
    lines = []
    for i, said in enumerate(SAID[:n]):
        lines.append({"id": f"v{i}", "type": "voice", "file": f"v{i}.wav"})
        lines += [{"id": f"t{i}_{j}", "type": "text", "text": t} for j, t in enumerate([TYPED[i], TYPED[6 + i % 4]])]
    path.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in lines), "utf-8")


@pytest.mark.slow
def test_a_run_from_a_half_filled_cache_writes_the_same_bytes(tmp_path):
    rec = tmp_path / "rec"
    rec.mkdir()
    for i, said in enumerate(SAID):
        speak(said, rec / f"v{i}.wav", speed=160 + 10 * i)
    write_chat(tmp_path / "all.jsonl", len(SAID))
    write_chat(tmp_path / "half.jsonl", len(SAID) // 2)
    common = ["--window", 2, "--batch-size", 2, "--no-refit", "-q", "--json"]  # windows: the note's own texts
    r = cli("label", rec, tmp_path / "all.jsonl", "-o", tmp_path / "clean.jsonl", "--cache-dir", tmp_path / "c1", *common)
    assert r.returncode == 0, r.stderr
    r = cli("label", rec, tmp_path / "half.jsonl", "-o", tmp_path / "half_out.jsonl", "--cache-dir", tmp_path / "c2",
            *common)
    assert r.returncode == 0, r.stderr
    r = cli("label", rec, tmp_path / "all.jsonl", "-o", tmp_path / "resumed.jsonl", "--cache-dir", tmp_path / "c2",
            *common)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["clips_cached"] == len(SAID) // 2
    assert (tmp_path / "resumed.jsonl").read_bytes() == (tmp_path / "clean.jsonl").read_bytes()
