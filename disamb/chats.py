"""Read chat streams, explicit-candidate manifests and app exports into VoiceNotes.

Input is user data: a bad line must cost that line only, never the run, so every
per-line problem becomes a `LineError` (file:line: reason) and the line is skipped.
Only problems with the whole file raise `InputFileError`. Audio paths are checked
against the recordings folder before anything touches them, because a chat log is
untrusted and must not make us read files outside that folder.
"""

from __future__ import annotations

import json
import math
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from . import exports
from .inputs import AudioPathError, InputFileError, LineError, _show, read_text_bytes, resolve_audio

MAX_MANIFEST_CANDIDATES = 50
"""A manifest lists its candidates explicitly; more than this is almost surely a mistake."""

MAX_TEXT_CHARS = 10_000
"""Texts are cut to this many characters as they are read: far past what Whisper's 448-token
context can score, and it bounds the work of every text transform that follows."""


@dataclass
class Candidate:
    id: str
    text: str
    ts: float | None = None
    sender: str | None = None
    chars: int | None = None  # the length as typed, when the text was cut to MAX_TEXT_CHARS


@dataclass
class VoiceNote:
    id: str
    file: str
    audio: Path
    candidates: list[Candidate]
    gold_label_id: str | None = None
    gold_text: str | None = None
    gold_in_window: bool | None = None
    ts: float | None = None
    sender: str | None = None
    line: int = 0

    @property
    def has_gold(self) -> bool:
        return self.gold_in_window is not None


@dataclass
class ReadResult:
    notes: list[VoiceNote]
    errors: list[LineError]
    format: str
    n_lines: int
    n_texts: int
    n_short_windows: int


class _BadLine(Exception):
    """Internal: the current line is rejected for the given reason."""


# ---------------------------------------------------------------- small helpers


def _jtype(value: Any) -> str:
    """JSON's own name for a value's type, which is what users see in their file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _req_str(obj: dict, key: str, *, allow_empty: bool = True) -> str:
    if key not in obj:
        raise _BadLine(f'missing "{key}"')
    value = obj[key]
    if not isinstance(value, str):
        raise _BadLine(f'"{key}" must be a string, got {_jtype(value)}')
    if not allow_empty and not value.strip():
        raise _BadLine(f'"{key}" is empty')
    return value


def _opt_str(obj: dict, key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _BadLine(f'"{key}" must be a string, got {_jtype(value)}')
    return value


def parse_ts(value: Any) -> float | None:
    """Unix seconds from a number or an ISO 8601 string; times without a zone are taken as UTC.

    Raises ValueError with a short reason when the value is neither.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError('"ts" must be a time or a number, got boolean')
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f'"ts" must be a finite number, got {value}')
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f'"ts" must be a time or a number, got {_jtype(value)}')
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(number):
            return number
    iso = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(f'"ts" is not an ISO 8601 time or a number: {_show(value)}') from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _ts(obj: dict) -> float | None:
    try:
        return parse_ts(obj.get("ts"))
    except ValueError as exc:
        raise _BadLine(str(exc)) from None


def cap_text(text: str) -> tuple[str, int | None]:
    """The text cut to MAX_TEXT_CHARS, and its length as typed when it was cut (else None)."""
    if len(text) <= MAX_TEXT_CHARS:
        return text, None
    return text[:MAX_TEXT_CHARS], len(text)


def _capped(text: str | None) -> str | None:
    return None if text is None else cap_text(text)[0]


def loose_text(text: str) -> str:
    """Casefold, drop punctuation, collapse whitespace: the forgiving form used to find a gold label."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(ch for ch in folded if not unicodedata.category(ch).startswith("P"))
    return " ".join(kept.split())


def _match_label(label: str, candidates: list[Candidate]) -> str | None:
    """Id of the candidate the gold text refers to: exact text first, then the loose form."""
    for cand in candidates:
        if cand.text == label:
            return cand.id
    wanted = loose_text(label)
    if not wanted:
        return None
    for cand in candidates:
        if loose_text(cand.text) == wanted:
            return cand.id
    return None


# ---------------------------------------------------------------- file reading


def _read_lines(path: Path) -> list[tuple[int, str | LineError]]:
    """Non-empty physical lines as text, or a LineError for lines that are not UTF-8.

    Decoding line by line keeps one bad byte from losing the whole file.
    """
    shown = str(path)
    data = read_text_bytes(path)
    out: list[tuple[int, str | LineError]] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = raw[exc.start]
            out.append((number, LineError(shown, number, f"not valid UTF-8 (byte 0x{bad:02x} at column {exc.start + 1})")))
            continue
        if text.strip():
            out.append((number, text))
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _parse_json(text: str) -> Any:
    """json.loads with NaN/Infinity refused and every failure as one short reason."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _BadLine(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise _BadLine("not valid JSON (nested too deeply)") from None
    except ValueError as exc:
        raise _BadLine(f"not valid JSON ({exc})") from None


