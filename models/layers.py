"""Shared torch building blocks: the bundle-aware visibility masks, attention, FFN, model outputs.

The masks are the single place where GUIDE §2's visibility rules become tensors; every model builds
them from `bundle` and `question` inside `forward`, so an exported ONNX graph keeps dynamic batch and
length. Attention is explicit q/k/v projections + `F.scaled_dot_product_attention` (exports cleanly
with both ONNX exporters, GUIDE §5); the softmax is spelled out only when the maps are requested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.features import PAD


@dataclass
class ModelOutput:
    """What `forward(..., output_hidden_states=True / output_attentions=True)` returns.

    hidden_states: HF convention, `n_layers + 1` tensors (B, T, D): the state entering the first
      layer, then the output of every layer (SAINT: decoder; DKT: per-position LSTM state).
    attentions: one (B, H, T, S) map per layer (SAINT: the decoder's response attention, S = T + 1
      with the null key at column 0).
    encoder_*: the same for the SAINT encoder (exercise self-attention, S = T).
    """

    logits: Tensor  # (B, T)
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
    encoder_hidden_states: tuple[Tensor, ...] | None = None
    encoder_attentions: tuple[Tensor, ...] | None = None

    def __getitem__(self, key: str) -> Tensor | tuple[Tensor, ...] | None:
        # dict-style access (`out["logits"]`) for code written against HF-style outputs
        return getattr(self, key)


def padding_mask(question: Tensor) -> Tensor:
    """(B, T) bool, True at padding (question index 0)."""
    return question == PAD


def exercise_mask(bundle: Tensor, question: Tensor) -> Tensor:
    """(B, 1, T, T) bool, True where query i may see the exercise side of key j.

    bundle[j] < bundle[i] (strictly earlier bundle, not padding) or j == i. The diagonal is always
    allowed, so no row is empty (padding rows see themselves) and softmax never produces NaN. Items of
    the same bundle (and the K candidates of one request) do not see each other: that is what makes
    K candidates in one pass equal K separate predictions.
    """
    t = bundle.shape[1]
    earlier = bundle.unsqueeze(1) < bundle.unsqueeze(
        2
    )  # (B, T, T): [b, i, j] = bundle_j < bundle_i
    earlier = earlier & ~padding_mask(question).unsqueeze(1)  # padding keys never visible
    idx = torch.arange(t, device=bundle.device)
    eye = idx.unsqueeze(0) == idx.unsqueeze(1)  # (T, T)
    return (earlier | eye).unsqueeze(1)  # (B, 1, T, T), broadcast over heads


def response_mask(bundle: Tensor, question: Tensor) -> Tensor:
    """(B, 1, T, T + 1) bool for attention to [null, responses]: column 0 is the always-visible null
    key, column j + 1 is response j, visible iff bundle[j] < bundle[i] (never i's own bundle)."""
    earlier = bundle.unsqueeze(1) < bundle.unsqueeze(2)  # (B, T, T)
    earlier = earlier & ~padding_mask(question).unsqueeze(1)
    null = torch.ones_like(
        earlier[:, :, :1]
    )  # (B, T, 1): first bundle and padding rows see the null
    return torch.cat([null, earlier], dim=2).unsqueeze(1)  # (B, 1, T, T + 1)


class Attention(nn.Module):
    """Multi-head attention of `x` over `memory` under a boolean mask (True = may attend)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = dropout
        self.attn_drop = nn.Dropout(dropout)
        self.resid_drop = nn.Dropout(dropout)

    def _heads(self, x: Tensor) -> Tensor:
        b, s, _ = x.shape
        return x.reshape(b, s, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, S, Dh)

    def forward(
        self, x: Tensor, memory: Tensor, mask: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        b, t, d = x.shape
        q = self._heads(self.q_proj(x))  # (B, H, T, Dh)
        k = self._heads(self.k_proj(memory))  # (B, H, S, Dh)
        v = self._heads(self.v_proj(memory))  # (B, H, S, Dh)
        weights: Tensor | None = None
        if need_weights:
            # Spelled out so the maps can be returned (distillation); same maths as SDPA.
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, T, S)
            scores = scores.masked_fill(~mask, float("-inf"))  # every row keeps >= 1 key
            weights = F.softmax(scores, dim=-1)  # (B, H, T, S)
            y = self.attn_drop(weights) @ v  # (B, H, T, Dh)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
            )  # (B, H, T, Dh)
        y = y.transpose(1, 2).reshape(b, t, d)  # (B, T, D)
        return self.resid_drop(self.out_proj(y)), weights


class FeedForward(nn.Module):
    """Position-wise MLP; position-wise, so it cannot move information between items."""

    def __init__(self, d_model: int, mult: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_model, mult * d_model),
            nn.GELU(),
            nn.Linear(mult * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TimeEncoding(nn.Module):
    """A time feature -> (B, T, D): bucket embedding, Linear(1, D) on the continuous value, or both."""

    def __init__(self, n_buckets: int, d_model: int, mode: str) -> None:
        super().__init__()
        if mode not in ("bucket", "continuous", "both"):
            raise ValueError(f"unknown time encoding {mode!r}")
        self.bucket = nn.Embedding(n_buckets, d_model) if mode in ("bucket", "both") else None
        self.linear = nn.Linear(1, d_model) if mode in ("continuous", "both") else None

    def forward(self, buckets: Tensor, values: Tensor) -> Tensor:
        out: Tensor | None = None
        if self.bucket is not None:
            out = self.bucket(buckets)  # (B, T, D)
        if self.linear is not None:
            cont = self.linear(values.unsqueeze(-1))  # (B, T, 1) -> (B, T, D)
            out = cont if out is None else out + cont
        assert out is not None  # guaranteed by the mode check in __init__
        return out
