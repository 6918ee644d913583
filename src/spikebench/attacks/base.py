"""The attack interface and registry ("attack").

An attack turns clean inputs ``x`` [B, ...] with labels [B] into perturbed inputs inside a
:class:`~spikebench.attacks.threat.ThreatModel`, seeing the network only through a
:class:`~spikebench.attacks.adapter.Classifier` (logits) and, for gradient attacks, a
:class:`~spikebench.attacks.adapter.GradientSource`. Attacks are untargeted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from spikebench.attacks.adapter import Classifier, GradientSource
from spikebench.attacks.threat import AttackError, ThreatModel
from spikebench.registry import Registry

Kind = Literal["gradient", "query", "noise"]

ATTACKS: Registry[type[Attack]] = Registry("attack")


@dataclass(frozen=True)
class AttackOptions:
    """Options of the attacks (each attack documents which it reads).

    ``steps``: PGD iterations. ``step_size``: PGD / NES step (None: ``2.5 * eps / iterations``, Madry et
    al. 2018). ``restarts``: PGD runs, the first from ``x`` or a random start, the others from random
    starts; a sample counts as broken if any run breaks it. ``random_start``: start PGD at a uniformly
    random point of the ball. ``queries``: per-sample budget of model calls of query attacks. ``eot``:
    encoder draws averaged per gradient (stochastic encoders). ``samples``: NES / SPSA perturbation pairs
    per gradient estimate. ``sigma``: NES / SPSA finite-difference scale (None: ``eps / 2``). ``lr``: SPSA
    Adam learning rate (None: ``eps / 4``). ``p_init``: Square's initial fraction of features per square.
    """

    steps: int = 20
    step_size: float | None = None
    restarts: int = 1
    random_start: bool = True
    queries: int = 1000
    eot: int = 1
    samples: int = 20
    sigma: float | None = None
    lr: float | None = None
    p_init: float = 0.3

    def __post_init__(self) -> None:
        for key in ("steps", "restarts", "queries", "eot", "samples"):
            if getattr(self, key) < 1:
                raise AttackError(f"{key} must be a positive integer, got {getattr(self, key)}")
        for key in ("step_size", "sigma", "lr"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise AttackError(f"{key} must be positive, got {value}")
        if not 0 < self.p_init <= 1:
            raise AttackError(f"p_init must be in (0, 1], got {self.p_init}")


@dataclass
class AttackResult:
    """Perturbed inputs ``x_adv`` [B, ...] and the model calls spent on each sample, ``queries`` [B]
    (forward passes for query attacks, gradient evaluations times EOT draws for gradient attacks).

    Iterative gradient attacks also give ``broken_at`` [B]: the fewest steps (within one restart) after
    which an iterate of some restart was misclassified by the attack's model, -1 where none was; this
    is what their convergence records are computed from.
    """

    x_adv: Tensor
    queries: Tensor
    broken_at: Tensor | None = None


@dataclass
class Target:
    """What an attack may use: the classifier, and for gradient attacks a gradient source."""

    model: Classifier
    gradient: GradientSource | None = None


class Attack(ABC):
    """Base class of every attack; subclasses register with ``@ATTACKS.register(name)``."""

    kind: ClassVar[Kind]

    def __init__(self, options: AttackOptions) -> None:
        self.options = options

    @classmethod
    def calls(cls, options: AttackOptions) -> int:
        """The most model calls one sample costs under ``options`` (gradient evaluations per EOT draw for
        gradient attacks: ``steps x restarts``; ``queries`` for query attacks; one for noise), as cost
        estimates use it."""
        if cls.kind == "gradient":
            return options.steps * options.restarts
        return options.queries if cls.kind == "query" else 1

    @abstractmethod
    def perturb(
        self, target: Target, x: Tensor, labels: Tensor, threat: ThreatModel, gen: torch.Generator
    ) -> AttackResult:
        """Attack ``x`` [B, ...] (true ``labels`` [B]) inside ``threat``; random draws from ``gen``."""


def margin(logits: Tensor, labels: Tensor) -> Tensor:
    """``z_y - max_{j != y} z_j`` per sample, [B, C] -> [B]: negative once the sample is misclassified
    (the margin loss of Carlini & Wagner 2017, used by the query attacks)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    return true - others
