"""Model registry: name -> builder. The one place that maps `ModelConfig.name` to a torch module.

Every entry takes the same batch (the `models.features` arrays as tensors) and passes the same tests
(tests/models/, parametrized over `MODEL_REGISTRY`). Add a model by adding an entry, not an if/elif.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from models.config import ModelConfig
from models.dkt import DKT
from models.logistic import Logistic
from models.saint import SAINT

MODEL_REGISTRY: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "saint": partial(SAINT, plus=False),
    "saint_plus": partial(SAINT, plus=True),
    "dkt": DKT,
    "logistic": Logistic,
}


def build_model(config: ModelConfig) -> nn.Module:
    """A freshly initialised model for `config` (train mode, CPU)."""
    try:
        builder = MODEL_REGISTRY[config.name]
    except KeyError:
        known = ", ".join(sorted(MODEL_REGISTRY))
        raise ValueError(f"unknown model name {config.name!r}; known: {known}") from None
    return builder(config)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters; shared tensors counted once."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total
