"""Encoders: turn a sample into T steps of network input (registry "encoder").

Two kinds of sample reach an encoder:

- a **static** input ``x`` [B, ...] (an image, values in [0, 1]), which the encoder spreads over T steps:
  :meth:`Encoder.sequence` gives the whole sequence [T, B, ...], :meth:`Encoder.step` one step [B, ...];
- a **sequence** ``xs`` [B, T, ...] (rows of an image, binned events), whose steps the encoder maps one
  by one: :meth:`Encoder.frames` gives [T, B, ...] (time axis first), :meth:`Encoder.frame` step ``t``
  [B, ...].

Rules never call these directly: they hold an :class:`Encoding`, which knows whether the dataset is
sequential and offers ``sequence(x)`` / ``step(x, t)`` for both kinds. The whole-sequence and the
step-by-step forms give the same values for the same generator state, step by step. An encoder declares
which kinds it accepts (``static``, ``sequences``); the config check rejects other pairs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from spikebench.registry import Registry, SpikebenchError

ENCODERS: Registry[type[Encoder]] = Registry("encoder")


class Encoder(ABC):
    """Base class. ``stochastic`` encoders draw from a generator (attacks use EOT for them)."""

    stochastic: ClassVar[bool] = False
    static: ClassVar[bool] = True  # accepts static inputs [B, ...]
    sequences: ClassVar[bool] = True  # accepts sequences [B, T, ...]

    @abstractmethod
    def step(self, x: Tensor, t: int, T: int, gen: torch.Generator | None) -> Tensor:
        """Static input, step ``t`` of ``T``: [B, ...] -> [B, ...]."""

    def sequence(self, x: Tensor, T: int, gen: torch.Generator | None) -> Tensor:
        """Static input, all steps: [B, ...] -> [T, B, ...]."""
        return torch.stack([self.step(x, t, T, gen) for t in range(T)])

    def frame(self, xs: Tensor, t: int, gen: torch.Generator | None) -> Tensor:
        """Sequence input, step ``t``: [B, T, ...] -> [B, ...] (default: :meth:`step` on ``xs[:, t]``)."""
        return self.step(xs[:, t], t, xs.shape[1], gen)

    def frames(self, xs: Tensor, gen: torch.Generator | None) -> Tensor:
        """Sequence input, all steps: [B, T, ...] -> [T, B, ...]."""
        return torch.stack([self.frame(xs, t, gen) for t in range(xs.shape[1])])


@ENCODERS.register("direct")
class Direct(Encoder):
    """Analogue input current, the same at every step (or each sequence step as given)."""

    def step(self, x: Tensor, t: int, T: int, gen: torch.Generator | None) -> Tensor:
        return x

    def sequence(self, x: Tensor, T: int, gen: torch.Generator | None) -> Tensor:
        # A broadcast view: layers see the time axis has stride 0 and compute W x once.
        return x.unsqueeze(0).expand(T, *x.shape)

    def frames(self, xs: Tensor, gen: torch.Generator | None) -> Tensor:
        return xs.transpose(0, 1)


@ENCODERS.register("rate")
class Rate(Encoder):
    """Bernoulli rate code: at each step a spike with probability equal to the intensity in [0, 1].

    Output {0, 1}, same shape as the input; intensities above 1 (event counts) always spike.
    """

    stochastic = True

    def step(self, x: Tensor, t: int, T: int, gen: torch.Generator | None) -> Tensor:
        u = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        return (u < x).to(x.dtype)


@ENCODERS.register("latency")
@dataclass
class Latency(Encoder):
    """Time-to-first-spike: one spike per input at t = round((1 - x)(T - 1)), none where x <= threshold.

    Static inputs only ([B, ...] in [0, 1], clipped to it). Brighter inputs spike earlier: x = 1 at
    t = 0, x just above ``threshold`` near t = T - 1 (Thorpe et al. 2001). Output {0, 1} [T, B, ...]
    with at most one spike per input over the T steps.
    """

    threshold: float = 0.0
    sequences: ClassVar[bool] = False

    def spike_time(self, x: Tensor, T: int) -> Tensor:
        """Step index of each input's spike, [B, ...] int64; -1 where there is none."""
        t = torch.round((1.0 - x.clamp(0.0, 1.0)) * (T - 1)).long()
        return torch.where(x > self.threshold, t, torch.full_like(t, -1))

    def step(self, x: Tensor, t: int, T: int, gen: torch.Generator | None) -> Tensor:
        return (self.spike_time(x, T) == t).to(x.dtype)

    def sequence(self, x: Tensor, T: int, gen: torch.Generator | None) -> Tensor:
        steps = torch.arange(T, device=x.device).reshape(T, *([1] * x.dim()))
        return (self.spike_time(x, T).unsqueeze(0) == steps).to(x.dtype)


