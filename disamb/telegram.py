"""Telegram Desktop's JSON export (result.json) into chat-stream records."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from .export_records import ExportResult, RecordBuilder, export_file
from .inputs import InputFileError, read_text_bytes


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


def _telegram_message(b: RecordBuilder, msg: Any, number: int, chat_id: str | None, voice_types: tuple[str, ...]) -> None:
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
    path = export_file(path, ("result.json",))
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
    b = RecordBuilder(path)
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
