"""SAINT (Choi et al. 2020) and SAINT+ (Shin et al. 2021), made bundle-aware (docs/design.md).

One model class, read top to bottom:
  0. Item representation x_q = ItemEmbedding(question, part, tags) (content-aware, models.layers),
     learner statistics s_i (strictly earlier bundles, models.feature_spec.STAT_NAMES) -> Linear(s_i).
  1. Encoder = SAINT's exercise stream. x_i = x_q + E_pos[pos_i] + W s_i (+ SAINT+:
     lag_i), N pre-LN layers of self-attention under the exercise mask (j visible to i iff
     bundle_j < bundle_i or j == i) + FFN. Output O (B, T, D). Everything in it is known when i is shown.
     (`encoder_layers` = 0: O = LayerNorm(x), no attention.)
  2. Response memory = SAINT's response stream, made safe. r_j = E_resp[resp_j] + x_q[j] +
     E_pos[pos_j] + O_j (+ SAINT+: elapsed_j, lag_j, explanation_j). It is used ONLY as keys/values,
     behind the response mask (visible iff bundle_j < bundle_i) with a learned null slot prepended.
     Plain SAINT's "shift the responses by one" leaks within bundles, and feeding i its own response
     but masking it still leaks through the residual stream; here i's response never reaches i.
  3. Decoder: h_i starts from query-side info only (O_i + a decoder position embedding). Each of N
     pre-LN layers: attention to the response memory, cross-attention to O under the exercise mask
     (unless `cross_attention` is off), FFN. Final LayerNorm + Linear -> one logit per position,
     plus (irt_prior) an IRT-style prior from the statistics and the item's difficulty:
     logit = prior + learned correction.

SAINT ignores lag / elapsed / explanation; SAINT+ adds lag to the query side (it is known when the
item is shown) and elapsed time + explanation flag to the response side.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.config import ModelConfig
from models.layers import (
    Attention,
    BundleDistance,
    FeedForward,
    IRTPrior,
    ItemEmbedding,
    ModelOutput,
    TimeEncoding,
    bundle_distance,
    exercise_mask,
    per_row,
    prefix_distance,
    response_mask,
)


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(
            cfg.d_model, cfg.n_heads, cfg.dropout, cfg.attention_decay, cfg.attention_dropout
        )
        self.ln_ffn = nn.LayerNorm(cfg.d_model)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_mult, cfg.dropout)

    def forward(
        self, x: Tensor, mask: Tensor, need_weights: bool, distance: BundleDistance | None = None
    ) -> tuple[Tensor, Tensor | None]:
        h = self.ln_attn(x)  # (B, T, D)
        a, w = self.attn(h, h, mask, need_weights, distance)
        x = x + a
        x = x + self.ffn(self.ln_ffn(x))
        return x, w

    def forward_prefix(self, x: Tensor, history: Tensor, visible: BundleDistance) -> Tensor:
        """The layer for one bundle's items x (B, N, D) after the history's layer input (B, S, D)."""
        h = self.ln_attn(x)  # (B, N, D)
        x = x + self.attn.attend_prefix(h, self.ln_attn(history), h, visible)
        return x + per_row(self.ffn, self.ln_ffn(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln_resp = nn.LayerNorm(cfg.d_model)
        self.resp_attn = Attention(
            cfg.d_model, cfg.n_heads, cfg.dropout, cfg.attention_decay, cfg.attention_dropout
        )
        self.ln_cross = nn.LayerNorm(cfg.d_model) if cfg.cross_attention else None
        self.cross_attn = (
            Attention(
                cfg.d_model, cfg.n_heads, cfg.dropout, cfg.attention_decay, cfg.attention_dropout
            )
            if cfg.cross_attention
            else None
        )
        self.ln_ffn = nn.LayerNorm(cfg.d_model)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_mult, cfg.dropout)

    def forward(
        self,
        h: Tensor,  # (B, T, D) query-side state
        memory: Tensor,  # (B, T + 1, D) [null, responses]
        enc: Tensor,  # (B, T, D) encoder output O
        resp_mask: Tensor,  # (B, 1, T, T + 1)
        ex_mask: Tensor | None,  # (B, 1, T, T); None without cross-attention
        need_weights: bool,
        resp_dist: BundleDistance | None = None,  # (B, 1, T, T + 1) (attention_decay)
        ex_dist: BundleDistance | None = None,  # (B, 1, T, T)
    ) -> tuple[Tensor, Tensor | None]:
        a, w = self.resp_attn(self.ln_resp(h), memory, resp_mask, need_weights, resp_dist)
        h = h + a  # what the learner did in strictly earlier bundles
        if self.cross_attn is not None and self.ln_cross is not None and ex_mask is not None:
            c, _ = self.cross_attn(self.ln_cross(h), enc, ex_mask, False, ex_dist)
            h = h + c  # which exercises came before (and this one)
        h = h + self.ffn(self.ln_ffn(h))
        return h, w

    def forward_prefix(
        self,
        h: Tensor,  # (B, N) items of one bundle: (B, N, D) query-side state
        memory: Tensor,  # (B, S + 1, D) [null, the history's responses]
        enc_history: Tensor,  # (B, S, D) the history's encoder output
        enc_own: Tensor,  # (B, N, D) the items' own encoder output
        resp_visible: BundleDistance,  # (B, 1, 1, S + 1), shared by the N items
        ex_visible: BundleDistance | None,  # (B, 1, 1, S)
    ) -> Tensor:
        h = h + self.resp_attn.attend_prefix(self.ln_resp(h), memory, None, resp_visible)
        if self.cross_attn is not None and self.ln_cross is not None and ex_visible is not None:
            c = self.cross_attn.attend_prefix(self.ln_cross(h), enc_history, enc_own, ex_visible)
            h = h + c
        return h + per_row(self.ffn, self.ln_ffn(h))


class SAINT(nn.Module):
    """SAINT (`plus=False`) or SAINT+ (`plus=True`). forward(batch) -> logits (B, T)."""

    def __init__(self, cfg: ModelConfig, plus: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.plus = plus
        d = cfg.d_model
        # Shared embeddings: the item/position tables feed both the query and the response side.
        self.item_emb = ItemEmbedding(cfg)
        self.stats_proj = nn.Linear(cfg.n_stats, d) if cfg.use_stats else None
        self.prior = IRTPrior(cfg) if cfg.irt_prior else None
        self.position_emb = nn.Embedding(cfg.seq_len, d)
        self.response_emb = nn.Embedding(3, d)  # 0 pad / not visible, 1 wrong, 2 right
        if plus:
            self.lag_enc: TimeEncoding | None = TimeEncoding(
                cfg.n_lag_buckets, d, cfg.time_encoding
            )
            self.elapsed_enc: TimeEncoding | None = TimeEncoding(
                cfg.n_elapsed_buckets, d, cfg.time_encoding
            )
            self.explanation_emb: nn.Embedding | None = (
                nn.Embedding(3, d) if cfg.use_explanation else None
            )
        else:
            self.lag_enc = self.elapsed_enc = self.explanation_emb = None
        self.enc_drop = nn.Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_encoder_layers))
        self.ln_enc = nn.LayerNorm(d)

        # The memory gets its own LayerNorm: it is a sum of several embeddings plus O.
        self.ln_memory = nn.LayerNorm(d)
        # Learned null key/value: the first bundle (and padding) must attend to *something*.
        self.null_memory = nn.Parameter(torch.randn(d) * 0.02)
        self.dec_position_emb = nn.Embedding(cfg.seq_len, d)
        self.dec_drop = nn.Dropout(cfg.dropout)
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, 1)
        self.apply(_init_weights)
        self.item_emb.reset_parameters()
        if self.prior is not None:
            self.prior.reset_parameters()

    def forward(
        self,
        batch: dict[str, Tensor],
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> Tensor | ModelOutput:
        question = batch["question"]  # (B, T) int64, 0 = padding
        bundle = batch["bundle"]  # (B, T) int64, PAD_BUNDLE at padding
        position = batch["position"]  # (B, T) index of the first item of the bundle
        # the exercise mask serves the encoder and the cross-attention; a lean model has neither
        uses_exercises = len(self.encoder) > 0 or self.cfg.cross_attention
        ex_mask = exercise_mask(bundle, question) if uses_exercises else None  # (B, 1, T, T)
        resp_mask = response_mask(bundle, question)  # (B, 1, T, T + 1)
        ex_dist = resp_dist = None
        if self.cfg.attention_decay:
            if ex_mask is not None:
                ex_dist = bundle_distance(bundle, ex_mask)  # (B, 1, T, T)
            resp_dist = bundle_distance(bundle, resp_mask, null_key=True)  # (B, 1, T, T + 1)

        # 1. Encoder: exercise stream (query-side info only).
        q_emb, pos_emb, x, lag = self._exercises(batch)
        x = self.enc_drop(x)
        enc_hidden: list[Tensor] = [x]
        enc_attn: list[Tensor] = []
        for layer in self.encoder:
            assert ex_mask is not None
            x, w = layer(x, ex_mask, output_attentions, ex_dist)
            enc_hidden.append(x)
            if w is not None:
                enc_attn.append(w)
        enc = self.ln_enc(x)  # (B, T, D) = O

        # 2. Response memory: keys/values only. O_j is safe to add: it depends on bundles <= bundle_j,
        #    and j itself is only visible to strictly later bundles.
        memory = self.dec_drop(self._memory(batch, q_emb, pos_emb, enc, lag))  # (B, T + 1, D)

        # 3. Decoder: state from query-side info only; responses enter through attention.
        h = self.dec_drop(enc + self.dec_position_emb(position))  # (B, T, D)
        dec_hidden: list[Tensor] = [h]
        dec_attn: list[Tensor] = []
        for layer in self.decoder:
            h, w = layer(h, memory, enc, resp_mask, ex_mask, output_attentions, resp_dist, ex_dist)
            dec_hidden.append(h)
            if w is not None:
                dec_attn.append(w)
        logits = self.head(self.ln_f(h)).squeeze(-1)  # (B, T)
        if self.prior is not None:
            logits = logits + self.prior(question, batch["part"], batch["tags"], batch["stats"])

        if not (output_hidden_states or output_attentions):
            return logits
        return ModelOutput(
            logits=logits,
            hidden_states=tuple(dec_hidden) if output_hidden_states else None,
            attentions=tuple(dec_attn) if output_attentions else None,
            encoder_hidden_states=tuple(enc_hidden) if output_hidden_states else None,
            encoder_attentions=tuple(enc_attn) if output_attentions else None,
        )

    def _exercises(
        self, batch: dict[str, Tensor], q_emb: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """Query-side inputs -> (item embedding, position embedding, their sum with the statistics
        and the lag, the lag encoding), each (B, T, D); `q_emb` (B, T, D): the item embedding,
        already computed (`item_side`), instead of from question, part and tags."""
        if q_emb is None:
            q_emb = self.item_emb(batch["question"], batch["part"], batch["tags"])  # (B, T, D)
        pos_emb = self.position_emb(batch["position"])  # (B, T, D)
        x = q_emb + pos_emb
        if self.stats_proj is not None:
            x = x + self.stats_proj(batch["stats"])  # (B, T, D), strictly earlier bundles only
        lag: Tensor | None = None
        if self.lag_enc is not None:
            lag = self.lag_enc(batch["lag_bucket"], batch["lag"])  # (B, T, D), known at show time
            x = x + lag
        return q_emb, pos_emb, x, lag

    def _memory(
        self,
        batch: dict[str, Tensor],
        q_emb: Tensor,
        pos_emb: Tensor,
        enc: Tensor,
        lag: Tensor | None,
    ) -> Tensor:
        """(B, T + 1, D): the null slot, then each item's response memory."""
        r = self.response_emb(batch["response"]) + q_emb + pos_emb + enc  # (B, T, D)
        if self.elapsed_enc is not None and lag is not None:
            r = r + self.elapsed_enc(batch["elapsed_bucket"], batch["elapsed"]) + lag
        if self.explanation_emb is not None:
            r = r + self.explanation_emb(batch["explanation"])
        r = self.ln_memory(r)
        null = self.null_memory.view(1, 1, -1).expand(r.shape[0], 1, -1)  # (B, 1, D)
        return torch.cat([null, r], dim=1)

    def item_side(self, question: Tensor, part: Tensor, tags: Tensor) -> tuple[Tensor, Tensor]:
        """What `forward_bundle` reads of an item that depends on the item alone (question, part
        (B, N), tags (B, N, M)): its embedding (B, N, D) and the IRT prior's difficulty (B, N)
        (zeros without a prior). A caller can compute them once per bank (items.onnx)."""
        embedding = self.item_emb(question, part, tags)
        if self.prior is None:
            return embedding, torch.zeros_like(question, dtype=embedding.dtype)
        return embedding, self.prior.difficulty(question, part, tags)

    def _bundle_items(self, items: dict[str, Tensor], shared: dict[str, Tensor]) -> Tensor:
        """`_exercises`' sum for the N items of one bundle (B, N, D), spelled for the bank
        graph, whose cost is per item: what the items share (position, lag; (B, 1)) is summed
        once with the statistics projection's bias into one (B, 1, D) row, so each item pays
        one matmul and two adds instead of four adds."""
        row = self.position_emb(shared["position"])  # (B, 1, D)
        if self.lag_enc is not None:
            row = row + self.lag_enc(shared["lag_bucket"], shared["lag"])
        if self.stats_proj is None:
            return items["embedding"] + row
        row = row + self.stats_proj.bias
        return items["embedding"] + (items["stats"] @ self.stats_proj.weight.T + row)

    def forward_bundle(self, history: dict[str, Tensor], items: dict[str, Tensor]) -> Tensor:
        """Logits (B, N) of N items that form ONE bundle after each learner's history (B, S) (every
        model input), from the items' `item_side` (embedding (B, N, D), difficulty (B, N)) and
        their learner-dependent inputs (position, bundle, stats, lag, lag_bucket; (B, N)): equal
        to `forward` on [history, items] at the items' positions, at O(N x S) attention instead of
        O((S + N)^2). Sound because an item never sees its bundle-mates (docs/design.md): the
        history's states do not depend on the items, and each item reads the history's keys and
        its own. Inference only (eval mode: no dropout)."""
        hq, hb = history["question"], history["bundle"]
        uses_exercises = len(self.encoder) > 0 or self.cfg.cross_attention
        ex_mask = exercise_mask(hb, hq) if uses_exercises else None  # (B, 1, S, S)
        ex_dist = None
        if self.cfg.attention_decay and ex_mask is not None:
            ex_dist = bundle_distance(hb, ex_mask)
        # what the items of one bundle share (bundle, start position, lag) is read once: (B, 1)
        # (a padding item of a shorter row takes its row's values; its logit is discarded)
        shared = {name: items[name][:, :1] for name in ("bundle", "position", "lag", "lag_bucket")}
        ex_visible = prefix_distance(shared["bundle"], hb, hq) if uses_exercises else None
        resp_visible = prefix_distance(shared["bundle"], hb, hq, null_key=True)

        q_emb, pos_emb, x, lag = self._exercises(history)  # (B, S, D)
        x_own = self._bundle_items(items, shared)  # (B, N, D)
        for layer in self.encoder:
            assert isinstance(layer, EncoderLayer) and ex_visible is not None
            x_own = layer.forward_prefix(x_own, x, ex_visible)  # reads the layer's input
            x, _ = layer(x, ex_mask, False, ex_dist)
        enc, enc_own = self.ln_enc(x), self.ln_enc(x_own)
        memory = self._memory(history, q_emb, pos_emb, enc, lag)  # (B, S + 1, D)
        h = enc_own + self.dec_position_emb(shared["position"])  # (B, N, D)
        for dec in self.decoder:
            assert isinstance(dec, DecoderLayer)
            h = dec.forward_prefix(h, memory, enc, enc_own, resp_visible, ex_visible)
        logits = per_row(self.head, self.ln_f(h)).squeeze(-1)  # (B, N)
        if self.prior is not None:
            logits = logits + self.prior.from_difficulty(items["stats"], items["difficulty"])
        return logits


def _init_weights(module: nn.Module) -> None:
    # GPT-2 style: small normal init keeps the pre-LN residual stream well scaled at start.
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
