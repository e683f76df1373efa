"""Turn chat-app exports (Telegram Desktop JSON, WhatsApp "Export chat" text) into chat-stream records.

People rarely have a chats.jsonl; they have an app export. These importers map an
export onto the standard records of the input contract so everything downstream
(windows, gold, audio checks) stays in one place: `disamb.chats`. Anything that is
not a voice note or a text (service lines, stickers, photos without caption) is
skipped and counted, so the user can see what was left out and why.

This module tells the kinds apart and writes chats.jsonl; the readers themselves are
telegram.py and whatsapp.py, over the shared builder in export_records.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable

from .export_records import ExportResult
from .telegram import read_telegram
from .whatsapp import _MARKS, _header_candidates, _looks_like_header, read_whatsapp


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
