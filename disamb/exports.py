"""Turn chat-app exports (Telegram Desktop JSON, WhatsApp "Export chat" text) into chat-stream records.

People rarely have a chats.jsonl; they have an app export. These importers map an
export onto the standard records of the input contract so everything downstream
(windows, gold, audio checks) stays in one place: `disamb.chats`. Anything that is
not a voice note or a text (service lines, stickers, photos without caption) is
skipped and counted, so the user can see what was left out and why.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
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
    n_notices: int = 0
    """App notices left out: group changes, deleted or pending messages, service messages."""
    n_placeholders: int = 0
    """Stand-ins for media that was not exported ("<Media omitted>", "image omitted")."""
    assumed: dict[str, str] = field(default_factory=dict)
    """What the reader took for granted (date order, timezone), worded for the summary."""


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
        self.n_notices = 0
        self.n_placeholders = 0
        self.assumed: dict[str, str] = {}
        self.synthetic_ids: Counter[str] = Counter()
        self.n_synthetic_ids = 0

    def notice(self, kind: str) -> None:
        self.skipped[kind] += 1
        self.n_notices += 1

    def placeholder(self, kind: str) -> None:
        self.skipped[kind] += 1
        self.n_placeholders += 1

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
            record_lines=self.lines, n_notices=self.n_notices, n_placeholders=self.n_placeholders,
            assumed=dict(self.assumed),
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


def _chat_list(doc: dict, key: str) -> list[dict]:
    section = doc.get(key)
    if isinstance(section, dict) and isinstance(section.get("list"), list):
        return [c for c in section["list"] if isinstance(c, dict)]
    return []


def _telegram_chats(doc: Any, shown: str) -> tuple[list[dict], bool, int]:
    """The chats in a single-chat or full-account export, whether there are several, and how many were left.

    A full-account export keeps the chats the account left under "left_chats"; their
    voice notes and texts are as usable as any, so they are read too (and counted).
    """
    if isinstance(doc, dict) and isinstance(doc.get("messages"), list):
        return [doc], False, 0
    if isinstance(doc, dict):
        has_list = any(isinstance(doc.get(k), dict) and isinstance(doc[k].get("list"), list)
                       for k in ("chats", "left_chats"))
        if has_list:
            left = _chat_list(doc, "left_chats")
            return _chat_list(doc, "chats") + left, True, len(left)
    raise InputFileError(shown, 'not a Telegram export (no "messages" or "chats" list)')


def _synthetic_id(msg: dict, taken: Counter[str]) -> str:
    """An id for a message the export gave none, made from its content so a re-import gives the same one."""
    canonical = json.dumps(msg, sort_keys=True, ensure_ascii=False, default=str)
    base = "noid-" + hashlib.sha1(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    taken[base] += 1
    return base if taken[base] == 1 else f"{base}-{taken[base]}"  # identical messages keep their order


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
        raw_id = _synthetic_id(msg, b.synthetic_ids)
        b.n_synthetic_ids += 1
    label = f"message {raw_id}" + (f" in chat {chat_id}" if chat_id is not None else "")
    kind = msg.get("type", "message")
    if kind == "service":
        b.notice("service")
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
    chats, several, n_left = _telegram_chats(doc, shown)
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
    b.assumed["timezone"] = "UTC, from each message's date_unixtime (its local date where that is missing)"
    if b.n_synthetic_ids:
        b.assumed["ids"] = (f"{b.n_synthetic_ids} messages had no id; each was given one made from its content "
                            "(noid-...), the same on every import")
    if n_left:
        b.assumed["left chats"] = f"{n_left} chats the account left are read like the others"
    return b.result()


# ---------------------------------------------------------------- WhatsApp
#
# A WhatsApp line is "<date> <time> <separator> <sender>: <text>", but date, clock and
# separator follow the phone's language and the app version. Instead of one pattern per
# locale, every line is cut by one permissive pattern into date fields, time fields and
# the punctuation around them; the punctuation shape most lines share is the file's
# layout, and only lines of that shape start messages (whatstk settles its header format
# the same way, by the most common template). Day or month first, and which marker means
# afternoon, are then read off the file's own dates and times.

_MARKS = "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"
_SP = "[ \u202f\u00a0]"
_LETTER = r"[^\W\d_]"


def _header_pattern(marker_after: bool) -> re.Pattern[str]:
    """Date, an optional word (connector or AM/PM marker), time, optional marker after it, separator, rest."""
    after = rf"{_SP}?(?P<post>{_LETTER}{{1,5}}\.?(?:{_SP}?{_LETTER}{{1,2}}\.?)?)" if marker_after else ""
    return re.compile(
        rf"(?P<open>\[)?(?P<d1>\d{{1,4}})(?P<s1>[./-]{_SP}?)(?P<d2>\d{{1,2}})(?P<s2>[./-]{_SP}?)"
        rf"(?P<d3>\d{{1,4}})(?P<dot>\.)?(?P<mid>,?{_SP}?(?:(?P<pre>{_LETTER}{{1,6}}\.?){_SP}?)?)"
        rf"(?P<h>\d{{1,2}})(?P<tsep>[:.])(?P<mi>\d{{2}})(?:(?P=tsep)(?P<s>\d{{2}}))?{after}"
        rf"(?P<term>\]{_SP}|{_SP}?[-–]{_SP}|:{_SP}|{_SP})(?P<rest>.*)",
        re.DOTALL,
    )


_HEADERS = (_header_pattern(True), _header_pattern(False))
_AUTHOR = re.compile(r"^(?P<author>[^:\n]{1,100}?): (?P<body>.*)$", re.DOTALL)

# Folded (lower case, no dots or spaces) AM/PM markers as WhatsApp writes them; True = afternoon.
_AMPM = {
    "am": False, "pm": True,
    "오전": False, "오후": True, "上午": False, "下午": True, "凌晨": False, "早上": False, "中午": True,
    "晚上": True, "午前": False, "午後": True, "ص": False, "م": True, "πμ": False, "μμ": True,
    "vorm": False, "nachm": True, "sa": False, "ch": True, "fm": False, "em": True, "öö": False, "ös": True,
    "قظ": False, "بظ": True, "पूर्वाह्न": False, "अपराह्न": True,
}


def _norm_space(text: str) -> str:
    return text.replace("\u202f", " ").replace("\u00a0", " ")


@functools.lru_cache(maxsize=256)
def _fold(marker: str) -> str:
    return re.sub(r"[.\s]", "", marker).casefold()


def _strip_marks(text: str) -> str:
    return text.strip(_MARKS + " \t")


@dataclass(frozen=True)
class _Shape:
    """The punctuation of a header line with its numbers and words left out."""

    bracket: bool
    date_seps: tuple[str, str, bool]
    mid: str
    time_sep: str
    seconds: bool
    marker_after: bool
    term: str


def _shape(m: re.Match) -> _Shape | None:
    term = _norm_space(m["term"])
    if bool(m["open"]) != term.startswith("]"):
        return None  # "[" without "]", or "]" without "["
    mid = _norm_space(m["mid"])
    if m["pre"]:
        mid = mid.replace(_norm_space(m["pre"]), "<w>", 1)
    return _Shape(bool(m["open"]), (_norm_space(m["s1"]), _norm_space(m["s2"]), bool(m["dot"])), mid,
                  m["tsep"], m["s"] is not None, m.re is _HEADERS[0], term)


def _header_candidates(line: str) -> list[tuple[_Shape, re.Match]]:
    """Every way the permissive patterns read `line` as a header (none, one or two)."""
    clean = line.lstrip(_MARKS)
    found = []
    for pattern in _HEADERS:
        m = pattern.fullmatch(clean)
        shape = _shape(m) if m else None
        if shape is not None:
            found.append((shape, m))
    return found


def _looks_like_header(candidates: list[tuple[_Shape, re.Match]]) -> bool:
    """A date and time followed by a real separator, or by "name: ", is meant as a header."""
    return any(s.term != " " or _AUTHOR.match(m["rest"]) for s, m in candidates)


@dataclass(frozen=True)
class _Layout:
    shape: _Shape
    marker: str | None
    """Which group holds the AM/PM marker ("pre" before the time, "post" after it), None for a 24-hour clock."""
    afternoon: dict[str, bool]
    """Folded marker -> True when it means afternoon."""
    example: int
    """A line written in this layout, to point at in messages."""


def _learn_markers(matches: list[tuple[int, re.Match]], group: str) -> dict[str, bool] | None:
    """What each AM/PM marker means, or None when the words in `group` cannot be AM/PM markers.

    Markers from the table are taken as they are; two unknown ones are told apart by the
    order of the messages: on a day with both, the morning marker comes first.
    """
    values = [(_fold(m[group]), m) for _, m in matches if m[group]]
    if len(values) < len(matches) or any(int(m["h"]) > 12 for _, m in values):
        return None
    meaning = {v: _AMPM[v] for v, _ in values if v in _AMPM}
    unknown = {v for v, _ in values} - set(meaning)
    if not unknown:
        return meaning
    if len(unknown) + len(meaning) > 2:
        return None
    if len(unknown) == 1:
        if not meaning:
            return None  # one unknown word: nothing says what it means, so it is not taken for a marker
        return {**meaning, unknown.pop(): not next(iter(meaning.values()))}
    first: Counter[str] = Counter()
    prev: tuple[tuple[str, str, str], str] | None = None
    for v, m in values:
        day = (m["d1"], m["d2"], m["d3"])
        if prev is not None and prev[0] == day and prev[1] != v:
            first[prev[1]] += 1
        prev = (day, v)
    x, y = sorted(unknown)
    if first[x] == first[y]:
        return None
    morning = x if first[x] > first[y] else y
    return {x: x != morning, y: y != morning}


def _choose_layout(per_line: list[tuple[int, list[tuple[_Shape, re.Match]]]]) -> _Layout | None:
    """The shape most header-like lines share; with a tie, the reading that has an AM/PM marker."""
    by_shape: dict[_Shape, list[tuple[int, re.Match]]] = {}
    for number, candidates in per_line:
        for shape, m in candidates:
            by_shape.setdefault(shape, []).append((number, m))
    ranked = sorted(by_shape.items(), key=lambda kv: (-len(kv[1]), not kv[0].marker_after, kv[0].term == " "))
    for shape, matches in ranked:
        if shape.marker_after:
            meaning = _learn_markers(matches, "post")
            if meaning is None:
                continue
            return _Layout(shape, "post", meaning, matches[0][0])
        if "<w>" in shape.mid:
            meaning = _learn_markers(matches, "pre")
            if meaning is not None:
                return _Layout(shape, "pre", meaning, matches[0][0])  # else the word only connects date and time
        return _Layout(shape, None, {}, matches[0][0])
    return None


def _date_fields(m: re.Match, order: str) -> tuple[int, int, int]:
    """(year, month, day); year-first dates are read as such whatever the order."""
    a, b, c = int(m["d1"]), int(m["d2"]), int(m["d3"])
    if len(m["d1"]) == 4:
        return a, b, c
    year = c + 2000 if len(m["d3"]) <= 2 else c
    return (year, b, a) if order == "dmy" else (year, a, b)


def _date_text(m: re.Match) -> str:
    return m.string[m.start("d1"):m.end("d3")]


_ORDER_NAMES = {"dmy": "day-first", "mdy": "month-first"}


def _backward_steps(headers: list[re.Match], order: str) -> int:
    """How often a message's date is earlier than the one before it, read in `order`."""
    dates = [_date_fields(m, order) for m in headers]
    return sum(a > b for a, b in zip(dates, dates[1:]))


