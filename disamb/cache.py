"""On-disk cache of per-clip results (transcript, embedding, candidate likelihoods).

One small JSON file per clip, written atomically, so that a run killed at any moment
leaves only whole entries behind and a rerun (or a second machine sharing the folder)
redoes nothing already done. Keys mix the audio's content hash, the model and every
option that changes the result.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from platformdirs import user_cache_dir

from .files import write_atomic

CACHE_VERSION = 1


def cache_root() -> Path:
    """disamb's user cache: $DISAMB_CACHE_DIR, else $XDG_CACHE_HOME/disamb, else the platform's.

    The one place that decides it: per-clip results go to `clips/` and the converted
    bundled model to `models/` below it, so one setting moves both.
    """
    own = os.environ.get("DISAMB_CACHE_DIR")
    if own:
        return Path(own)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "disamb" if xdg else Path(user_cache_dir("disamb"))


def default_cache_dir() -> Path:
    """Where per-clip results go unless --cache-dir says otherwise."""
    return cache_root() / "clips"


@dataclass
class ClipResult:
    """Everything the expensive stage learns about one clip."""

    seconds: float
    transcript: str | None = None
    no_speech_prob: float | None = None
    avg_logprob: float | None = None
    embedding: np.ndarray | None = None
    # rendering text -> (summed log-probability incl. end token, number of scored tokens)
    scores: dict[str, tuple[float, int]] = field(default_factory=dict)

    def to_json(self) -> dict:
        emb = None
        if self.embedding is not None:
            emb = base64.b64encode(np.asarray(self.embedding, np.float32).tobytes()).decode()
        return {
            "v": CACHE_VERSION,
            "seconds": self.seconds,
            "transcript": self.transcript,
            "no_speech_prob": self.no_speech_prob,
            "avg_logprob": self.avg_logprob,
            "embedding": emb,
            "scores": {k: [v[0], v[1]] for k, v in self.scores.items()},
        }

    @classmethod
    def from_json(cls, data: dict) -> "ClipResult":
        emb = data.get("embedding")
        return cls(
            seconds=float(data["seconds"]),
            transcript=data.get("transcript"),
            no_speech_prob=data.get("no_speech_prob"),
            avg_logprob=data.get("avg_logprob"),
            embedding=np.frombuffer(base64.b64decode(emb), np.float32).copy() if emb else None,
            scores={k: (float(v[0]), int(v[1])) for k, v in data.get("scores", {}).items()},
        )


def clip_key(audio_hash: str, model_key: str, options: str) -> str:
    return hashlib.sha256(f"{audio_hash}|{model_key}|{options}|v{CACHE_VERSION}".encode()).hexdigest()


class ClipCache:
    """A folder of `<key[:2]>/<key>.json` entries; `root=None` disables caching."""

    def __init__(self, root: Path | None):
        self.root = Path(root) if root is not None else None

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> ClipResult | None:
        if self.root is None:
            return None
        try:
            data = json.loads(self._path(key).read_text("utf-8"))
            if data.get("v") != CACHE_VERSION:
                return None
            return ClipResult.from_json(data)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # e.g. valid JSON but not an object
            return None  # absent or damaged: recompute, never trust a half entry

    def put(self, key: str, result: ClipResult) -> None:
        if self.root is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(result.to_json(), ensure_ascii=False))


class PriorCache:
    """Likelihood of each candidate text under silent audio, per model, in one SQLite file.

    A text's prior does not depend on any clip, and a chat log has far more renderings
    than it is worth keeping in files of their own; SQLite keeps them in one place and
    copes with several processes writing.
    """

    def __init__(self, root: Path | None, model_key: str):
        self.path = Path(root) / "priors.sqlite" if root is not None else None
        self.model_key = model_key
        self._memo: dict[str, tuple[float, int]] = {}

    def _connect(self):
        import sqlite3

        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=60)
        con.execute("CREATE TABLE IF NOT EXISTS prior (model TEXT, text TEXT, sum REAL, n INTEGER, PRIMARY KEY (model, text))")
        return con

    def get_many(self, texts: list[str]) -> dict[str, tuple[float, int]]:
        found = {t: self._memo[t] for t in texts if t in self._memo}
        missing = [t for t in texts if t not in found]
        if self.path is not None and missing and self.path.exists():
            con = self._connect()
            try:
                for start in range(0, len(missing), 500):
                    part = missing[start : start + 500]
                    marks = ",".join("?" * len(part))
                    rows = con.execute(
                        f"SELECT text, sum, n FROM prior WHERE model = ? AND text IN ({marks})", [self.model_key, *part]
                    )
                    for text, total, n in rows:
                        found[text] = (float(total), int(n))
            finally:
                con.close()
        self._memo.update(found)
        return found

    def put_many(self, values: dict[str, tuple[float, int]]) -> None:
        self._memo.update(values)
        if self.path is None or not values:
            return
        con = self._connect()
        try:
            with con:
                con.executemany(
                    "INSERT OR REPLACE INTO prior VALUES (?, ?, ?, ?)",
                    [(self.model_key, t, v[0], v[1]) for t, v in values.items()],
                )
        finally:
            con.close()
