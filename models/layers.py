"""Shared torch building blocks: the bundle-aware visibility masks, attention, FFN, model outputs.

The masks are the single place where the visibility rules of docs/design.md become tensors; every
model builds them from `bundle` and `question` inside `forward`, so an exported ONNX graph keeps
dynamic batch and length. Attention is explicit q/k/v projections + `F.scaled_dot_product_attention`
under a boolean mask; the softmax is spelled out when the maps are requested and under the attention
decay's additive bias (SDPA with a float mask fails torch's dynamo ONNX export with dynamic shapes).
Also here: the content-aware item embedding and the IRT prior that every registry model shares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.config import ModelConfig
from models.vocab import PAD

# Parameters of the IRT prior are multiplied by this in forward: under Adam that is a 10x larger step
# for them (the logistic model's learning rate, 1e-2, against the networks' 1e-3), so the prior
# converges within the networks' schedule instead of lagging behind it.
PRIOR_LR_SCALE = 10.0

# A masked key's score in `Attention.attend_prefix`, where the bias rides in a matmul: finite (a
# matmul must not meet -inf), and low enough that exp() of it, after softmax subtracts a visible
# key's score, is exactly 0 in float32.
NO_KEY = -1e9


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


@dataclass
class BundleDistance:
    """What the attention decay needs, built once per forward and shared by every layer, so a
    layer's bias is one multiply-add over (B, H, T, S): mask_bias - slope_h x bundles_back."""

    bundles_back: Tensor  # (B, 1, T, S) float: bundle_i - bundle_j (read only where visible)
    mask_bias: Tensor  # (B, 1, T, S) float: 0 where query i may see key j, -inf where not


def bundle_distance(bundle: Tensor, mask: Tensor, null_key: bool = False) -> BundleDistance:
    """How many bundles key j lies before query i, under `mask` (B, 1, T, S) (True = visible);
    with `null_key`, a leading zero column for the null slot (S = T + 1). Visible keys are never
    later than the query, so no clamp is needed; the differences are taken in float32 (exact for
    the bundle ordinals of any window, and the same rounding as a cast after an int64 difference)."""
    b = bundle.to(torch.float32)
    dist = b.unsqueeze(2) - b.unsqueeze(1)  # (B, T, T)
    if null_key:
        dist = torch.cat([torch.zeros_like(dist[:, :, :1]), dist], dim=2)  # (B, T, T + 1)
    # finite distances everywhere keep the slope's gradient finite (0 x inf would be NaN)
    mask_bias = torch.zeros_like(dist).unsqueeze(1).masked_fill(~mask, float("-inf"))
    return BundleDistance(dist.unsqueeze(1), mask_bias)


def prefix_distance(
    query_bundle: Tensor, key_bundle: Tensor, key_question: Tensor, null_key: bool = False
) -> BundleDistance:
    """For the items of ONE bundle per row, `query_bundle` (B, 1) that bundle, against a learner's
    history (B, S) (`Attention.attend_prefix`): (B, 1, 1, S) bundles back, and the mask bias that
    lets an item see key j iff j's bundle is strictly earlier and j is not padding; with
    `null_key`, a leading always-visible column at distance 0 (S + 1), as `response_mask` has.
    Every item of the bundle sees the same keys at the same distances, so one row per learner is
    built and broadcast over the N items (not a (B, 1, N, S) tensor per layer input)."""
    q = query_bundle.to(torch.float32).unsqueeze(2)  # (B, 1, 1)
    k = key_bundle.to(torch.float32).unsqueeze(1)  # (B, 1, S)
    dist = q - k  # (B, 1, S)
    seen = (dist > 0) & ~padding_mask(key_question).unsqueeze(1)  # (B, 1, S)
    if null_key:
        dist = torch.cat([torch.zeros_like(dist[:, :, :1]), dist], dim=2)  # (B, 1, S + 1)
        seen = torch.cat([torch.ones_like(seen[:, :, :1]), seen], dim=2)
    mask_bias = torch.zeros_like(dist).masked_fill(~seen, float("-inf"))
    return BundleDistance(dist.unsqueeze(1), mask_bias.unsqueeze(1))