def _date_order(path: Path, headers: list[tuple[int, re.Match]], given: str | None) -> tuple[str, str]:
    """The order of day and month, and how it was settled (for the summary).

    A first field over 12 makes the file day-first, a second one month-first; a file
    with both cannot be read one way. Without such a date, the order that keeps the
    messages in time order wins; failing that, day-first is assumed and the summary says so.
    """
    if given is not None:
        return given, f"{_ORDER_NAMES[given]} (as given)"
    if all(len(m["d1"]) == 4 for _, m in headers):
        return "dmy", "year first (as written)"
    short = [(n, m) for n, m in headers if len(m["d1"]) != 4 and min(int(m["d1"]), int(m["d2"])) <= 12]
    day_first = next(((n, m) for n, m in short if int(m["d1"]) > 12), None)
    month_first = next(((n, m) for n, m in short if int(m["d2"]) > 12), None)
    if day_first and month_first:
        raise InputFileError(
            path, f"dates in both orders: line {day_first[0]} ({_date_text(day_first[1])}) is day-first, "
                  f"line {month_first[0]} ({_date_text(month_first[1])}) month-first; pass --date-order dmy or "
                  "mdy to read it one way (lines in the other order are then reported)")
    if day_first or month_first:
        order, (n, m) = ("dmy", day_first) if day_first else ("mdy", month_first)
        return order, f"{_ORDER_NAMES[order]} (from line {n}: {_date_text(m)})"
    backwards = {order: _backward_steps([m for _, m in short], order) for order in _ORDER_NAMES}
    if backwards["dmy"] != backwards["mdy"]:
        order = min(backwards, key=backwards.get)
        return order, f"{_ORDER_NAMES[order]} (read the other way, dates would go backwards more often)"
    return "dmy", "day-first, assumed: no date in the file settles it (--date-order mdy reads it month-first)"


