"""`disamb train --adapt`: one encoder adapter in the model folder, applied wherever the
classifier's clips are embedded and scored (train, predict, eval --model).

`label --adapt` cross-fits (adapt.py) because its adapters score the very notes they
learned from. A classifier's adapter scores new recordings, so one adapter trains on
every labelled note, with the same loss and targets (labels.jsonl's matcher
probabilities, gold one-hot). The classifier is then trained on what the adapted model
hears: its embeddings and class scores come from the adapted model, as predict's will.

The folder holds `adapter.safetensors` (adapt.save_adapter: weights plus the base
model's name and the training data's hash) and model.json's "encoder"."adapter" names
the same base and hash, so a folder whose adapter does not match the model loaded, or
whose adapter file was replaced, is refused in one line.
"""

from __future__ import annotations

from pathlib import Path

from .adapt import (
    ALL, Adapter, AdapterError, AdaptOptions, adapted_model, fit_adapter, float32_model, load_adapter,
    save_adapter, teaching_targets,
)
from .chats import VoiceNote
from .clips import ClipOptions
from .models import LoadedModel, weights_key

ADAPTER_FILE = "adapter.safetensors"


def train_model_adapter(lm: LoadedModel, notes: list[VoiceNote], records: dict[str, dict], clip_options: ClipOptions,
                        cache_root: Path | None, options: AdaptOptions,
                        on_progress=None) -> tuple[LoadedModel, Adapter]:
    """(the adapted model, its adapter): one adapter on every note labels.jsonl teaches
    something (cached under `cache_root` like the cross-fitted ones, so a rerun reuses it)."""
    teach = teaching_targets(notes, list(records.values()), options)
    if not teach:
        raise AdapterError("--adapt: no note to adapt on (no gold in the window, no labels with candidate probabilities)")
    f32 = float32_model(lm)
    adapter = fit_adapter(f32, ALL, teach, sorted(teach), options, clip_options, cache_root, on_progress,
                          "adapter: training")
    return adapted_model(lm, f32, adapter), adapter


def adapter_meta(adapter: Adapter, options: AdaptOptions) -> dict:
    """What model.json says of the adapter (under "encoder"."adapter")."""
    return {"file": ADAPTER_FILE, "base": adapter.base, "data": adapter.data, "train_notes": len(adapter.train_ids),
            "epochs": options.epochs, "epoch_losses": [round(x, 4) for x in adapter.epoch_losses],
            "train_seconds": round(adapter.seconds, 1), "reused": adapter.reused}


def store_model_adapter(folder: Path, adapter: Adapter | None) -> None:
    """Write the adapter into the model folder; without one, remove an earlier run's, so a
    folder never carries an adapter its model.json does not name."""
    path = Path(folder) / ADAPTER_FILE
    if adapter is not None:
        save_adapter(path, adapter)
    elif path.is_file():
        path.unlink()


def apply_model_adapter(folder: Path, encoder: dict, lm: LoadedModel) -> LoadedModel:
    """`lm` with the folder's adapter merged when model.json names one, else `lm` itself.

    Refused (AdapterError, one line): an adapter trained on another base model than `lm`,
    a missing or damaged file, or a file that is not the adapter model.json names.
    """
    info = encoder.get("adapter")
    if not info:
        return lm
    folder = Path(folder)
    base = weights_key(lm.key)
    if not isinstance(info, dict) or not isinstance(info.get("base"), str) or not isinstance(info.get("data"), str):
        raise AdapterError(f'{folder / "model.json"}: "encoder"."adapter" must name its "base" model and "data" hash')
    if info["base"] != base:
        raise AdapterError(f"{folder}: its adapter was trained on model '{info['base']}', not on '{base}' "
                           "(train again, or use the model it was trained with)")
    path = folder / ADAPTER_FILE
    if not path.is_file():
        raise AdapterError(f"{folder}: model.json names an adapter but {ADAPTER_FILE} is missing")
    adapter = load_adapter(path, base)
    if adapter.data != info["data"] or adapter.fold != ALL:
        raise AdapterError(f"{path}: not the adapter model.json names (trained on other data); train again")
    return adapted_model(lm, float32_model(lm), adapter)
