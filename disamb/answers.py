"""The gold answers file `disamb review` writes and `disamb label --gold-file` reads.

One JSON line per answer, appended and fsync'd as the user gives it, the last line for a
note winning. It lives apart from the web app so that labelling, which only needs to
read it, does not import the server.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .chats import VoiceNote


class ReviewError(Exception):
    """Base class for problems the review command reports to the user."""


class GoldFileError(ReviewError):
    """The gold file has a line that is not an answer (path:line: reason)."""


@dataclass
class Answer:
    id: str
    label_id: str | None  # None = "none of these"
    ts: str


def read_answers(path: Path) -> dict[str, Answer]:
    """Answers by note id, the last line for an id winning, in the order of those lines.

    A final line without its newline is what a kill during a write leaves behind;
    it is ignored rather than treated as a broken file.
    """
    path = Path(path)
    if not path.exists():
        return {}
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise GoldFileError(f"{path}: cannot read gold file ({e})") from e
    lines = text.split("\n")
    torn_tail = not text.endswith("\n")
    answers: dict[str, Answer] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            if torn_tail and n == len(lines):
                continue
            raise GoldFileError(f"{path}:{n}: not a JSON object") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            raise GoldFileError(f'{path}:{n}: an answer needs a string "id"')
        label_id = obj.get("label_id")
        if label_id is not None and not isinstance(label_id, str):
            raise GoldFileError(f'{path}:{n}: "label_id" must be a string or null')
        answers.pop(obj["id"], None)  # keep the dict in order of each note's last answer
        answers[obj["id"]] = Answer(obj["id"], label_id, str(obj.get("ts", "")))
    return answers


def append_answer(path: Path, note_id: str, label_id: str | None) -> Answer:
    """Append one answer line and fsync it before returning, so an answer the page
    has shown as saved survives a crash of the server or the machine."""
    path = Path(path)
    answer = Answer(note_id, label_id, datetime.now(timezone.utc).isoformat(timespec="seconds"))
    line = json.dumps({"id": answer.id, "label_id": answer.label_id, "ts": answer.ts}, ensure_ascii=False) + "\n"
    created = not path.exists()
    with open(path, "a+b") as f:
        _drop_torn_tail(f)
        f.write(line.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
    if created:
        _fsync_dir(path.parent)
    return answer


def _drop_torn_tail(f) -> None:
    """Cut a last line that has no newline: a write killed half-way, never
    confirmed to the page, which would otherwise break the line after it."""
    end = f.seek(0, os.SEEK_END)
    if end == 0:
        return
    f.seek(max(0, end - 65536))
    tail = f.read()
    if tail.endswith(b"\n"):
        return
    cut = tail.rfind(b"\n")
    if cut < 0 and end > len(tail):
        return  # a single line longer than we look back: leave it to read_answers to report
    f.truncate(end - len(tail) + cut + 1)


def _fsync_dir(folder: Path) -> None:
    """Make a new file's directory entry durable too (no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def apply_gold_file(notes: list[VoiceNote], gold_path: Path) -> int:
    """Set the gold fields of `notes` from a review gold file; returns how many were set.

    Follows the chat reader's convention: an answer outside the note's window (or
    "none of these") makes the note gold-known with `gold_in_window=False`.
    """
    answers = read_answers(gold_path)
    applied = 0
    for note in notes:
        a = answers.get(note.id)
        if a is None:
            continue
        cand = next((c for c in note.candidates if c.id == a.label_id), None)
        note.gold_in_window = cand is not None
        note.gold_label_id = cand.id if cand is not None else None
        note.gold_text = cand.text if cand is not None else None
        applied += 1
    return applied