def _detect_jsonl_format(objects: Iterable[tuple[int, Any]]) -> str | None:
    """The first object that looks like either format decides: manifests have candidates + audio."""
    for _, obj in objects:
        if not isinstance(obj, dict):
            continue
        if "candidates" in obj and "audio" in obj:
            return "manifest"
        if "type" in obj:
            return "chat"
    return None


# ---------------------------------------------------------------- chat streams


@dataclass
class _Message:
    line: int
    id: str
    kind: str
    ts: float | None
    sender: str | None
    chat: str | None
    text: str | None = None
    text_chars: int | None = None
    file: str | None = None
    audio: Path | None = None
    label_id: str | None = None
    label: str | None = None


def _chat_message(obj: Any) -> _Message:
    """Validate one chat-stream object (everything but the audio file and duplicate ids)."""
    if not isinstance(obj, dict):
        raise _BadLine(f"expected a JSON object, got {_jtype(obj)}")
    msg_id = _req_str(obj, "id", allow_empty=False)
    kind = _req_str(obj, "type")
    if kind not in ("voice", "text"):
        raise _BadLine(f'unknown type {_show(kind)} (expected "voice" or "text")')
    ts = _ts(obj)
    sender = _opt_str(obj, "from")
    chat_value = obj.get("chat")
    if isinstance(chat_value, bool) or not isinstance(chat_value, (str, int, type(None))):
        raise _BadLine(f'"chat" must be a string, got {_jtype(chat_value)}')
    chat = None if chat_value is None else str(chat_value)
    msg = _Message(line=0, id=msg_id, kind=kind, ts=ts, sender=sender, chat=chat)
    if kind == "text":
        msg.text, msg.text_chars = cap_text(_req_str(obj, "text"))
    else:
        msg.file = _req_str(obj, "file", allow_empty=False)
        msg.label_id = _opt_str(obj, "label_id")
        msg.label = _capped(_opt_str(obj, "label"))
    return msg


@dataclass
class ChatNotes:
    """What `notes_from_chat` found: the notes plus the counts a summary needs."""

    notes: list[VoiceNote]
    n_texts: int
    n_short_windows: int
    n_well_formed: int  # records that passed validation, even if later refused for audio


def notes_from_chat(
    items: Iterable[tuple[int, Any]],
    source: str,
    recordings: Path,
    window: int,
    errors: list[LineError],
) -> ChatNotes:
    """Turn chat-stream objects into notes.

    `items` are (line, parsed object or LineError). Errors are appended to `errors`.
    A window never crosses a change of the optional "chat" key, so merged exports of
    several chats keep each voice note's candidates inside its own conversation.
    """
    checked, n_well_formed = _checked(items, source, recordings, errors, _chat_message,
                                      lambda msg: (msg.file or "") if msg.kind == "voice" else None)
    kept: list[_Message] = []
    for line, msg, audio in checked:
        msg.line, msg.audio = line, audio
        kept.append(msg)

    # Segment numbers change whenever the chat key changes; windows stay in one segment.
    segment: list[int] = []
    for pos, msg in enumerate(kept):
        if pos == 0:
            segment.append(0)
        else:
            segment.append(segment[-1] + (msg.chat != kept[pos - 1].chat))
    text_pos = [pos for pos, msg in enumerate(kept) if msg.kind == "text"]
    texts_by_id = {msg.id: msg for msg in kept if msg.kind == "text"}

    notes: list[VoiceNote] = []
    n_short = 0
    for pos, msg in enumerate(kept):
        if msg.kind != "voice":
            continue
        start = bisect_right(text_pos, pos)
        cands: list[Candidate] = []
        for tpos in text_pos[start:]:
            if len(cands) >= window or segment[tpos] != segment[pos]:
                break
            t = kept[tpos]
            cands.append(Candidate(id=t.id, text=t.text or "", ts=t.ts, sender=t.sender, chars=t.text_chars))
        if not cands:
            errors.append(LineError(source, msg.line, "no text messages after this voice note"))
            continue
        if len(cands) < window:
            n_short += 1
        note = VoiceNote(
            id=msg.id, file=msg.file or "", audio=msg.audio or Path(), candidates=cands,
            ts=msg.ts, sender=msg.sender, line=msg.line,
        )
        _set_chat_gold(note, msg, texts_by_id)
        notes.append(note)
    return ChatNotes(notes=notes, n_texts=len(text_pos), n_short_windows=n_short, n_well_formed=n_well_formed)


