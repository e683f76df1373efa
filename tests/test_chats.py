"""Tests for disamb.chats: the input contract, line by line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from disamb.chats import Candidate, ReadResult, loose_text, parse_ts, read_notes
from disamb.inputs import InputFileError, LineError, MissingAudioError, UnsafePathError, resolve_audio


# ---------------------------------------------------------------- helpers


@pytest.fixture
def rec(tmp_path: Path) -> Path:
    """A recordings folder holding v1.ogg .. v9.ogg and clips/r1.wav .. clips/r3.wav."""
    folder = tmp_path / "rec"
    (folder / "clips").mkdir(parents=True)
    for i in range(1, 10):
        (folder / f"v{i}.ogg").write_bytes(b"OggS")
    for i in range(1, 4):
        (folder / "clips" / f"r{i}.wav").write_bytes(b"RIFF")
    return folder


def write_lines(path: Path, lines: list, *, newline: str = "\n") -> Path:
    """Write dicts as JSON and strings verbatim, one per line."""
    text = newline.join(json.dumps(x, ensure_ascii=False) if not isinstance(x, str) else x for x in lines)
    path.write_text(text + newline, encoding="utf-8", newline="")
    return path


def voice(i: int, **extra) -> dict:
    return {"id": f"v{i}", "ts": "2022-07-07T19:54:00Z", "from": "alice", "type": "voice", "file": f"v{i}.ogg", **extra}


def text(i: int, body: str | None = None, **extra) -> dict:
    return {"id": f"m{i}", "from": "bob", "type": "text", "text": body if body is not None else f"message {i}", **extra}


def read(tmp_path: Path, rec: Path, lines: list, window: int = 10, **kw) -> ReadResult:
    return read_notes(write_lines(tmp_path / "chats.jsonl", lines, **kw), rec, window=window)


def reasons(result: ReadResult) -> list[tuple[int, str]]:
    return [(e.line, e.reason) for e in result.errors]


def cand_ids(note) -> list[str]:
    return [c.id for c in note.candidates]


# ---------------------------------------------------------------- chat windows


def test_window_takes_next_texts_and_skips_voice_notes(tmp_path, rec):
    lines = [voice(1), text(1), voice(2), text(2), text(3), voice(3), text(4), text(5)]
    result = read(tmp_path, rec, lines, window=3)
    assert result.format == "chat"
    assert [n.id for n in result.notes] == ["v1", "v2", "v3"]
    # Windows overlap: m2 and m3 are candidates of both v1 and v2.
    assert cand_ids(result.notes[0]) == ["m1", "m2", "m3"]
    assert cand_ids(result.notes[1]) == ["m2", "m3", "m4"]
    assert cand_ids(result.notes[2]) == ["m4", "m5"]
    assert result.n_texts == 5
    assert result.n_short_windows == 1
    assert result.n_lines == 8
    assert result.errors == []


def test_default_window_is_ten_and_short_windows_counted(tmp_path, rec):
    lines = [voice(1)] + [text(i) for i in range(1, 13)] + [voice(2)] + [text(i) for i in range(13, 16)]
    result = read(tmp_path, rec, lines)
    assert cand_ids(result.notes[0]) == [f"m{i}" for i in range(1, 11)]
    assert cand_ids(result.notes[1]) == ["m13", "m14", "m15"]
    assert result.n_short_windows == 1


def test_note_fields_are_filled(tmp_path, rec):
    result = read(tmp_path, rec, [voice(1), text(1, "see u at 5", ts=1657223647)])
    note = result.notes[0]
    assert note.file == "v1.ogg"
    assert note.audio == (rec / "v1.ogg").resolve()
    assert note.audio.is_absolute()
    assert note.ts == 1657223640.0
    assert note.sender == "alice"
    assert note.line == 1
    assert note.candidates == [Candidate(id="m1", text="see u at 5", ts=1657223647.0, sender="bob")]
    assert note.gold_in_window is None and not note.has_gold


def test_voice_note_without_texts_after_it_is_an_error(tmp_path, rec):
    result = read(tmp_path, rec, [text(1), voice(1), text(2), voice(2), voice(3)])
    assert [n.id for n in result.notes] == ["v1"]
    assert reasons(result) == [(4, "no text messages after this voice note"),
                               (5, "no text messages after this voice note")]
    assert result.n_short_windows == 1


def test_text_is_kept_untouched_including_empty(tmp_path, rec):
    result = read(tmp_path, rec, [voice(1), text(1, "  Hi,  THERE!  "), text(2, ""), text(3, "   ")])
    assert [c.text for c in result.notes[0].candidates] == ["  Hi,  THERE!  ", "", "   "]
    assert result.errors == []


def test_window_stops_at_a_change_of_chat(tmp_path, rec):
    lines = [voice(1, chat="A"), text(1, chat="A"), text(2, chat="B"), voice(2, chat="B"), text(3, chat="B")]
    result = read(tmp_path, rec, lines)
    assert cand_ids(result.notes[0]) == ["m1"]
    assert cand_ids(result.notes[1]) == ["m3"]
    assert result.n_short_windows == 2


# ---------------------------------------------------------------- gold


def test_label_id_inside_window(tmp_path, rec):
    result = read(tmp_path, rec, [voice(1, label_id="m2"), text(1), text(2, "the one")])
    note = result.notes[0]
    assert (note.gold_label_id, note.gold_text, note.gold_in_window) == ("m2", "the one", True)
    assert note.has_gold


def test_label_id_outside_window_keeps_text(tmp_path, rec):
    result = read(tmp_path, rec, [voice(1, label_id="m3"), text(1), text(2), text(3, "late")], window=2)
    note = result.notes[0]
    assert (note.gold_label_id, note.gold_text, note.gold_in_window) == (None, "late", False)


def test_label_id_missing_from_log(tmp_path, rec):
    result = read(tmp_path, rec, [voice(1, label_id="m99"), text(1)])
    note = result.notes[0]
    assert (note.gold_label_id, note.gold_text, note.gold_in_window) == (None, None, False)
    assert result.errors == []


def test_label_id_must_be_string(tmp_path, rec):
    result = read(tmp_path, rec, [voice(1, label_id=2), text(1)])
    assert result.notes == []
    assert reasons(result) == [(1, '"label_id" must be a string, got number')]


def test_label_exact_match_wins_over_loose_match(tmp_path, rec):
    result = read(tmp_path, rec, [voice(1, label="See u at 5!"), text(1, "see u at 5"), text(2, "See u at 5!")])
    note = result.notes[0]
    assert (note.gold_label_id, note.gold_text, note.gold_in_window) == ("m2", "See u at 5!", True)


def test_label_loose_match(tmp_path, rec):
    result = read(tmp_path, rec, [voice(1, label="  SEE  u, at 5. "), text(1, "nope"), text(2, "see u at 5")])
    note = result.notes[0]
    assert (note.gold_label_id, note.gold_text, note.gold_in_window) == ("m2", "  SEE  u, at 5. ", True)


def test_label_not_among_candidates(tmp_path, rec):
    result = read(tmp_path, rec, [voice(1, label="something else"), text(1, "see u at 5")])
    note = result.notes[0]
    assert (note.gold_label_id, note.gold_text, note.gold_in_window) == (None, "something else", False)


def test_label_must_be_string(tmp_path, rec):
    result = read(tmp_path, rec, [voice(1, label=["x"]), text(1)])
    assert reasons(result) == [(1, '"label" must be a string, got array')]


def test_loose_text():
    assert loose_text("  Don't   STOP,\tnow!! ") == "dont stop now"
    assert loose_text("Straße") == "strasse"
    assert loose_text("?!...") == ""


# ---------------------------------------------------------------- bad lines


@pytest.mark.parametrize(
    "line, reason",
    [
        ("{not json", "not valid JSON (Expecting property name enclosed in double quotes at column 2)"),
        ("", None),
        ('"just a string"', "expected a JSON object, got string"),
        ("[1, 2]", "expected a JSON object, got array"),
        ('{"id": "m5", "type": "text", "text": NaN}', "not valid JSON (NaN is not allowed)"),
        ({"type": "text", "text": "x"}, 'missing "id"'),
        ({"id": 5, "type": "text", "text": "x"}, '"id" must be a string, got number'),
        ({"id": "  ", "type": "text", "text": "x"}, '"id" is empty'),
        ({"id": "m5", "text": "x"}, 'missing "type"'),
        ({"id": "m5", "type": "image", "file": "a.jpg"}, 'unknown type "image" (expected "voice" or "text")'),
        ({"id": "m5", "type": "text"}, 'missing "text"'),
        ({"id": "m5", "type": "text", "text": 12}, '"text" must be a string, got number'),
        ({"id": "m5", "type": "text", "text": None}, '"text" must be a string, got null'),
        ({"id": "v5", "type": "voice"}, 'missing "file"'),
        ({"id": "v5", "type": "voice", "file": True}, '"file" must be a string, got boolean'),
        ({"id": "m5", "type": "text", "text": "x", "from": 7}, '"from" must be a string, got number'),
        ({"id": "m5", "type": "text", "text": "x", "ts": "yesterday"},
         '"ts" is not an ISO 8601 time or a number: "yesterday"'),
        ({"id": "m5", "type": "text", "text": "x", "ts": {}}, '"ts" must be a time or a number, got object'),
    ],
)
def test_bad_line_is_reported_and_skipped(tmp_path, rec, line, reason):
    result = read(tmp_path, rec, [voice(1), text(1), line, text(2)])
    assert cand_ids(result.notes[0]) == ["m1", "m2"]
    assert reasons(result) == ([] if reason is None else [(3, reason)])


def test_duplicate_id_later_line_is_the_error(tmp_path, rec):
    result = read(tmp_path, rec, [voice(1), text(1, "first"), text(2), {**text(1), "text": "second"}, voice(1)])
    assert cand_ids(result.notes[0]) == ["m1", "m2"]
    assert result.notes[0].candidates[0].text == "first"
    assert reasons(result) == [(4, 'duplicate id "m1" (first seen on line 2)'),
                               (5, 'duplicate id "v1" (first seen on line 1)')]


def test_line_numbers_count_empty_lines_and_crlf(tmp_path, rec):
    lines = [voice(1), "", "   ", text(1), "oops", text(2)]
    result = read(tmp_path, rec, lines, newline="\r\n")
    assert cand_ids(result.notes[0]) == ["m1", "m2"]
    assert reasons(result) == [(5, "not valid JSON (Expecting value at column 1)")]
    assert result.n_lines == 4


def test_bom_is_accepted(tmp_path, rec):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(voice(1)) + "\n" + json.dumps(text(1)) + "\n").encode())
    result = read_notes(path, rec)
    assert [n.id for n in result.notes] == ["v1"] and result.errors == []


def test_non_utf8_line_is_a_line_error(tmp_path, rec):
    path = tmp_path / "latin.jsonl"
    good = [json.dumps(voice(1)).encode(), json.dumps(text(1)).encode()]
    bad = '{"id": "m2", "type": "text", "text": "caf\xe9"}'.encode("latin-1")
    path.write_bytes(b"\n".join([good[0], bad, good[1]]) + b"\n")
    result = read_notes(path, rec)
    assert cand_ids(result.notes[0]) == ["m1"]
    assert reasons(result) == [(2, "not valid UTF-8 (byte 0xe9 at column 42)")]


def test_errors_are_in_file_order(tmp_path, rec):
    lines = [voice(1), text(1), "bad", voice(2), {"id": "v9", "type": "voice", "file": "nope.ogg"}]
    result = read(tmp_path, rec, lines)
    assert [e.line for e in result.errors] == [3, 4, 5]
    assert str(result.errors[0]) == f"{tmp_path / 'chats.jsonl'}:3: not valid JSON (Expecting value at column 1)"


# ---------------------------------------------------------------- audio paths


def test_missing_audio_is_a_line_error(tmp_path, rec):
    result = read(tmp_path, rec, [{**voice(1), "file": "v12.ogg"}, voice(2), text(1)])
    assert [n.id for n in result.notes] == ["v2"]
    assert reasons(result) == [(1, "audio file not found: v12.ogg")]


@pytest.mark.parametrize(
    "rel, reason",
    [
        ("../../etc/passwd", "audio path leaves the recordings folder: ../../etc/passwd"),
        ("clips/../v1.ogg", "audio path leaves the recordings folder: clips/../v1.ogg"),
        ("/etc/passwd", "audio path is absolute (must be relative to the recordings folder): /etc/passwd"),
        ("", '"file" is empty'),
        ("clips", "audio path is not a file: clips"),
    ],
)
def test_unsafe_or_unusable_paths_are_refused(tmp_path, rec, rel, reason):
    result = read(tmp_path, rec, [{**voice(1), "file": rel}, voice(2), text(1)])
    assert [n.id for n in result.notes] == ["v2"]
    assert reasons(result) == [(1, reason)]


def test_symlink_pointing_outside_is_refused(tmp_path, rec):
    secret = tmp_path / "secret.ogg"
    secret.write_bytes(b"x")
    (rec / "link.ogg").symlink_to(secret)
    (rec / "sub").symlink_to(tmp_path, target_is_directory=True)
    lines = [{**voice(1), "file": "link.ogg"}, {**voice(2), "file": "sub/secret.ogg"}, voice(3), text(1)]
    result = read(tmp_path, rec, lines)
    assert [n.id for n in result.notes] == ["v3"]
    assert reasons(result) == [(1, "audio path leaves the recordings folder through a link: link.ogg"),
                               (2, "audio path leaves the recordings folder through a link: sub/secret.ogg")]


def test_symlink_inside_the_folder_is_fine(tmp_path, rec):
    (rec / "alias.ogg").symlink_to(rec / "v1.ogg")
    result = read(tmp_path, rec, [{**voice(1), "file": "alias.ogg"}, text(1)])
    assert result.notes[0].audio == (rec / "v1.ogg").resolve()
    assert result.notes[0].file == "alias.ogg"


def test_recordings_folder_reached_through_a_link_is_fine(tmp_path, rec):
    link = tmp_path / "rec-link"
    link.symlink_to(rec, target_is_directory=True)
    result = read_notes(write_lines(tmp_path / "c.jsonl", [voice(1), text(1)]), link)
    assert result.notes[0].audio == (rec / "v1.ogg").resolve()


def test_resolve_audio_never_opens_the_file(tmp_path, rec):
    fifo = rec / "pipe.ogg"
    os.mkfifo(fifo)  # opening a FIFO for reading would block the test
    with pytest.raises(MissingAudioError, match="audio path is not a file: pipe.ogg"):
        resolve_audio(rec, "pipe.ogg")
    outside = tmp_path / "outside-pipe"
    os.mkfifo(outside)
    (rec / "out.ogg").symlink_to(outside)
    with pytest.raises(UnsafePathError):
        resolve_audio(rec, "out.ogg")


def test_resolve_audio_errors(tmp_path, rec):
    assert resolve_audio(rec, "clips/r1.wav") == (rec / "clips" / "r1.wav").resolve()
    with pytest.raises(MissingAudioError, match="audio file not found: nope.wav"):
        resolve_audio(rec, "nope.wav")
    with pytest.raises(UnsafePathError, match="NUL"):
        resolve_audio(rec, "a\x00b.wav")
    (rec / "loop").symlink_to(rec / "loop")
    with pytest.raises((UnsafePathError, MissingAudioError)):
        resolve_audio(rec, "loop")


# ---------------------------------------------------------------- manifests


def entry(i: int, **extra) -> dict:
    return {"id": f"r{i}", "audio": f"clips/r{i}.wav", "candidates": ["see u at 5", "ok", "1158"], **extra}


def test_manifest_reads_candidates_and_gold(tmp_path, rec):
    lines = [entry(1, label_index=2), entry(2, label="OK!"), entry(3, label="nothing like it"),
             {"id": "r4", "audio": "v1.ogg", "candidates": [f"c{i}" for i in range(14)]}]
    result = read(tmp_path, rec, lines, window=10)
    assert result.format == "manifest"
    assert result.errors == []
    r1, r2, r3, r4 = result.notes
    assert cand_ids(r1) == ["r1#0", "r1#1", "r1#2"]
    assert r1.file == "clips/r1.wav" and r1.audio == (rec / "clips/r1.wav").resolve()
    assert (r1.gold_label_id, r1.gold_text, r1.gold_in_window) == ("r1#2", "1158", True)
    assert (r2.gold_label_id, r2.gold_text, r2.gold_in_window) == ("r2#1", "OK!", True)
    assert (r3.gold_label_id, r3.gold_text, r3.gold_in_window) == (None, "nothing like it", False)
    assert len(r4.candidates) == 14 and r4.gold_in_window is None
    assert result.n_short_windows == 0 and result.n_texts == 0


@pytest.mark.parametrize(
    "line, reason",
    [
        (entry(5, label_index=3), '"label_index" 3 is out of range (3 candidates)'),
        (entry(5, label_index=-1), '"label_index" -1 is out of range (3 candidates)'),
        (entry(5, label_index="1"), '"label_index" must be an integer, got string'),
        (entry(5, label_index=True), '"label_index" must be an integer, got boolean'),
        ({**entry(5), "candidates": "one"}, '"candidates" must be an array, got string'),
        ({**entry(5), "candidates": []}, '"candidates" is empty'),
        ({**entry(5), "candidates": ["a", 3]}, '"candidates"[1] must be a string, got number'),
        ({**entry(5), "candidates": ["a"] * 51}, "too many candidates: 51 (at most 50)"),
        ({"id": "r5", "candidates": ["a"]}, 'missing "audio"'),
        ({"id": "r5", "audio": 3, "candidates": ["a"]}, '"audio" must be a string, got number'),
        ({"id": "r5", "audio": "v1.ogg"}, 'missing "candidates"'),
        ({**entry(5), "audio": "../x.wav"}, "audio path leaves the recordings folder: ../x.wav"),
        ({**entry(5), "audio": "clips/r9.wav"}, "audio file not found: clips/r9.wav"),
        (entry(1), 'duplicate id "r1" (first seen on line 1)'),
    ],
)
def test_manifest_bad_lines(tmp_path, rec, line, reason):
    result = read(tmp_path, rec, [entry(1), line, entry(2)])
    assert [n.id for n in result.notes] == ["r1", "r2"]
    assert reasons(result) == [(2, reason)]


def test_manifest_allows_exactly_fifty(tmp_path, rec):
    result = read(tmp_path, rec, [{**entry(1), "candidates": ["a"] * 50}])
    assert len(result.notes[0].candidates) == 50


# ---------------------------------------------------------------- whole-file errors


def test_missing_file(tmp_path, rec):
    with pytest.raises(InputFileError, match=r"nope\.jsonl: file not found$"):
        read_notes(tmp_path / "nope.jsonl", rec)


def test_directory_instead_of_file(tmp_path, rec):
    with pytest.raises(InputFileError, match="is a directory, not a file"):
        read_notes(tmp_path, rec)


def test_empty_file(tmp_path, rec):
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(InputFileError, match="file is empty"):
        read_notes(tmp_path / "e.jsonl", rec)


def test_binary_file(tmp_path, rec):
    (tmp_path / "b.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    with pytest.raises(InputFileError, match="not a text file"):
        read_notes(tmp_path / "b.jsonl", rec)


def test_utf16_file(tmp_path, rec):
    (tmp_path / "u.jsonl").write_text(json.dumps(text(1)), encoding="utf-16")
    with pytest.raises(InputFileError, match="UTF-16"):
        read_notes(tmp_path / "u.jsonl", rec)


def test_no_valid_record(tmp_path, rec):
    path = write_lines(tmp_path / "x.jsonl", ["hello", '{"name": "x"}', "[1]"])
    with pytest.raises(InputFileError) as info:
        read_notes(path, rec)
    assert str(info.value) == (f"{path}: no valid chat message or manifest entry in 3 lines; "
                               "first problem on line 1: not valid JSON (Expecting value at column 1)")


def test_known_format_but_every_line_broken(tmp_path, rec):
    path = write_lines(tmp_path / "x.jsonl", [{"id": 1, "type": "text", "text": "a"}])
    with pytest.raises(InputFileError, match='first problem on line 1: "id" must be a string, got number'):
        read_notes(path, rec)


def test_well_formed_but_refused_notes_are_line_errors_not_file_errors(tmp_path, rec):
    result = read(tmp_path, rec, [{**voice(1), "file": "gone.ogg"}])
    assert result.notes == [] and reasons(result) == [(1, "audio file not found: gone.ogg")]


def test_only_texts_is_a_valid_empty_result(tmp_path, rec):
    result = read(tmp_path, rec, [text(1), text(2)])
    assert result.notes == [] and result.errors == [] and result.n_texts == 2


def test_missing_recordings_folder(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [voice(1), text(1)])
    with pytest.raises(InputFileError, match="recordings folder not found"):
        read_notes(path, tmp_path / "nope")


def test_window_must_be_positive(tmp_path, rec):
    with pytest.raises(ValueError):
        read(tmp_path, rec, [voice(1), text(1)], window=0)


# ---------------------------------------------------------------- timestamps


def test_parse_ts():
    assert parse_ts("2022-07-07T19:54:07Z") == 1657223647.0
    assert parse_ts("2022-07-07T21:54:07+02:00") == 1657223647.0
    assert parse_ts("2022-07-07T19:54:07") == 1657223647.0  # no zone: UTC
    assert parse_ts(1657223647) == 1657223647.0
    assert parse_ts("1657223647") == 1657223647.0
    assert parse_ts(None) is None
    with pytest.raises(ValueError, match="finite"):
        parse_ts(float("inf"))


# ---------------------------------------------------------------- properties


_line = st.one_of(
    st.binary(max_size=60),
    st.text(max_size=60).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.builds(lambda o: json.dumps(o).encode(), st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
            st.sampled_from(["id", "type", "file", "text", "audio", "candidates", "label", "label_id",
                             "label_index", "ts", "from", "chat"]), kids, max_size=6),
        max_leaves=10)),
    st.builds(lambda o: json.dumps(o).encode(), st.fixed_dictionaries({
        "id": st.sampled_from(["v1", "m1", "m2", "v2"]),
        "type": st.sampled_from(["voice", "text", "image"]),
        "file": st.sampled_from(["v1.ogg", "../v1.ogg", "/etc/passwd", "none.ogg", ""]),
        "text": st.text(max_size=10),
    })),
)

_settings = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_settings
@given(lines=st.lists(_line, max_size=8), crlf=st.booleans(), bom=st.booleans())
def test_arbitrary_lines_never_raise_anything_but_input_file_error(tmp_path, rec, lines, crlf, bom):
    path = tmp_path / "prop.jsonl"
    data = (b"\r\n" if crlf else b"\n").join(lines)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    try:
        result = read_notes(path, rec, window=2)
    except InputFileError as exc:
        assert str(exc).startswith(str(path) + ": ")
        return
    assert all(isinstance(e, LineError) and e.line >= 1 for e in result.errors)
    assert [e.line for e in result.errors] == sorted(e.line for e in result.errors)
    for note in result.notes:
        assert note.audio.is_relative_to(rec.resolve()) and note.audio.is_file()
        assert note.candidates
        if note.gold_label_id is not None:
            assert note.gold_label_id in cand_ids(note)


@_settings
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_input_file_error(tmp_path, rec, data):
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(data)
    try:
        read_notes(path, rec)
    except InputFileError:
        pass


@_settings
@given(n_texts=st.integers(0, 12), voice_at=st.lists(st.integers(0, 12), max_size=4, unique=True),
       window=st.integers(1, 5))
def test_windows_match_a_direct_definition(tmp_path, rec, n_texts, voice_at, window):
    """Candidates are exactly the next `window` texts after each voice note."""
    stream: list[dict] = []
    for i in range(n_texts + 1):
        if i in voice_at:
            stream.append(voice(sorted(voice_at).index(i) + 1))
        if i < n_texts:
            stream.append(text(i))
    if not stream:
        return
    result = read(tmp_path, rec, stream, window=window)
    for note in result.notes:
        pos = next(k for k, r in enumerate(stream) if r["id"] == note.id)
        expected = [r["id"] for r in stream[pos + 1:] if r["type"] == "text"][:window]
        assert cand_ids(note) == expected
    assert result.n_short_windows == sum(1 for n in result.notes if len(n.candidates) < window)


def test_label_id_wins_and_label_fills_unknown_text(tmp_path, rec):
    lines = [voice(1, label_id="m1", label="ignored"), voice(2, label_id="gone", label="typed elsewhere"),
             voice(3, label_id="v1"), text(1, "hello")]
    result = read(tmp_path, rec, lines)
    v1, v2, v3 = result.notes
    assert (v1.gold_label_id, v1.gold_text, v1.gold_in_window) == ("m1", "hello", True)
    assert (v2.gold_label_id, v2.gold_text, v2.gold_in_window) == (None, "typed elsewhere", False)
    # A label_id naming a voice note is not a text message: gold known, text unknown.
    assert (v3.gold_label_id, v3.gold_text, v3.gold_in_window) == (None, None, False)
