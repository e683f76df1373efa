"""`disamb label` end to end through the CLI on generated speech."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import speak

SAID = [
    ("v1", "see you at five at the gym", "m2", "en-us", 150, "wav"),
    ("v2", "can you pick up some milk on the way home", "m5", "en-us+f3", 165, "ogg"),
    ("v3", "the meeting moved to thursday afternoon", "m8", "en-gb", 140, "mp3"),
    ("v4", "happy birthday, have a wonderful day", "m10", "en-us+m3", 175, "flac"),
]

CHATS = [
    {"id": "v1", "type": "voice", "file": "v1.wav", "ts": "2024-05-01T10:00:00Z", "label_id": "m2"},
    {"id": "m1", "type": "text", "text": "see u at 6 then", "ts": "2024-05-01T10:00:05Z"},
    {"id": "m2", "type": "text", "text": "see u at 5 at the gym 😀", "ts": "2024-05-01T10:00:09Z"},
    {"id": "v2", "type": "voice", "file": "v2.ogg", "ts": "2024-05-01T10:01:00Z", "label_id": "m5"},
    {"id": "m3", "type": "text", "text": "can u pick up the kids", "ts": "2024-05-01T10:01:04Z"},
    {"id": "m4", "type": "text", "text": "on my way home", "ts": "2024-05-01T10:01:06Z"},
    {"id": "m5", "type": "text", "text": "can u pick up sum milk on the way home pls", "ts": "2024-05-01T10:01:09Z"},
    {"id": "broken", "type": "voice", "file": "broken.wav", "ts": "2024-05-01T10:01:30Z"},
    {"id": "v3", "type": "voice", "file": "v3.mp3", "ts": "2024-05-01T10:02:00Z"},
    {"id": "m6", "type": "text", "text": "meeting moved to friday", "ts": "2024-05-01T10:02:04Z"},
    {"id": "m7", "type": "text", "text": "lunch on thursday?", "ts": "2024-05-01T10:02:06Z"},
    {"id": "m8", "type": "text", "text": "the meeting moved to thurs afternoon", "ts": "2024-05-01T10:02:10Z"},
    {"id": "v4", "type": "voice", "file": "v4.flac", "ts": "2024-05-01T10:03:00Z", "label": "Happy bday!! have a wonderful day"},
    {"id": "m9", "type": "text", "text": "happy anniversary", "ts": "2024-05-01T10:03:02Z"},
    {"id": "m10", "type": "text", "text": "happy bday!! have a wonderful day", "ts": "2024-05-01T10:03:05Z"},
    {"id": "m11", "type": "text", "text": "have a wonderful trip", "ts": "2024-05-01T10:03:09Z"},
]


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("label")
    rec = d / "recordings"
    rec.mkdir()
    for note_id, text, _truth, voice, speed, fmt in SAID:
        speak(text, rec / f"{note_id}.{fmt}", voice=voice, speed=speed)
    (rec / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt this is not audio")
    lines = [json.dumps(o, ensure_ascii=False) for o in CHATS]
    lines.insert(5, "{this is not json")
    (d / "chats.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


def run_cli(*args, cwd=None):
    env = dict(os.environ, COLUMNS="120")
    return subprocess.run(
        [sys.executable, "-m", "disamb.cli", *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd
    )


def test_label_end_to_end(chat_dir, tmp_path):
    out = tmp_path / "labels.jsonl"
    cache = tmp_path / "cache"
    r = run_cli("label", chat_dir / "recordings", chat_dir / "chats.jsonl", "-o", out, "--cache-dir", cache, "--json", "-q")
    assert r.returncode == 1, r.stderr  # one broken clip and one bad line were reported
    summary = json.loads(r.stdout)
    assert summary["notes"] == 5 and summary["errors"] == 1 and summary["skipped_lines"] == 1
    assert summary["gold"] == 3 and summary["gold_accuracy"] == 1.0
    assert "chats.jsonl:6: not valid JSON" in r.stderr
    assert "broken.wav" in r.stderr and "cannot decode audio" in r.stderr

    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["id"] for x in recs] == ["v1", "v2", "broken", "v3", "v4"]
    want = {s[0]: s[2] for s in SAID}
    for x in recs:
        assert set(x) >= {"id", "file", "transcript", "candidates", "label_id", "label", "confidence", "accepted", "gold_label_id"}
        if x["id"] == "broken":
            assert x["label_id"] is None and x["error"].startswith("cannot decode audio")
            continue
        assert x["label_id"] == want[x["id"]], x
        assert 0.0 <= x["confidence"] <= 1.0
        probs = [c["prob"] for c in x["candidates"]] + [x["prob_none"]]
        assert abs(sum(probs) - 1.0) < 1e-3
        assert x["label"] == next(c["text"] for c in x["candidates"] if c["id"] == x["label_id"])
        assert set(x["candidates"][0]["features"]) >= {"lik_per_char", "cer", "token_set"}
    assert recs[0]["gold_label_id"] == "m2"
    assert recs[4]["gold_label_id"] == "m10"  # gold given as text, matched to its candidate

    # rerun: everything comes from the cache, same labels
    r2 = run_cli("label", chat_dir / "recordings", chat_dir / "chats.jsonl", "-o", tmp_path / "again.jsonl", "--cache-dir", cache, "--json", "-q")
    assert r2.returncode == 1
    again = [json.loads(line) for line in (tmp_path / "again.jsonl").read_text().splitlines()]
    assert [x["label_id"] for x in again] == [x["label_id"] for x in recs]
    entries = list(cache.rglob("*.json"))
    assert len(entries) == 4
    stamps = {p: p.stat().st_mtime_ns for p in entries}
    r3 = run_cli("label", chat_dir / "recordings", chat_dir / "chats.jsonl", "-o", tmp_path / "third.jsonl", "--cache-dir", cache, "-q")
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # nothing recomputed
    assert "accuracy on gold" in r3.stdout


def test_unreadable_inputs_exit_2(chat_dir, tmp_path):
    r = run_cli("label", chat_dir / "nope", chat_dir / "chats.jsonl", "-o", tmp_path / "x.jsonl")
    assert r.returncode == 2 and "not a folder" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("label", chat_dir / "recordings", chat_dir / "missing.jsonl", "-o", tmp_path / "x.jsonl")
    assert r.returncode == 2 and "missing.jsonl" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("label", chat_dir / "recordings", chat_dir / "chats.jsonl", "-o", tmp_path / "no" / "x.jsonl")
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = run_cli("label", chat_dir / "recordings", chat_dir / "chats.jsonl", "--model", "nonsense-model")
    assert r.returncode == 2 and "nonsense-model" in r.stderr and "Traceback" not in r.stderr


def test_score_mode_skips_sure_transcripts_and_keeps_the_labels(chat_dir, tmp_path):
    """--mode score: clips the shipped matcher is already sure of are not transcribed."""
    labels = {}
    for mode in ("full", "score"):
        out = tmp_path / f"{mode}.jsonl"
        proc = run_cli("label", chat_dir / "recordings", chat_dir / "chats.jsonl", "-o", out, "--mode", mode,
                       "--no-cache", "-q", "--json")
        assert proc.returncode == 1, proc.stderr  # the broken clip and the bad line, as always
        labels[mode] = {r["id"]: r for r in map(json.loads, out.read_text("utf-8").splitlines())}
    spoken = [note_id for note_id, *_ in SAID]
    skipped = [i for i in spoken if labels["score"][i]["transcript"] is None]
    assert skipped  # at least one clear clip was decided without a transcript
    assert all(labels["full"][i]["transcript"] for i in spoken)
    for note_id, _text, truth, *_ in SAID:
        assert labels["score"][note_id]["label_id"] == labels["full"][note_id]["label_id"] == truth
