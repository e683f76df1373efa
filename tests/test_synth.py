"""The synthetic data generator: contract-valid chat logs, decodable audio, honest ground truth."""

from __future__ import annotations

import json
import shutil
import subprocess
import wave
from pathlib import Path

import pytest

from benchmarks.synth import (
    CLASS_PHRASES,
    SynthConfig,
    closed_class_dataset,
    make_dataset,
    speak,
    spoken_form,
)

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None,
    reason="needs espeak-ng and ffmpeg",
)

ALL_FORMATS = ("wav", "ogg", "mp3", "m4a", "flac", "webm")
SMALL = SynthConfig(
    n_notes=12, seed=5, gold_fraction=0.5, missing_truth_fraction=0.17,
    noise_snr_db=(5.0, 20.0), noisy_fraction=0.5, telephone_fraction=0.25,
    formats=ALL_FORMATS, codes=0.3,
)
MAGIC = {  # how each container starts, to check every clip without one ffprobe per file
    "wav": (b"RIFF",), "ogg": (b"OggS",), "flac": (b"fLaC",), "webm": (b"\x1a\x45\xdf\xa3",),
    "mp3": (b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xe3"),
}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def probe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,sample_rate", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(out)["streams"][0]


def windows(events: list[dict], window: int) -> dict[str, list[str]]:
    """Candidate ids per voice note, computed straight from the contract's definition."""
    out = {}
    for i, ev in enumerate(events):
        if ev["type"] == "voice":
            out[ev["id"]] = [e["id"] for e in events[i + 1:] if e["type"] == "text"][:window]
    return out


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("small"), SMALL)


def test_chats_follow_the_contract(small):
    events = read_jsonl(small.chats)
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids))
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    voices = [e for e in events if e["type"] == "voice"]
    assert len(voices) == SMALL.n_notes
    for e in events:
        assert e["type"] in ("voice", "text")
        assert isinstance(e["from"], str) and e["ts"].endswith("Z")
        if e["type"] == "voice":
            assert (small.recordings / e["file"]).is_file()
            assert "/" not in e["file"]
        else:
            assert isinstance(e["text"], str) and e["text"].strip()


def test_truth_is_in_window_exactly_when_promised(small):
    events = read_jsonl(small.chats)
    truth = read_jsonl(small.truth)
    wins = windows(events, SMALL.window)
    assert len(truth) == SMALL.n_notes
    missing = [t for t in truth if not t["in_window"]]
    assert len(missing) == round(SMALL.missing_truth_fraction * SMALL.n_notes)
    typed = [t["typed_id"] for t in truth if t["typed_id"]]
    assert len(typed) == len(set(typed)), "a typed message answers one note only"
    text_of = {e["id"]: e["text"] for e in events if e["type"] == "text"}
    for t in truth:
        if t["in_window"]:
            assert t["label_id"] in wins[t["id"]]
            assert text_of[t["label_id"]] == t["text"]
            assert wins[t["id"]].index(t["label_id"]) + 1 == t["position"]
        else:
            assert t["label_id"] is None
            assert t["typed_id"] not in wins[t["id"]]


def test_windows_overlap_and_gold_share(small):
    events = read_jsonl(small.chats)
    wins = list(windows(events, SMALL.window).values())
    assert any(set(a) & set(b) for a, b in zip(wins, wins[1:]))
    truth = {t["id"]: t for t in read_jsonl(small.truth)}
    gold = [e for e in events if e["type"] == "voice" and "label_id" in e]
    assert len(gold) == round(SMALL.gold_fraction * SMALL.n_notes)
    for e in gold:
        assert truth[e["id"]]["gold"] and e["label_id"] == truth[e["id"]]["label_id"]


def test_manifest_matches_chats(small):
    events = read_jsonl(small.chats)
    text_of = {e["id"]: e["text"] for e in events if e["type"] == "text"}
    wins = windows(events, SMALL.window)
    gold = {e["id"]: e["label_id"] for e in events if e["type"] == "voice" and "label_id" in e}
    for row in read_jsonl(small.manifest):
        assert (small.recordings / row["audio"]).is_file()
        assert row["candidates"] == [text_of[i] for i in wins[row["id"]]]
        if row["id"] in gold:
            assert row["label"] == text_of[gold[row["id"]]]
            assert row["candidates"].count(row["label"]) == 1
        else:
            assert "label" not in row


