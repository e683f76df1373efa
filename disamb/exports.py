"""Turn chat-app exports (Telegram Desktop JSON, WhatsApp "Export chat" text) into chat-stream records.

People rarely have a chats.jsonl; they have an app export. These importers map an
export onto the standard records of the input contract so everything downstream
(windows, gold, audio checks) stays in one place: `disamb.chats`. Anything that is
not a voice note or a text (service lines, stickers, photos without caption) is
skipped and counted, so the user can see what was left out and why.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from disamb.chats import AudioPathError, InputFileError, LineError, read_text_bytes, resolve_audio

AUDIO_EXTENSIONS = frozenset({"opus", "ogg", "m4a", "mp3", "aac", "amr", "wav"})
"""Attachments with these extensions are voice notes; any other attachment is non-audio media."""


@dataclass
class ExportResult:
    records: list[dict]
    folder: Path
    n_messages: int = 0
    n_voice: int = 0
    n_voice_present: int = 0
    n_text: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    errors: list[LineError] = field(default_factory=list)
    record_lines: list[int] = field(default_factory=list)
    """Line (WhatsApp) or message number (Telegram) of each record, parallel to `records`."""


class _Builder:
    """Collects records and counts while an export is walked, so both readers count alike."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.folder = path.parent.resolve()
        self.records: list[dict] = []
        self.lines: list[int] = []
        self.skipped: Counter[str] = Counter()
        self.errors: list[LineError] = []
        self.n_messages = 0
        self.n_voice = 0
        self.n_voice_present = 0

    def error(self, line: int, reason: str) -> None:
        self.errors.append(LineError(str(self.path), line, reason))

    def _add(self, line: int, rec: dict, kind: str) -> None:
        head = {k: rec[k] for k in ("id", "ts", "from", "chat") if k in rec}
        self.records.append({**head, "type": kind, **{k: v for k, v in rec.items() if k not in head}})
        self.lines.append(line)

    def text(self, line: int, rec: dict) -> None:
        self._add(line, rec, "text")

    def voice(self, line: int, rec: dict) -> None:
        self._add(line, rec, "voice")
        try:
            resolve_audio(self.folder, rec["file"])
        except AudioPathError:
            return
        self.n_voice_present += 1

    def result(self) -> ExportResult:
        return ExportResult(
            records=self.records, folder=self.folder, n_messages=self.n_messages, n_voice=self.n_voice,
            n_voice_present=self.n_voice_present, n_text=sum(r["type"] == "text" for r in self.records),
            skipped=dict(self.skipped), errors=sorted(self.errors, key=lambda e: e.line),
            record_lines=self.lines,
        )


def _export_file(path: Path, names: tuple[str, ...]) -> Path:
    """Accept the export folder as well as the file inside it."""
    path = Path(path)
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return path / name
        raise InputFileError(path, f"no {' or '.join(names)} in this folder")
    return path


# ---------------------------------------------------------------- Telegram


