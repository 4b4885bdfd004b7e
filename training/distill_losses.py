"""Distillation configuration, losses and schedulers (TextBrewer-style, adapted to a binary head).

TextBrewer's soft cross-entropy over a softmax is identically zero for a single logit, so binary
KD uses sigmoid soft targets: p_T = sigmoid(z_T / tau), loss = BCE(sigmoid(z_S / tau), p_T) * tau^2
("bce"), the binary KL divergence * tau^2 ("kl"), or MSE on raw logits ("mse").
Temperature schedulers: constant, linear (tau -> temperature_end over training), and TextBrewer's
dynamic flsw / cwsm (arXiv:1911.07471), applied to the two-class logit vector [-z/2, z/2].
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

KD_LOSSES = ("bce", "kl", "mse")
TEMPERATURE_SCHEDULERS = ("constant", "linear", "flsw", "cwsm")
WEIGHT_SCHEDULERS = ("constant", "linear_decay", "linear_growth")
FEATURES = ("hidden", "attention")
INTERMEDIATE_LOSSES = {
    "hidden": ("hidden_mse", "cos"),
    "attention": ("attention_mse", "attention_kl"),
}


def _reject_unknown(cls: type, data: dict[str, Any], where: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )


@dataclass
class IntermediateMatch:
    """Match one teacher layer's feature to one student layer's (TextBrewer's intermediate_matches)."""

    layer_T: int  # index into the teacher's hidden_states / attentions tuple
    layer_S: int  # index into the student's
    feature: str  # "hidden" | "attention"
    loss: str  # hidden: "hidden_mse" | "cos"; attention: "attention_mse" | "attention_kl"
    weight: float = 1.0
    proj: list[Any] | None = None  # ["linear", dim_S, dim_T]: learned projection student -> teacher
    teacher: int = 0  # which teacher (with several teachers)

    def __post_init__(self) -> None:
        if self.feature not in FEATURES:
            raise ValueError(
                f"intermediate match: feature must be one of {FEATURES}, got {self.feature!r}"
            )
        if self.loss not in INTERMEDIATE_LOSSES[self.feature]:
            raise ValueError(
                f"intermediate match: loss {self.loss!r} is not valid for feature {self.feature!r} "
                f"(use one of {INTERMEDIATE_LOSSES[self.feature]})"
            )
        if self.proj is not None:
            if self.feature != "hidden":
                raise ValueError("intermediate match: proj is only valid for hidden features")
            if (
                len(self.proj) != 3
                or self.proj[0] != "linear"
                or not all(isinstance(d, int) and d > 0 for d in self.proj[1:])
            ):
                raise ValueError(
                    f"intermediate match: proj must be ['linear', dim_S, dim_T], got {self.proj!r}"
                )
        if self.weight < 0:
            raise ValueError("intermediate match: weight must be >= 0")


@dataclass
class DistillationConfig:
    """Like TextBrewer's DistillationConfig; load with `from_json` or build from CLI flags."""

    temperature: float = 2.0
    temperature_scheduler: str = "constant"
    temperature_end: float = 1.0  # "linear": temperature at the last step
    scheduler_beta: float = 1.0  # flsw / cwsm strength
    scheduler_gamma: float = 2.0  # flsw exponent
    kd_loss_type: str = "bce"
    kd_loss_weight: float = 1.0
    kd_loss_weight_scheduler: str = "constant"
    hard_label_weight: float = 1.0
    hard_label_weight_scheduler: str = "constant"
    intermediate_matches: list[IntermediateMatch] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.intermediate_matches = [
            m if isinstance(m, IntermediateMatch) else _match_from_dict(m, i)
            for i, m in enumerate(self.intermediate_matches)
        ]
        if self.temperature <= 0 or self.temperature_end <= 0:
            raise ValueError("temperature and temperature_end must be > 0")
        checks = [
            ("temperature_scheduler", TEMPERATURE_SCHEDULERS),
            ("kd_loss_type", KD_LOSSES),
            ("kd_loss_weight_scheduler", WEIGHT_SCHEDULERS),
            ("hard_label_weight_scheduler", WEIGHT_SCHEDULERS),
        ]
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        if self.kd_loss_weight < 0 or self.hard_label_weight < 0:
            raise ValueError("kd_loss_weight and hard_label_weight must be >= 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillationConfig:
        _reject_unknown(cls, data, "distillation config")
        return cls(**data)

    @classmethod
    def from_json(cls, path: Path) -> DistillationConfig:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: invalid JSON ({exc})") from exc
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _match_from_dict(data: dict[str, Any], index: int) -> IntermediateMatch:
    if not isinstance(data, dict):
        raise ValueError(f"intermediate_matches[{index}] must be an object")
    _reject_unknown(IntermediateMatch, data, f"intermediate_matches[{index}]")
    try:
        return IntermediateMatch(**data)
    except TypeError as exc:
        raise ValueError(f"intermediate_matches[{index}]: {exc}") from exc


# ---- schedulers -------------------------------------------------------------------------------


def weight_at(base: float, scheduler: str, step: int, total_steps: int) -> float:
    """Loss weight at `step` of `total_steps` (TextBrewer's linear_decay / linear_growth)."""
    frac = min(max(step / max(total_steps, 1), 0.0), 1.0)
    if scheduler == "constant":
        return base
    if scheduler == "linear_decay":
        return base * (1.0 - frac)
    if scheduler == "linear_growth":
        return base * frac
    raise ValueError(f"unknown weight scheduler {scheduler!r}")


def _two_class(z: torch.Tensor) -> torch.Tensor:
    """Single logit z -> two-class logits [-z/2, z/2] (same softmax as sigmoid(z))."""
    return torch.stack([-z / 2, z / 2], dim=-1)


def temperature_at(
    config: DistillationConfig,
    step: int,
    total_steps: int,
    logits_S: torch.Tensor,
    logits_T: torch.Tensor,
    eps: float = 1e-4,
) -> torch.Tensor:
    """Temperature (scalar tensor, or per-position for flsw/cwsm) for this step."""
    base = config.temperature
    if config.temperature_scheduler == "constant":
        return torch.tensor(base, dtype=logits_S.dtype, device=logits_S.device)
    if config.temperature_scheduler == "linear":
        frac = min(max(step / max(total_steps, 1), 0.0), 1.0)
        value = base + (config.temperature_end - base) * frac
        return torch.tensor(value, dtype=logits_S.dtype, device=logits_S.device)
    with torch.no_grad():
        if config.temperature_scheduler == "flsw":
            v = _two_class(logits_S.detach())
            t = _two_class(logits_T.detach())
            v = v / (v.norm(dim=-1, keepdim=True) + eps)
            t = t / (t.norm(dim=-1, keepdim=True) + eps)
            w = (1 - (v * t).sum(-1)).clamp_min(0).pow(config.scheduler_gamma)
        else:  # cwsm
            v = torch.softmax(_two_class(logits_S.detach()), dim=-1)
            w = 1.0 / (v.max(dim=-1).values + 1e-3)
        tau = base + (w.mean() - w) * config.scheduler_beta
        return tau.clamp_min(0.1)


# ---- losses -----------------------------------------------------------------------------------


def binary_kd_loss(
    logits_S: torch.Tensor,
    logits_T: torch.Tensor,
    temperature: torch.Tensor | float,
    kind: str = "bce",
) -> torch.Tensor:
    """Soft-target loss for single-logit heads, over the given (already masked) positions.

    bce: mean(BCE(sigmoid(z_S/tau), sigmoid(z_T/tau)) * tau^2); kl: the binary KL * tau^2;
    mse: mean((z_S - z_T)^2) on raw logits (no temperature).
    """
    if kind == "mse":
        return F.mse_loss(logits_S, logits_T)
    tau = torch.as_tensor(temperature, dtype=logits_S.dtype, device=logits_S.device)
    p_T = torch.sigmoid(logits_T / tau)
    bce = F.binary_cross_entropy_with_logits(logits_S / tau, p_T, reduction="none")
    if kind == "kl":
        entropy = F.binary_cross_entropy(p_T, p_T, reduction="none")  # H(p_T)
        bce = bce - entropy
    elif kind != "bce":
        raise ValueError(f"unknown kd loss {kind!r}; use one of {KD_LOSSES}")
    return (bce * tau**2).mean()


def hidden_mse(h_S: torch.Tensor, h_T: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over valid positions (mask (B, T) bool) and features."""
    diff = (h_S - h_T).pow(2).mean(-1)  # (B, T)
    return diff[mask].mean()


def hidden_cos(h_S: torch.Tensor, h_T: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity, averaged over valid positions."""
    cos = F.cosine_similarity(h_S, h_T, dim=-1)  # (B, T)
    return (1 - cos)[mask].mean()


def _match_heads(a_S: torch.Tensor, a_T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Different head counts: compare head-averaged maps."""
    if a_S.shape[1] != a_T.shape[1]:
        return a_S.mean(1, keepdim=True), a_T.mean(1, keepdim=True)
    return a_S, a_T


def attention_mse(a_S: torch.Tensor, a_T: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE between attention probabilities (B, H, T, S) over valid query rows."""
    a_S, a_T = _match_heads(a_S, a_T)
    diff = (a_S - a_T).pow(2).mean(dim=(1, 3))  # (B, T)
    return diff[mask].mean()


def attention_kl(
    a_S: torch.Tensor, a_T: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """KL(A_T || A_S) summed over keys, averaged over heads and valid query rows."""
    a_S, a_T = _match_heads(a_S, a_T)
    kl = (a_T * ((a_T + eps).log() - (a_S + eps).log())).sum(-1).mean(1)  # (B, T)
    return kl[mask].mean()


INTERMEDIATE_LOSS_FUNCTIONS = {
    "hidden_mse": hidden_mse,
    "cos": hidden_cos,
    "attention_mse": attention_mse,
    "attention_kl": attention_kl,
}