def _header_time(m: re.Match, layout: _Layout, order: str) -> datetime:
    """Raises ValueError for impossible dates or times, or a marker the layout does not know."""
    year, month, day = _date_fields(m, order)
    hour = int(m["h"])
    if layout.marker is not None:
        marker = m[layout.marker]
        afternoon = layout.afternoon.get(_fold(marker)) if marker else None
        if afternoon is None or hour > 12:
            raise ValueError("not a 12-hour time")
        hour = hour % 12 + (12 if afternoon else 0)  # 12 AM is midnight; some phones write 00 AM
    return datetime(year, month, day, hour, int(m["mi"]), int(m["s"] or 0))


# Attachments and placeholders: recognised by their shape, with phrases only as extra evidence.
_MEDIA_NAME = re.compile(r"^(?:(?:PTT|AUD|IMG|VID|DOC|STK|PTV)-\d{8}-WA\d+|\d{8}-[A-Z]+-\d{4}-)", re.IGNORECASE)
_VOICE_NAME = re.compile(r"^(?:PTT|AUD)-|-AUDIO-", re.IGNORECASE)
_ANDROID_ATTACHED = re.compile(r"^(?P<file>[^\n()]*?[^\s()]\.\w{1,5})[ \u200e]*\((?P<tag>[^()\n]{1,40})\)$")
_IOS_ATTACHED = re.compile(
    r"^(?P<before>.*?)[ \u200e]*<[ \u200e]?(?P<tag>[^<>:\n]{1,40}?)[ ]?:[ \u200e]*(?P<file>[^<>\n]*?\.\w{1,5})[ ]?>$")
