"""The learning-rule interface.

A rule fills ``p.grad`` for every trainable parameter -- always *adding* to it (``p.grad += g``, or
autograd's accumulation), never overwriting, so that a caller whose ``apply`` only records the gradient
gets the update of the whole sequence -- and calls ``apply()`` whenever it wants the optimiser to take
a step (once per sequence for offline rules, per window or per time step for
online ones). It never builds an optimiser of its own and never re-implements the neuron: it runs the
network's layers, which call :mod:`spikebench.dynamics`. Every rule declares its locality.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from spikebench.config import ConfigError, RuleConfig
from spikebench.data.encoders import Encoding
from spikebench.nn.network import Network
from spikebench.registry import Registry

RULES: Registry[type[LearningRule]] = Registry("rule")


@dataclass(frozen=True)
class Locality:
    """Where a rule sits on the locality spectrum (DESIGN §4).

    ``rank`` orders rules from least local (0, exact BPTT) to most local, for tables and plots.
    """

    spatial: str
    temporal: str
    weight_transport: str
    memory: str
    rank: int


@dataclass
class BatchResult:
    """What a rule reports for one batch: its own loss and the time-averaged readout [B, C]."""

    loss: float
    logits: Tensor


Apply = Callable[[], None]


class LearningRule(ABC):
    """Base class of every rule; subclasses register with ``@RULES.register(name)``."""

    name: ClassVar[str]
    locality: ClassVar[Locality]
    online: ClassVar[bool] = False
    archs: ClassVar[tuple[str, ...]] = ("mlp",)

    def __init__(self, cfg: RuleConfig, net: Network, gen: torch.Generator) -> None:
        self.cfg = cfg

    #: which of the optional ``RuleConfig`` choices (``update``, ``feedback``, ``trace``) this rule reads
    options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def check_config(cls, cfg: RuleConfig) -> None:
        """Raise :class:`ConfigError` for options this rule cannot take. The base class rejects a
        non-null ``update``/``feedback``/``trace`` the rule does not list in ``options``; rules that read an option
        extend this to check its value."""
        for key in ("update", "feedback", "trace"):
            if key not in cls.options and getattr(cfg, key) is not None:
                raise ConfigError(f"rule {cls.name!r} takes no rule.{key} option")

    @abstractmethod
    def train_batch(
        self, net: Network, x: Tensor, labels: Tensor, enc: Encoding, apply: Apply
    ) -> BatchResult:
        """Fill ``.grad`` from one batch (``x`` [B, ...] analogue input, ``labels`` [B]) and call
        ``apply()`` after each update."""

    def input_gradient(self, net: Network, x_seq: Tensor, labels: Tensor) -> Tensor:
        """Gradient of the loss w.r.t. the encoded input ``x_seq`` [T, B, ...] along the path this rule
        uses for credit assignment (the ``rule`` gradient source of attacks).

        Default: exact surrogate BPTT of :func:`sequence_loss`. Rules whose backward path differs
        (random feedback, broadcast errors, local readouts) override it and document what it is.
        """
        x_seq = x_seq.detach().requires_grad_(True)
        loss = sequence_loss(net(x_seq).readout, labels)
        return torch.autograd.grad(loss, x_seq)[0]

    def state_dict(self) -> dict[str, Tensor]:
        """Rule state to checkpoint (e.g. fixed random feedback matrices)."""
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if state:
            raise ValueError(f"rule {self.name!r} has no state to load")


def sequence_loss(readout: Tensor, labels: Tensor) -> Tensor:
    """Loss of rules that see the whole sequence: cross-entropy of the time-averaged readout."""
    return F.cross_entropy(readout.mean(0), labels)


def choose(cfg_value: str | None, options: tuple[str, ...], default: str, key: str, rule: str) -> str:
    """Resolve an option (null = default) and check it is one of ``options``."""
    value = default if cfg_value is None else cfg_value
    if value not in options:
        raise ConfigError(f"rule {rule!r}: {key} must be one of {', '.join(options)}, got {value!r}")
    return value
