"""The distillation `transformers.Trainer` (TextBrewer-style, `training.distill` runs it): the
trained `DistillationModule` (student + the learned projections of the intermediate matches, so
checkpoints hold both), `check_matches` (every match names real layers of matching shapes), and
`DistillationTrainer`, whose `compute_loss` is the soft-target loss plus the intermediate matches
against the teachers in eval mode (not submodules: moved to the device by hand)."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import Trainer

from training.distill_losses import (
    INTERMEDIATE_LOSS_FUNCTIONS,
    DistillationConfig,
    IntermediateMatch,
    binary_kd_loss,
    temperature_at,
    weight_at,
)
from training.trainer import masked_bce

logger = logging.getLogger(__name__)


class DistillationModule(nn.Module):
    """Student + learned projections (student dim -> teacher dim), trained together."""

    def __init__(self, student: nn.Module, matches: list[IntermediateMatch]) -> None:
        super().__init__()
        self.student = student
        self.projections = nn.ModuleDict(
            {
                str(i): nn.Linear(m.proj[1], m.proj[2])
                for i, m in enumerate(matches)
                if m.proj is not None
            }
        )

    def forward(
        self,
        labels: torch.Tensor | None = None,
        return_features: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
        **inputs: torch.Tensor,
    ) -> Any:
        # One forward (DDP-safe): the student's logits, hidden states and attention maps.
        # num_items_in_batch: a plain Trainer (the scratch student) passes the step's labelled
        # count, as for training.trainer.KTForTraining (see there why the loss must use it).
        out = self.student(
            inputs, output_hidden_states=return_features, output_attentions=return_features
        )
        logits = out["logits"] if return_features else out
        result: dict[str, Any] = {"logits": logits}
        if labels is not None:
            result["loss"] = masked_bce(logits, labels, num_items_in_batch)
        if return_features:
            hidden = list(out["hidden_states"])
            result["hidden_states"] = hidden
            result["attentions"] = list(out["attentions"])
            result["projected"] = {int(k): proj for k, proj in self.projections.items()}
        return result


def check_matches(
    matches: list[IntermediateMatch], teachers: list[nn.Module], student: nn.Module, batch: dict
) -> None:
    """Validate layer indices and dims against real forward passes; clear ValueError if wrong."""
    with torch.no_grad():
        s_out = student(batch, output_hidden_states=True, output_attentions=True)
        t_outs = [t(batch, output_hidden_states=True, output_attentions=True) for t in teachers]
    for i, m in enumerate(matches):
        if not 0 <= m.teacher < len(teachers):
            raise ValueError(
                f"intermediate_matches[{i}]: teacher {m.teacher} out of range (have {len(teachers)})"
            )
        key = "hidden_states" if m.feature == "hidden" else "attentions"
        s_feats, t_feats = s_out[key], t_outs[m.teacher][key]
        if not -len(t_feats) <= m.layer_T < len(t_feats):
            raise ValueError(
                f"intermediate_matches[{i}]: layer_T {m.layer_T} out of range (teacher has {len(t_feats)} layers)"
            )
        if not -len(s_feats) <= m.layer_S < len(s_feats):
            raise ValueError(
                f"intermediate_matches[{i}]: layer_S {m.layer_S} out of range (student has {len(s_feats)} layers)"
            )
        if m.feature == "hidden":
            d_s, d_t = s_feats[m.layer_S].shape[-1], t_feats[m.layer_T].shape[-1]
            if m.proj is None and d_s != d_t:
                raise ValueError(
                    f'intermediate_matches[{i}]: student dim {d_s} != teacher dim {d_t}; add "proj": ["linear", {d_s}, {d_t}]'
                )
            if m.proj is not None and (m.proj[1], m.proj[2]) != (d_s, d_t):
                raise ValueError(
                    f"intermediate_matches[{i}]: proj dims {m.proj[1:]} do not match student {d_s} -> teacher {d_t}"
                )


class DistillationTrainer(Trainer):
    """`Trainer` whose loss is hard-label BCE + soft KD (+ intermediate matches), each logged."""

    def __init__(
        self,
        *args: Any,
        teachers: list[nn.Module],
        distill_config: DistillationConfig,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # compute_loss below returns per-batch means and ignores num_items_in_batch: tell Trainer,
        # so it divides by the accumulation steps itself and does not count labels for us.
        self.model_accepts_loss_kwargs = False
        self.distill_config = distill_config
        self.teachers = [t.to(self.args.device).eval() for t in teachers]
        for t in self.teachers:
            t.requires_grad_(False)
        self._components: dict[str, list[float]] = defaultdict(list)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        if (
            not model.training
        ):  # evaluation: plain BCE of the student, comparable with training.train
            out = model(**inputs)
            return (out["loss"], out) if return_outputs else out["loss"]
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        cfg = self.distill_config
        step, total = self.state.global_step, max(self.state.max_steps, 1)
        out = model(return_features=bool(cfg.intermediate_matches), **inputs)
        logits_S = out["logits"]  # (B, T)
        with torch.no_grad():
            t_outs = [
                t(
                    inputs,
                    output_hidden_states=bool(cfg.intermediate_matches),
                    output_attentions=bool(cfg.intermediate_matches),
                )
                for t in self.teachers
            ]
        t_logits = [o["logits"] if cfg.intermediate_matches else o for o in t_outs]
        real = inputs["question"] != 0  # (B, T) non-padding positions

        components: dict[str, torch.Tensor] = {}
        hard_w = weight_at(cfg.hard_label_weight, cfg.hard_label_weight_scheduler, step, total)
        kd_w = weight_at(cfg.kd_loss_weight, cfg.kd_loss_weight_scheduler, step, total)
        loss = logits_S.sum() * 0.0
        if hard_w > 0:
            components["hard"] = masked_bce(logits_S, labels)
            loss = loss + hard_w * components["hard"]
        if kd_w > 0:
            # Soft targets on every real position (context items too: the teacher labels them all).
            z_S = logits_S[real]
            z_T = torch.stack([z[real] for z in t_logits]).float()
            if cfg.kd_loss_type == "mse" or len(t_logits) == 1:
                z_T_mean = z_T.mean(0)
            else:  # average the teachers' soft targets, expressed back as a logit at tau
                tau0 = cfg.temperature
                p = torch.sigmoid(z_T / tau0).mean(0).clamp(1e-6, 1 - 1e-6)
                z_T_mean = torch.log(p / (1 - p)) * tau0
            tau = temperature_at(cfg, step, total, z_S, z_T_mean)
            components["kd"] = binary_kd_loss(z_S, z_T_mean, tau, cfg.kd_loss_type)
            components["temperature"] = tau.detach().float().mean()
            loss = loss + kd_w * components["kd"]
        for i, m in enumerate(cfg.intermediate_matches):
            key = "hidden_states" if m.feature == "hidden" else "attentions"
            f_S = out[key][m.layer_S]
            f_T = t_outs[m.teacher][key][m.layer_T]
            if m.proj is not None:
                f_S = out["projected"][i](f_S)
            value = INTERMEDIATE_LOSS_FUNCTIONS[m.loss](f_S, f_T, real)
            components[f"{m.feature}_{i}_{m.loss}"] = value
            loss = loss + m.weight * value
        for name, value in components.items():
            self._components[name].append(float(value.detach()))
        return (loss, out) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        # Each loss component, averaged since the last log (tensorboard + progress bar).
        if "loss" in logs and self._components:
            for name, values in self._components.items():
                logs[f"loss_{name}"] = round(float(np.mean(values)), 5)
            self._components.clear()
        super().log(logs, *args, **kwargs)