@ENCODERS.register("delta")
@dataclass
class Delta(Encoder):
    """Signed change code for sequences: +1 / -1 where the input rose / fell by more than threshold.

    Sequence inputs only: ``xs`` [B, T, ...] -> [T, B, ...] with values in {-1, 0, +1}, one signed
    channel (same shape as a step of the input). With ``d[t] = xs[:, t] - xs[:, t-1]`` and
    ``xs[:, -1] = 0`` (the sequence starts from nothing), the output at t is
    ``sign(d[t]) * (|d[t]| > threshold)`` -- the ON/OFF events of a temporal-contrast sensor such as a
    DVS (Lichtsteiner, Posch & Delbruck 2008) as one signed value. Static inputs have no change over
    time to encode and are rejected.
    """

    threshold: float = 0.1
    static: ClassVar[bool] = False

    def _code(self, d: Tensor) -> Tensor:
        return torch.sign(d) * (d.abs() > self.threshold).to(d.dtype)

    def step(self, x: Tensor, t: int, T: int, gen: torch.Generator | None) -> Tensor:
        raise SpikebenchError("encoder 'delta' encodes sequences only; this input is static")

    def frame(self, xs: Tensor, t: int, gen: torch.Generator | None) -> Tensor:
        prev = xs[:, t - 1] if t > 0 else torch.zeros_like(xs[:, 0])
        return self._code(xs[:, t] - prev)

    def frames(self, xs: Tensor, gen: torch.Generator | None) -> Tensor:
        seq = xs.transpose(0, 1)
        return self._code(torch.diff(seq, dim=0, prepend=torch.zeros_like(seq[:1])))


@dataclass
class Encoding:
    """An encoder bound to a number of steps and a random generator (what rules are handed).

    ``sequential``: the dataset's samples are sequences ``x`` [B, T, ...] (otherwise static [B, ...]).
    Either way :meth:`sequence` returns [T, B, ...] and :meth:`step` returns [B, ...].
    """

    encoder: Encoder
    T: int
    gen: torch.Generator | None = None
    sequential: bool = False

    def _check_length(self, x: Tensor) -> None:
        if x.dim() < 2 or x.shape[1] != self.T:
            raise SpikebenchError(
                f"sequence input of shape {tuple(x.shape)} does not have T={self.T} steps on axis 1"
            )

    def sequence(self, x: Tensor) -> Tensor:
        """All T steps: static [B, ...] or sequence [B, T, ...] -> [T, B, ...]."""
        if self.sequential:
            self._check_length(x)
            return self.encoder.frames(x, self.gen)
        return self.encoder.sequence(x, self.T, self.gen)

    def step(self, x: Tensor, t: int) -> Tensor:
        """Step ``t``: static [B, ...] or sequence [B, T, ...] -> [B, ...]."""
        if self.sequential:
            self._check_length(x)
            return self.encoder.frame(x, t, self.gen)
        return self.encoder.step(x, t, self.T, self.gen)
