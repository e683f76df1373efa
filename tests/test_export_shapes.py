"""The export shapes found in real WhatsApp and Telegram exports (issue 20, classes A-F).

Each fixture is a few lines in the shape quoted from a real export: headers in other
locales and layouts (A), hour 00 on a 12-hour clock (B), ambiguous or mixed date
orders (C), attachment tags in other languages and older app versions (D),
placeholders and notices that must not become candidate texts (E), and Telegram
exports without ids or with left chats (F).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from disamb.chats import InputFileError, read_notes
from disamb.exports import read_telegram, read_whatsapp

LRM = "\u200e"
RLM = "\u200f"


def chat(tmp_path: Path, lines: list[str], audio: tuple[str, ...] = ()) -> Path:
    folder = tmp_path / "wa"
    folder.mkdir(exist_ok=True)
    for name in audio:
        (folder / name).write_bytes(b"OggS")
    path = folder / "_chat.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def summary(result) -> list[tuple]:
    return [(r["type"], r["from"], r["ts"], r.get("text", r.get("file"))) for r in result.records]


# ---------------------------------------------------------------- A: header layouts


@pytest.mark.parametrize(
    "lines, want",
    [
        pytest.param(["13.6.2018 klo 21.25.15 - a: m", "14.6.2018 klo 9.05.00 - Bea: moi"],
                     [("a", "2018-06-13T21:25:15", "m"), ("Bea", "2018-06-14T09:05:00", "moi")], id="finnish-klo"),
        pytest.param(["13.06.18 21.25.15: a: m", "13.06.18 21.26.40: Bea: hi: there"],
                     [("a", "2018-06-13T21:25:15", "m"), ("Bea", "2018-06-13T21:26:40", "hi: there")], id="colon"),
        pytest.param(["13. 6. 2018. 21:25:15 a: m", "14. 6. 2018. 8:01:02 Bea: hi"],
                     [("a", "2018-06-13T21:25:15", "m"), ("Bea", "2018-06-14T08:01:02", "hi")], id="spaced-dots"),
        pytest.param(["2026. 4. 2. 오전 9:00 - 민수: 좋은 아침", "2026. 4. 2. 오후 1:00 - 민수: 안녕"],
                     [("민수", "2026-04-02T09:00:00", "좋은 아침"), ("민수", "2026-04-02T13:00:00", "안녕")], id="korean"),
        pytest.param(["2026/4/2 上午9:00 - 小明: 早", "2026/4/2 下午1:00 - 小明: 你好"],
                     [("小明", "2026-04-02T09:00:00", "早"), ("小明", "2026-04-02T13:00:00", "你好")], id="chinese"),
        pytest.param([f"{RLM}٢/٤/٢٠٢٦ ٩:٠٥ ص - أحمد: صباح الخير", f"{RLM}٢/٤/٢٠٢٦ ١:٠٠ م - أحمد: مرحبا"],
                     [("أحمد", "2026-04-02T09:05:00", "صباح الخير"), ("أحمد", "2026-04-02T13:00:00", "مرحبا")],
                     id="arabic-indic-digits-rtl"),
    ],
)
def test_headers_in_other_locales_and_layouts(tmp_path, lines, want):
    result = read_whatsapp(chat(tmp_path, lines))
    assert [(r["from"], r["ts"], r["text"]) for r in result.records] == want
    assert result.errors == []


def test_a_line_in_another_layout_is_reported_not_glued_on(tmp_path):
    lines = ["12/07/2026, 10:15 - Ann: first", "12/07/2026 klo 10.16 - Bob: other layout", "its second line",
             "12/07/2026, 10:17 - Ann: last"]
    result = read_whatsapp(chat(tmp_path, lines))
    assert [(r["id"], r["text"]) for r in result.records] == [("wa1", "first"), ("wa4", "last")]
    assert [(e.line, e.reason) for e in result.errors] == [
        (2, "looks like the start of a message but not in the layout of line 1: 12/07/2026 klo 10.16 - Bob: other layout")]


def test_unknown_am_pm_markers_are_told_apart_by_message_order(tmp_path):
    lines = ["1/4/2026, 9:00 xa - Ann: morning", "1/4/2026, 2:00 yb - Ann: afternoon",
             "2/4/2026, 8:00 xa - Ann: next morning"]
    result = read_whatsapp(chat(tmp_path, lines))
    assert [r["ts"] for r in result.records] == ["2026-04-01T09:00:00", "2026-04-01T14:00:00", "2026-04-02T08:00:00"]


@pytest.mark.parametrize("am, pm", [("AM", "PM"), ("a.m.", "p.m."), ("π.μ.", "μ.μ."), ("fm", "em"), ("SA", "CH")])
def test_am_pm_markers_after_the_time(tmp_path, am, pm):
    lines = [f"[2/4/26, 9:00:00 {am}] Ann: morning", f"[2/4/26, 1:00:00 {pm}] Bob: afternoon"]
    assert [r["ts"][11:] for r in read_whatsapp(chat(tmp_path, lines)).records] == ["09:00:00", "13:00:00"]


@pytest.mark.parametrize("am, pm", [("午前", "午後"), ("上午", "下午"), ("오전 ", "오후 ")])
def test_am_pm_markers_before_the_time(tmp_path, am, pm):
    lines = [f"2026/04/02 {am}9:00 - Ann: morning", f"2026/04/02 {pm}1:00 - Bob: afternoon"]
    assert [r["ts"][11:] for r in read_whatsapp(chat(tmp_path, lines)).records] == ["09:00:00", "13:00:00"]


# ---------------------------------------------------------------- B: hour 00 on a 12-hour clock


def test_hour_00_with_a_12_hour_marker(tmp_path):
    result = read_whatsapp(chat(tmp_path, ["06/20/2020, 00:08 a. m. - Ann: late", "06/20/2020, 12:30 p. m. - Ann: noon"]))
    assert [r["ts"] for r in result.records] == ["2020-06-20T00:08:00", "2020-06-20T12:30:00"]
    assert result.errors == []


# ---------------------------------------------------------------- C: date order


def test_ambiguous_dates_say_what_was_assumed_and_how_to_override(tmp_path):
    path = chat(tmp_path, ["[1/5/26, 9:00:00 AM] Ann: hi"])
    result = read_whatsapp(path)
    assert result.records[0]["ts"] == "2026-05-01T09:00:00"
    assert result.assumed["date order"] == (
        "day-first, assumed: no date in the file settles it (--date-order mdy reads it month-first)")
    told = read_whatsapp(path, date_order="mdy")
    assert told.records[0]["ts"] == "2026-01-05T09:00:00" and told.assumed["date order"] == "month-first (as given)"


def test_date_order_settled_by_a_date_or_by_message_order(tmp_path):
    by_date = read_whatsapp(chat(tmp_path, ["1/5/26, 9:00 - Ann: a", "1/13/26, 9:00 - Ann: b"]))
    assert by_date.assumed["date order"] == "month-first (from line 2: 1/13/26)"
    assert by_date.records[0]["ts"] == "2026-01-05T09:00:00"
    # 5 Jan, 6 Jan, 1 Feb is in time order only when read day-first
    by_order = read_whatsapp(chat(tmp_path, ["5/1/26, 9:00 - Ann: a", "6/1/26, 9:00 - Ann: b", "1/2/26, 9:00 - Ann: c"]))
    assert by_order.assumed["date order"] == "day-first (read the other way, dates would go backwards more often)"
    assert [r["ts"][:10] for r in by_order.records] == ["2026-01-05", "2026-01-06", "2026-02-01"]


def test_a_file_mixing_both_orders_is_one_clear_message(tmp_path):
    path = chat(tmp_path, ["13/07/2026, 10:15 - Ann: hi", "07/14/2026, 10:16 - Ann: hi"])
    with pytest.raises(InputFileError) as info:
        read_whatsapp(path)
    assert str(info.value) == (
        f"{path}: dates in both orders: line 1 (13/07/2026) is day-first, line 2 (07/14/2026) month-first; "
        "pass --date-order dmy or mdy to read it one way (lines in the other order are then reported)")
    forced = read_whatsapp(path, date_order="dmy")
    assert [r["id"] for r in forced.records] == ["wa1"] and [e.line for e in forced.errors] == [2]


# ---------------------------------------------------------------- D: attachments in any language


@pytest.mark.parametrize(
    "body, file",
    [
        pytest.param("PTT-20260707-WA0003.opus (file allegato)", "PTT-20260707-WA0003.opus", id="italian"),
        pytest.param("PTT-20260707-WA0003.opus (файл добавлен)", "PTT-20260707-WA0003.opus", id="russian"),
        pytest.param("PTT-20260707-WA0003.opus (liitetty tiedosto)", "PTT-20260707-WA0003.opus",
                     id="unlisted-language-by-file-name"),
        pytest.param(f"{LRM}<allegato: 00000005-AUDIO-2026-04-02.opus>", "00000005-AUDIO-2026-04-02.opus",
                     id="ios-italian"),
        pytest.param(f"{LRM}<прикреплено: 00000005-AUDIO-2026-04-02.opus>", "00000005-AUDIO-2026-04-02.opus",
                     id="ios-any-language"),
        pytest.param("< attached: 00000005-AUDIO-2026-04-02.opus >", "00000005-AUDIO-2026-04-02.opus",
                     id="ios-old-spaced"),
        pytest.param(f"00000005-AUDIO-2026-04-02.opus \u2039{LRM}attached>", "00000005-AUDIO-2026-04-02.opus",
                     id="ios-old-guillemet"),
        pytest.param("voice memo.m4a (liitetty tiedosto)", "voice memo.m4a", id="file-in-the-folder"),
    ],
)
def test_voice_notes_in_any_language_are_voice_notes_with_their_file(tmp_path, body, file):
    path = chat(tmp_path, [f"07/07/2026, 10:00 - Gio: {body}", "07/07/2026, 10:01 - Ann: ok"], audio=(file,))
    result = read_whatsapp(path)
    assert summary(result) == [("voice", "Gio", "2026-07-07T10:00:00", file), ("text", "Ann", "2026-07-07T10:01:00", "ok")]
    assert result.n_voice_present == 1
    notes = read_notes(path, path.parent).notes
    assert [(n.audio.name, [c.text for c in n.candidates]) for n in notes] == [(file, ["ok"])]


def test_a_file_name_in_parentheses_is_text_unless_it_is_an_attachment(tmp_path):
    result = read_whatsapp(chat(tmp_path, ["07/07/2026, 10:00 - Gio: see notes.txt (later)"]))
    assert summary(result) == [("text", "Gio", "2026-07-07T10:00:00", "see notes.txt (later)")]


def test_text_before_an_ios_tag_is_the_caption_and_the_tag_goes(tmp_path):
    lines = [f"[02/04/26, 13:00:01] Gio: look at this {LRM}<attached: 00000006-PHOTO-2026-04-02-13-00-01.jpg>",
             f"[02/04/26, 13:00:02] Gio: said it {LRM}<attached: 00000007-AUDIO-2026-04-02-13-00-02.opus>"]
    result = read_whatsapp(chat(tmp_path, lines))
    assert [(r["id"], r["type"], r.get("text", r.get("file"))) for r in result.records] == [
        ("wa1", "text", "look at this"), ("wa2-text", "text", "said it"),
        ("wa2", "voice", "00000007-AUDIO-2026-04-02-13-00-02.opus")]


# ---------------------------------------------------------------- E: placeholders and notices


def test_placeholders_and_notices_never_become_candidates(tmp_path):
    noise = [
        f"Pythagoras Rechner.pdf • {LRM}1 Seite {LRM}Dokument weggelassen", "documento omitido",
        f"{LRM}image omitted", "<Media omitted>", "<Multimedia omitido>",
        "null", "You deleted this message", "This message was deleted", "Waiting for this message",
        "Waiting for this message. This may take a while.", "Это сообщение удалено.",
    ]
    lines = ["[02/04/26, 13:00:00] Gio: PTT-20260402-WA0001.opus (file attached)"]
    lines += [f"[02/04/26, 13:01:{i:02d}] Ann: {body}" for i, body in enumerate(noise)]
    lines += ["[02/04/26, 13:02:00] Ann: the real answer", f"[02/04/26, 13:03:00] Ann: fixed it {LRM}<This message was edited>"]
    path = chat(tmp_path, lines, audio=("PTT-20260402-WA0001.opus",))
    result = read_whatsapp(path)
    assert [r.get("text") for r in result.records] == [None, "the real answer", "fixed it"]
    assert (result.n_placeholders, result.n_notices) == (5, 6)
    assert result.skipped == {"media omitted": 5, "deleted or pending message": 6}
    [note] = read_notes(path, path.parent, window=2).notes
    assert [c.text for c in note.candidates] == ["the real answer", "fixed it"]


def test_an_omitted_voice_note_is_reported_not_dropped(tmp_path):
    lines = [f"[02/04/26, 13:00:00] Gio: {LRM}audio omitted",
             f"[02/04/26, 13:00:01] Gio: 00000009-AUDIO-2026-04-02.opus • {LRM}0:05 {LRM}Audio weggelassen"]
    result = read_whatsapp(chat(tmp_path, lines))
    assert result.n_voice == 2 and result.records == []
    assert [(e.line, e.reason) for e in result.errors] == [
        (1, "voice message not included in the export (exported without media)"),
        (2, "voice message not included in the export (exported without media)")]


def test_a_typed_sentence_like_a_notice_is_still_text(tmp_path):
    lines = ["02/04/2026, 13:00 - Ann: this message was deleted by mistake, sorry", "02/04/2026, 13:01 - Ann: nothing omitted"]
    result = read_whatsapp(chat(tmp_path, lines))
    assert [r["text"] for r in result.records] == ["this message was deleted by mistake, sorry", "nothing omitted"]


# ---------------------------------------------------------------- F: Telegram


def tg(mid: int | None, text: str) -> dict:
    msg = {"type": "message", "date": "2024-03-01T12:00:00", "date_unixtime": "1709294400", "from": "Zoë", "text": text}
    return msg if mid is None else {"id": mid, **msg}


def test_telegram_messages_without_id_get_a_stable_synthetic_id(tmp_path):
    path = tmp_path / "result.json"
    messages = [tg(None, "hello"), tg(None, "again"), tg(None, "again"), tg(7, "with id")]
    path.write_text(json.dumps({"name": "x", "messages": messages}), encoding="utf-8")
    first = read_telegram(path)
    ids = [r["id"] for r in first.records]
    assert [r["text"] for r in first.records] == ["hello", "again", "again", "with id"]
    assert first.errors == [] and len(set(ids)) == 4 and ids[3] == "7"
    assert all(i.startswith("noid-") for i in ids[:3]) and ids[2] == ids[1] + "-2"
    # the same message keeps its id when the export is trimmed differently
    path.write_text(json.dumps({"name": "x", "messages": messages[1:]}), encoding="utf-8")
    assert [r["id"] for r in read_telegram(path).records] == ids[1:]
    assert "3 messages had no id" in first.assumed["ids"]


def test_telegram_left_chats_are_read_and_said(tmp_path):
    doc = {"chats": {"list": [{"id": 1, "messages": [tg(1, "in a chat")]}]},
           "left_chats": {"list": [{"id": 2, "messages": [tg(1, "in a left chat")]}]}}
    path = tmp_path / "result.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    result = read_telegram(path)
    assert [(r["id"], r["text"]) for r in result.records] == [("1:1", "in a chat"), ("2:1", "in a left chat")]
    assert result.assumed["left chats"] == "1 chats the account left are read like the others"


def test_a_short_name_after_a_24_hour_time_is_not_taken_for_a_marker(tmp_path):
    result = read_whatsapp(chat(tmp_path, ["13. 6. 2018. 9:25:15 a: m", "13. 6. 2018. 10:01:02 a: n"]))
    assert summary(result) == [("text", "a", "2018-06-13T09:25:15", "m"), ("text", "a", "2018-06-13T10:01:02", "n")]
