"""The learning-rule interface.

A rule fills ``p.grad`` for every trainable parameter -- always *adding* to it (``p.grad += g``, or
autograd's accumulation), never overwriting, so that a caller whose ``apply`` only records the gradient
gets the update of the whole sequence -- and calls ``apply()`` whenever it wants the optimiser to take
a step (once per sequence for offline rules, per window or per time step for
online ones). It never builds an optimiser of its own and never re-implements the neuron: it runs the
network's layers, which call :mod:`spikebench.dynamics`. Every rule declares its locality (typed
properties, the rank derived from them), the paper it follows and how it deviates from it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from spikebench.config import ConfigError, RuleConfig
from spikebench.data.encoders import Encoding
from spikebench.nn.network import Network
from spikebench.registry import Registry

RULES: Registry[type[LearningRule]] = Registry("rule")

#: the optional ``RuleConfig`` choices (null = the rule's default)
OPTIONS = ("update", "feedback", "trace", "local_loss")


class Spatial(StrEnum):
    """How a hidden layer gets its error (spatial credit assignment)."""

    EXACT = "exact"  # backprop through the layers above with their transposed weights
    FEEDBACK_ALIGNMENT = "feedback-alignment"  # backprop layer by layer, fixed random matrices for W^T
    BROADCAST = "broadcast"  # the output error sent to every layer, without the upper layers' derivatives
    DIRECT_FEEDBACK = "direct-feedback"  # the output error projected onto every layer by a random matrix
    LAYER_LOCAL = "layer-local"  # no output error at all: each layer's own loss


class Temporal(StrEnum):
    """How far back in time credit reaches (temporal credit assignment)."""

    FULL = "full"  # the whole unrolled sequence
    TRUNCATED = "truncated"  # windows of k steps
    ONLINE = "online"  # step by step, through traces; nothing kept per step


class Memory(StrEnum):
    """How the training memory grows with the number of steps T."""

    T = "O(T)"
    K = "O(k)"
    ONE = "O(1)"


#: the memory each kind of temporal credit assignment needs
MEMORY_OF: dict[Temporal, Memory] = {
    Temporal.FULL: Memory.T,
    Temporal.TRUNCATED: Memory.K,
    Temporal.ONLINE: Memory.ONE,
}

#: the steps away from exact credit in time, and in space when a layer's error does not pass through the
#: layers above it (what ``Locality.rank`` adds up)
TEMPORAL_STEPS: dict[Temporal, int] = {Temporal.FULL: 0, Temporal.TRUNCATED: 1, Temporal.ONLINE: 2}
BYPASSES_LAYERS: dict[Spatial, bool] = {
    Spatial.EXACT: False,
    Spatial.FEEDBACK_ALIGNMENT: False,
    Spatial.BROADCAST: True,
    Spatial.DIRECT_FEEDBACK: True,
    Spatial.LAYER_LOCAL: True,
}


@dataclass(frozen=True)
class Locality:
    """Where a rule sits on the locality spectrum (DESIGN §4): four declared properties and a rank
    derived from them.

    ``rank = TEMPORAL_STEPS[temporal] + BYPASSES_LAYERS[spatial] + (not weight_transport)``: 0 for full
    unrolling, 1 for truncated windows, 2 for online credit; one more when a hidden layer's error does
    not pass through the layers above it (broadcast, direct feedback, layer-local losses); one more
    without weight transport. So bptt 0, tbptt 1, fa 1, ottt 2, eprop 3 (symmetric feedback; random: 4),
    dfa 4, decolle 4. ``memory`` follows from ``temporal`` (:data:`MEMORY_OF`) and is checked against it.
    """

    spatial: Spatial
    temporal: Temporal
    weight_transport: bool
    memory: Memory

    def __post_init__(self) -> None:
        if MEMORY_OF[self.temporal] != self.memory:
            raise ValueError(f"{self.temporal.value} credit needs memory {MEMORY_OF[self.temporal].value}")

    @property
    def rank(self) -> int:
        return (
            TEMPORAL_STEPS[self.temporal]
            + int(BYPASSES_LAYERS[self.spatial])
            + int(not self.weight_transport)
        )

    @property
    def online(self) -> bool:
        return self.temporal == Temporal.ONLINE

    def as_dict(self) -> dict[str, str | bool | int]:
        """The record form (``summary.json["locality"]``): plain strings, the bool, and the rank."""
        return {
            "spatial": self.spatial.value,
            "temporal": self.temporal.value,
            "weight_transport": self.weight_transport,
            "memory": self.memory.value,
            "rank": self.rank,
        }


@dataclass
class BatchResult:
    """What a rule reports for one batch: its own loss and the time-averaged readout [B, C]."""

    loss: float
    logits: Tensor


Apply = Callable[[], None]


class LearningRule(ABC):
    """Base class of every rule; subclasses register with ``@RULES.register(name)``."""

    name: ClassVar[str]
    #: the locality of the rule's default options (:meth:`locality_for` those of a config)
    locality: ClassVar[Locality]
    #: the paper whose rule this is (authors, year, title, venue)
    paper: ClassVar[str]
    #: how this implementation differs from that paper (each a sentence); empty when it does not
    deviations: ClassVar[tuple[str, ...]] = ()
    online: ClassVar[bool] = False
    archs: ClassVar[tuple[str, ...]] = ("mlp",)

    def __init__(self, cfg: RuleConfig, net: Network, gen: torch.Generator) -> None:
        self.cfg = cfg

    #: which of the optional ``RuleConfig`` choices (:data:`OPTIONS`) this rule reads
    options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def locality_for(cls, cfg: RuleConfig) -> Locality:
        """The locality of the rule with ``cfg``'s options (default: :attr:`locality`; a rule whose
        options change it, e.g. e-prop's feedback, overrides this)."""
        return cls.locality

    @classmethod
    def check_config(cls, cfg: RuleConfig) -> None:
        """Raise :class:`ConfigError` for options this rule cannot take. The base class rejects a
        non-null option (:data:`OPTIONS`) the rule does not list in ``options``; rules that read an option
        extend this to check its value."""
        for key in OPTIONS:
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
