"""Hostile inputs through the real `disamb label` CLI (issue 7, part 1).

Each case asserts the exact outcome: the one-line message naming file and line, the
exit code, the other notes still labelled, and a valid labels.jsonl. The audio is made
once per module and the runs share a cache, so Whisper sees each clip about once.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from tests.conftest import speak

SR = 16000
WEIRD = "-x \"it's\" naïve 日本 ✓.wav"  # spaces, quotes, non-ASCII, leading dash
LONG_TEXT = ("so about the trip tomorrow i think we should leave early " * 90)[:5000]


def run_cli(*args, timeout=600):
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "disamb.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=Path(__file__).resolve().parents[1])


def ffmpeg(*args) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *map(str, args)], check=True)


def seconds_of(path: Path) -> float:
    rate, data = wavfile.read(path)
    return len(data) / rate


def make_audio(rec: Path) -> None:
    speak("see you at five at the gym", rec / "good.wav")
    speak("can you pick up some milk on the way home", rec / "milk.wav", voice="en-us+f3")
    speak("the meeting moved to thursday afternoon", rec / "meet.wav")
    speak("happy birthday have a wonderful day", rec / "bday.wav")
    (rec / "zero.wav").write_bytes(b"")
    ffmpeg("-i", rec / "milk.wav", "-c:a", "libopus", rec / "whole.ogg")
    data = (rec / "whole.ogg").read_bytes()
    (rec / "trunc.ogg").write_bytes(data[: len(data) // 2])
    (rec / "whole.ogg").unlink()
    (rec / "text.wav").write_text("this is not audio, just a text file\n")
    raw = bytearray((rec / "meet.wav").read_bytes())  # header claims ~2 GB, file holds 2.7 s
    i = raw.find(b"data")
    raw[4:8] = struct.pack("<I", 0x7FFFFFF0)
    raw[i + 4 : i + 8] = struct.pack("<I", 0x7FFFFF00)
    (rec / "liar.wav").write_bytes(bytes(raw))
    rng = np.random.default_rng(0)
    wavfile.write(rec / "blip.wav", SR, rng.normal(0, 3000, int(0.05 * SR)).astype(np.int16))
    t = np.arange(600 * 8000) / 8000  # ten minutes (8 kHz keeps the file at 9.6 MB)
    wavfile.write(rec / "long.wav", 8000, (3000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16))
    wavfile.write(rec / "silence.wav", SR, np.zeros(3 * SR, np.int16))
    wavfile.write(rec / "noise.wav", SR, rng.normal(0, 6000, 3 * SR).clip(-32000, 32000).astype(np.int16))
    t = np.arange(4 * SR) / SR
    chord = sum(np.sin(2 * np.pi * f * k * t) / k for f in (261.6, 329.6, 392.0, 523.3) for k in (1, 2, 3))
    chord *= 0.6 + 0.4 * np.sin(2 * np.pi * 2 * t)
    wavfile.write(rec / "music.wav", SR, (chord / np.abs(chord).max() * 12000).astype(np.int16))
    ffmpeg("-i", rec / "bday.wav", "-ac", "2", "-ar", "48000", rec / "stereo48k.wav")
    ffmpeg("-i", rec / "good.wav", "-ar", "8000", rec / "narrow8k.wav")
    ffmpeg("-i", rec / "milk.wav", rec / WEIRD)


# (note id, file, the text typed after it or None)
AUDIO = [
    ("good", "good.wav", "see u at 5 at the gym"),
    ("zero", "zero.wav", None),
    ("trunc", "trunc.ogg", "can u pick up some milk on the way home"),
    ("text", "text.wav", None),
    ("liar", "liar.wav", "the meeting moved to thurs afternoon"),
    ("blip", "blip.wav", None),
    ("long", "long.wav", None),
    ("silence", "silence.wav", None),
    ("noise", "noise.wav", None),
    ("music", "music.wav", None),
    ("stereo", "stereo48k.wav", "happy bday have a wonderful day"),
    ("narrow", "narrow8k.wav", "see you at five at the gym!"),
    ("weird", WEIRD, "pick up milk on the way home pls"),
]
FILLERS = ["ok", "lol sure", "where are you", "call me later", "did you eat", "nice one", "brb", "thanks!!"]


def audio_chats() -> tuple[list[dict], dict[str, int]]:
    lines, line_of, k = [], {}, 0
    for note_id, file, said in AUDIO:
        lines.append({"id": note_id, "type": "voice", "file": file})
        line_of[note_id] = len(lines)
        if said:
            lines.append({"id": f"{note_id}-t", "type": "text", "text": said})
        for _ in range(2):
            lines.append({"id": f"m{k}", "type": "text", "text": f"{FILLERS[k % len(FILLERS)]} {k}"})
            k += 1
    return lines, line_of


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    rec = d / "rec"
    rec.mkdir()
    make_audio(rec)
    outside = d / "outside"
    outside.mkdir()
    os.mkfifo(outside / "secret.wav")  # opening it would block: a refused path must never be opened
    (rec / "escape.wav").symlink_to(outside / "secret.wav")
    return d


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def no_leftovers(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


# ---------------------------------------------------------------- audio


@pytest.fixture(scope="module")
def audio_run(world):
    lines, line_of = audio_chats()
    chats = world / "chats_audio.jsonl"
    chats.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in lines), encoding="utf-8")
    out = world / "out_audio"
    out.mkdir()
    (out / "labels.jsonl").write_text("previous\n")
    r = run_cli("label", world / "rec", chats, "-o", out / "labels.jsonl", "--cache-dir", world / "cache",
                "--max-duration", "30", "-q", "--json")
    return r, chats, line_of, out


def test_audio_run_exit_code_summary_and_valid_output(audio_run):
    r, chats, line_of, out = audio_run
    assert "Traceback" not in r.stderr
    assert r.returncode == 1, r.stderr  # some notes failed, all reported
    summary = json.loads(r.stdout)
    assert summary["notes"] == len(AUDIO)
    assert summary["errors"] == 7  # zero, text, blip, long, silence, noise, music
    assert summary["labelled"] == len(AUDIO) - 7
    recs = read_jsonl(out / "labels.jsonl")  # replaced whole: every line is a record
    assert [x["id"] for x in recs] == [a[0] for a in AUDIO]
    assert no_leftovers(out)
    for x in recs:
        if x["label_id"] is None:
            assert x["error"] and x["accepted"] is False and x["confidence"] == 0.0
        else:
            probs = [c["prob"] for c in x["candidates"]] + [x["prob_none"]]
            assert abs(sum(probs) - 1) < 1e-3
            assert x["label"] == next(c["text"] for c in x["candidates"] if c["id"] == x["label_id"])
    # every stderr line is one line naming the chat file, the note's line and its file
    not_labelled = [ln for ln in r.stderr.splitlines() if ln.startswith("not labelled")]
    assert len(not_labelled) == 7


UNDECODABLE = {
    "zero": "cannot decode audio: ",
    "text": "cannot decode audio: ",
    "blip": "too short to hold speech (0.05 s)",
    "long": "longer than --max-duration 30 s",
    "silence": "no speech detected (no_speech_prob ",
    "noise": "no speech detected (no_speech_prob ",
    "music": "no speech detected (no_speech_prob ",
}


@pytest.mark.parametrize("note_id", list(UNDECODABLE))
def test_bad_audio_is_one_line_and_skipped(audio_run, note_id):
    r, chats, line_of, out = audio_run
    file = dict((a[0], a[1]) for a in AUDIO)[note_id]
    prefix = f"not labelled {chats}:{line_of[note_id]}: {file}: {UNDECODABLE[note_id]}"
    assert any(ln.startswith(prefix) for ln in r.stderr.splitlines()), r.stderr
    rec = next(x for x in read_jsonl(out / "labels.jsonl") if x["id"] == note_id)
    assert rec["label_id"] is None and rec["error"].startswith(UNDECODABLE[note_id])
    if note_id in ("silence", "noise", "music"):  # decoded and heard, but nothing to match
        assert rec["duration"] in (3.0, 4.0) and rec["transcript"] is not None


def test_good_clip_next_to_bad_ones_is_labelled(audio_run):
    recs = {x["id"]: x for x in read_jsonl(audio_run[3] / "labels.jsonl")}
    assert recs["good"]["label_id"] == "good-t" and recs["good"]["accepted"]
    assert recs["weird"]["label_id"] == "weird-t"  # the odd file name reached ffmpeg intact
    assert "milk" in recs["weird"]["transcript"].lower()


@pytest.mark.parametrize("note_id,source,words", [
    ("liar", "meet.wav", "meeting moved to thursday"),  # header claims 2 GB: decodes what is there
    ("stereo", "bday.wav", "birthday"),  # 48 kHz stereo: down-mixed and resampled, same length
    ("narrow", "good.wav", "see you"),  # 8 kHz: resampled, same length
])
def test_odd_formats_decode_to_the_same_speech(audio_run, world, note_id, source, words):
    rec = next(x for x in read_jsonl(audio_run[3] / "labels.jsonl") if x["id"] == note_id)
    assert "error" not in rec and rec["label_id"] is not None
    assert abs(rec["duration"] - seconds_of(world / "rec" / source)) < 0.05
    assert words in rec["transcript"].lower()


def test_truncated_ogg_decodes_its_intact_part(audio_run, world):
    rec = next(x for x in read_jsonl(audio_run[3] / "labels.jsonl") if x["id"] == "trunc")
    assert "error" not in rec and rec["label_id"] is not None
    assert 0.3 < rec["duration"] < seconds_of(world / "rec" / "milk.wav") - 0.5
    assert rec["transcript"].lower().startswith("can you")


def test_ten_minute_clip_stops_reading_at_the_limit(world):
    from disamb.audio import decode

    d = decode(world / "rec" / "long.wav", 120.0)  # the default --max-duration
    assert d.audio is None and d.error == "longer than --max-duration 120 s"
    d = decode(world / "rec" / "long.wav", 700.0)  # the clip is 600 s: under a higher limit it decodes
    assert d.error is None and abs(d.seconds - 600.0) < 0.01


# ---------------------------------------------------------------- chat files and paths


def chat_lines(world: Path) -> list[bytes]:
    j = lambda o: json.dumps(o, ensure_ascii=False).encode()  # noqa: E731
    secret = world / "outside" / "secret.wav"
    return [
        b"\xef\xbb\xbf" + j({"id": "g1", "type": "voice", "file": "good.wav", "label_id": "t-good"}),  # 1 BOM
        b"",  # 2
        j({"id": "t-good", "type": "text", "text": "see u at 5 at the gym"}),  # 3
        b'{"id": "x1", "type": "text", "text": "unterminated',  # 4
        j({"id": "t-dup", "type": "text", "text": "ok"}),  # 5
        j({"id": "t-dup", "type": "text", "text": "dup id"}),  # 6
        b'{"id": "bad-bytes", "type": "text", "text": "caf\xe9"}',  # 7
        b"   ",  # 8
        j({"id": "no-type", "text": "hello"}),  # 9
        j({"type": "text", "text": "no id here"}),  # 10
        j({"id": "no-file", "type": "voice"}),  # 11
        j({"id": "no-text", "type": "text"}),  # 12
        j({"id": 42, "type": "text", "text": "numeric id"}),  # 13
        j({"id": "num-text", "type": "text", "text": 12345}),  # 14
        j({"id": "num-file", "type": "voice", "file": 7}),  # 15
        j({"id": "passwd", "type": "voice", "file": "../../etc/passwd"}),  # 16
        j({"id": "abs", "type": "voice", "file": str(secret)}),  # 17
        j({"id": "link", "type": "voice", "file": "escape.wav"}),  # 18
        j({"id": "g2", "type": "voice", "file": "milk.wav", "label_id": "nowhere"}),  # 19
        j({"id": "t-empty", "type": "text", "text": ""}),  # 20
        j({"id": "t-space", "type": "text", "text": "   \t "}),  # 21
        j({"id": "t-emoji", "type": "text", "text": "🥛🏠👍"}),  # 22
        j({"id": "t-milk", "type": "text", "text": "can u pick up some milk on the way home"}),  # 23
        j({"id": "t-long", "type": "text", "text": LONG_TEXT}),  # 24
        j({"id": "g3", "type": "voice", "file": "bday.wav"}),  # 25
        j({"id": "t-same1", "type": "text", "text": "happy bday have a wonderful day"}),  # 26
        j({"id": "t-same2", "type": "text", "text": "happy bday have a wonderful day"}),  # 27
        j({"id": "t-other", "type": "text", "text": "see you tomorrow"}),  # 28
        j({"id": "last", "type": "voice", "file": "meet.wav"}),  # 29
    ]


@pytest.fixture(scope="module")
def chat_run(world):
    chats = world / "chats_hostile.jsonl"
    chats.write_bytes(b"\r\n".join(chat_lines(world)) + b"\r\n")  # CRLF throughout
    out = world / "out_chats"
    out.mkdir()
    # the FIFO outside would hang any open(): the timeout turns that into a failure
    r = run_cli("label", world / "rec", chats, "-o", out / "labels.jsonl", "--cache-dir", world / "cache",
                "-q", "--json", timeout=400)
    return r, chats, out


LINE_ERRORS = [
    (4, "not valid JSON (Unterminated string starting at"),
    (6, 'duplicate id "t-dup" (first seen on line 5)'),
    (7, "not valid UTF-8 (byte 0xe9 at column 49)"),
    (9, 'missing "type"'),
    (10, 'missing "id"'),
    (11, 'missing "file"'),
    (12, 'missing "text"'),
    (13, '"id" must be a string, got number'),
    (14, '"text" must be a string, got number'),
    (15, '"file" must be a string, got number'),
    (16, "audio path leaves the recordings folder: ../../etc/passwd"),
    (17, "audio path is absolute (must be relative to the recordings folder): "),
    (18, "audio path leaves the recordings folder through a link: escape.wav"),
    (29, "no text messages after this voice note"),
]


def test_chat_run_exit_code_and_summary(chat_run):
    r, chats, out = chat_run
    assert "Traceback" not in r.stderr
    assert r.returncode == 1, r.stderr
    s = json.loads(r.stdout)
    assert (s["notes"], s["labelled"], s["errors"], s["skipped_lines"]) == (3, 3, 0, len(LINE_ERRORS))
    assert s["short_windows"] == 2  # g2 has 8 candidates, g3 has 3 (fewer than 10 remain)
    assert (s["gold"], s["gold_in_window"], s["gold_correct"]) == (2, 1, 1)
    skipped = [ln for ln in r.stderr.splitlines() if ln.startswith("skipped ")]
    assert len(skipped) == len(LINE_ERRORS)  # empty and whitespace-only lines are not errors


@pytest.mark.parametrize("line,reason", LINE_ERRORS)
def test_bad_line_is_named_by_file_and_line(chat_run, line, reason):
    r, chats, out = chat_run
    assert any(ln.startswith(f"skipped {chats}:{line}: {reason}") for ln in r.stderr.splitlines()), r.stderr


def test_bom_crlf_and_empty_lines_do_not_disturb_the_rest(chat_run):
    recs = read_jsonl(chat_run[2] / "labels.jsonl")
    assert [x["id"] for x in recs] == ["g1", "g2", "g3"]
    g1 = recs[0]
    assert g1["label_id"] == "t-good" and g1["gold_label_id"] == "t-good" and g1["accepted"]
    # candidates: the next 10 texts, the broken lines skipped
    assert [c["id"] for c in g1["candidates"]] == [
        "t-good", "t-dup", "t-empty", "t-space", "t-emoji", "t-milk", "t-long", "t-same1", "t-same2", "t-other"]


def test_empty_whitespace_emoji_and_long_texts_keep_their_text(chat_run):
    g2 = read_jsonl(chat_run[2] / "labels.jsonl")[1]
    by_id = {c["id"]: c for c in g2["candidates"]}
    assert by_id["t-empty"]["text"] == "" and by_id["t-space"]["text"] == "   \t "
    assert by_id["t-emoji"]["text"] == "🥛🏠👍"
    assert by_id["t-long"]["text"] == LONG_TEXT  # scored on a cut version, written whole
    assert by_id["t-long"]["truncated"] is True
    assert all("truncated" not in c for c in g2["candidates"] if c["id"] != "t-long")
    assert g2["label_id"] == "t-milk"
    for c in g2["candidates"]:
        assert 0.0 <= c["prob"] <= 1.0 and all(np.isfinite(v) for v in c["features"].values())


def test_gold_label_id_outside_the_window(chat_run):
    g2 = read_jsonl(chat_run[2] / "labels.jsonl")[1]
    assert g2["gold_label_id"] is None and g2["gold_in_window"] is False and g2["gold_text"] is None


def test_two_identical_candidate_texts_split_the_probability(chat_run):
    g3 = read_jsonl(chat_run[2] / "labels.jsonl")[2]
    by_id = {c["id"]: c for c in g3["candidates"]}
    same1, same2 = by_id["t-same1"], by_id["t-same2"]
    # the audio cannot tell them apart: every feature but their place in the window is equal
    assert {k: v for k, v in same1["features"].items() if k not in ("position", "gap")} == \
        {k: v for k, v in same2["features"].items() if k not in ("position", "gap")}
    assert same1["prob"] + same2["prob"] > 0.9
    assert g3["label_id"] == max((same1, same2), key=lambda c: c["prob"])["id"]
    assert g3["confidence"] < 0.9 and not g3["accepted"]  # a near coin toss is not accepted


def test_refused_paths_were_never_opened(chat_run, world):
    # the run finished (no hang on the FIFO), and nothing was written outside the output folder
    assert (world / "outside" / "secret.wav").is_fifo()
    assert sorted(p.name for p in (world / "outside").iterdir()) == ["secret.wav"]


def test_a_file_of_invalid_json_is_exit_2(world, tmp_path):
    bad = tmp_path / "garbage.jsonl"
    bad.write_text("{not json\n[1, 2\n")
    r = run_cli("label", world / "rec", bad, "-o", tmp_path / "labels.jsonl", "-q")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: {bad}: no valid chat message or manifest entry in 2 lines; "
        "first problem on line 1: not valid JSON (Expecting property name enclosed in double quotes at column 2)")
    assert not (tmp_path / "labels.jsonl").exists()


# ---------------------------------------------------------------- model files


@pytest.fixture(scope="module")
def one_note(world):
    chats = world / "one.jsonl"
    chats.write_text(json.dumps({"id": "v", "type": "voice", "file": "good.wav"}) + "\n"
                     + json.dumps({"id": "m", "type": "text", "text": "see u at 5"}) + "\n")
    return chats


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_would_run_code_is_refused(world, one_note, tmp_path):
    import torch

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"dims": {}, "model_state_dict": {}, "payload": _RunsCode(marker)}, evil)
    assert b"system" in evil.read_bytes()
    r = run_cli("label", world / "rec", one_note, "-o", tmp_path / "labels.jsonl", "--model", evil, "-q")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    msg = r.stderr.strip().splitlines()[-1]
    assert msg.startswith(f"error: model '{evil}': refused, it holds pickled objects that could run code"), msg
    assert not marker.exists()
    assert not (tmp_path / "labels.jsonl").exists()


def test_truncated_checkpoint_is_a_clear_error(world, one_note, tmp_path):
    import torch
    from whisper.model import ModelDimensions, Whisper

    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=1, n_audio_layer=1,
                           n_vocab=51864, n_text_ctx=448, n_text_state=64, n_text_head=1, n_text_layer=1)
    whole = tmp_path / "small.pt"
    torch.save({"dims": dims.__dict__, "model_state_dict": Whisper(dims).state_dict()}, whole)
    from disamb.models import load_model

    assert load_model(str(whole), "cpu").model.dims == dims  # the whole file is a valid checkpoint
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
    r = run_cli("label", world / "rec", one_note, "-o", tmp_path / "labels.jsonl", "--model", cut, "-q")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    msg = r.stderr.strip().splitlines()[-1]
    assert msg.startswith(f"error: model '{cut}': not a readable checkpoint, truncated or corrupt ("), msg
    assert not (tmp_path / "labels.jsonl").exists()