def mean_over_tags(weight: Tensor, tags: Tensor) -> Tensor:
    """The mean of `weight`'s rows (V, E) over each item's tags (..., M) -> (..., E); tag 0 = none
    (contributes nothing; an item without tags gets zeros). Row 0 is replaced by zeros in the
    graph, so this holds whatever the weight's row 0 holds, and that row gets no gradient (as
    `padding_idx`); on an exported graph's initializer the replacement is folded at load."""
    table = F.pad(weight[1:], (0, 0, 1, 0))  # (V, E), row 0 = 0
    n = (tags > 0).sum(dim=-1, keepdim=True).clamp(min=1).to(weight.dtype)  # (..., 1)
    return F.embedding(tags, table).sum(dim=-2) / n  # (..., E)


def _exporting() -> bool:
    """True while torch.export / the dynamo or legacy ONNX exporter traces the model."""
    return bool(torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export())


def per_row(module: nn.Module, x: Tensor) -> Tensor:
    """`module` (position-wise) on the rows of x (..., D), flattened to (rows, D) and back: the
    same values. For the bank graph (`Attention.attend_prefix`, `SAINT.forward_bundle`): on 2-D
    input an exported Linear is one Gemm with its bias inside; on 3-D, ORT runs a MatMul and then
    a separate bias Add, one more pass over every item's output."""
    return module(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)


