"""Convert a CTranslate2 Whisper model into an openai-whisper checkpoint.

The bundled ``tiny.en`` ships in CTranslate2's format (model.bin plus config.json);
openai-whisper reads only its own layout. The converter parses model.bin without
CTranslate2 itself, dequantizes, maps every variable onto openai-whisper's state
dict and refuses anything it cannot account for, so a wrong model fails here, not
later as garbage transcripts.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from whisper.model import ModelDimensions, Whisper

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
