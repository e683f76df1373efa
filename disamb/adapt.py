"""Adapt Whisper's encoder to the user's own recordings with the candidate-set loss,
cross-fitted so that no note is judged by a model that trained on its own label.

Every note says "what was said is one of these texts". For a note x with candidates
S, matcher probabilities q (gold notes: one-hot) and p(c | x) the teacher-forced
probability of a candidate's spoken renderings (summed over renderings; the same
sequence `asr.score_texts` scores), the loss is

    L(x) = -log sum_{c in S} q_c p(c | x)

Trained are the encoder's LayerNorms and rank-8 LoRA deltas on its attention query and
value projections (56k weights for tiny.en); the decoder stays frozen, so the model
learns the speakers, the noise and the line rather than the texts. The notes are split
into K folds by id; the adapter of fold k trains on the other folds and scores, priors
and transcribes only fold k (`adapt_and_relabel`). The labels then come from the mean
of the unadapted and the adapted model's features: each alone loses notes the other
gets right.

LoRA is written here in a few lines of torch: PEFT would pull in transformers for what
is one extra matrix product per projection.

Adapters are safetensors files (weights plus string metadata naming the base model,
the fold and a hash of the training data) under `<cache>/adapters/`; a rerun with the
same data reuses them, another base model's adapter is refused.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from . import asr, match
from .audio import content_hash, decode
from .cache import ClipCache
from .chats import VoiceNote
from .clips import ClipOptions, ClipOutcome, run_clips, text_priors
from .label import Heard, MatchOptions, Summary, label_notes, truncated_texts
from .models import LoadedModel, load_model, weights_key
from .quantize import quantize_int8
from .textsim import render_spoken

ADAPTER_VERSION = 1
ALL = -1  # the fold of an adapter trained on every note (`disamb train --adapt`), which scores new recordings
MIN_TARGET = 1e-3  # candidates the matcher gives less mass are left out of the loss (they move it < 0.1%)


class AdapterError(Exception):
    """An adapter file that cannot be used here (damaged, or made for another model)."""


@dataclass
class AdaptOptions:
    folds: int = 2
    epochs: int = 2
    rounds: int = 1
    lr: float = 5e-4
    rank: int = 8
    lora: bool = True  # False: LayerNorms only
    batch_size: int | None = None  # clips per optimiser step; None: 4 on CPU, 16 on CUDA
    hard: bool = False  # True: only notes whose matcher confidence is at least `hard_level`, one-hot
    hard_level: float = 0.9
    seed: int = 0
    # Labels come from the mean of the adapted and the unadapted model's features, this
    # much the unadapted's (0: adapted only). Alone, the adapted model cost two benchmark
    # families a label; averaged, none lost one and codes-phone kept 17 errors of 37
    # instead of 20 (README, "--adapt").
    unadapted_weight: float = 0.5

    def tag(self) -> dict:
        """What the adapters depend on (the rounds and the mixing only change the labels)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("rounds", "unadapted_weight")}


# ------------------------------------------------------------------------- LoRA