_OLD_ATTACHED = re.compile(rf"^(?P<file>[^<>‹\n]*?\.\w{{1,5}})[ \u200e]*[<‹][ \u200e]*{_LETTER}[^<>‹›\n:]{{0,39}}[>›]$")
_ATTACHED_PHRASES = {
    "file attached", "archivo adjunto", "datei angehängt", "fichier joint", "arquivo anexado", "file allegato",
    "файл добавлен", "bestand bijgevoegd",
}
_PLACEHOLDER_TAG = re.compile(r"^<(?=[^<>:\n]* )[^<>:\n]{3,60}>$")  # <Media omitted>, <Multimedia omitido>, <Без медиафайлов>
_EDITED_TAG = re.compile(r"[ \t]*\u200e<[^<>:\n]{2,60}>[ \t]*$")  # ‎<This message was edited>, at a body's end
_OMITTED_WORDS = ("omitted", "omitido", "omitida", "oculto", "ocultado", "weggelassen", "omis", "omise",
                  "omesso", "omessa", "weggelaten")
_OMITTED = re.compile(rf"^(?:(?P<k1>{_LETTER}+(?: {_LETTER}+)?) (?:{'|'.join(_OMITTED_WORDS)})"
                      rf"|(?:{'|'.join(_OMITTED_WORDS)}) (?P<k2>{_LETTER}+))$", re.IGNORECASE)
_MEDIA_KINDS = {"image", "video", "audio", "sticker", "document", "gif", "contact card", "imagen", "vídeo",
                "documento", "foto", "áudio", "figurinha", "bild", "dokument", "immagine", "vidéo",
                "autocollant", "pegatina"}
