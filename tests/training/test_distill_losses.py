"""Distillation losses, schedulers and config against hand computations."""

from __future__ import annotations

import json
import math

import pytest
import torch

from training.distill_losses import (
    DistillationConfig,
    IntermediateMatch,
    attention_kl,
    attention_mse,
    binary_kd_loss,
    hidden_cos,
    hidden_mse,
    temperature_at,
    weight_at,
)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _hand_bce(z_s: float, z_t: float, tau: float) -> float:
    p_t, p_s = _sigmoid(z_t / tau), _sigmoid(z_s / tau)
    return -(p_t * math.log(p_s) + (1 - p_t) * math.log(1 - p_s))


def test_binary_kd_is_nonzero_and_matches_hand_computation() -> None:
    z_s = torch.tensor([0.3, -1.2, 2.0])
    z_t = torch.tensor([1.5, -0.2, 2.0])
    tau = 2.0
    hand = (
        sum(_hand_bce(a, b, tau) for a, b in zip(z_s.tolist(), z_t.tolist(), strict=True))
        / 3
        * tau**2
    )
    got = binary_kd_loss(z_s, z_t, tau, "bce")
    assert got.item() == pytest.approx(hand, rel=1e-5)
    assert got.item() > 0.1  # the softmax-over-one-logit trap would give exactly 0


def test_binary_kl_is_bce_minus_teacher_entropy_and_zero_at_match() -> None:
    z = torch.tensor([0.7, -0.4])
    assert binary_kd_loss(z, z, 3.0, "kl").item() == pytest.approx(0.0, abs=1e-6)
    z_s = torch.tensor([0.2])
    z_t = torch.tensor([1.0])
    tau = 1.5
    p_t, p_s = _sigmoid(1.0 / tau), _sigmoid(0.2 / tau)
    hand = (p_t * math.log(p_t / p_s) + (1 - p_t) * math.log((1 - p_t) / (1 - p_s))) * tau**2
    assert binary_kd_loss(z_s, z_t, tau, "kl").item() == pytest.approx(hand, rel=1e-5)


def test_tau_squared_scaling() -> None:
    z_s, z_t = torch.tensor([0.1]), torch.tensor([0.9])
    for tau in (1.0, 2.0, 4.0):
        raw = _hand_bce(0.1, 0.9, tau)
        assert binary_kd_loss(z_s, z_t, tau).item() == pytest.approx(raw * tau**2, rel=1e-5)


def test_mse_kd_on_raw_logits() -> None:
    assert binary_kd_loss(
        torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0]), 5.0, "mse"
    ).item() == pytest.approx(5.0)


def test_hidden_losses_by_hand() -> None:
    h_s = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [9.0, 9.0]]])  # (1, 3, 2); position 2 is padding
    h_t = torch.tensor([[[0.0, 1.0], [0.0, 1.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    # mse: pos0 ((1)^2 + (1)^2)/2 = 1; pos1 (0 + 1)/2 = 0.5 -> mean 0.75
    assert hidden_mse(h_s, h_t, mask).item() == pytest.approx(0.75)
    # cos: pos0 orthogonal -> 1; pos1 parallel -> 0 -> mean 0.5
    assert hidden_cos(h_s, h_t, mask).item() == pytest.approx(0.5)


def test_attention_losses_by_hand() -> None:
    a_s = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])  # (1, 1, 2, 2)
    a_t = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    mask = torch.tensor([[True, True]])
    # mse: row0 (0.25 + 0.25)/2 = 0.25, row1 0 -> 0.125
    assert attention_mse(a_s, a_t, mask).item() == pytest.approx(0.125)
    # kl: row0 1*log(1/0.5) = log 2, row1 0 -> log(2)/2
    assert attention_kl(a_s, a_t, mask).item() == pytest.approx(math.log(2) / 2, rel=1e-4)


def test_attention_with_different_head_counts_compares_head_means() -> None:
    a_s = torch.full((1, 2, 1, 2), 0.5)
    a_t = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]], [[0.5, 0.5]], [[0.5, 0.5]]]]).reshape(
        1, 4, 1, 2
    )
    assert attention_mse(a_s, a_t, torch.tensor([[True]])).item() == pytest.approx(0.0)