class LoRALinear(nn.Module):
    """`base(x) + B A x`: a frozen projection plus a trainable rank-r update (B starts at 0)."""

    def __init__(self, base: nn.Linear, rank: int, generator: torch.Generator):
        super().__init__()
        self.base = base
        a = torch.randn(rank, base.in_features, generator=generator) / math.sqrt(base.in_features)
        self.lora_a = nn.Parameter(a.to(base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + F.linear(F.linear(x, self.lora_a.to(x.dtype)), self.lora_b.to(x.dtype))


def _projections(model) -> list[tuple[str, nn.Module, str]]:
    """(name prefix, attention module, attribute) of every adapted projection."""
    out = []
    for i, block in enumerate(model.encoder.blocks):
        for attr in ("query", "value"):
            out.append((f"encoder.blocks.{i}.attn.{attr}", block.attn, attr))
    return out


def _layer_norms(model) -> list[tuple[str, nn.LayerNorm]]:
    return [(f"encoder.{n}", m) for n, m in model.encoder.named_modules() if isinstance(m, nn.LayerNorm)]


def trainable(model, options: AdaptOptions) -> nn.Module:
    """A copy of a float32 Whisper with everything frozen but the encoder's LayerNorms
    (and, with `options.lora`, LoRA on its attention queries and values)."""
    model = copy.deepcopy(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for _, ln in _layer_norms(model):
        ln.weight.requires_grad_(True)
        ln.bias.requires_grad_(True)
    if options.lora:
        gen = torch.Generator().manual_seed(options.seed)
        for _, attn, attr in _projections(model):
            setattr(attn, attr, LoRALinear(getattr(attn, attr), options.rank, gen))
    return model


def adapter_state(model) -> dict[str, torch.Tensor]:
    """The trained weights only: LayerNorm parameters and LoRA factors, float32 on CPU."""
    state = {}
    for name, ln in _layer_norms(model):
        state[f"{name}.weight"] = ln.weight.detach().float().cpu().contiguous()
        state[f"{name}.bias"] = ln.bias.detach().float().cpu().contiguous()
    for name, attn, attr in _projections(model):
        proj = getattr(attn, attr)
        if isinstance(proj, LoRALinear):
            state[f"{name}.lora_a"] = proj.lora_a.detach().float().cpu().contiguous()
            state[f"{name}.lora_b"] = proj.lora_b.detach().float().cpu().contiguous()
    return state


def merge(model, state: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of a float32 Whisper with the adapter's LayerNorms set and W += B A merged in."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for name, ln in _layer_norms(model):
            ln.weight.copy_(state[f"{name}.weight"])
            ln.bias.copy_(state[f"{name}.bias"])
        for name, attn, attr in _projections(model):
            if f"{name}.lora_a" in state:
                proj = getattr(attn, attr)
                delta = state[f"{name}.lora_b"] @ state[f"{name}.lora_a"]
                proj.weight.add_(delta.to(proj.weight.device, proj.weight.dtype))
    return model


# ------------------------------------------------------------------ adapter files


@dataclass
class Adapter:
    state: dict[str, torch.Tensor]
    base: str  # weights_key of the base model
    fold: int  # ALL: trained on every note
    data: str  # hash of the training data and options
    train_ids: list[str]
    epoch_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    reused: bool = False

    @property
    def name(self) -> str:
        return f"{self.data[:16]}-{fold_name(self.fold)}"


def fold_name(fold: int) -> str:
    return "all" if fold == ALL else f"fold{fold}"


def adapter_path(root: Path, base: str, fold: int, data: str) -> Path:
    model_dir = hashlib.sha256(base.encode()).hexdigest()[:16]
    return Path(root) / "adapters" / model_dir / f"{fold_name(fold)}-{data[:32]}.safetensors"


def save_adapter(path: Path, adapter: Adapter) -> None:
    meta = {
        "version": str(ADAPTER_VERSION), "base": adapter.base, "fold": str(adapter.fold), "data": adapter.data,
        "train_ids": json.dumps(adapter.train_ids), "epoch_losses": json.dumps(adapter.epoch_losses),
        "seconds": f"{adapter.seconds:.3f}",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(adapter.state, str(tmp), metadata=meta)
    tmp.replace(path)  # whole or absent, like every other cache entry


def load_adapter(path: Path, base: str) -> Adapter:
    """Read an adapter file (safetensors: no unpickling); refuse one made for another model."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k).clone() for k in f.keys()}  # not a view of the mapped file
        if meta.get("version") != str(ADAPTER_VERSION):
            raise AdapterError(f"adapter {path}: version {meta.get('version')!r}, expected {ADAPTER_VERSION}")
        adapter = Adapter(state, meta["base"], int(meta["fold"]), meta["data"], json.loads(meta["train_ids"]),
                          json.loads(meta["epoch_losses"]), float(meta["seconds"]), reused=True)
    except AdapterError:
        raise
    except Exception as e:  # safetensors reports damage as several error types
        raise AdapterError(f"adapter {path}: not a readable adapter file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
    if adapter.base != base:
        raise AdapterError(f"adapter {path}: trained on model '{adapter.base}', not on '{base}'")
    return adapter


def adapted_model(base: LoadedModel, f32: LoadedModel, adapter: Adapter) -> LoadedModel:
    """The base model with the adapter merged, in the base's compute type, under its own key.

    The key names the adapter, so the clip and prior caches never mix its scores
    with the base model's (the compute suffix stays last, as `weights_key` expects).
    """
    if adapter.base != weights_key(base.key):
        raise AdapterError(f"adapter {adapter.name}: trained on model '{adapter.base}', not on '{weights_key(base.key)}'")
    model = merge(f32.model, adapter.state).eval()
    if base.compute == "int8":
        model = quantize_int8(model)
    elif base.compute == "float16":
        model = model.half()
    key = f"{weights_key(base.key)}+adapter:{adapter.name}"
    if base.compute != "float32":
        key = f"{key}|{base.compute}"
    return replace(base, model=model, key=key)


def float32_model(lm: LoadedModel) -> LoadedModel:
    """A float32 copy to train on: int8 weights cannot take gradients, so the weights are read again."""
    if lm.compute == "float32":
        return lm
    f32 = load_model(lm.name, str(lm.device), compute="float32")
    if weights_key(f32.key) != weights_key(lm.key):
        raise AdapterError(f"model '{lm.name}' changed on disk while running; rerun")
    return f32


# ------------------------------------------------------------------ training data


@dataclass
class Example:
    """One note's training input: its audio and, per candidate kept, the target mass
    and the token sequences of its renderings."""

    note_id: str
    audio: np.ndarray
    log_q: list[float]
    sequences: list[list[list[int]]]  # per candidate, per rendering: prefix + tokens + end


def targets(note: VoiceNote, record: dict, options: AdaptOptions) -> dict[str, float] | None:
    """Candidate id -> target mass: one-hot on gold, else the matcher's probabilities
    over the candidates (the "none" mass left out); None when the note teaches nothing."""
    if note.has_gold:
        if not note.gold_in_window or note.gold_label_id is None:
            return None
        return {note.gold_label_id: 1.0}
    probs = {c["id"]: c.get("prob") for c in record.get("candidates", [])}
    if record.get("error") or not probs or any(p is None for p in probs.values()):
        return None
    if options.hard:
        if record.get("label_id") is None or record.get("confidence", 0.0) < options.hard_level:
            return None
        return {record["label_id"]: 1.0}
    total = sum(probs.values())
    if total <= 0:
        return None
    kept = {k: p / total for k, p in probs.items() if p / total >= MIN_TARGET}
    s = sum(kept.values())
    return {k: p / s for k, p in kept.items()}


def sequences_for(lm: LoadedModel, text: str) -> list[list[int]]:
    prefix = list(lm.tokenizer.sot_sequence_including_notimestamps)
    return [prefix + asr.candidate_tokens(lm, r) + [lm.tokenizer.eot] for r in render_spoken(text)]


def fold_of(ids: list[str], k: int) -> dict[str, int]:
    """Fold of each note id: ids ordered by their hash, dealt round robin (balanced, and
    fixed by the ids alone, not by the input order)."""
    order = sorted(dict.fromkeys(ids), key=lambda i: hashlib.sha256(i.encode()).hexdigest())
    return {note_id: j % k for j, note_id in enumerate(order)}


def data_hash(base: str, fold: int, items: list[tuple[str, str, dict[str, float]]], options: AdaptOptions,
              audio_ctx: str) -> str:
    """What an adapter depends on: base model, options, and each training note's audio
    bytes, candidate texts and targets (rounded, so float noise does not retrain)."""
    h = hashlib.sha256()
    h.update(json.dumps({"v": ADAPTER_VERSION, "base": base, "fold": fold, "ctx": audio_ctx,
                         "options": options.tag()}, sort_keys=True).encode())
    for audio_sha, note_id, q in sorted(items, key=lambda t: t[1]):
        h.update(json.dumps([note_id, audio_sha, sorted((t, round(p, 3)) for t, p in q.items())]).encode())
    return h.hexdigest()


# ----------------------------------------------------------------------- training


def note_loss(lm: LoadedModel, features: torch.Tensor, example: Example) -> torch.Tensor:
    """-log sum_c q_c sum_r p(r | x) for one clip's encoder output (T, d).

    All renderings go through the frozen decoder in one padded batch; padding sits
    after each sequence, so the causal mask keeps it out of the scored positions. As in
    `asr.score_texts`, the clip's cross-attention keys and values are computed once and
    shared by its renderings, and only the scored positions are projected onto the
    vocabulary: measured on CPU, the per-rendering keys/values and full-width logits
    were most of a training step's time.
    """
    dec = lm.model.decoder
    seqs = [s for per_cand in example.sequences for s in per_cand]
    n_prefix = len(lm.tokenizer.sot_sequence_including_notimestamps)
    width = max(len(s) for s in seqs) - 1
    eot = lm.tokenizer.eot
    inputs = torch.tensor([s[:-1] + [eot] * (width - len(s) + 1) for s in seqs], device=lm.device)
    wanted = torch.tensor([s[1:] + [eot] * (width - len(s) + 1) for s in seqs], device=lm.device)
    mask = torch.tensor([[n_prefix - 1 <= t < len(s) - 1 for t in range(width)] for s in seqs], device=lm.device)
    xa = features[None]
    x = dec.token_embedding(inputs) + dec.positional_embedding[:width]
    for block in dec.blocks:
        k = block.cross_attn.key(xa).expand(len(seqs), -1, -1)
        v = block.cross_attn.value(xa).expand(len(seqs), -1, -1)
        x = x + block.attn(block.attn_ln(x), mask=dec.mask)[0]
        q = block.cross_attn.query(block.cross_attn_ln(x))
        x = x + block.cross_attn.out(block.cross_attn.qkv_attention(q, k, v)[0])
        x = x + block.mlp(block.mlp_ln(x))
    hidden = dec.ln(x)[mask]  # (scored tokens, d)
    logits = hidden @ dec.token_embedding.weight.to(hidden.dtype).T
    lp = -F.cross_entropy(logits.float(), wanted[mask], reduction="none")
    owner = torch.arange(len(seqs), device=lm.device)[:, None].expand(-1, width)[mask]
    seq_lp = torch.zeros(len(seqs), device=lm.device).index_add(0, owner, lp)  # log p(rendering | x)
    cand_lp, start = [], 0
    for per_cand in example.sequences:  # p(c | x): summed over the candidate's renderings
        cand_lp.append(torch.logsumexp(seq_lp[start : start + len(per_cand)], 0))
        start += len(per_cand)
    log_q = torch.tensor(example.log_q, device=lm.device)
    return -torch.logsumexp(log_q + torch.stack(cand_lp), 0)


def train_adapter(f32: LoadedModel, examples: list[Example], options: AdaptOptions, audio_ctx: str,
                  on_step=None) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Adam on the LayerNorms (+ LoRA) for `options.epochs` epochs; (weights, mean loss per epoch).

    Clips are batched only with clips of the same encoder context (the context they
    get when labelled). On CUDA the passes run under autocast (bf16 when supported,
    else fp16 with a gradient scaler); the weights and Adam stay float32.
    """
    model = trainable(f32.model, options).train()
    lm = replace(f32, model=model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=options.lr)
    cuda = f32.device.type == "cuda"
    amp = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else None
    scaler = torch.amp.GradScaler("cuda") if amp is torch.float16 else None
    groups: dict[int, list[Example]] = {}
    for ex in examples:
        groups.setdefault(asr.clip_context(f32, len(ex.audio), audio_ctx), []).append(ex)
    rng = random.Random(options.seed)
    size = options.batch_size or (16 if cuda else 4)
    losses = []
    for _ in range(options.epochs):
        batches = []
        for group in groups.values():
            group = group[:]
            rng.shuffle(group)
            batches += [group[i : i + size] for i in range(0, len(group), size)]
        rng.shuffle(batches)
        total = 0.0
        for batch in batches:
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=amp) if amp is not None else contextlib.nullcontext():
                encoded = asr.encode(lm, [ex.audio for ex in batch], audio_ctx)
                loss = sum(note_loss(lm, e.features, ex) for e, ex in zip(encoded, batch)) / len(batch)
            if scaler is not None:  # fp16 gradients underflow without it
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            total += float(loss.detach()) * len(batch)
            if on_step is not None:
                on_step(len(batch))
        losses.append(total / max(1, len(examples)))
    return adapter_state(model), losses


# -------------------------------------------------------------- cross-fitted run


@dataclass
class AdaptRound:
    round: int
    adapters: list[Adapter]
    scored_by: dict[str, int]  # note id -> fold of the adapter that scored it
    gold_accuracy_before: float | None
    gold_accuracy_after: float | None
    gold_log_loss_before: float | None
    gold_log_loss_after: float | None
    seconds: float
    kept: bool = True  # False: its gold log-loss was not lower, the previous labels stand
    unadapted_weight: float = 0.0  # the unadapted model's share of the features its labels came from
    records: list[dict] = field(default_factory=list, repr=False)  # its labels, kept or not (benchmarks)

    def as_dict(self) -> dict:
        return {
            "round": self.round, "kept": self.kept, "gold_accuracy_before": self.gold_accuracy_before,
            "gold_accuracy_after": self.gold_accuracy_after, "gold_log_loss_before": self.gold_log_loss_before,
            "gold_log_loss_after": self.gold_log_loss_after, "seconds": round(self.seconds, 1),
            "unadapted_weight": self.unadapted_weight,
            "folds": [{"fold": a.fold, "train_notes": len(a.train_ids), "epoch_losses": [round(x, 4) for x in a.epoch_losses],
                       "train_seconds": round(a.seconds, 1), "reused": a.reused} for a in self.adapters],
        }


@dataclass
class Relabelled:
    records: list[dict]
    summary: Summary
    matcher: object
    outcomes: dict[str, ClipOutcome]
    rounds: list[AdaptRound]


def gold_log_loss(summary: Summary) -> float | None:
    """The cross-validated gold log-loss of the matcher chosen (None with too little gold)."""
    if not summary.matcher_losses:
        return None
    if summary.matcher_choice in summary.matcher_losses:
        return summary.matcher_losses[summary.matcher_choice]
    return min(summary.matcher_losses.values())


def teaching_targets(notes: list[VoiceNote], records: list[dict], options: AdaptOptions
                     ) -> dict[str, tuple[VoiceNote, dict[str, float]]]:
    """Note id -> (note, target mass by candidate id) for every note that teaches something."""
    by_id = {r["id"]: r for r in records}
    teach = {}
    for n in notes:
        q = targets(n, by_id.get(n.id, {}), options)
        if q:
            teach[n.id] = (n, q)
    return teach


def fit_adapter(f32: LoadedModel, fold: int, teach: dict[str, tuple[VoiceNote, dict[str, float]]],
                train_ids: list[str], options: AdaptOptions, clip_options: ClipOptions, cache_root: Path | None,
                on_progress=None, stage: str = "adapting") -> Adapter:
    """The adapter trained on `train_ids` (fold ALL: every note, for a model folder): read
    from the cache when the same data trained one before, else trained and cached.

    `on_progress(stage, clips, total)` is told of every optimiser step (`total` clips x epochs).
    """
    base = weights_key(f32.key)
    shas = {i: content_hash(teach[i][0].audio) for i in train_ids}
    data = data_hash(base, fold, [(shas[i], i, teach[i][1]) for i in train_ids], options, clip_options.audio_ctx)
    path = adapter_path(cache_root, base, fold, data) if cache_root is not None else None
    if path is not None and path.is_file():
        return load_adapter(path, base)
    t0 = time.perf_counter()
    examples = [_example(f32, *teach[i], clip_options) for i in train_ids]
    examples = [e for e in examples if e is not None]
    total = len(examples) * options.epochs
    step = None if on_progress is None else (lambda n: on_progress(stage, n, total))
    state, losses = train_adapter(f32, examples, options, clip_options.audio_ctx, step)
    adapter = Adapter(state, base, fold, data, train_ids, losses, time.perf_counter() - t0)
    if path is not None:
        save_adapter(path, adapter)
    return adapter


def adapt_round(lm: LoadedModel, f32: LoadedModel, notes: list[VoiceNote], records: list[dict],
                clip_options: ClipOptions, match_options: MatchOptions, cache_root: Path | None,
                options: AdaptOptions, on_progress=None, round_no: int = 1):
    """Train the K fold adapters on `records`' targets (reusing cached ones), then score,
    prior and transcribe each note with the adapter of its own fold, which did not train
    on it. Returns (adapters, outcomes, priors by note id, fold by note id).

    `on_progress(stage, n, total)` hears of each training step and each rescored clip."""
    folds = fold_of([n.id for n in notes], options.folds)
    teach = teaching_targets(notes, records, options)
    adapters, outcomes, priors, scored_by = [], {}, {}, {}
    prefix = f"round {round_no}, " if options.rounds > 1 else ""
    for k in range(options.folds):
        train_ids = sorted(i for i in teach if folds[i] != k)
        if not train_ids:
            raise AdapterError(f"fold {k}: no notes to train its adapter on (too few notes for {options.folds} folds)")
        adapter = fit_adapter(f32, k, teach, train_ids, options, clip_options, cache_root, on_progress,
                              f"{prefix}adapter {k + 1}/{options.folds}: training")
        adapters.append(adapter)
        held = [n for n in notes if folds[n.id] == k]
        if not held:
            continue
        alm = adapted_model(lm, f32, adapter)
        wants_prior = match_options.prior or clip_options.mode == "score"  # as in pipeline.label_all
        fold_prior = text_priors(alm, held, cache_root) if wants_prior else None
        sure = match.default_matcher() if clip_options.mode == "score" else None
        stage = f"{prefix}adapter {k + 1}/{options.folds}: rescoring"
        done = None if on_progress is None else (lambda n, s=stage, t=len(held): on_progress(s, n, t))
        outcomes.update(run_clips(alm, held, clip_options, ClipCache(cache_root), on_done=done, prior=fold_prior,
                                  sure_matcher=sure))
        if match_options.prior:
            priors.update({n.id: fold_prior for n in held})
        scored_by.update({n.id: k for n in held})
    return adapters, outcomes, priors, scored_by


def _example(lm: LoadedModel, note: VoiceNote, q: dict[str, float], clip_options: ClipOptions) -> Example | None:
    decoded = decode(note.audio, clip_options.max_duration)
    if decoded.audio is None:
        return None
    texts = {c.id: c.text for c in note.candidates}
    ids = [i for i in q if i in texts]
    return Example(note.id, decoded.audio, [math.log(q[i]) for i in ids], [sequences_for(lm, texts[i]) for i in ids])


def adapt_and_relabel(lm: LoadedModel, notes: list[VoiceNote], records: list[dict], summary: Summary,
                      clip_options: ClipOptions, match_options: MatchOptions, cache_root: Path | None,
                      options: AdaptOptions, on_progress=None, unadapted_outcomes: dict[str, ClipOutcome] | None = None,
                      unadapted_prior: dict[str, tuple[float, int]] | None = None) -> Relabelled:
    """Label → adapt → relabel, `options.rounds` times at most.

    `unadapted_outcomes`, `unadapted_prior`: the base model's clip results and priors
    (`records` came from them); each round's features are then averaged with theirs,
    `options.unadapted_weight` of theirs.

    Each round trains fresh adapters from the base model on the previous round's labels.
    With enough gold to measure it (match.MIN_GOLD_TO_FIT), a round whose cross-validated
    gold log-loss is not lower than before it is dropped and the rounds stop; a first
    round dropped leaves the unadapted labels (`matcher` is then None). The gold's scores
    are honest on both sides: the base model trained on nothing, an adapter never on them.
    """
    f32 = float32_model(lm)
    truncated = truncated_texts(lm, notes)
    also = (Heard(unadapted_outcomes, unadapted_prior, options.unadapted_weight)
            if unadapted_outcomes is not None and options.unadapted_weight else None)
    rounds: list[AdaptRound] = []
    best = Relabelled(records, summary, None, {}, rounds)
    for r in range(options.rounds):
        t0 = time.perf_counter()
        adapters, outcomes, priors, scored_by = adapt_round(
            lm, f32, notes, best.records, clip_options, match_options, cache_root, options, on_progress, r + 1)
        new_records, new_summary, matcher = label_notes(
            notes, outcomes, match_options, None, truncated=truncated, priors_by_note=priors if priors else None,
            also=also)
        before, after = gold_log_loss(best.summary), gold_log_loss(new_summary)
        worse = before is not None and after is not None and after >= before
        rounds.append(AdaptRound(r + 1, adapters, scored_by, best.summary.gold_accuracy, new_summary.gold_accuracy,
                                 before, after, time.perf_counter() - t0, kept=not worse,
                                 unadapted_weight=also.weight if also else 0.0, records=new_records))
        if worse:
            best.summary.remarks.append(
                f"adapt round {r + 1} did not lower the cross-validated gold log-loss ({before:.3f} → {after:.3f}); "
                + ("labels from the unadapted model" if r == 0 else f"labels from round {r}"))
            break
        best = Relabelled(new_records, new_summary, matcher, outcomes, rounds)
    best.rounds = rounds
    return best
