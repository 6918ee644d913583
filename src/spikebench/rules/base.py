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
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from spikebench.config import ConfigError, RuleConfig
from spikebench.data.encoders import Encoding
from spikebench.nn.network import Network
from spikebench.registry import Registry, SpikebenchError

RULES: Registry[type[LearningRule]] = Registry("rule")


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
        """Whether the rule runs online: its memory does not grow with T (what :attr:`memory` declares)."""
        return self.memory == Memory.ONE

    def as_dict(self) -> dict[str, str | bool | int]:
        """The record form (``summary.json["locality"]``): plain strings, the bool, and the rank."""
        return {
            "spatial": self.spatial.value,
            "temporal": self.temporal.value,
            "weight_transport": self.weight_transport,
            "memory": self.memory.value,
            "rank": self.rank,
        }


@dataclass(frozen=True)
class Option:
    """One option a rule reads, as data: its ``name``, its ``default`` (what null means), its
    ``choices`` (for a string option; empty: any value of ``type``), the ``type`` of its values
    (``str``, ``int``, ``float``, ``bool``), an optional ``minimum`` and a one-line ``help``.

    Its key is ``rule.NAME`` for the options :class:`RuleConfig` names (``RuleConfig.NAMED``), else
    ``rule.options.NAME``. :meth:`LearningRule.check_config` validates every declared option once;
    :meth:`LearningRule.option_values` resolves them.
    """

    name: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    type: type = str
    minimum: float | None = None

    @property
    def key(self) -> str:
        return f"rule.{self.name}" if self.name in RuleConfig.NAMED else f"rule.options.{self.name}"

    def resolve(self, value: Any, rule: str) -> Any:
        """``value`` checked (null = :attr:`default`); raises :class:`ConfigError` naming the key."""
        if value is None:
            return self.default
        if self.choices:
            if value not in self.choices:
                raise ConfigError(
                    f"rule {rule!r}: {self.key} must be one of {', '.join(self.choices)}, got {value!r}"
                )
            return value
        ok = isinstance(value, self.type) and not (isinstance(value, bool) and self.type is not bool)
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            what = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
                self.type, f"a {self.type.__name__}"
            )
            raise ConfigError(f"rule {rule!r}: {self.key} must be {what}, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(f"rule {rule!r}: {self.key} must be >= {self.minimum:g}, got {value!r}")
        return value

    def describe(self) -> str:
        """``name: a|b (default a)`` for ``spikebench ls rules``."""
        values = "|".join(self.choices) if self.choices else self.type.__name__
        default = "null" if self.default is None else self.default
        return f"{self.key}: {values} (default {default}) -- {self.help}"


@dataclass
class BatchResult:
    """What a rule reports for one batch: its own loss and the time-averaged readout [B, C]."""

    loss: float
    logits: Tensor


Apply = Callable[[], None]


class LearningRule(ABC):
    """Base class of every rule; subclasses register with ``@RULES.register(name)``.

    A rule declares, as class attributes: its ``locality`` (from whose memory class :attr:`online` is
    derived), ``paper`` and ``deviations``, the ``archs`` it supports, its ``options`` (:class:`Option`,
    validated here once for every rule) and its input-gradient path: ``exact_input_gradient = True``
    when its credit reaches the input as surrogate BPTT's does (the default :meth:`input_gradient`),
    otherwise an :meth:`input_gradient` of its own.
    """

    name: ClassVar[str]
    #: the locality of the rule's default options (:meth:`locality_for` those of a config)
    locality: ClassVar[Locality]
    #: the paper whose rule this is (authors, year, title, venue)
    paper: ClassVar[str]
    #: how this implementation differs from that paper (each a sentence); empty when it does not
    deviations: ClassVar[tuple[str, ...]] = ()
    #: derived from ``locality.memory`` when the class is defined (O(1) memory = online); never set it
    online: ClassVar[bool] = False
    archs: ClassVar[tuple[str, ...]] = ("mlp",)
    #: the options this rule reads; any other option given in its config is an error
    options: ClassVar[tuple[Option, ...]] = ()
    #: True: the input gradient is exact surrogate BPTT (autograd through the network, the default
    #: :meth:`input_gradient`); False: the rule overrides :meth:`input_gradient` with its own path
    exact_input_gradient: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "online" in cls.__dict__:
            raise TypeError(f"{cls.__name__}.online is derived from locality.memory; declare the locality")
        if "locality" in cls.__dict__:
            cls.online = cls.locality.online

    def __init__(self, cfg: RuleConfig, net: Network, gen: torch.Generator) -> None:
        self.cfg = cfg
        #: every declared option's value, defaults filled in (:meth:`option_values`)
        self.opts = self.option_values(cfg)

    @classmethod
    def locality_for(cls, cfg: RuleConfig) -> Locality:
        """The locality of the rule with ``cfg``'s options (default: :attr:`locality`; a rule whose
        options change it, e.g. e-prop's feedback, overrides this)."""
        return cls.locality

    @classmethod
    def option_values(cls, cfg: RuleConfig) -> dict[str, Any]:
        """``name -> value`` of every declared option in ``cfg`` (null = its default), each checked."""
        return {opt.name: opt.resolve(cfg.value(opt.name), cls.name) for opt in cls.options}

    @classmethod
    def check_config(cls, cfg: RuleConfig) -> None:
        """Raise :class:`ConfigError` for options this rule cannot take: a value outside a declared
        option's choices, type or range, or an option it does not declare (a non-null named key of
        :class:`RuleConfig`, or any key of ``rule.options``; ``rule.k``, never null, is not checked)."""
        declared = {opt.name for opt in cls.options}
        for key in RuleConfig.NAMED:
            if key != "k" and key not in declared and getattr(cfg, key) is not None:
                raise ConfigError(f"rule {cls.name!r} takes no rule.{key} option")
        for key in cfg.options:
            if key not in declared:
                valid = ", ".join(sorted(declared - set(RuleConfig.NAMED))) or "none"
                raise ConfigError(
                    f"rule {cls.name!r} takes no rule.options.{key} option (its options: {valid})"
                )
        cls.option_values(cfg)

    @abstractmethod
    def train_batch(
        self, net: Network, x: Tensor, labels: Tensor, enc: Encoding, apply: Apply
    ) -> BatchResult:
        """Fill ``.grad`` from one batch (``x`` [B, ...] analogue input, ``labels`` [B]) and call
        ``apply()`` after each update."""

    def input_gradient(self, net: Network, x_seq: Tensor, labels: Tensor) -> Tensor:
        """Gradient of the loss w.r.t. the encoded input ``x_seq`` [T, B, ...] along the path this rule
        uses for credit assignment (the ``rule`` gradient source of attacks).

        This default is exact surrogate BPTT of :func:`sequence_loss`, for the rules that declare
        ``exact_input_gradient = True``; rules whose backward path differs (random feedback, broadcast
        errors, local readouts) override it and document what it is. A rule that does neither gets an
        error here rather than a silent copy of the exact gradient.
        """
        if not self.exact_input_gradient:
            raise SpikebenchError(
                f"rule {self.name!r} declares no input gradient: set exact_input_gradient = True "
                "(its credit reaches the input as BPTT's does) or override input_gradient"
            )
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
