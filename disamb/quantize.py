"""int8 weights for CPU inference.

On a CPU nearly all of Whisper's time goes into matrix products: the linear layers
of the encoder and decoder blocks and, for every scored or generated token, the
projection onto the 51,864-word vocabulary. Dynamic int8 quantisation (int8
weights, activations quantised on the fly by fbgemm/onednn) runs those about 1.5x
faster on 2 cores; convolutions, layer norms, attention scores and softmaxes stay
in float32. What it costs in accuracy is measured in benchmarks/speed.py.
"""

from __future__ import annotations

import warnings

import torch
import whisper.model
from torch import nn

COMPUTE_TYPES = ("auto", "int8", "float32", "float16")


def resolve_compute(compute: str, device: torch.device) -> str:
    """The compute type actually used: auto is int8 on CPU and float16 on CUDA."""
    choice = compute.strip().lower()
    if choice not in COMPUTE_TYPES:
        raise ValueError(f"compute type '{compute}': use one of {', '.join(COMPUTE_TYPES)}")
    if choice == "auto":
        return "float16" if device.type == "cuda" else "int8"
    if choice == "int8" and device.type != "cpu":
        raise ValueError("compute type 'int8' runs on CPU only (use float16 on CUDA)")
    if choice == "float16" and device.type != "cuda":
        raise ValueError("compute type 'float16' needs CUDA (use int8 or float32 on CPU)")
    return choice


def quantize_int8(model: whisper.model.Whisper) -> whisper.model.Whisper:
    """Swap every linear layer (and the tied output projection) for a dynamic int8 one."""
    _to_plain_linear(model)
    with warnings.catch_warnings():
        # torch >= 2.10 points eager-mode users at torchao; the eager kernels are the fast ones on CPU
        warnings.simplefilter("ignore")
        model = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
        decoder = model.decoder
        weight = decoder.token_embedding.weight
        head = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        head.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        decoder.int8_head = torch.ao.quantization.quantize_dynamic(
            nn.Sequential(head), {nn.Linear}, dtype=torch.qint8
        )[0]
    decoder.__class__ = Int8TextDecoder
    return model


def vocabulary_logits(decoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits over the vocabulary for hidden states `x` (int8 head when there is one)."""
    head = getattr(decoder, "int8_head", None)
    if head is not None:
        return head(x.float())
    return (x @ decoder.token_embedding.weight.to(x.dtype).T).float()


class Int8TextDecoder(whisper.model.TextDecoder):
    """openai-whisper's text decoder, projecting to the vocabulary with the int8 head."""

    def forward(self, x: torch.Tensor, xa: torch.Tensor, kv_cache: dict | None = None) -> torch.Tensor:
        offset = next(iter(kv_cache.values())).shape[1] if kv_cache else 0
        x = self.token_embedding(x) + self.positional_embedding[offset : offset + x.shape[-1]]
        x = x.to(xa.dtype)
        for block in self.blocks:
            x = block(x, xa, mask=self.mask, kv_cache=kv_cache)
        return vocabulary_logits(self, self.ln(x))


def _to_plain_linear(module: nn.Module) -> None:
    """whisper.model.Linear casts its weight per call; quantize_dynamic only maps nn.Linear."""
    for name, child in module.named_children():
        if isinstance(child, whisper.model.Linear):
            plain = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
            plain.load_state_dict(child.state_dict())
            setattr(module, name, plain)
        else:
            _to_plain_linear(child)