def _set_chat_gold(note: VoiceNote, msg: _Message, texts_by_id: dict[str, _Message]) -> None:
    """label_id wins over label; a label_id unknown to the log still marks the note as gold-known."""
    if msg.label_id is not None:
        ids = {c.id for c in note.candidates}
        note.gold_in_window = msg.label_id in ids
        note.gold_label_id = msg.label_id if note.gold_in_window else None
        target = texts_by_id.get(msg.label_id)
        note.gold_text = target.text if target is not None else msg.label
    elif msg.label is not None:
        note.gold_text = msg.label
        note.gold_label_id = _match_label(msg.label, note.candidates)
        note.gold_in_window = note.gold_label_id is not None


# ---------------------------------------------------------------- manifests


@dataclass
class _Entry:
    id: str
    audio: str
    texts: list[str]
    label: str | None
    label_index: int | None
    ts: float | None
    sender: str | None


def _manifest_entry(obj: Any) -> _Entry:
    """Validate one manifest object (everything but the audio file and duplicate ids)."""
    if not isinstance(obj, dict):
        raise _BadLine(f"expected a JSON object, got {_jtype(obj)}")
    entry_id = _req_str(obj, "id", allow_empty=False)
    audio = _req_str(obj, "audio", allow_empty=False)
    if "candidates" not in obj:
        raise _BadLine('missing "candidates"')
    texts = obj["candidates"]
    if not isinstance(texts, list):
        raise _BadLine(f'"candidates" must be an array, got {_jtype(texts)}')
    if not texts:
        raise _BadLine('"candidates" is empty')
    if len(texts) > MAX_MANIFEST_CANDIDATES:
        raise _BadLine(f"too many candidates: {len(texts)} (at most {MAX_MANIFEST_CANDIDATES})")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise _BadLine(f'"candidates"[{index}] must be a string, got {_jtype(text)}')
    label = _capped(_opt_str(obj, "label"))
    label_index = obj.get("label_index")
    if label_index is not None:
        if isinstance(label_index, bool) or not isinstance(label_index, int):
            raise _BadLine(f'"label_index" must be an integer, got {_jtype(label_index)}')
        if not 0 <= label_index < len(texts):
            raise _BadLine(f'"label_index" {label_index} is out of range ({len(texts)} candidates)')
    return _Entry(id=entry_id, audio=audio, texts=texts, label=label, label_index=label_index,
                  ts=_ts(obj), sender=_opt_str(obj, "from"))


def _entry_note(entry: _Entry, audio: Path, line: int) -> VoiceNote:
    cands = []
    for i, typed in enumerate(entry.texts):
        text, chars = cap_text(typed)
        cands.append(Candidate(id=f"{entry.id}#{i}", text=text, chars=chars))
    note = VoiceNote(id=entry.id, file=entry.audio, audio=audio, candidates=cands,
                     ts=entry.ts, sender=entry.sender, line=line)
    if entry.label_index is not None:
        note.gold_label_id = cands[entry.label_index].id
        note.gold_text = cands[entry.label_index].text
        note.gold_in_window = True
    elif entry.label is not None:
        note.gold_text = entry.label
        note.gold_label_id = _match_label(entry.label, cands)
        note.gold_in_window = note.gold_label_id is not None
    return note


def notes_from_manifest(
    items: Iterable[tuple[int, Any]], source: str, recordings: Path, errors: list[LineError]
) -> tuple[list[VoiceNote], int]:
    """Turn manifest objects into notes; returns (notes, number of well-formed entries).

    Every listed candidate is kept: a manifest states its candidates, so `window` does not apply.
    """
    checked, n_well_formed = _checked(items, source, recordings, errors, _manifest_entry, lambda entry: entry.audio)
    return [_entry_note(entry, audio, line) for line, entry, audio in checked], n_well_formed


def _checked(items, source: str, recordings: Path, errors: list[LineError], parse, audio_file):
    """The checks chat streams and manifests share, line by line: `parse` validates the
    object, its id must be new and its audio (`audio_file` names it; None: a line without
    audio) inside the recordings folder. Returns (line, parsed, audio path) for the lines
    kept and how many were well formed (parsed, even if then refused for id or audio);
    each line refused is a LineError in `errors`."""
    kept = []
    first_seen: dict[str, int] = {}
    n_well_formed = 0
    for line, obj in _parsed(items, errors):
        try:
            value = parse(obj)
            n_well_formed += 1
            _claim_id(first_seen, value.id, line)
            file = audio_file(value)
            audio = None if file is None else _line_audio(recordings, file)
        except _BadLine as exc:
            errors.append(LineError(source, line, str(exc)))
            continue
        kept.append((line, value, audio))
    return kept, n_well_formed