class Attention(nn.Module):
    """Multi-head attention of `x` over `memory` under a boolean mask (True = may attend).

    With `decay`, each head subtracts slope_h x (bundles between query and key) from its scores
    (ALiBi, Press et al. 2022; AKT's monotonic attention in spirit): recent answers weigh more,
    as in an RNN, with a learned slope per head, initialised geometrically (1/4 .. 1/4^H)."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float,
        decay: bool = False,
        attn_dropout: float | None = None,
    ) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        # on the attention weights (None: `dropout`); 0 keeps SDPA's fused kernel in training
        self.attn_dropout = dropout if attn_dropout is None else attn_dropout
        self.attn_drop = nn.Dropout(self.attn_dropout)
        self.resid_drop = nn.Dropout(dropout)
        # log of the per-head slope; None = plain attention
        self.log_slope = (
            nn.Parameter(torch.log(0.25 ** torch.arange(1, n_heads + 1, dtype=torch.float32)))
            if decay
            else None
        )

    def _heads(self, x: Tensor) -> Tensor:
        b, s, _ = x.shape
        return x.reshape(b, s, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, S, Dh)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        mask: Tensor,
        need_weights: bool = False,
        distance: BundleDistance | None = None,  # `bundle_distance(bundle, mask)` (decay only)
    ) -> tuple[Tensor, Tensor | None]:
        b, t, d = x.shape
        q = self._heads(self.q_proj(x))  # (B, H, T, Dh)
        k = self._heads(self.k_proj(memory))  # (B, H, S, Dh)
        v = self._heads(self.v_proj(memory))  # (B, H, S, Dh)
        attn_mask: Tensor = mask  # bool (B, 1, T, S), or the additive float bias below
        if self.log_slope is not None and distance is not None:
            slope = self.log_slope.exp().view(1, -1, 1, 1)  # (1, H, 1, 1), > 0
            attn_mask = distance.mask_bias - slope * distance.bundles_back  # (B, H, T, S)
        weights: Tensor | None = None
        if need_weights or (attn_mask.dtype != torch.bool and _exporting()):
            # Spelled out so the maps can be returned (distillation), and for the decay bias in an
            # ONNX export (SDPA with a float mask does not export with dynamic shapes); same maths
            # as SDPA, which trains ~5x faster on CPU (fused kernel) when no weight dropout is asked.
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, T, S)
            if attn_mask.dtype == torch.bool:
                scores = scores.masked_fill(~attn_mask, float("-inf"))  # rows keep >= 1 key
            else:
                scores = scores + attn_mask
            weights = F.softmax(scores, dim=-1)  # (B, H, T, S)
            y = self.attn_drop(weights) @ v  # (B, H, T, Dh)
            weights = weights if need_weights else None
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=self.attn_dropout if self.training else 0.0
            )  # (B, H, T, Dh)
        y = y.transpose(1, 2).reshape(b, t, d)  # (B, T, D)
        return self.resid_drop(self.out_proj(y)), weights

    def attend_prefix(
        self, x: Tensor, prefix: Tensor, own: Tensor | None, visible: BundleDistance
    ) -> Tensor:
        """Each of N queries `x` (B, N, D), the items of ONE bundle, over the shared keys `prefix`
        (B, S, D) under `visible` (`prefix_distance`), plus its own key/value `own` (B, N, D) when
        given (the exercise side's diagonal; the decay's distance to itself is 0). Equals `forward`
        over [prefix, queries] at the query rows, since a bundle's items never see each other, at
        O(N x S) instead of O((S + N)^2). Inference only (no dropout, no maps).

        Spelled for the bank graph's cost, which is per item (a 13,523-question bank: 15.3 ->
        12.7 ms with `per_row` and `SAINT._bundle_items`, docs/service.md): the query projection
        is one matmul per head of [x, 1] with its bias and the 1/sqrt(Dh) scale folded in and one
        extra output fixed at 1, and the keys carry their bias (mask and decay, the same for every
        item) in a matching extra column, so the score matmul adds the bias itself: no
        (B, H, N, S) add or scale, no transposes on the query side. Masked keys get NO_KEY instead
        of -inf (a matmul must not meet infinities); their weight is still exactly 0."""
        b, n, d = x.shape
        h, dh = self.n_heads, self.head_dim
        scale = 1.0 / math.sqrt(dh)
        w_q = self.q_proj.weight.view(h, dh, d).transpose(1, 2) * scale  # (H, D, Dh)
        b_q = self.q_proj.bias.view(h, 1, dh) * scale  # (H, 1, Dh)
        w_q = F.pad(torch.cat([w_q, b_q], dim=1), (0, 1))  # (H, D + 1, Dh + 1)
        w_q[:, d, dh] = 1.0  # the extra output is 1 (the bias row x 1)
        x1 = F.pad(x, (0, 1), value=1.0)  # (B, N, D + 1)
        q = x1.unsqueeze(1) @ w_q  # (B, H, N, Dh + 1)
        k = self._heads(self.k_proj(prefix))  # (B, H, S, Dh)
        v = self._heads(self.v_proj(prefix))  # (B, H, S, Dh)
        s = k.shape[2]
        bias = visible.mask_bias  # (B, 1, 1, S): the same row for every item
        if self.log_slope is not None:
            bias = bias - self.log_slope.exp().view(1, -1, 1, 1) * visible.bundles_back
        # -inf stays -inf whatever a masked key's distance; only then made finite
        bias = bias.clamp(min=NO_KEY).expand(b, h, 1, s).transpose(-2, -1)  # (B, H, S, 1)
        scores = q @ torch.cat([k, bias], dim=-1).transpose(-2, -1)  # (B, H, N, S), bias added
        if own is not None:
            k_own = self._heads(self.k_proj(own))  # (B, H, N, Dh)
            v_own = self._heads(self.v_proj(own))
            own_score = (q[..., :dh] * k_own).sum(-1, keepdim=True)  # (B, H, N, 1), scaled
            weights = F.softmax(torch.cat([scores, own_score], dim=-1), dim=-1)  # (B, H, N, S+1)
            y = weights[..., :s] @ v + weights[..., s:] * v_own  # (B, H, N, Dh)
        else:
            y = F.softmax(scores, dim=-1) @ v  # (B, H, N, Dh)
        y = y.transpose(1, 2).reshape(b, n, d)  # (B, N, D)
        return per_row(self.out_proj, y)


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


class ItemEmbedding(nn.Module):
    """Content-aware item representation, shared by every registry model (docs/models.md).

    x_q = c + mu_q * v + r_q   with   c = E_part[part] + mean_t E_tag[t],  v = V_part[part] + mean_t V_tag[t]
    (AKT's Rasch embedding, Ghosh et al. 2020, with part + tags as the shared "skill"). mu_q is one
    learned scalar per question and r_q an optional free vector; both start at zero, so a question the
    model never trained on (or one registered later) is represented by its part and tags alone.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.part_emb = nn.Embedding(cfg.n_parts, d)
        self.tag_emb = nn.Embedding(cfg.n_tags, d, padding_idx=0)
        self.part_var = nn.Embedding(cfg.n_parts, d)
        self.tag_var = nn.Embedding(cfg.n_tags, d, padding_idx=0)
        self.difficulty = nn.Embedding(cfg.n_questions, 1)
        self.residual = nn.Embedding(cfg.n_questions, d) if cfg.question_residual else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Content tables small-normal; per-question parameters zero (call after a model-wide init)."""
        for emb in (self.part_emb, self.tag_emb, self.part_var, self.tag_var):
            nn.init.normal_(emb.weight, std=0.02)
        nn.init.zeros_(self.difficulty.weight)
        if self.residual is not None:
            nn.init.zeros_(self.residual.weight)
        with torch.no_grad():
            self.tag_emb.weight[0].zero_()
            self.tag_var.weight[0].zero_()

    def forward(self, question: Tensor, part: Tensor, tags: Tensor) -> Tensor:
        # question, part (B, T); tags (B, T, M) with 0 = no tag
        # the two tables of each kind side by side: one gather and one tag mean for both
        parts = torch.cat([self.part_emb.weight, self.part_var.weight], dim=1)  # (P, 2D)
        tag_tables = torch.cat([self.tag_emb.weight, self.tag_var.weight], dim=1)  # (V, 2D)
        both = F.embedding(part, parts) + mean_over_tags(tag_tables, tags)  # (B, T, 2D)
        content, variation = both.chunk(2, dim=-1)  # (B, T, D) each
        x = content + self.difficulty(question) * variation  # (B, T, D)
        if self.residual is not None:
            x = x + self.residual(question)
        return x


class IRTPrior(nn.Module):
    """logit prior = w . stats + b - (beta_q + mean_t beta_tag + beta_part): a logistic / IRT model of
    ability (the learner statistics, all from strictly earlier bundles) against item difficulty.
    Zero-initialised; parameters scaled by PRIOR_LR_SCALE (see there)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.question_bias = nn.Embedding(cfg.n_questions, 1)
        self.tag_bias = nn.Embedding(cfg.n_tags, 1, padding_idx=0)
        self.part_bias = nn.Embedding(cfg.n_parts, 1)
        self.ability = nn.Linear(cfg.n_stats, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """All zero: the prior starts as 'p = 0.5' (call after a model-wide init)."""
        for p in (self.question_bias.weight, self.tag_bias.weight, self.part_bias.weight):
            nn.init.zeros_(p)
        nn.init.zeros_(self.ability.weight)
        nn.init.zeros_(self.ability.bias)

    def difficulty(self, question: Tensor, part: Tensor, tags: Tensor) -> Tensor:
        """(B, T) the item's side of the prior: beta_q + mean_t beta_tag + beta_part."""
        tag = mean_over_tags(self.tag_bias.weight, tags).squeeze(-1)  # (B, T)
        return self.question_bias(question).squeeze(-1) + tag + self.part_bias(part).squeeze(-1)

    def from_difficulty(self, stats: Tensor, difficulty: Tensor) -> Tensor:
        """(B, T) the prior from the statistics (B, T, S) and `difficulty` (B, T)."""
        return PRIOR_LR_SCALE * (self.ability(stats).squeeze(-1) - difficulty)

    def forward(self, question: Tensor, part: Tensor, tags: Tensor, stats: Tensor) -> Tensor:
        return self.from_difficulty(stats, self.difficulty(question, part, tags))  # (B, T)