def test_weight_schedulers_at_given_steps() -> None:
    assert weight_at(2.0, "constant", 7, 10) == 2.0
    assert weight_at(2.0, "linear_decay", 0, 10) == pytest.approx(2.0)
    assert weight_at(2.0, "linear_decay", 5, 10) == pytest.approx(1.0)
    assert weight_at(2.0, "linear_decay", 10, 10) == pytest.approx(0.0)
    assert weight_at(2.0, "linear_growth", 5, 10) == pytest.approx(1.0)
    assert weight_at(2.0, "linear_growth", 20, 10) == pytest.approx(2.0)  # clamped


def test_temperature_schedulers() -> None:
    z_s = torch.tensor([2.0, -2.0, 0.0])
    z_t = torch.tensor([2.0, 2.0, 1.0])
    const = DistillationConfig(temperature=3.0)
    assert temperature_at(const, 5, 10, z_s, z_t).item() == pytest.approx(3.0)
    linear = DistillationConfig(
        temperature=4.0, temperature_scheduler="linear", temperature_end=2.0
    )
    assert temperature_at(linear, 0, 10, z_s, z_t).item() == pytest.approx(4.0)
    assert temperature_at(linear, 5, 10, z_s, z_t).item() == pytest.approx(3.0)
    assert temperature_at(linear, 10, 10, z_s, z_t).item() == pytest.approx(2.0)
    # flsw on two-class logits: agreeing signs -> w = 0, disagreeing -> w = 2^gamma.
    flsw = DistillationConfig(
        temperature=2.0, temperature_scheduler="flsw", scheduler_beta=1.0, scheduler_gamma=1.0
    )
    tau = temperature_at(flsw, 0, 10, z_s, z_t)
    w = torch.tensor([0.0, 2.0, 1.0])  # z_s = 0 has a zero vector -> cos 0 -> w = 1
    assert torch.allclose(tau, 2.0 + (w.mean() - w), atol=1e-3)
    # cwsm: w = 1 / (max softmax + 1e-3)
    cwsm = DistillationConfig(temperature=2.0, temperature_scheduler="cwsm", scheduler_beta=0.5)
    tau = temperature_at(cwsm, 0, 10, z_s, z_t)
    p = torch.sigmoid(z_s)
    w = 1.0 / (torch.maximum(p, 1 - p) + 1e-3)
    assert torch.allclose(tau, 2.0 + (w.mean() - w) * 0.5, atol=1e-5)


def test_config_from_json_round_trip(tmp_path) -> None:
    data = {
        "temperature": 3.0,
        "kd_loss_type": "kl",
        "intermediate_matches": [
            {
                "layer_T": 1,
                "layer_S": 0,
                "feature": "hidden",
                "loss": "hidden_mse",
                "weight": 0.5,
                "proj": ["linear", 32, 128],
            },
            {"layer_T": 0, "layer_S": 0, "feature": "attention", "loss": "attention_kl"},
        ],
    }
    path = tmp_path / "d.json"
    path.write_text(json.dumps(data))
    cfg = DistillationConfig.from_json(path)
    assert isinstance(cfg.intermediate_matches[0], IntermediateMatch)
    assert DistillationConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kd_loss_type": "softmax_ce"}, "kd_loss_type"),
        ({"temperature": 0}, "temperature"),
        ({"tempreature": 2}, "unknown key"),
        (
            {
                "intermediate_matches": [
                    {"layer_T": 0, "layer_S": 0, "feature": "hidden", "loss": "attention_kl"}
                ]
            },
            "not valid",
        ),
        (
            {
                "intermediate_matches": [
                    {"layer_T": 0, "layer_S": 0, "feature": "logits", "loss": "cos"}
                ]
            },
            "feature",
        ),
        (
            {
                "intermediate_matches": [
                    {
                        "layer_T": 0,
                        "layer_S": 0,
                        "feature": "hidden",
                        "loss": "cos",
                        "proj": ["mlp", 1, 2],
                    }
                ]
            },
            "proj",
        ),
        ({"kd_loss_weight_scheduler": "cosine"}, "kd_loss_weight_scheduler"),
    ],
)
def test_bad_configs_are_rejected(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DistillationConfig.from_dict(data)
