"""Surrogate spike functions.

The forward pass of every surrogate is the Heaviside step ``H(x) = 1[x >= 0]`` of the distance to
threshold ``x = v - theta``; the backward pass replaces ``H'(x)`` (zero almost everywhere) by the
derivative of a smooth primitive ``S(x)`` (Neftci, Mostafa & Zenke 2019, "Surrogate gradient
learning in spiking neural networks"). Each surrogate exposes that primitive and its derivative so
that tests can check one against a finite difference of the other, and so that fused kernels and
online rules can evaluate the pseudo-derivative ``psi = S'(v - theta)`` without autograd.

All surrogates are normalised to a peak derivative of 1 at ``x = 0``; ``scale`` sets their width
(larger ``scale`` = narrower).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from spikebench.registry import Registry

SURROGATES: Registry[type[Surrogate]] = Registry("surrogate")


@dataclass(frozen=True)
class Surrogate:
    """Base class: ``primitive`` is the smooth stand-in for H, ``derivative`` its exact derivative."""

    scale: float = 5.0

    def primitive(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def derivative(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def derivative_(self, x: Tensor) -> Tensor:
        """``derivative(x)`` written over ``x`` and returned: the same values, bit for bit, without
        temporaries (the fused scan's backward pass calls it every step). Subclasses may override it
        with in-place arithmetic in the same order as :meth:`derivative`."""
        return x.copy_(self.derivative(x))

    def heaviside(self, x: Tensor) -> Tensor:
        """The forward spike function, ``H(x) = 1[x >= 0]`` (the one place it is defined)."""
        return (x >= 0).to(x.dtype)

    def spike(self, x: Tensor) -> Tensor:
        """Heaviside forward, surrogate backward: ``z = H(x)``, ``dz/dx := S'(x)``."""
        return _Spike.apply(x, self)


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, surrogate: Surrogate) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return surrogate.heaviside(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * ctx.surrogate.derivative(x), None


@SURROGATES.register("fast_sigmoid")
@dataclass(frozen=True)
class FastSigmoid(Surrogate):
    """Fast sigmoid (SuperSpike, Zenke & Ganguli 2018): S'(x) = 1 / (1 + scale*|x|)^2."""

    def primitive(self, x: Tensor) -> Tensor:
        return x / (1 + self.scale * x.abs())

    def derivative(self, x: Tensor) -> Tensor:
        return 1.0 / (1.0 + self.scale * x.abs()) ** 2

    def derivative_(self, x: Tensor) -> Tensor:
        return x.abs_().mul_(self.scale).add_(1.0).pow_(-2)  # pow -2 is 1 / (y * y): the same values


@SURROGATES.register("triangle")
@dataclass(frozen=True)
class Triangle(Surrogate):
    """Triangle / piecewise linear (Bellec et al. 2018): S'(x) = max(0, 1 - scale*|x|)."""

    def primitive(self, x: Tensor) -> Tensor:
        # Integral of max(0, 1 - s|u|) from 0 to x: odd, saturating at +-1/(2s) for |x| >= 1/s.
        a = (x.abs() * self.scale).clamp(max=1.0)
        return torch.sign(x) * (a - a * a / 2) / self.scale

    def derivative(self, x: Tensor) -> Tensor:
        return (1.0 - self.scale * x.abs()).clamp(min=0.0)

    def derivative_(self, x: Tensor) -> Tensor:
        return x.abs_().mul_(-self.scale).add_(1.0).clamp_(min=0.0)


@SURROGATES.register("sigmoid")
@dataclass(frozen=True)
class Sigmoid(Surrogate):
    """Logistic sigmoid: S(x) = 4/scale * sigmoid(scale*x), S'(x) = 4 sigma(sx)(1 - sigma(sx))."""

    def primitive(self, x: Tensor) -> Tensor:
        return 4.0 / self.scale * torch.sigmoid(self.scale * x)

    def derivative(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(self.scale * x)
        return 4.0 * s * (1.0 - s)


@SURROGATES.register("arctan")
@dataclass(frozen=True)
class Arctan(Surrogate):
    """Arctangent (Fang et al. 2021): S'(x) = 1 / (1 + (pi/2 * scale * x)^2)."""

    def primitive(self, x: Tensor) -> Tensor:
        k = math.pi / 2 * self.scale
        return torch.atan(k * x) / k

    def derivative(self, x: Tensor) -> Tensor:
        return 1.0 / (1.0 + (math.pi / 2 * self.scale * x) ** 2)

    def derivative_(self, x: Tensor) -> Tensor:
        return x.mul_(math.pi / 2 * self.scale).pow_(2).add_(1.0).reciprocal_()


def make_surrogate(name: str, scale: float) -> Surrogate:
    """Build the registered surrogate ``name`` with width parameter ``scale``."""
    return SURROGATES.get(name)(scale=scale)
