"""What a chat-app export becomes: chat-stream records, plus counts of what was left out.

The Telegram and WhatsApp readers both walk their export through one `RecordBuilder`, so
they count skipped messages, notices and placeholders alike and their records go on
through the same checks in chats.py.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .inputs import AudioPathError, InputFileError, LineError, resolve_audio


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


class RecordBuilder:
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


def export_file(path: Path, names: tuple[str, ...]) -> Path:
    """Accept the export folder as well as the file inside it."""
    path = Path(path)
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return path / name
        raise InputFileError(path, f"no {' or '.join(names)} in this folder")
    return path
