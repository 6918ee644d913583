"""Encoders: turn an analogue input into T steps of network input (registry "encoder").

An encoder maps ``x`` [B, ...] with values in [0, 1] either to the whole sequence [T, B, ...]
(:meth:`Encoder.sequence`, for rules that see the whole sequence) or to one step [B, ...]
(:meth:`Encoder.step`, for online rules, which encode step by step and keep nothing per step).
Both give the same values for the same generator state, step by step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from spikebench.registry import Registry

ENCODERS: Registry[type[Encoder]] = Registry("encoder")


class Encoder(ABC):
    """Base class. ``stochastic`` encoders draw from a generator (attacks use EOT for them)."""

    stochastic: bool = False

    @abstractmethod
    def step(self, x: Tensor, t: int, T: int, gen: torch.Generator | None) -> Tensor:
        """Input at step ``t`` of ``T``: [B, ...] -> [B, ...]."""

    def sequence(self, x: Tensor, T: int, gen: torch.Generator | None) -> Tensor:
        """All steps: [B, ...] -> [T, B, ...]."""
        return torch.stack([self.step(x, t, T, gen) for t in range(T)])


@ENCODERS.register("direct")
class Direct(Encoder):
    """Analogue input current, the same at every step (values as given, [0, 1] for images)."""

    def step(self, x: Tensor, t: int, T: int, gen: torch.Generator | None) -> Tensor:
        return x

    def sequence(self, x: Tensor, T: int, gen: torch.Generator | None) -> Tensor:
        # A broadcast view: layers see the time axis has stride 0 and compute W x once.
        return x.unsqueeze(0).expand(T, *x.shape)


@ENCODERS.register("rate")
class Rate(Encoder):
    """Bernoulli rate code: at each step a spike with probability equal to the intensity in [0, 1]."""

    stochastic = True

    def step(self, x: Tensor, t: int, T: int, gen: torch.Generator | None) -> Tensor:
        u = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        return (u < x).to(x.dtype)


@dataclass
class Encoding:
    """An encoder bound to a number of steps and a random generator (what rules are handed)."""

    encoder: Encoder
    T: int
    gen: torch.Generator | None = None

    def sequence(self, x: Tensor) -> Tensor:
        return self.encoder.sequence(x, self.T, self.gen)

    def step(self, x: Tensor, t: int) -> Tensor:
        return self.encoder.step(x, t, self.T, self.gen)
