"""Tests for disamb.exports: Telegram and WhatsApp exports into chat-stream records and notes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from disamb.chats import InputFileError, read_notes
from disamb.exports import (
    ExportResult,
    detect_export,
    import_command,
    read_telegram,
    read_whatsapp,
    write_chats_jsonl,
)

LRM = "\u200e"
NNBSP = "\u202f"


# ---------------------------------------------------------------- Telegram fixtures


def tg_msg(mid: int, text="", **extra) -> dict:
    return {"id": mid, "type": "message", "date": "2022-07-07T21:54:00",
            "date_unixtime": str(1657223640 + mid), "from": "Zoë 🌸", "from_id": "user42",
            "text": text, "text_entities": [], **extra}


def tg_voice(mid: int, file: str | None = None, **extra) -> dict:
    return tg_msg(mid, file=file or f"voice_messages/audio_{mid}.ogg", media_type="voice_message",
                  mime_type="audio/ogg", duration_seconds=3, **extra)


def single_chat_export(tmp_path: Path) -> Path:
    folder = tmp_path / "ChatExport_2022-07-08"
    (folder / "voice_messages").mkdir(parents=True)
    for mid in (1, 7):
        (folder / "voice_messages" / f"audio_{mid}.ogg").write_bytes(b"OggS")
    messages = [
        {"id": 100, "type": "service", "date": "2022-07-07T21:50:00", "actor": "Zoë 🌸",
         "action": "create_group", "text": ""},
        tg_voice(1),
        tg_msg(2, "see u at 5 🎉"),
        tg_msg(3, ["meet at ", {"type": "bold", "text": "Café Ünï"}, " ",
                   {"type": "link", "text": "https://x.example"}], edited="2022-07-07T21:56:00",
               edited_unixtime="1657223760"),
        tg_msg(4, "line one\nline two", reply_to_message_id=2, **{"from": None}),
        tg_msg(5, "", media_type="sticker", file="stickers/s.webp", sticker_emoji="👍"),
        tg_msg(6, "", photo="photos/photo_1.jpg", width=10, height=10),
        tg_voice(7),
        tg_voice(8, file="(File not included. Change data exporting settings to download.)"),
        tg_msg(9, "caption under a photo", photo="photos/photo_2.jpg"),
        {"id": 10, "type": "message", "date": "2022-07-07T22:00:00", "from": "Bob", "text": "no unixtime"},
        tg_msg(11, "", media_type="audio_file", file="files/song.mp3"),
    ]
    doc = {"name": "Zoë & Bob", "type": "personal_chat", "id": 4242, "messages": messages}
    path = folder / "result.json"
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def test_telegram_single_chat_records(tmp_path):
    path = single_chat_export(tmp_path)
    result = read_telegram(path)
    assert result.folder == path.parent.resolve()
    assert [(r["id"], r["type"]) for r in result.records] == [
        ("1", "voice"), ("2", "text"), ("3", "text"), ("4", "text"), ("7", "voice"), ("9", "text"), ("10", "text")]
    by_id = {r["id"]: r for r in result.records}
    assert by_id["1"] == {"id": "1", "ts": "2022-07-07T19:54:01Z", "from": "Zoë 🌸", "type": "voice",
                          "file": "voice_messages/audio_1.ogg"}
    assert by_id["2"]["text"] == "see u at 5 🎉"
    assert by_id["3"]["text"] == "meet at Café Ünï https://x.example"
    assert by_id["4"]["text"] == "line one\nline two"
    assert by_id["4"]["from"] == "user42"  # deleted account: fall back to from_id
    assert by_id["9"]["text"] == "caption under a photo"
    assert by_id["10"] == {"id": "10", "ts": "2022-07-07T22:00:00", "from": "Bob", "type": "text",
                           "text": "no unixtime"}
    assert result.n_messages == 12
    assert (result.n_voice, result.n_voice_present, result.n_text) == (3, 2, 5)
    assert result.skipped == {"service": 1, "sticker": 1, "photo without caption": 1,
                              "audio_file without caption": 1}
    assert [(e.line, e.reason) for e in result.errors] == [
        (9, "message 8: voice message not included in the export "
            "(File not included. Change data exporting settings to download.)")]
    assert result.record_lines == [2, 3, 4, 5, 8, 10, 11]


def test_telegram_voice_types_widen_what_counts_as_voice(tmp_path):
    path = single_chat_export(tmp_path)
    result = read_telegram(path, voice_types=("voice_message", "audio_file"))
    assert ("11", "voice") in [(r["id"], r["type"]) for r in result.records]
    assert result.n_voice == 4 and result.n_voice_present == 2
    assert "audio_file without caption" not in result.skipped


def test_telegram_read_notes_windows_and_errors(tmp_path):
    path = single_chat_export(tmp_path)
    result = read_notes(path, path.parent, window=3)
    assert result.format == "telegram"
    assert [(n.id, [c.id for c in n.candidates]) for n in result.notes] == [
        ("1", ["2", "3", "4"]), ("7", ["9", "10"])]
    assert result.notes[0].audio == (path.parent / "voice_messages/audio_1.ogg").resolve()
    assert result.notes[0].sender == "Zoë 🌸"
    assert result.notes[0].line == 2
    assert result.n_short_windows == 1 and result.n_texts == 5 and result.n_lines == 12
    assert [e.line for e in result.errors] == [9]


def test_telegram_voice_file_missing_on_disk_is_reported_by_read_notes(tmp_path):
    path = single_chat_export(tmp_path)
    (path.parent / "voice_messages" / "audio_7.ogg").unlink()
    result = read_notes(path, path.parent)
    assert [n.id for n in result.notes] == ["1"]
    assert [(e.line, e.reason) for e in result.errors] == [
        (8, "audio file not found: voice_messages/audio_7.ogg"),
        (9, "message 8: voice message not included in the export "
            "(File not included. Change data exporting settings to download.)")]


def full_account_export(tmp_path: Path) -> Path:
    folder = tmp_path / "DataExport"
    (folder / "chats" / "chat_001").mkdir(parents=True)
    (folder / "chats" / "chat_001" / "a.ogg").write_bytes(b"x")
    (folder / "chats" / "chat_002").mkdir(parents=True)
    (folder / "chats" / "chat_002" / "b.ogg").write_bytes(b"x")
    chat_a = {"name": "Ана", "type": "personal_chat", "id": 11, "messages": [
        tg_voice(1, file="chats/chat_001/a.ogg"), tg_msg(2, "from chat a")]}
    chat_b = {"name": "Bob", "type": "personal_chat", "id": 22, "messages": [
        tg_msg(1, "first in b"), tg_voice(2, file="chats/chat_002/b.ogg"), tg_msg(3, "second in b")]}
    doc = {"about": "Here is the data you requested.", "personal_information": {"first_name": "Me"},
           "chats": {"about": "This page lists all chats.", "list": [chat_a, chat_b]}}
    path = folder / "result.json"
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def test_telegram_full_account_prefixes_ids_and_keeps_chats_apart(tmp_path):
    path = full_account_export(tmp_path)
    result = read_telegram(path)
    assert [(r["id"], r["chat"], r["type"]) for r in result.records] == [
        ("11:1", "11", "voice"), ("11:2", "11", "text"),
        ("22:1", "22", "text"), ("22:2", "22", "voice"), ("22:3", "22", "text")]
    notes = read_notes(path, path.parent).notes
    # Chat 11's voice note must not take chat 22's texts as candidates.
    assert [(n.id, [c.id for c in n.candidates]) for n in notes] == [("11:1", ["11:2"]), ("22:2", ["22:3"])]


def test_telegram_folder_is_accepted(tmp_path):
    path = single_chat_export(tmp_path)
    assert detect_export(path.parent) == "telegram"
    assert read_telegram(path.parent).n_messages == 12
    assert [n.id for n in read_notes(path.parent, path.parent).notes] == ["1", "7"]


@pytest.mark.parametrize(
    "content, reason",
    [
        ('{\n "messages": [\n', "not valid JSON (Expecting value at line 3 column 1)"),
        ('{\n "name": "x"\n}', 'not a Telegram export (no "messages" or "chats" list)'),
    ],
)
def test_telegram_file_level_errors(tmp_path, content, reason):
    path = tmp_path / "result.json"
    path.write_text(content)
    with pytest.raises(InputFileError) as info:
        read_telegram(path)
    assert str(info.value) == f"{path}: {reason}"


def test_telegram_bad_messages_are_line_errors(tmp_path):
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"messages": ["nope", tg_voice(3, file=None) | {"file": 5}, tg_msg(4, "ok")]}))
    result = read_telegram(path)
    assert [(e.line, e.reason) for e in result.errors] == [
        (1, "message is not a JSON object"), (2, "message 3: voice message without a file")]
    assert [r["id"] for r in result.records] == ["4"]


def test_telegram_export_without_usable_messages_is_a_file_error_for_read_notes(tmp_path):
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"name": "x", "messages": [{"id": 1, "type": "service", "text": ""}]}, indent=1))
    assert read_telegram(path).skipped == {"service": 1}
    with pytest.raises(InputFileError, match="no text or voice messages in this telegram export"):
        read_notes(path, tmp_path)


# ---------------------------------------------------------------- WhatsApp


def write_chat(folder: Path, lines: list[str], audio: tuple[str, ...] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in audio:
        (folder / name).write_bytes(b"x")
    path = folder / "_chat.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


ANDROID = [
    "12/07/2026, 10:14 - Messages and calls are end-to-end encrypted. No one outside of this chat can read them.",
    "12/07/2026, 10:15 - Kumar: PTT-20260712-WA0003.opus (file attached)",
    "12/07/2026, 10:15 - Sérgio 🚲: on my way",
    "13/07/2026, 10:16 - Kumar: two lines",
    "second line: with a colon",
    "",
    "13/07/2026, 10:17 - Kumar: <Media omitted>",
    "13/07/2026, 10:18 - Kumar: IMG-20260713-WA0001.jpg (file attached)",
    "13/07/2026, 10:19 - Sérgio 🚲: DOC-20260713-WA0002.pdf (file attached)",
    "the report",
    "13/07/2026, 10:20 - Kumar: ok",
]


def test_whatsapp_android(tmp_path):
    path = write_chat(tmp_path / "wa", ANDROID, audio=("PTT-20260712-WA0003.opus",))
    result = read_whatsapp(path)
    assert result.records == [
        {"id": "wa2", "ts": "2026-07-12T10:15:00", "from": "Kumar", "type": "voice",
         "file": "PTT-20260712-WA0003.opus"},
        {"id": "wa3", "ts": "2026-07-12T10:15:00", "from": "Sérgio 🚲", "type": "text", "text": "on my way"},
        {"id": "wa4", "ts": "2026-07-13T10:16:00", "from": "Kumar", "type": "text",
         "text": "two lines\nsecond line: with a colon"},
        {"id": "wa9", "ts": "2026-07-13T10:19:00", "from": "Sérgio 🚲", "type": "text", "text": "the report"},
        {"id": "wa11", "ts": "2026-07-13T10:20:00", "from": "Kumar", "type": "text", "text": "ok"},
    ]
    assert result.n_messages == 8
    assert (result.n_voice, result.n_voice_present, result.n_text) == (1, 1, 4)
    assert result.skipped == {"system": 1, "media omitted": 1, "non-audio media": 1}
    assert result.errors == []


IOS = [
    f"{LRM}[13/10/25, 18:24:05] Ann: {LRM}Messages and calls are end-to-end encrypted.",
    f"[13/10/25, 18:24:05] Ann: {LRM}<attached: 00000028-AUDIO-2025-10-13-18-24-05.opus>",
    f"[13/10/25, 18:24:30] ~{NNBSP}Dana Ölçer: {LRM}<attached: 00000029-PHOTO-2025-10-13-18-24-30.jpg>",
    f"[13/10/25, 18:25:00] ~{NNBSP}Dana Ölçer: ça va? 😀",
    f"[13/10/25, 18:26:00] Ann: {LRM}audio omitted",
    f"[13/10/25, 18:26:30] Ann: {LRM}image omitted",
    f"[13/10/25, 18:27:00] Ann: {LRM}This message was deleted.",
    "[13/10/25, 18:28:00] Ann: fine",
]


def test_whatsapp_ios(tmp_path):
    path = write_chat(tmp_path / "wa", IOS, audio=("00000028-AUDIO-2025-10-13-18-24-05.opus",))
    result = read_whatsapp(path)
    assert [(r["id"], r["type"], r["from"], r.get("text", r.get("file"))) for r in result.records] == [
        ("wa2", "voice", "Ann", "00000028-AUDIO-2025-10-13-18-24-05.opus"),
        ("wa4", "text", "Dana Ölçer", "ça va? 😀"),
        ("wa8", "text", "Ann", "fine"),
    ]
    assert result.records[0]["ts"] == "2025-10-13T18:24:05"
    assert result.skipped == {"system": 1, "deleted or pending message": 1, "non-audio media": 1,
                              "media omitted": 1}
    assert (result.n_notices, result.n_placeholders) == (2, 1)
    assert [(e.line, e.reason) for e in result.errors] == [
        (5, "voice message not included in the export (exported without media)")]
    assert (result.n_voice, result.n_voice_present) == (2, 1)


@pytest.mark.parametrize(
    "header, ts",
    [
        (f"[13/10/25, 6:24:05{NNBSP}PM]", "2025-10-13T18:24:05"),
        ("[13/10/25, 12:24:05 AM]", "2025-10-13T00:24:05"),
        ("13/10/2025, 12:24 pm -", "2025-10-13T12:24:00"),
        ("13/10/2025, 6:24 p. m. -", "2025-10-13T18:24:00"),
        ("13/10/2025, 6:24 a.m. -", "2025-10-13T06:24:00"),
        ("13.10.25, 18:24 -", "2025-10-13T18:24:00"),
        ("2025-10-13, 18:24 -", "2025-10-13T18:24:00"),
    ],
)
def test_whatsapp_clocks_and_dates(tmp_path, header, ts):
    path = write_chat(tmp_path / "wa", [f"{header} Ann: hello"])
    assert read_whatsapp(path).records[0]["ts"] == ts


def test_whatsapp_month_first_detected_from_a_second_field_over_12(tmp_path):
    lines = ["7/1/26, 9:05 AM - Ann: early", "7/13/26, 9:05 AM - Ann: later"]
    result = read_whatsapp(write_chat(tmp_path / "wa", lines))
    assert [r["ts"] for r in result.records] == ["2026-07-01T09:05:00", "2026-07-13T09:05:00"]


def test_whatsapp_ambiguous_dates_are_day_first_unless_told(tmp_path):
    path = write_chat(tmp_path / "wa", ["07/01/26, 09:05 - Ann: hi"])
    assert read_whatsapp(path).records[0]["ts"] == "2026-01-07T09:05:00"
    assert read_whatsapp(path, date_order="mdy").records[0]["ts"] == "2026-07-01T09:05:00"
    with pytest.raises(ValueError):
        read_whatsapp(path, date_order="ymd")


@pytest.mark.parametrize(
    "body",
    [
        "PTT-1.opus (archivo adjunto)", "PTT-1.opus (Datei angehängt)", "PTT-1.opus (fichier joint)",
        "PTT-1.opus (arquivo anexado)", f"{LRM}<adjunto: PTT-1.opus>", f"{LRM}<Anhang: PTT-1.opus>",
        f"{LRM}<pièce jointe : PTT-1.opus>", f"{LRM}<anexado: PTT-1.opus>", "PTT-1.opus (file attached)",
    ],
)
def test_whatsapp_localised_attachment_tags(tmp_path, body):
    path = write_chat(tmp_path / "wa", [f"12/07/2026, 10:15 - Ann: {body}"], audio=("PTT-1.opus",))
    result = read_whatsapp(path)
    assert result.records == [{"id": "wa1", "ts": "2026-07-12T10:15:00", "from": "Ann", "type": "voice",
                               "file": "PTT-1.opus"}]
    assert result.n_voice_present == 1


@pytest.mark.parametrize("ext", ["opus", "ogg", "m4a", "mp3", "aac", "amr", "wav", "OPUS"])
def test_whatsapp_audio_extensions(tmp_path, ext):
    result = read_whatsapp(write_chat(tmp_path / "wa", [f"12/07/2026, 10:15 - Ann: a.{ext} (file attached)"]))
    assert [r["type"] for r in result.records] == ["voice"]
    assert result.n_voice_present == 0


def test_whatsapp_bad_lines(tmp_path):
    folder = tmp_path / "wa"
    folder.mkdir()
    path = folder / "_chat.txt"
    path.write_bytes(
        b"stray line before anything\n"
        b"12/07/2026, 10:15 - Ann: first\n"
        b"31/02/2026, 10:16 - Ann: impossible date\n"
        b"12/07/2026, 10:17 - Ann: caf\xe9\n"
        b"continuation of the bad message\n"
        b"12/07/2026, 10:18 - Ann: last\n"
        b"also last \xff\n"
    )
    result = read_whatsapp(path)
    assert [(r["id"], r["text"]) for r in result.records] == [("wa2", "first"), ("wa6", "last")]
    assert [(e.line, e.reason) for e in result.errors] == [
        (1, "line not understood (no date and time before the first message)"),
        (3, "date or time not understood: 31/02/2026, 10:16 - Ann: impossible date"),
        (4, "not valid UTF-8 (byte 0xe9 at column 29)"),
        (7, "not valid UTF-8 (byte 0xff at column 11)"),
    ]
    assert result.n_messages == 4


def test_whatsapp_not_a_chat(tmp_path):
    path = tmp_path / "_chat.txt"
    path.write_text("hello\nworld\n")
    with pytest.raises(InputFileError, match="not a WhatsApp chat export"):
        read_whatsapp(path)


def test_whatsapp_read_notes_windows(tmp_path):
    lines = [
        "12/07/2026, 10:00 - Ann: PTT-1.opus (file attached)",
        "12/07/2026, 10:01 - Bob: PTT-2.opus (file attached)",
        "12/07/2026, 10:02 - Ann: one",
        "12/07/2026, 10:03 - Bob: two",
        "12/07/2026, 10:04 - Ann: three",
        "12/07/2026, 10:05 - Ann: PTT-3.opus (file attached)",
    ]
    path = write_chat(tmp_path / "wa", lines, audio=("PTT-1.opus", "PTT-2.opus", "PTT-3.opus"))
    result = read_notes(path, path.parent, window=2)
    assert result.format == "whatsapp"
    assert [(n.id, [c.id for c in n.candidates]) for n in result.notes] == [
        ("wa1", ["wa3", "wa4"]), ("wa2", ["wa3", "wa4"])]
    assert [(e.line, e.reason) for e in result.errors] == [(6, "no text messages after this voice note")]
    assert result.notes[1].audio == (path.parent / "PTT-2.opus").resolve()


# ---------------------------------------------------------------- detection


def test_detect_export(tmp_path):
    tg = single_chat_export(tmp_path)
    assert detect_export(tg) == "telegram"
    one_line = tmp_path / "one.json"
    one_line.write_text(json.dumps({"name": "x", "messages": []}))
    assert detect_export(one_line) == "telegram"
    assert detect_export(full_account_export(tmp_path)) == "telegram"
    assert detect_export(write_chat(tmp_path / "a", ANDROID)) == "whatsapp"
    assert detect_export(write_chat(tmp_path / "i", IOS)) == "whatsapp"
    assert detect_export(tmp_path / "i") == "whatsapp"
    jsonl = tmp_path / "chats.jsonl"
    jsonl.write_text('{"id": "v1", "type": "voice", "file": "v1.ogg"}\n')
    assert detect_export(jsonl) is None
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"id": "r1", "audio": "a.wav", "candidates": ["x"]}\n')
    assert detect_export(manifest) is None
    other = tmp_path / "other.json"
    other.write_text('{\n "id": 1\n}\n')
    assert detect_export(other) is None
    assert detect_export(tmp_path / "missing.txt") is None
    (tmp_path / "empty").mkdir()
    assert detect_export(tmp_path / "empty") is None


# ---------------------------------------------------------------- writing and import


def test_written_chats_jsonl_reads_back_to_the_same_notes(tmp_path):
    path = single_chat_export(tmp_path)
    out = tmp_path / "chats.jsonl"
    result = import_command("telegram", path, out)
    assert isinstance(result, ExportResult)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(result.records)
    assert json.loads(lines[0]) == result.records[0]
    assert "Zoë 🌸" in lines[0]  # written as UTF-8, not \u escapes
    direct = read_notes(path, path.parent)
    via_file = read_notes(out, path.parent)
    assert via_file.format == "chat"
    assert [(n.id, n.audio, n.candidates) for n in via_file.notes] == \
        [(n.id, n.audio, n.candidates) for n in direct.notes]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_write_is_atomic(tmp_path):
    out = tmp_path / "chats.jsonl"
    out.write_text("old\n")
    broken = ExportResult(records=[{"id": "1", "type": "text", "text": "fine"}, {"id": object()}], folder=tmp_path)
    with pytest.raises(TypeError):
        write_chats_jsonl(broken, out)
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chats.jsonl"]


def test_import_command_whatsapp_and_unknown_kind(tmp_path):
    path = write_chat(tmp_path / "wa", ANDROID)
    out = tmp_path / "out.jsonl"
    result = import_command("whatsapp", path, out, date_order="dmy")
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == [r["id"] for r in result.records]
    with pytest.raises(ValueError, match="unknown export kind"):
        import_command("signal", path, out)


# ---------------------------------------------------------------- properties

_settings = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

_wa_line = st.one_of(
    st.text(max_size=40),
    st.builds(lambda d, m, y, h, mi, rest: f"{d}/{m}/{y}, {h}:{mi:02d} - {rest}",
              st.integers(0, 40), st.integers(0, 40), st.integers(0, 3000), st.integers(0, 30),
              st.integers(0, 99), st.text(max_size=30)),
    st.builds(lambda d, rest: f"{LRM}[{d}/10/25, 18:24:05] Ann: {rest}", st.integers(0, 99),
              st.sampled_from(["<attached: a.opus>", f"{LRM}audio omitted", "x.jpg (file attached)",
                               "<Media omitted>", "hi", f"{LRM}deleted", ""])),
    st.builds(lambda head, h, marker, sep, rest: f"{head}{h}:05{marker}{sep}{rest}",
              st.sampled_from(["2026. 4. 2. 오후 ", "2026/4/2 下午", "‏٢/٤/٢٠٢٦ ", "13.6.2018 klo ", "1/13/26, "]),
              st.integers(0, 25), st.sampled_from(["", " AM", " م", " xa", " yb", " p. m."]),
              st.sampled_from([" - ", ": ", " ", "] "]),
              st.sampled_from(["a: m", "Ann: PTT-1.opus (file allegato)", "Ann: null", "b: x.pdf • ‎Dokument weggelassen"])),
)


@_settings
@given(lines=st.lists(_wa_line, min_size=1, max_size=8))
def test_whatsapp_arbitrary_lines_never_raise_anything_but_input_file_error(tmp_path, lines):
    path = tmp_path / "_chat.txt"
    path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    try:
        result = read_whatsapp(path)
        read_notes(path, tmp_path)
    except InputFileError:
        return
    assert all(r["type"] in ("text", "voice") for r in result.records)
    assert len({r["id"] for r in result.records}) == len(result.records)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
        st.sampled_from(["id", "type", "text", "file", "media_type", "photo", "from", "from_id",
                         "date", "date_unixtime", "messages", "chats", "list"]), kids, max_size=5),
    max_leaves=12)


@_settings
@given(doc=st.one_of(_json, st.fixed_dictionaries({"messages": st.lists(_json, max_size=5)})))
def test_telegram_arbitrary_json_never_raises_anything_but_input_file_error(tmp_path, doc):
    path = tmp_path / "result.json"
    path.write_text(json.dumps(doc, indent=1))
    try:
        result = read_telegram(path)
        read_notes(path, tmp_path)
    except InputFileError:
        return
    assert all(r["type"] in ("text", "voice") for r in result.records)
