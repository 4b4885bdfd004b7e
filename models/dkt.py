"""DKT baseline (Piech et al. 2015): an LSTM over interactions, made bundle-aware.

x_t = ItemEmbedding(q_t, part_t, tags_t) + E_resp[resp_t] runs through `n_layers` stacked LSTMs. The prediction
for item i reads the state after the last item of STRICTLY EARLIER bundles, i.e. at index
position[i] - 1 (position = index of the first item of i's bundle), or a learned initial state when
i's bundle starts the window. Items of i's own bundle (and i itself) come at indices >= position[i],
so their responses cannot reach i. Right padding follows the real items, so it never changes them.
logit_i = MLP([state_i, item_i, stats_i]) (+ the IRT prior of models.layers, when enabled); the
learner statistics come from strictly earlier bundles (models.feature_spec.STAT_NAMES).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.config import ModelConfig
from models.layers import IRTPrior, ItemEmbedding, ModelOutput


class DKT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.item_emb = ItemEmbedding(cfg)
        self.n_stats = cfg.n_stats if cfg.use_stats else 0
        self.prior = IRTPrior(cfg) if cfg.irt_prior else None
        self.response_emb = nn.Embedding(3, d)  # 0 pad / not visible, 1 wrong, 2 right
        self.drop = nn.Dropout(cfg.dropout)
        # One single-layer LSTM per layer (not num_layers=N) so every layer's states can be returned.
        self.lstms = nn.ModuleList(nn.LSTM(d, d, batch_first=True) for _ in range(cfg.n_layers))
        # Learned "before anything" state per layer, used when i's bundle starts the window.
        self.initial_state = nn.Parameter(torch.zeros(cfg.n_layers, d))
        hidden = cfg.ffn_mult * d
        self.head = nn.Sequential(
            nn.Linear(2 * d + self.n_stats, hidden),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(hidden, 1),
        )

    def forward(
        self,
        batch: dict[str, Tensor],
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> Tensor | ModelOutput:
        question = batch["question"]  # (B, T)
        position = batch["position"]  # (B, T)
        item = self.item_emb(question, batch["part"], batch["tags"])  # (B, T, D)
        x = self.drop(item + self.response_emb(batch["response"]))  # (B, T, D)

        # Index of the last item of the previous bundle; -1 -> learned initial state.
        prev = (position - 1).clamp(min=0)  # (B, T)
        has_prev = (position > 0).unsqueeze(-1)  # (B, T, 1)
        d = x.shape[-1]
        gather_idx = prev.unsqueeze(-1).expand(-1, -1, d)  # (B, T, D)
        states: list[Tensor] = []
        h = x
        for layer, lstm in enumerate(self.lstms):
            h, _ = lstm(h)  # (B, T, D); h[:, t] has seen items 0..t including t's response
            seen = torch.gather(h, 1, gather_idx)  # (B, T, D) state after item position[i] - 1
            init = self.initial_state[layer].view(1, 1, -1)
            states.append(torch.where(has_prev, seen, init))
            if layer + 1 < len(self.lstms):
                h = self.drop(h)
        state = self.drop(states[-1])
        head_in = [state, item] + ([batch["stats"]] if self.n_stats else [])
        logits = self.head(torch.cat(head_in, dim=-1)).squeeze(-1)  # (B, T)
        if self.prior is not None:
            logits = logits + self.prior(question, batch["part"], batch["tags"], batch["stats"])

        if not (output_hidden_states or output_attentions):
            return logits
        # hidden_states[0]: query-side embedding of item i; [l]: the leak-free state layer l gives i.
        first = item
        return ModelOutput(
            logits=logits,
            hidden_states=(first, *states) if output_hidden_states else None,
            attentions=() if output_attentions else None,
        )
