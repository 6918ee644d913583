"""The threat model of an attack: which perturbations are allowed, and the input layout attacks use.

A perturbed input ``x_adv`` of a clean input ``x`` (both [B, ...], analogue, before encoding) is allowed
when ``||x_adv - x|| <= eps`` in the chosen norm (per sample, over all input features) and every feature
stays in the input domain ``[lo, hi]`` ((0, 1) for images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from spikebench.config import ConfigError
from spikebench.data.layout import image_layout as image_layout  # re-exported

Norm = Literal["linf", "l2"]
NORMS: tuple[str, ...] = get_args(Norm)


class AttackError(ConfigError):
    """An attack request that cannot be carried out (bad eps, unknown norm, incompatible runs, ...)."""


def per_sample_norm(delta: Tensor, norm: Norm) -> Tensor:
    """``||delta_b||`` for every sample b of ``delta`` [B, ...] -> [B] (L-inf or L2 over all features)."""
    flat = delta.reshape(delta.shape[0], -1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def _per_sample(v: Tensor, like: Tensor) -> Tensor:
    """[B] -> [B, 1, ..., 1] broadcastable against ``like`` [B, ...]."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


@dataclass(frozen=True)
class ThreatModel:
    """Perturbations of norm at most ``eps`` (``norm``: ``linf`` or ``l2``) inside ``domain`` = (lo, hi)."""

    norm: Norm
    eps: float
    domain: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise AttackError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise AttackError(f"eps must be a positive number, got {self.eps}")
        if not self.domain[0] < self.domain[1]:
            raise AttackError(f"input domain must have lo < hi, got {self.domain}")
        width = self.domain[1] - self.domain[0]
        if self.norm == "linf" and self.eps > width:
            lo, hi = self.domain
            raise AttackError(
                f"linf eps must be in (0, {width:g}] for inputs in [{lo:g}, {hi:g}], got {self.eps:g}"
            )

    def norms(self, delta: Tensor) -> Tensor:
        """Per-sample perturbation size in the threat norm: [B, ...] -> [B]."""
        return per_sample_norm(delta, self.norm)

    def clip(self, x: Tensor) -> Tensor:
        """Clamp into the input domain."""
        return x.clamp(self.domain[0], self.domain[1])

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """The allowed input nearest to ``x_adv`` along the usual two-step projection: shrink the
        perturbation into the eps-ball (clamp for L-inf, rescale for L2), then clamp into the domain.

        Clamping into the domain moves every feature towards ``x``, so the result stays in the ball.
        """
        delta = x_adv - x
        if self.norm == "linf":
            delta = delta.clamp(-self.eps, self.eps)
        else:
            factor = (self.eps / self.norms(delta)).clamp(max=1.0)  # inf for a zero delta -> 1
            delta = delta * _per_sample(factor, delta)
        return self.clip(x + delta)

    def steepest(self, grad: Tensor) -> Tensor:
        """The unit-norm direction of steepest ascent for a gradient [B, ...]: ``sign(g)`` for L-inf,
        ``g / ||g||_2`` for L2 (Madry et al. 2018, eq. 2 and its L2 counterpart)."""
        if self.norm == "linf":
            return grad.sign()
        return grad / _per_sample(self.norms(grad).clamp_min(1e-12), grad)

    def scale_to_eps(self, noise: Tensor) -> Tensor:
        """Rescale ``noise`` [B, ...] so that every sample has norm exactly ``eps``."""
        return noise * _per_sample(self.eps / self.norms(noise).clamp_min(1e-12), noise)

    def random_start(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """A random point of the ball around ``x`` [B, ...], clipped into the domain: uniform per feature
        in [-eps, eps] for L-inf; uniform in the L2 ball (Gaussian direction, radius eps * U^(1/d))."""
        if self.norm == "linf":
            u = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            return self.clip(x + (2 * u - 1) * self.eps)
        direction = self.scale_to_eps(torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype))
        d = x[0].numel()
        u = torch.rand(x.shape[0], generator=gen, device=x.device, dtype=x.dtype) ** (1.0 / d)
        return self.clip(x + direction * _per_sample(u, x))
