"""A trained spiking network seen by an attack: a classifier ``f(x) -> logits`` and its gradient sources.

Every call of :class:`Classifier` starts the network from its resting state, encodes the analogue input
``x`` [B, ...] into T steps (a fresh draw of a stochastic encoder per call), runs all T steps and returns
the time-averaged readout [B, C] (:attr:`spikebench.nn.Rollout.logits`), so no state leaks from one
attack step to the next.

Gradient sources give ``d loss / d x`` for the analogue input, chained through the encoder:

- ``exact``: surrogate-gradient BPTT of the cross-entropy of the logits (Neftci, Mostafa & Zenke 2019);
- ``rule``: the network's learning rule's own credit path to its input,
  :meth:`spikebench.rules.LearningRule.input_gradient` on the encoded input, chained to ``x``.

An encoder without a gradient (a Bernoulli ``rate`` code) is differentiated with a straight-through
estimator (Bengio, Leonard & Courville 2013): each step's output is treated as the ``direct`` encoding
of ``x`` in the backward pass (d spike / d intensity = 1). For stochastic encoders the gradient is
averaged over ``eot`` encoder draws, expectation over transformation (Athalye et al. 2018).
"""

from __future__ import annotations

import copy
import dataclasses
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spikebench.attacks.threat import AttackError
from spikebench.data.encoders import Direct, Encoding
from spikebench.dynamics import LIFParams, Surrogate
from spikebench.rules import LearningRule


def attack_network(net: nn.Module, surrogate: Surrogate | None = None) -> nn.Module:
    """A frozen copy of ``net`` in eval mode, with every LIF layer's surrogate replaced by ``surrogate``
    (when given). The forward pass is unchanged (spikes are Heaviside steps whatever the surrogate);
    only gradients through the copy differ. The original network is left untouched."""
    frozen = copy.deepcopy(net).eval().requires_grad_(False)
    if surrogate is not None:
        for module in frozen.modules():
            params = getattr(module, "params", None)
            if isinstance(params, LIFParams):
                module.params = dataclasses.replace(params, surrogate=surrogate)
    return frozen


class Classifier:
    """``f(x) -> logits`` for a network ``net`` and an ``encoding`` (its own generator for draws).

    ``x`` [B, ...] is the analogue sample as stored in the dataset (static input, or sequence
    [B, T, ...] for sequential datasets); ``f(x)`` is [B, C]. ``surrogate`` replaces the network's
    surrogate derivative in the gradients attacks take (not in the forward pass).
    """

    def __init__(self, net: nn.Module, encoding: Encoding, surrogate: Surrogate | None = None) -> None:
        self.net = attack_network(net, surrogate)
        self.encoding = encoding
        self._direct = Encoding(Direct(), encoding.T, None, encoding.sequential)  # straight-through reference

    @property
    def stochastic(self) -> bool:
        return self.encoding.encoder.stochastic

    def reseed(self, gen: torch.Generator | None) -> None:
        """Draw the encoder's randomness from ``gen`` from now on (no effect on deterministic encoders)."""
        self.encoding = dataclasses.replace(self.encoding, gen=gen)

    def encode(self, x: Tensor) -> Tensor:
        """Encoded input [T, B, ...]; differentiable w.r.t. ``x`` when ``x`` requires grad (exactly where
        the encoder is differentiable, straight-through otherwise)."""
        seq = self.encoding.sequence(x)
        if x.requires_grad and not seq.requires_grad:
            ref = self._direct.sequence(x)
            if ref.shape != seq.shape:
                raise AttackError(
                    f"encoder {type(self.encoding.encoder).__name__} has no gradient and changes the "
                    "input's shape; use a gradient-free attack"
                )
            seq = ref + (seq - ref).detach()
        return seq

    def __call__(self, x: Tensor) -> Tensor:
        """Logits [B, C] of ``x`` [B, ...], from a fresh state (no autograd graph)."""
        with torch.no_grad():
            return self.net(self.encoding.sequence(x)).logits


class GradientSource(ABC):
    """``d loss / d x`` [B, ...] for inputs ``x`` [B, ...] and labels [B], averaged over ``eot`` encoder
    draws when the encoder is stochastic (one draw otherwise)."""

    name: str

    def __init__(self, model: Classifier, eot: int = 1) -> None:
        if eot < 1:
            raise AttackError(f"eot must be a positive number of draws, got {eot}")
        self.model = model
        self.draws = eot if model.stochastic else 1

    def __call__(self, x: Tensor, labels: Tensor) -> Tensor:
        return self.evaluate(x, labels)[0]

    def evaluate(self, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(d loss / d x, logits)``: the logits [B, C] of ``x`` when the gradient's own forward pass
        computed them and they equal what :class:`Classifier` returns (one deterministic draw), else
        None. Attacks use them to check their iterates without another forward pass."""
        total = torch.zeros_like(x)
        self._logits: Tensor | None = None
        for _ in range(self.draws):
            xg = x.detach().requires_grad_(True)
            total += self.gradient(self.model.encode(xg), xg, labels)
        logits = self._logits if not self.model.stochastic else None
        return total / self.draws, logits

    @abstractmethod
    def gradient(self, seq: Tensor, x: Tensor, labels: Tensor) -> Tensor:
        """One draw: ``seq`` [T, B, ...] is the encoding of the leaf ``x`` [B, ...]; returns d loss / d x."""


class ExactGradient(GradientSource):
    """Surrogate BPTT of ``CE(f(x), labels)`` through the whole network and all T steps."""

    name = "exact"

    def gradient(self, seq: Tensor, x: Tensor, labels: Tensor) -> Tensor:
        logits = self.model.net(seq).logits
        self._logits = logits.detach()
        return torch.autograd.grad(F.cross_entropy(logits, labels), x)[0]


class RuleGradient(GradientSource):
    """The learning rule's credit path: ``rule.input_gradient`` on the encoded input [T, B, ...],
    chained to ``x`` through the encoder (``d loss/d x = sum_t g[t] d seq[t]/d x``)."""

    name = "rule"

    def __init__(self, model: Classifier, rule: LearningRule, eot: int = 1) -> None:
        super().__init__(model, eot)
        self.rule = rule

    def gradient(self, seq: Tensor, x: Tensor, labels: Tensor) -> Tensor:
        g_seq = self.rule.input_gradient(self.model.net, seq.detach(), labels)
        return torch.autograd.grad(seq, x, grad_outputs=g_seq.reshape(seq.shape))[0]
