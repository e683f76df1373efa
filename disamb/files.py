"""Writing outputs: one atomic writer, strict JSON lines, and the checks on where they go.

Every file disamb writes goes through `write_atomic`, so a failed or stopped run leaves
the previous file whole, and nothing but a regular file (or a new path) is ever replaced.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterable, Iterator


class OutputPathError(Exception):
    """The output location must not be written: it is an input, or not a regular file."""


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)  # follows links: what a write would reach
    except (FileNotFoundError, NotADirectoryError):
        return None


def check_output(path: Path, inputs: Iterable[Path | None] = ()) -> None:
    """Refuse an output that exists but is not a regular file, or that is one of the inputs.

    Inputs are compared by device and inode, so a symlink or hard link to an input is
    caught too. Raises OutputPathError with a one-line message naming both files.
    """
    st = _stat(Path(path))
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        raise OutputPathError(f"{path}: is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise OutputPathError(f"{path}: not a regular file (a device, FIFO or socket); give a new path")
    for inp in inputs:
        if inp is None:
            continue
        other = _stat(Path(inp))
        if other is not None and (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
            raise OutputPathError(f"{path}: is the input {inp}; write the output elsewhere")


@contextmanager
def atomic_open(path: Path) -> Iterator[IO[bytes]]:
    """A binary file that replaces `path` only when the block ends without an error.

    The temporary file sits in the same folder (same file system, so the rename is atomic)
    and is fsynced first; on any error or interrupt it is removed and `path` is untouched.
    """
    path = Path(path)
    check_output(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write text (as UTF-8) or bytes to `path` through a temporary file and a rename."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_open(path) as fh:
        fh.write(raw)


def dumps(obj: Any, **kw: Any) -> str:
    """Strict JSON (NaN and infinities raise ValueError), readable UTF-8 where possible.

    Text holding lone surrogates (valid in JSON as escapes, not encodable as UTF-8) is
    written with ASCII escapes instead, so it reads back exactly as it came in.
    """
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, **kw)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, ensure_ascii=True, allow_nan=False, **kw)
    return text


def finite_or_null(value: Any) -> Any:
    """`value` with every float that is NaN or infinite replaced by None, for summaries
    where "no number" is the honest answer and strict JSON has no other way to say it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    return value


def write_jsonl(path: Path, records: Iterable[Any]) -> None:
    """One strict JSON object per line, written atomically (nothing written if any is not JSON)."""
    write_atomic(path, "".join(dumps(r) + "\n" for r in records))
