"""DKT baseline (Piech et al. 2015): an LSTM over interactions, made bundle-aware.

x_t = E_q[q_t] + E_resp[resp_t] + E_part[part_t] runs through `n_layers` stacked LSTMs. The prediction
for item i reads the state after the last item of STRICTLY EARLIER bundles, i.e. at index
position[i] - 1 (position = index of the first item of i's bundle), or a learned initial state when
i's bundle starts the window. Items of i's own bundle (and i itself) come at indices >= position[i],
so their responses cannot reach i. Right padding follows the real items, so it never changes them.
logit_i = MLP([state_i, E_q[q_i], E_part[part_i]]).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.config import ModelConfig
from models.layers import ModelOutput


class DKT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.question_emb = nn.Embedding(cfg.n_questions, d)
        self.part_emb = nn.Embedding(cfg.n_parts, d)
        self.response_emb = nn.Embedding(3, d)  # 0 pad / not visible, 1 wrong, 2 right
        self.drop = nn.Dropout(cfg.dropout)
        # One single-layer LSTM per layer (not num_layers=N) so every layer's states can be returned.
        self.lstms = nn.ModuleList(nn.LSTM(d, d, batch_first=True) for _ in range(cfg.n_layers))
        # Learned "before anything" state per layer, used when i's bundle starts the window.
        self.initial_state = nn.Parameter(torch.zeros(cfg.n_layers, d))
        hidden = cfg.ffn_mult * d
        self.head = nn.Sequential(
            nn.Linear(3 * d, hidden),
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
        q_emb = self.question_emb(question)  # (B, T, D)
        p_emb = self.part_emb(batch["part"])  # (B, T, D)
        x = self.drop(q_emb + p_emb + self.response_emb(batch["response"]))  # (B, T, D)

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
        logits = self.head(torch.cat([state, q_emb, p_emb], dim=-1)).squeeze(-1)  # (B, T)

        if not (output_hidden_states or output_attentions):
            return logits
        # hidden_states[0]: query-side embedding of item i; [l]: the leak-free state layer l gives i.
        first = q_emb + p_emb
        return ModelOutput(
            logits=logits,
            hidden_states=(first, *states) if output_hidden_states else None,
            attentions=() if output_attentions else None,
        )
