"""Reading labels.jsonl back: every field a reader relies on is checked, line by line.

`train`, `predict --labels` and `eval` read files a user may have edited or produced
elsewhere; a wrongly typed field is a skipped line with its reason, never a traceback
deep inside training and never a silent drop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .chats import _BadLine, _jtype, _parse_json, _read_lines
from .inputs import LineError, _show

STRING_FIELDS = ("file", "transcript", "label_id", "label", "gold_label_id", "gold_text", "error")
NUMBER_FIELDS = ("confidence", "prob_none")
BOOL_FIELDS = ("accepted", "gold_in_window")


@dataclass
class LabelsFile:
    records: list[dict]
    errors: list[LineError] = field(default_factory=list)


def _number_problem(where: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{where} must be a number, got {_jtype(value)}"
    if not math.isfinite(value):
        return f"{where} must be a finite number, got {value}"
    return None


def _candidate_problem(k: int, cand: Any) -> str | None:
    where = f'"candidates"[{k}]'
    if not isinstance(cand, dict):
        return f"{where} must be an object, got {_jtype(cand)}"
    for key in ("id", "text"):
        if not isinstance(cand.get(key), str):
            return f'{where}: "{key}" must be a string, got {_jtype(cand.get(key))}'
    problem = _number_problem(f'{where}: "prob"', cand.get("prob"))
    if problem:
        return problem
    features = cand.get("features", {})
    if not isinstance(features, dict):
        return f'{where}: "features" must be an object, got {_jtype(features)}'
    for name, value in features.items():
        problem = _number_problem(f'{where}: feature "{name}"', value)
        if problem:
            return problem
    return None


def record_problem(rec: Any) -> str | None:
    """Why a parsed line is not a usable labels.jsonl record, or None when it is.

    Only "id" is required (older runs wrote fewer fields); what is present must have
    the type `disamb label` writes.
    """
    if not isinstance(rec, dict):
        return f"expected a JSON object, got {_jtype(rec)}"
    if "id" not in rec:
        return 'missing "id"'
    if not isinstance(rec["id"], str) or not rec["id"]:
        return f'"id" must be a non-empty string, got {_show(rec["id"])}'
    for key in STRING_FIELDS:
        if not isinstance(rec.get(key), (str, type(None))):
            return f'"{key}" must be a string or null, got {_jtype(rec[key])}'
    for key in NUMBER_FIELDS:
        problem = _number_problem(f'"{key}"', rec.get(key))
        if problem:
            return problem
    for key in BOOL_FIELDS:
        if not isinstance(rec.get(key), (bool, type(None))):
            return f'"{key}" must be true or false, got {_jtype(rec[key])}'
    cands = rec.get("candidates", [])
    if not isinstance(cands, list):
        return f'"candidates" must be an array, got {_jtype(cands)}'
    for k, cand in enumerate(cands):
        problem = _candidate_problem(k, cand)
        if problem:
            return problem
    return None


def read_labels(path: Path) -> LabelsFile:
    """The usable records of a labels.jsonl in file order, and one LineError per line left out.

    Raises chats.InputFileError when the file as a whole cannot be read.
    """
    source = str(path)
    out = LabelsFile(records=[])
    first_seen: dict[str, int] = {}
    for line, text in _read_lines(Path(path)):
        if isinstance(text, LineError):
            out.errors.append(text)
            continue
        try:
            rec = _parse_json(text)
        except _BadLine as exc:
            out.errors.append(LineError(source, line, str(exc)))
            continue
        problem = record_problem(rec)
        if problem is None and rec["id"] in first_seen:
            problem = f"duplicate id {_show(rec['id'])} (first seen on line {first_seen[rec['id']]})"
        if problem is not None:
            out.errors.append(LineError(source, line, problem))
            continue
        first_seen[rec["id"]] = line
        out.records.append(rec)
    return out