_AUDIO_KINDS = {"audio", "áudio", "voice", "аудио"}
# Android notices carry no bidi mark; these are the ones seen standing in for messages.
_NOTICES = frozenset((
    "this message was deleted", "you deleted this message", "waiting for this message",
    "se eliminó este mensaje", "eliminaste este mensaje", "este mensaje fue eliminado", "esperando el mensaje",
    "diese nachricht wurde gelöscht", "du hast diese nachricht gelöscht", "warten auf diese nachricht",
    "ce message a été supprimé", "vous avez supprimé ce message", "en attente de ce message",
    "esta mensagem foi apagada", "essa mensagem foi apagada", "você apagou esta mensagem", "aguardando mensagem",
    "questo messaggio è stato eliminato", "hai eliminato questo messaggio", "in attesa di questo messaggio",
    "это сообщение удалено", "вы удалили это сообщение", "ожидание этого сообщения",
    "dit bericht is verwijderd", "je hebt dit bericht verwijderd",
))


def _is_voice_file(file: str) -> bool:
    name = file.rsplit("/", 1)[-1]
    return bool(_VOICE_NAME.search(name)) or ("." in name and name.rsplit(".", 1)[1].lower() in AUDIO_EXTENSIONS)


def _exists(folder: Path, file: str) -> bool:
    try:
        resolve_audio(folder, file)
    except AudioPathError:
        return False
    return True


def _attachment(folder: Path, line: str) -> tuple[str, str] | None:
    """(file, text written before it) when the line is an attachment in any language's wording.

    The tag shapes (`<word: file>`, `file (words)`, `file ‹word>`) are the same in every
    language; for the Android shape, which ordinary text can take too, the file must
    also be named like WhatsApp names media, carry a known phrase, or be in the folder.
    """
    body = _strip_marks(line)
    if body.endswith((">", "›")):
        m = _IOS_ATTACHED.match(body) or _OLD_ATTACHED.match(body)
        if m:
            return _strip_marks(m["file"]), _strip_marks(m.groupdict().get("before") or "")
    m = _ANDROID_ATTACHED.match(body) if body.endswith(")") else None
    if m:
        file = _strip_marks(m["file"])
        if (_MEDIA_NAME.match(file) or _strip_marks(m["tag"]).casefold() in _ATTACHED_PHRASES
                or _exists(folder, file)):
            return file, ""
    return None


def _omitted_kind(body: str) -> str | None:
    """The media kind of an iOS "<kind> omitted" placeholder (a file name and details may come first)."""
    last = _strip_marks(body.rsplit("\u200e", 1)[-1])
    m = _OMITTED.match(last)
    if m is None:
        return None
    kind = (m["k1"] or m["k2"]).casefold()
    if "\u200e" in body or kind in _MEDIA_KINDS:
        named = _strip_marks(body.split(" • ", 1)[0]) if " • " in body else ""  # "file.pdf • 1 page document omitted"
        return "audio" if kind in _AUDIO_KINDS or (named and _VOICE_NAME.search(named)) else kind
    return None


def _is_notice(body: str) -> bool:
    plain = _strip_marks(body).casefold()
    return plain == "null" or plain.split(".", 1)[0].rstrip("…! ") in _NOTICES  # "Waiting for this message. This may take a while."


@dataclass
class _WaMessage:
    line: int
    header: re.Match | None
    lines: list[str]
    bad: bool = False


def _decoded_lines(path: Path, b: _Builder) -> list[tuple[int, str, bool]]:
    """(line number, text, whether it was valid UTF-8); bad bytes are reported and replaced."""
    lines = []
    for number, raw in enumerate(read_text_bytes(path).split(b"\n"), start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            lines.append((number, raw.decode("utf-8"), False))
        except UnicodeDecodeError as exc:
            lines.append((number, raw.decode("utf-8", "replace"), True))
            b.error(number, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})")
    return lines


def _whatsapp_messages(path: Path, b: _Builder) -> tuple[list[_WaMessage], _Layout]:
    """Group physical lines into messages: a line in the file's header layout starts one, other lines continue it.

    A line that looks like a header but is not in the file's layout is reported and
    starts a message that is left out, rather than being glued onto the one before.
    """
    lines = _decoded_lines(path, b)
    candidates = [(number, _header_candidates(text)) for number, text, _ in lines]
    layout = _choose_layout(candidates)
    if layout is None:
        raise InputFileError(path, "not a WhatsApp chat export (no line starts with a date and time)")
    messages: list[_WaMessage] = []
    for (number, text, bad), (_, found) in zip(lines, candidates):
        m = next((m for shape, m in found if shape == layout.shape), None)
        if m is not None:
            messages.append(_WaMessage(number, m, [m["rest"]], bad))
        elif bad:
            continue
        elif found and _looks_like_header(found):
            b.error(number, f"looks like the start of a message but not in the layout of line {layout.example}: "
                            f"{_strip_marks(text)[:40]}")
            messages.append(_WaMessage(number, None, [], bad=True))
        elif messages:
            messages[-1].lines.append(text)
        elif _strip_marks(text):
            b.error(number, "line not understood (no date and time before the first message)")
    return messages, layout