def _parsed(items: Iterable[tuple[int, Any]], errors: list[LineError]) -> Iterator[tuple[int, Any]]:
    """The (line, object) pairs that parsed; a line that did not is already its LineError, kept in `errors`."""
    for line, obj in items:
        if isinstance(obj, LineError):
            errors.append(obj)
        else:
            yield line, obj


def _claim_id(first_seen: dict[str, int], note_id: str, line: int) -> None:
    """Record the line an id first appears on; a second appearance is a bad line."""
    if note_id in first_seen:
        raise _BadLine(f"duplicate id {_show(note_id)} (first seen on line {first_seen[note_id]})")
    first_seen[note_id] = line


def _line_audio(recordings: Path, file: str) -> Path:
    """The line's audio inside the recordings folder, or the reason it is refused."""
    try:
        return resolve_audio(recordings, file)
    except AudioPathError as exc:
        raise _BadLine(str(exc)) from None


# ---------------------------------------------------------------- entry point


def _parse_lines(path: Path) -> list[tuple[int, Any]]:
    """(line, parsed JSON value or LineError) for every non-empty line."""
    source = str(path)
    items: list[tuple[int, Any]] = []
    for line, text in _read_lines(path):
        if isinstance(text, LineError):
            items.append((line, text))
            continue
        try:
            items.append((line, _parse_json(text)))
        except _BadLine as exc:
            items.append((line, LineError(source, line, str(exc))))
    return items


def _check_recordings(recordings: Path) -> None:
    if not recordings.exists():
        raise InputFileError(recordings, "recordings folder not found")
    if not recordings.is_dir():
        raise InputFileError(recordings, "recordings folder is not a directory")


def _no_valid_records(source: str, items: list[tuple[int, Any]], errors: list[LineError]) -> InputFileError:
    """The file-level error when nothing in the file is a record we know, with the first clue."""
    if not items:
        return InputFileError(source, "file is empty")
    first = min(errors, key=lambda e: e.line) if errors else None
    detail = f"; first problem on line {first.line}: {first.reason}" if first else ""
    return InputFileError(source, f"no valid chat message or manifest entry in {len(items)} lines{detail}")


def read_notes(path: Path, recordings: Path, window: int = 10) -> ReadResult:
    """Read a chat stream, manifest, Telegram result.json or WhatsApp _chat.txt into voice notes.

    Raises InputFileError when the file as a whole is unusable (or the recordings
    folder is missing); anything wrong with single lines is in `ReadResult.errors`.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    path = Path(path)
    recordings = Path(recordings)
    source = str(path)
    kind = exports.detect_export(path)
    if kind is not None:
        return _read_export(path, recordings, window, kind)
    items = _parse_lines(path)
    _check_recordings(recordings)

    fmt = _detect_jsonl_format(items)
    errors: list[LineError] = []
    n_texts = n_short = 0
    if fmt == "manifest":
        notes, n_valid = notes_from_manifest(items, source, recordings, errors)
    elif fmt == "chat":
        found = notes_from_chat(items, source, recordings, window, errors)
        notes, n_texts, n_short, n_valid = found.notes, found.n_texts, found.n_short_windows, found.n_well_formed
    else:
        errors = [obj for _, obj in items if isinstance(obj, LineError)]
        errors += [LineError(source, line, "not a chat message or manifest entry")
                   for line, obj in items if not isinstance(obj, LineError)]
        raise _no_valid_records(source, items, errors)
    if n_valid == 0:
        raise _no_valid_records(source, items, errors)
    errors.sort(key=lambda e: e.line)
    return ReadResult(notes=notes, errors=errors, format=fmt, n_lines=len(items),
                      n_texts=n_texts, n_short_windows=n_short)


def _read_export(path: Path, recordings: Path, window: int, kind: str) -> ReadResult:
    """Notes from an app export: its records go through the same checks as a chats.jsonl."""
    if path.is_dir():  # detect_export found the export file inside the folder
        path = path / ("result.json" if kind == "telegram" else "_chat.txt")
    result = exports.read_telegram(path) if kind == "telegram" else exports.read_whatsapp(path)
    _check_recordings(recordings)
    source = str(path)
    errors = list(result.errors)
    found = notes_from_chat(zip(result.record_lines, result.records), source, recordings, window, errors)
    if found.n_well_formed == 0:
        raise InputFileError(source, f"no text or voice messages in this {kind} export "
                                     f"({result.n_messages} messages)")
    errors.sort(key=lambda e: e.line)
    return ReadResult(notes=found.notes, errors=errors, format=kind, n_lines=result.n_messages,
                      n_texts=found.n_texts, n_short_windows=found.n_short_windows)