def test_every_clip_decodes_in_its_format(small):
    truth = read_jsonl(small.truth)
    files = [small.recordings / f"{t['id']}.{t['format']}" for t in truth]
    for t, f in zip(truth, files):
        head = f.read_bytes()[:12]
        if t["format"] == "m4a":
            assert head[4:8] == b"ftyp"
        else:
            assert head.startswith(MAGIC[t["format"]]), (f, head)
    # one ffmpeg run decodes them all (ffmpeg start-up is slow, so not one per file)
    args = ["ffmpeg", "-v", "error", "-nostdin"]
    for f in files:
        args += ["-i", str(f)]
    for k in range(len(files)):
        args += ["-map", f"{k}:a", "-f", "null", "-"]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    codec = {"ogg": "opus", "webm": "opus", "mp3": "mp3", "m4a": "aac", "flac": "flac", "wav": "pcm_s16le"}
    seen = {}
    for t, f in zip(truth, files):
        seen.setdefault(t["format"], f)
    for fmt, f in seen.items():
        assert probe(f)["codec_name"] == codec[fmt]


def test_same_seed_same_bytes(small, tmp_path):
    again = make_dataset(tmp_path / "again", SMALL)
    assert again.chats.read_bytes() == small.chats.read_bytes()
    assert again.manifest.read_bytes() == small.manifest.read_bytes()
    clips = sorted(small.recordings.iterdir())  # encoders run with +bitexact, so audio repeats too
    assert clips and all((again.recordings / f.name).read_bytes() == f.read_bytes() for f in clips)
    other = make_dataset(tmp_path / "other", SynthConfig(n_notes=12, seed=6))
    assert other.chats.read_bytes() != small.chats.read_bytes()


def test_telephone_clips_are_8k(tmp_path):
    info = make_dataset(tmp_path, SynthConfig(n_notes=4, seed=2, telephone_fraction=1.0,
                                              formats=("wav", "flac", "mp3")))
    for t in read_jsonl(info.truth):
        assert t["telephone"]
        assert probe(info.recordings / f"{t['id']}.{t['format']}")["sample_rate"] == "8000"


def test_codes_and_typed_style(tmp_path):
    info = make_dataset(tmp_path, SynthConfig(n_notes=12, seed=3, codes=1.0, gold_fraction=0.0))
    for t in read_jsonl(info.truth):
        assert t["kind"] == "code"
        assert any(ch.isdigit() for ch in t["text"])  # typed as digits...
        assert not any(ch.isdigit() for ch in t["spoken"])  # ...said as words
    assert not any("label_id" in e for e in read_jsonl(info.chats))


def test_closed_class_dataset(tmp_path):
    phrases = CLASS_PHRASES[:6]
    info = closed_class_dataset(tmp_path, n_per_class=2, seed=1, phrases=phrases)
    truth = read_jsonl(info.truth)
    assert len(truth) == 12
    assert sorted(t["class"] for t in truth) == sorted(phrases * 2)
    assert all(t["voice"] and t["class_index"] == phrases.index(t["class"]) for t in truth)
    wins = windows(read_jsonl(info.chats), 10)
    assert all(t["label_id"] in wins[t["id"]] for t in truth)


def test_spoken_form_spells_numbers():
    assert spoken_form("see you at 5") == "see you at five"
    assert spoken_form("the train gets in at 5:30pm") == "the train gets in at five thirty p m"
    assert spoken_form("it costs $25") == "it costs twenty five dollars"
    assert spoken_form("rent is due on the 21st") == "rent is due on the twenty first"
    assert spoken_form("at 7:05") == "at seven oh five"


def test_speak_writes_a_wav(tmp_path):
    out = tmp_path / "hi.wav"
    speak("hello there", out, voice="en-us+f2", speed=160)
    with wave.open(str(out)) as w:
        assert w.getframerate() == 22050 and w.getnframes() > 2000


def test_bad_config_is_refused(tmp_path):
    with pytest.raises(ValueError):
        make_dataset(tmp_path, SynthConfig(formats=("aiff",)))
    with pytest.raises(ValueError):
        make_dataset(tmp_path, SynthConfig(gold_fraction=1.5))