def _iso_utc(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _telegram_text(value: Any) -> str:
    """Telegram stores formatted text as a list of plain strings and entity objects; join their text."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for part in value:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return ""


def _telegram_chats(doc: Any, shown: str) -> tuple[list[dict], bool]:
    """The chats in a single-chat or full-account export; the flag says whether there are several."""
    if isinstance(doc, dict) and isinstance(doc.get("messages"), list):
        return [doc], False
    chats = doc.get("chats") if isinstance(doc, dict) else None
    if isinstance(chats, dict) and isinstance(chats.get("list"), list):
        return [c for c in chats["list"] if isinstance(c, dict)], True
    raise InputFileError(shown, 'not a Telegram export (no "messages" or "chats" list)')


def _telegram_ts(msg: dict) -> str | None:
    unix = msg.get("date_unixtime")
    if isinstance(unix, (str, int)) and not isinstance(unix, bool):
        try:
            return _iso_utc(int(unix))
        except (ValueError, OverflowError, OSError):
            pass
    date = msg.get("date")
    return date if isinstance(date, str) and date else None


def _telegram_sender(msg: dict) -> str | None:
    for key in ("from", "from_id"):
        value = msg.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    return None


def _telegram_message(b: _Builder, msg: Any, number: int, chat_id: str | None, voice_types: tuple[str, ...]) -> None:
    if not isinstance(msg, dict):
        b.error(number, "message is not a JSON object")
        return
    raw_id = msg.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (int, str)) or raw_id == "":
        b.error(number, 'message without an "id"')
        return
    label = f"message {raw_id}" + (f" in chat {chat_id}" if chat_id is not None else "")
    kind = msg.get("type", "message")
    if kind == "service":
        b.skipped["service"] += 1
        return
    if kind != "message":
        b.skipped[f"type {kind}"] += 1
        return
    rec: dict[str, Any] = {"id": str(raw_id) if chat_id is None else f"{chat_id}:{raw_id}"}
    ts = _telegram_ts(msg)
    if ts is not None:
        rec["ts"] = ts
    sender = _telegram_sender(msg)
    if sender is not None:
        rec["from"] = sender
    if chat_id is not None:
        rec["chat"] = chat_id

    media = msg.get("media_type")
    if media in voice_types:
        b.n_voice += 1
        file = msg.get("file")
        if not isinstance(file, str) or not file:
            b.error(number, f"{label}: voice message without a file")
        elif file.startswith("(File "):
            b.error(number, f"{label}: voice message not included in the export {file}")
        else:
            b.voice(number, {**rec, "file": file})
        return
    if media == "sticker":
        b.skipped["sticker"] += 1
        return
    body = _telegram_text(msg["text"] if "text" in msg else msg.get("text_entities"))
    if body:
        b.text(number, {**rec, "text": body})
        return
    if "photo" in msg:
        b.skipped["photo without caption"] += 1
    elif media is not None or "file" in msg:
        b.skipped[f"{media or 'file'} without caption"] += 1
    else:
        extra = next((k for k in ("poll", "location_information", "contact_information", "game_title") if k in msg), None)
        b.skipped[extra.split("_")[0] if extra else "empty message"] += 1


def read_telegram(path: Path, *, voice_types: Iterable[str] = ("voice_message",)) -> ExportResult:
    """Read a Telegram Desktop JSON export (result.json, or the folder holding it).

    Errors carry the message's position in the file (1-based, across all chats) as
    the line, and its id in the reason, since JSON exports have no useful line numbers.
    """
    path = _export_file(path, ("result.json",))
    shown = str(path)
    try:
        doc = json.loads(read_text_bytes(path).decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputFileError(shown, f"not valid UTF-8 (byte offset {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise InputFileError(shown, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except (RecursionError, ValueError) as exc:
        raise InputFileError(shown, f"not valid JSON ({exc.__class__.__name__})") from None
    chats, several = _telegram_chats(doc, shown)
    types = tuple(voice_types)
    b = _Builder(path)
    for index, chat in enumerate(chats, start=1):
        messages = chat.get("messages")
        if not isinstance(messages, list):
            continue
        chat_id = None
        if several:
            cid = chat.get("id")
            chat_id = str(cid) if isinstance(cid, (int, str)) and not isinstance(cid, bool) else f"chat{index}"
        for msg in messages:
            b.n_messages += 1
            _telegram_message(b, msg, b.n_messages, chat_id, types)
    return b.result()


# ---------------------------------------------------------------- WhatsApp

_MARKS = "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"
_DATE = r"(?P<d1>\d{1,4})[./-](?P<d2>\d{1,2})[./-](?P<d3>\d{1,4})"
_TIME = (r"(?P<h>\d{1,2})[:.](?P<mi>\d{2})(?:[:.](?P<s>\d{2}))?"
         r"(?:[ \u202f\u00a0]?(?P<ampm>[AaPp]\.?[ \u202f\u00a0]?[Mm]\.?))?")
_ANDROID = re.compile(rf"^{_DATE},? {_TIME} [-–] (?P<rest>.*)$")
_IOS = re.compile(rf"^\[{_DATE},? {_TIME}\] (?P<rest>.*)$")
_AUTHOR = re.compile(r"^(?P<author>[^:\n]{1,100}?): (?P<body>.*)$", re.DOTALL)
_ATTACHED_SUFFIX = re.compile(
    r"^(?P<file>.+?) \((?:file attached|archivo adjunto|Datei angehängt|fichier joint|arquivo anexado)\)$",
    re.IGNORECASE)
_ATTACHED_TAG = re.compile(r"^<(?:attached|adjunto|Anhang|pièce jointe|anexado) ?: ?(?P<file>[^>]+)>$",
                           re.IGNORECASE)
_MEDIA_OMITTED = re.compile(r"^<(?:Media omitted|Multimedia omitido|Medien ausgeschlossen|Médias omis|"
                            r"Mídia oculta|Arquivo de mídia oculto)>$", re.IGNORECASE)
_KIND_OMITTED = re.compile(r"^(?P<kind>\w+) (?:omitted|omitido|weggelassen|omis|ocultado|oculto)$", re.IGNORECASE)
_AUDIO_WORDS = {"audio", "áudio", "voice"}


def _strip_marks(text: str) -> str:
    return text.strip(_MARKS + " \t")


def _header(line: str) -> re.Match | None:
    clean = line.lstrip(_MARKS)
    return _IOS.match(clean) or _ANDROID.match(clean)


def _date_order(headers: Iterable[re.Match]) -> str:
    """Day-first unless some date can only be month-first; year-first dates are unambiguous."""
    day_first = month_first = False
    for m in headers:
        if len(m["d1"]) == 4:
            continue
        a, b = int(m["d1"]), int(m["d2"])
        day_first |= a > 12
        month_first |= b > 12
    return "mdy" if month_first and not day_first else "dmy"


def _header_time(m: re.Match, order: str) -> datetime:
    """Raises ValueError for impossible dates or times."""
    a, b, c = m["d1"], m["d2"], m["d3"]
    if len(a) == 4:
        year, month, day = int(a), int(b), int(c)
    elif order == "mdy":
        month, day, year = int(a), int(b), int(c)
    else:
        day, month, year = int(a), int(b), int(c)
    if len(c) <= 2 and len(a) != 4:
        year += 2000
    hour = int(m["h"])
    if m["ampm"]:
        if not 1 <= hour <= 12:
            raise ValueError("hour out of range for a 12-hour clock")
        pm = m["ampm"].lstrip()[0] in "Pp"
        hour = hour % 12 + (12 if pm else 0)
    return datetime(year, month, day, hour, int(m["mi"]), int(m["s"] or 0))


def _attachment(first_line: str) -> str | None:
    body = _strip_marks(first_line)
    m = _ATTACHED_TAG.match(body) or _ATTACHED_SUFFIX.match(body)
    return _strip_marks(m["file"]) if m else None


@dataclass
class _WaMessage:
    line: int
    header: re.Match
    lines: list[str]
    bad: bool = False


def _whatsapp_messages(path: Path, b: _Builder) -> list[_WaMessage]:
    """Group physical lines into messages: a header line starts one, other lines continue it."""
    data = read_text_bytes(path)
    messages: list[_WaMessage] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            line, bad = raw.decode("utf-8"), False
        except UnicodeDecodeError as exc:
            line, bad = raw.decode("utf-8", "replace"), True
            b.error(number, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})")
        m = _header(line)
        if m is not None:
            messages.append(_WaMessage(number, m, [m["rest"]], bad))
        elif bad:
            continue
        elif messages:
            messages[-1].lines.append(line)
        elif line.strip(_MARKS + " \t"):
            b.error(number, "line not understood (no date and time before the first message)")
    return messages


def read_whatsapp(path: Path, *, date_order: str | None = None) -> ExportResult:
    """Read a WhatsApp "Export chat" text file (_chat.txt, or the folder holding it).

    Android and iOS layouts, 12/24-hour clocks and day- or month-first dates are
    recognised; `date_order` ("dmy"/"mdy") overrides the guess made from the file.
    """
    if date_order not in (None, "dmy", "mdy"):
        raise ValueError(f'date_order must be "dmy", "mdy" or None, got {date_order!r}')
    path = _export_file(path, ("_chat.txt",))
    b = _Builder(path)
    messages = _whatsapp_messages(path, b)
    if not messages:
        raise InputFileError(path, "not a WhatsApp chat export (no line starts with a date and time)")
    order = date_order or _date_order(m.header for m in messages)
    for msg in messages:
        b.n_messages += 1
        if msg.bad:
            continue  # already reported; its continuation lines go with it
        _whatsapp_message(b, msg, order)
    return b.result()


def _whatsapp_message(b: _Builder, msg: _WaMessage, order: str) -> None:
    try:
        ts = _header_time(msg.header, order).strftime("%Y-%m-%dT%H:%M:%S")
    except ValueError:
        b.error(msg.line, f"date or time not understood: {msg.header.group(0)[:40]}")
        return
    lines = list(msg.lines)
    while len(lines) > 1 and not lines[-1].strip():
        lines.pop()  # blank lines before the next header (or the file end) are not part of the text
    m = _AUTHOR.match("\n".join(lines))
    if m is None:
        b.skipped["system"] += 1
        return
    author = _strip_marks(m["author"]).lstrip("~").strip(_MARKS + " \u202f\u00a0")
    body = m["body"]
    first, _, rest = body.partition("\n")
    rec = {"id": f"wa{msg.line}", "ts": ts, "from": author}
    file = _attachment(first)
    if file is not None:
        if file.rsplit(".", 1)[-1].lower() in AUDIO_EXTENSIONS and "." in file:
            b.n_voice += 1
            b.voice(msg.line, {**rec, "file": file})
        elif rest.strip():
            b.text(msg.line, {**rec, "text": rest})  # a caption under a photo or document
        else:
            b.skipped["non-audio media"] += 1
        return
    plain = _strip_marks(first)
    if _MEDIA_OMITTED.match(plain):
        b.skipped["media omitted"] += 1
        return
    omitted = _KIND_OMITTED.match(plain)
    if omitted and not rest.strip():
        if omitted["kind"].casefold() in _AUDIO_WORDS:
            b.n_voice += 1
            b.error(msg.line, "voice message not included in the export (exported without media)")
        else:
            b.skipped["non-audio media"] += 1
        return
    if first[:1] and first[:1] in _MARKS:
        # WhatsApp marks its own notices (deleted messages, group changes) with a bidi mark.
        b.skipped["system"] += 1
        return
    b.text(msg.line, {**rec, "text": body})


# ---------------------------------------------------------------- detection, writing, import


def detect_export(path: Path) -> str | None:
    """"telegram", "whatsapp" or None (a chats.jsonl / manifest, or unknown), from the first bytes only."""
    path = Path(path)
    if path.is_dir():
        if (path / "result.json").is_file():
            return "telegram"
        if (path / "_chat.txt").is_file():
            return "whatsapp"
        return None
    try:
        with path.open("rb") as fh:
            head = fh.read(65536)
    except OSError:
        return None
    text = head.decode("utf-8", "replace").lstrip("\ufeff")
    lines = [ln for ln in text.splitlines() if ln.strip(_MARKS + " \t")]
    if not lines:
        return None
    first = lines[0].strip()
    if first == "{":
        if re.search(r'"(?:messages|chats|about|personal_information)"\s*:', text):
            return "telegram"
        return None
    if first.startswith("{"):
        try:
            obj = json.loads(first)
        except (ValueError, RecursionError):
            return None
        if isinstance(obj, dict) and (isinstance(obj.get("messages"), list) or isinstance(obj.get("chats"), dict)):
            return "telegram"
        return None
    if _header(lines[0]) is not None:
        return "whatsapp"
    return None


def write_chats_jsonl(result: ExportResult, out: Path) -> None:
    """Write the records as chats.jsonl; a temp file renamed into place, so a crash leaves no half file."""
    out = Path(out)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            for rec in result.records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def import_command(
    kind: str,
    path: Path,
    out: Path,
    *,
    voice_types: Iterable[str] = ("voice_message",),
    date_order: str | None = None,
) -> ExportResult:
    """Read an export of the given kind and write it as chats.jsonl: the body of `disamb import`."""
    if kind == "telegram":
        result = read_telegram(path, voice_types=voice_types)
    elif kind == "whatsapp":
        result = read_whatsapp(path, date_order=date_order)
    else:
        raise ValueError(f'unknown export kind {kind!r} (expected "telegram" or "whatsapp")')
    write_chats_jsonl(result, out)
    return result
