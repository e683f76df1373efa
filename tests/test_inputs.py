"""The one audio-extension table: finding recordings, serving them and reading exports agree."""

from __future__ import annotations

from disamb import inputs, predict, review_server, whatsapp


def test_every_reader_uses_the_one_table():
    assert predict.AUDIO_EXTENSIONS is inputs.AUDIO_EXTENSIONS
    assert review_server.AUDIO_TYPES is inputs.AUDIO_TYPES
    assert inputs.AUDIO_EXTENSIONS == set(inputs.AUDIO_TYPES)
    assert all(t.startswith("audio/") for t in inputs.AUDIO_TYPES.values())


def test_find_recordings_takes_every_ending_in_the_table(tmp_path):
    for ext in sorted(inputs.AUDIO_EXTENSIONS):
        (tmp_path / f"clip{ext}").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not audio")
    notes, refused = predict.find_recordings(tmp_path)
    assert sorted(n.file for n in notes) == sorted(f"clip{ext}" for ext in inputs.AUDIO_EXTENSIONS)
    assert refused == []


def test_whatsapp_voice_attachments_follow_the_table_except_video():
    assert whatsapp._is_voice_file("PTT-20220101-WA0001.opus")
    assert whatsapp._is_voice_file("recording.webm") and whatsapp._is_voice_file("memo.FLAC")
    assert not whatsapp._is_voice_file("VID-20220101-WA0002.mp4")  # an export's .mp4 is a video
    assert not whatsapp._is_voice_file("IMG-20220101-WA0003.jpg")
