"""Logistic / IRT-style baseline: learner ability minus item difficulty, from counts of prior answers.

logit_i = ability_i - (difficulty[q_i] + mean_t tag_difficulty[t] + part_difficulty[part_i])
ability_i = w . [log1p(c), log1p(w), (c + 1) / (c + w + 2),  same three restricted to i's part] + b
with c / w the correct / wrong answers of items j with bundle_j < bundle_i (strictly earlier bundles:
never i's own answer or its bundle-mates'). The counts are masked (B, T, T) sums, so one forward pass
scores a whole window; one parameter per question, tag and part, 7 for the ability. The tag and part
terms are the content-aware part: a question never trained on still gets its tags' difficulty.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.config import ModelConfig
from models.layers import ModelOutput, mean_over_tags, padding_mask

N_ABILITY_FEATURES = 6


class Logistic(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.difficulty = nn.Embedding(cfg.n_questions, 1)
        self.tag_difficulty = nn.Embedding(cfg.n_tags, 1, padding_idx=0)
        self.part_bias = nn.Embedding(cfg.n_parts, 1)
        self.ability = nn.Linear(N_ABILITY_FEATURES, 1)
        # Start as "p = 0.5 everywhere"; the data moves the weights.
        nn.init.zeros_(self.difficulty.weight)
        nn.init.zeros_(self.tag_difficulty.weight)
        nn.init.zeros_(self.part_bias.weight)
        nn.init.zeros_(self.ability.weight)
        nn.init.zeros_(self.ability.bias)

    def features(self, batch: dict[str, Tensor]) -> Tensor:
        """(B, T, 6) ability features of each position from strictly earlier bundles."""
        question, bundle, part = batch["question"], batch["bundle"], batch["part"]
        response = batch["response"]
        prior = bundle.unsqueeze(1) < bundle.unsqueeze(
            2
        )  # (B, T, T): [b, i, j] = bundle_j < bundle_i
        prior = prior & ~padding_mask(question).unsqueeze(1)
        same_part = part.unsqueeze(1) == part.unsqueeze(2)  # (B, T, T)
        outcome = torch.stack([(response == 2), (response == 1)], dim=-1).to(
            torch.float32
        )  # (B, T, 2)
        counts = torch.matmul(prior.to(torch.float32), outcome)  # (B, T, 2): correct, wrong
        part_counts = torch.matmul((prior & same_part).to(torch.float32), outcome)  # (B, T, 2)

        def describe(c: Tensor) -> Tensor:
            right, wrong = c[..., 0:1], c[..., 1:2]
            accuracy = (right + 1.0) / (right + wrong + 2.0)  # Laplace-smoothed, 0.5 when cold
            return torch.cat([torch.log1p(right), torch.log1p(wrong), accuracy], dim=-1)

        return torch.cat([describe(counts), describe(part_counts)], dim=-1)  # (B, T, 6)

    def forward(
        self,
        batch: dict[str, Tensor],
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> Tensor | ModelOutput:
        feats = self.features(batch)  # (B, T, 6)
        ability = self.ability(feats).squeeze(-1)  # (B, T)
        tags = batch["tags"]  # (B, T, M), 0 = no tag
        tag = mean_over_tags(self.tag_difficulty.weight, tags).squeeze(-1)  # (B, T)
        logits = (
            ability
            - self.difficulty(batch["question"]).squeeze(-1)
            - tag
            + self.part_bias(batch["part"]).squeeze(-1)
        )  # (B, T)
        if not (output_hidden_states or output_attentions):
            return logits
        return ModelOutput(
            logits=logits,
            hidden_states=(feats,) if output_hidden_states else None,
            attentions=() if output_attentions else None,
        )
