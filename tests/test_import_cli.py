"""`disamb import telegram|whatsapp` through the CLI, and the round trip
export -> import -> label (and label straight from the export) on generated speech."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import speak

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "disamb.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env=dict(os.environ, COLUMNS="200"))


def tg_msg(mid: int, text="", **extra) -> dict:
    return {"id": mid, "type": "message", "date": "2024-03-01T12:00:00", "date_unixtime": str(1709294400 + 10 * mid),
            "from": "Zoë", "from_id": "user7", "text": text, "text_entities": [], **extra}


def tg_voice(mid: int, file: str, **extra) -> dict:
    return tg_msg(mid, file=file, media_type="voice_message", mime_type="audio/ogg", duration_seconds=2, **extra)


def write_telegram(folder: Path, messages: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "result.json"
    doc = {"name": "Zoë", "type": "personal_chat", "id": 99, "messages": messages}
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


# ---------------------------------------------------------------- summaries and exit codes


def small_telegram(tmp_path: Path, *, missing_media: bool) -> Path:
    folder = tmp_path / "ChatExport_2024-03-01"
    (folder / "voice_messages").mkdir(parents=True)
    (folder / "voice_messages" / "audio_1@01-03-2024_12-00-10.ogg").write_bytes(b"OggS")
    messages = [
        {"id": 100, "type": "service", "date": "2024-03-01T11:59:00", "action": "create_group", "text": ""},
        tg_voice(1, "voice_messages/audio_1@01-03-2024_12-00-10.ogg"),
        tg_msg(2, "see u at 5"),
        tg_msg(3, ["bold ", {"type": "bold", "text": "move"}]),
        tg_msg(4, "", photo="photos/p.jpg"),
    ]
    if missing_media:
        messages.append(tg_voice(5, "(File not included. Change data exporting settings to download.)"))
    return write_telegram(folder, messages)


def test_import_telegram_summary_json(tmp_path):
    path = small_telegram(tmp_path, missing_media=False)
    out = tmp_path / "chats.jsonl"
    r = run_cli("import", "telegram", path.parent, "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s == {"messages": 5, "voice_notes": 1, "voice_notes_with_audio": 1, "texts": 2, "notices": 1,
                 "placeholders": 0, "skipped": {"service": 1, "photo without caption": 1},
                 "assumed": {"timezone": "UTC, from each message's date_unixtime (its local date where that is missing)"},
                 "not_understood": [], "records": 3, "output": str(out), "recordings": str(path.parent.resolve())}
    recs = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert [(x["id"], x["type"]) for x in recs] == [("1", "voice"), ("2", "text"), ("3", "text")]
    assert recs[0]["file"] == "voice_messages/audio_1@01-03-2024_12-00-10.ogg" and recs[2]["text"] == "bold move"


def test_import_telegram_missing_media_is_reported_exit_1(tmp_path):
    path = small_telegram(tmp_path, missing_media=True)
    out = tmp_path / "chats.jsonl"
    r = run_cli("import", "telegram", path, "-o", out)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    # the sixth message of the export (counting the service message) is the one without its file
    assert (f"not imported {path}:6: message 5: voice message not included in the export "
            "(File not included. Change data exporting settings to download.)") in r.stderr
    assert "disamb import telegram" in r.stdout and f"next: disamb label {path.parent.resolve()} {out}" in r.stdout
    assert len(out.read_text().splitlines()) == 3  # the rest was imported


def import_whatsapp(tmp_path: Path, voice_file: str, lines: list[str]) -> tuple[Path, Path, dict]:
    """An export folder with `lines` as _chat.txt and one voice file, imported with --json: (folder, out, summary)."""
    folder = tmp_path / "WhatsApp Chat"
    folder.mkdir()
    (folder / voice_file).write_bytes(b"OggS")
    (folder / "_chat.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "chats.jsonl"
    r = run_cli("import", "whatsapp", folder, "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    return folder, out, json.loads(r.stdout)


def test_import_whatsapp_summary(tmp_path):
    # a voice note whose file is not in the folder is still imported (counted as without audio);
    # `disamb label` then reports it as "audio file not found" for its line
    folder, out, s = import_whatsapp(tmp_path, "PTT-20240301-WA0001.opus", [
        "01/03/2024, 12:00 - Messages and calls are end-to-end encrypted.",
        "01/03/2024, 12:01 - Ann: PTT-20240301-WA0001.opus (file attached)",
        "01/03/2024, 12:02 - Bob: see u at 5",
        "01/03/2024, 12:03 - Bob: or 6",
        "still the same message",
        "01/03/2024, 12:04 - Ann: PTT-20240301-WA0002.opus (file attached)",
    ])
    assert (s["messages"], s["voice_notes"], s["voice_notes_with_audio"], s["texts"], s["records"]) == (5, 2, 1, 2, 4)
    assert s["skipped"] == {"system": 1} and s["not_understood"] == []
    recs = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert [x["type"] for x in recs] == ["voice", "text", "text", "voice"]
    assert recs[2]["text"] == "or 6\nstill the same message"
    assert s["recordings"] == str(folder.resolve())


@pytest.mark.parametrize("args,needle", [
    (("import", "signal", "x"), "unknown export kind 'signal': use telegram or whatsapp"),
    (("import", "whatsapp", "x", "--date-order", "ymd"), "--date-order must be dmy or mdy, got 'ymd'"),
    (("import", "telegram", "{missing}"), "{missing}: file not found"),
])
def test_import_bad_usage_exit_2(tmp_path, args, needle):
    missing = tmp_path / "nope" / "result.json"
    args = tuple(a.replace("{missing}", str(missing)) for a in args)
    r = run_cli(*args, "-o", tmp_path / "chats.jsonl")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "error: " + needle.replace("{missing}", str(missing))
    assert not (tmp_path / "chats.jsonl").exists()


def test_import_telegram_that_is_not_json_exit_2(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "result.json").write_text('{"messages": [ {"id": 1,', encoding="utf-8")
    out = tmp_path / "chats.jsonl"
    out.write_text("previous\n")
    r = run_cli("import", "telegram", folder, "-o", out)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"error: {folder / 'result.json'}: ") and len(r.stderr.strip().splitlines()) == 1
    assert out.read_text() == "previous\n"


# ---------------------------------------------------------------- round trip with real audio

SAID = [  # (message id, what the voice note says, id of the text typed after it)
    (1, "see you at five at the gym", 3),
    (5, "can you pick up some milk on the way home", 7),
    (9, "the meeting moved to thursday afternoon", 10),
]


@pytest.fixture(scope="module")
def speech_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tg") / "ChatExport_2024-03-01"
    (folder / "voice_messages").mkdir(parents=True)
    files = {}
    for n, (mid, said, _) in enumerate(SAID, start=1):
        rel = f"voice_messages/audio_{n}@01-03-2024_12-0{n}-00.ogg"
        speak(said, folder / rel, voice="en-us+f3" if n == 2 else "en-us")  # ogg/opus, as Telegram stores it
        files[mid] = rel
    texts = {2: "lol ok", 3: "see u at 5 at the gym", 4: "where are you", 6: "can u pick up the kids",
             7: "can u pick up some milk on the way home pls", 8: "on my way home", 10: "meeting moved to thurs afternoon",
             11: "thanks so much for the lovely dinner", 12: "see you tomorrow morning at the station"}
    messages = []
    for mid in range(1, 13):
        messages.append(tg_voice(mid, files[mid]) if mid in files else tg_msg(mid, texts[mid]))
    write_telegram(folder, messages)
    return folder


def test_import_then_label_and_label_straight_from_the_export(speech_export, tmp_path):
    chats = tmp_path / "chats.jsonl"
    r = run_cli("import", "telegram", speech_export, "-o", chats, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["voice_notes_with_audio"] == 3

    cache = tmp_path / "cache"
    want = {str(mid): str(truth) for mid, _, truth in SAID}
    runs = {}
    for name, source in [("imported", chats), ("result.json", speech_export / "result.json"), ("folder", speech_export)]:
        out = tmp_path / f"labels-{name.replace('.', '_')}.jsonl"
        r = run_cli("label", speech_export, source, "-o", out, "--cache-dir", cache, "-q", "--json")
        assert r.returncode == 0, (name, r.stderr)
        s = json.loads(r.stdout)
        assert (s["notes"], s["labelled"], s["errors"], s["skipped_lines"]) == (3, 3, 0, 0)
        recs = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
        runs[name] = recs
        assert {x["id"]: x["label_id"] for x in recs} == want, (name, recs)
        assert [x["file"] for x in recs] == [f"voice_messages/audio_{n}@01-03-2024_12-0{n}-00.ogg" for n in (1, 2, 3)]
    # same labels, same candidates, same probabilities whichever way the export came in
    strip = lambda recs: [(x["id"], x["label_id"], x["confidence"], [(c["id"], c["prob"]) for c in x["candidates"]])  # noqa: E731
                          for x in recs]
    assert strip(runs["imported"]) == strip(runs["result.json"]) == strip(runs["folder"])


def test_import_whatsapp_says_what_it_assumed_and_counts_notices_apart(tmp_path):
    folder, out, s = import_whatsapp(tmp_path, "PTT-20260107-WA0003.opus", [
        "01/07/26, 10:00 - Gio: PTT-20260107-WA0003.opus (file allegato)",
        "01/07/26, 10:01 - Ann: Questo messaggio è stato eliminato",
        "01/07/26, 10:02 - Ann: <Media omessi>",
        "01/07/26, 10:03 - Ann: va bene",
    ])
    assert (s["voice_notes"], s["voice_notes_with_audio"], s["texts"], s["notices"], s["placeholders"]) == (1, 1, 1, 1, 1)
    assert s["assumed"]["date order"].startswith("day-first, assumed")
    r = run_cli("import", "whatsapp", folder, "-o", out, "--date-order", "mdy")
    assert r.returncode == 0, r.stderr
    assert "assumed: date order" in r.stdout and "month-first (as given)" in r.stdout
    assert "notices left out" in r.stdout
    assert [json.loads(x)["ts"][:10] for x in out.read_text("utf-8").splitlines()] == ["2026-01-07", "2026-01-07"]