def read_whatsapp(path: Path, *, date_order: str | None = None) -> ExportResult:
    """Read a WhatsApp "Export chat" text file (_chat.txt, or the folder holding it).

    The header layout (date and time style, AM/PM markers in any language, separators)
    is learned from the file; `date_order` ("dmy"/"mdy") overrides the day/month order
    read from its dates. The result's `assumed` says what was taken for granted.
    """
    if date_order not in (None, "dmy", "mdy"):
        raise ValueError(f'date_order must be "dmy", "mdy" or None, got {date_order!r}')
    path = _export_file(path, ("_chat.txt",))
    b = _Builder(path)
    messages, layout = _whatsapp_messages(path, b)
    order, how = _date_order(path, [(x.line, x.header) for x in messages if x.header is not None], date_order)
    b.assumed["date order"] = how
    b.assumed["timezone"] = "none: the export has the phone's local times, written without a zone"
    for msg in messages:
        b.n_messages += 1
        if msg.bad or msg.header is None:
            continue  # already reported; its continuation lines go with it
        _whatsapp_message(b, msg, layout, order)
    return b.result()


def _whatsapp_message(b: _Builder, msg: _WaMessage, layout: _Layout, order: str) -> None:
    try:
        ts = _header_time(msg.header, layout, order).strftime("%Y-%m-%dT%H:%M:%S")
    except ValueError:
        b.error(msg.line, f"date or time not understood: {msg.header.string[:40]}")
        return
    lines = list(msg.lines)
    while len(lines) > 1 and not lines[-1].strip():
        lines.pop()  # blank lines before the next header (or the file end) are not part of the text
    m = _AUTHOR.match("\n".join(lines))
    if m is None:
        b.notice("system")
        return
    author = _strip_marks(m["author"]).lstrip("~").strip(_MARKS + " \u202f\u00a0")
    body = m["body"]
    edited = _EDITED_TAG.search(body) if body.rstrip().endswith(">") else None
    if edited and _strip_marks(body[:edited.start()]):
        body = body[:edited.start()]
    first, _, rest = body.partition("\n")
    rec = {"id": f"wa{msg.line}", "ts": ts, "from": author}
    attached = _attachment(b.folder, first)
    if attached is not None:
        file, before = attached
        if _is_voice_file(file):
            if before:
                b.text(msg.line, {**rec, "id": f"wa{msg.line}-text", "text": before})
            b.n_voice += 1
            b.voice(msg.line, {**rec, "file": file})
            return
        caption = "\n".join(x for x in (before, rest) if x.strip())
        if caption:
            b.text(msg.line, {**rec, "text": caption})  # a caption with a photo or document
        else:
            b.skipped["non-audio media"] += 1
        return
    if not rest.strip():
        if _PLACEHOLDER_TAG.match(_strip_marks(first)):
            b.placeholder("media omitted")
            return
        kind = _omitted_kind(first)
        if kind == "audio":
            b.n_voice += 1
            b.error(msg.line, "voice message not included in the export (exported without media)")
            return
        if kind is not None:
            b.placeholder("media omitted")
            return
        if _is_notice(first):
            b.notice("deleted or pending message")
            return
    if first[:1] and first[:1] in _MARKS:
        # WhatsApp marks its own notices (deleted messages, group changes) with a bidi mark.
        b.notice("system")
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
    if _looks_like_header(_header_candidates(lines[0])):
        return "whatsapp"
    return None


def write_chats_jsonl(result: ExportResult, out: Path) -> None:
    """Write the records as chats.jsonl; a temp file renamed into place, so a crash leaves no half file."""
    from .files import write_jsonl

    write_jsonl(Path(out), result.records)


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
