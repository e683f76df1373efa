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
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from platformdirs import user_cache_dir

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("DISAMB_CACHE_DIR") or user_cache_dir("disamb")) / "clips"


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
        self.hits = 0
        self.misses = 0

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
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent or damaged: recompute, never trust a half entry

    def put(self, key: str, result: ClipResult) -> None:
        if self.root is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(result.to_json(), ensure_ascii=False))


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
