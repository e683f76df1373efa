"""Tests for the attention pooling head compared against the mean in benchmarks/pooling.py."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.pooling import AttentionHead, attention_pool, padded
from disamb.train import make_head


def _frames(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(3, 6, 4, generator=g)
    valid = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    return frames, valid


def test_padding_frames_get_zero_weight_whatever_they_hold():
    frames, valid = _frames()
    scores = torch.randn(3, 6, 2)
    pooled, w = attention_pool(frames, valid, scores)
    assert torch.all(w[~valid] == 0)
    assert torch.allclose(w.sum(1), torch.ones(3, 2))
    # huge padding values and huge padding scores change nothing
    loud = frames.masked_fill(~valid[..., None], 1e6)
    pooled2, _ = attention_pool(loud, valid, scores.masked_fill(~valid[..., None], 1e4))
    assert torch.allclose(pooled, pooled2)
    assert pooled.shape == (3, 2 * 4)


def test_one_valid_frame_pools_to_that_frame_and_equal_scores_to_the_mean():
    frames, valid = _frames(1)
    pooled, _ = attention_pool(frames, valid, torch.randn(3, 6, 1))
    assert torch.allclose(pooled[2], frames[2, 0])
    flat, _ = attention_pool(frames, valid, torch.zeros(3, 6, 1))
    assert torch.allclose(flat[1], frames[1, :3].mean(0), atol=1e-6)
    # the weights follow the scores: a frame scored far above the others takes it all
    sharp = torch.zeros(3, 6, 1)
    sharp[0, 4] = 50.0
    one, _ = attention_pool(frames, valid, sharp)
    assert torch.allclose(one[0], frames[0, 4], atol=1e-5)


def test_a_fresh_one_head_model_is_the_mean_head():
    """Query zero and the output layer drawn first: the attention head starts as the mean head."""
    rng = np.random.default_rng(0)
    clips = {f"c{i}": rng.normal(size=(n, 5)).astype(np.float16) for i, n in enumerate((7, 2, 4))}
    ids = list(clips)
    means = np.stack([clips[i].astype(np.float32).mean(0) for i in ids])
    mu, sd = means.mean(0), means.std(0) + 1e-6
    torch.manual_seed(3)
    att = AttentionHead(5, 4, heads=1)
    torch.manual_seed(3)
    lin = make_head(5, 4)
    with torch.no_grad():
        got = att(padded(clips, ids, mu, sd))
        want = lin(torch.from_numpy((means - mu) / sd))
    assert torch.allclose(got, want, atol=1e-5)
    x, valid = padded(clips, ids, mu, sd)
    assert x.shape == (3, 7, 5) and valid.sum(1).tolist() == [7, 2, 4]
    assert torch.all(x[~valid] == 0)
