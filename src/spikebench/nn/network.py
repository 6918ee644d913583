"""Thin modules over the dynamics core: spiking layers, a leaky readout, and the network.

Modules own parameters and call :mod:`spikebench.dynamics`; they hold no state between calls. Time
is the first axis everywhere: inputs [T, B, ...], spikes [T, B, N], readout [T, B, C].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from spikebench.dynamics import lif
from spikebench.dynamics.lif import LIFParams, LIFState


def is_time_constant(x_seq: Tensor) -> bool:
    """True when ``x_seq`` [T, ...] is one frame broadcast over time (``x.expand(T, ...)``)."""
    return x_seq.shape[0] == 1 or x_seq.stride(0) == 0


class SpikingLinear(nn.Module):
    """A LIF layer fed by a dense projection ``W x[t] + b`` and, if ``recurrent``, by ``V z[t-1]``.

    ``weight`` (W) is [N, D], ``bias`` [N], ``rec`` (V) [N, N] or None.
    """

    def __init__(self, n_in: int, n_out: int, recurrent: bool, params: LIFParams) -> None:
        super().__init__()
        self.n_in, self.n_out, self.params = n_in, n_out, params
        self.weight = nn.Parameter(torch.empty(n_out, n_in))
        self.bias = nn.Parameter(torch.empty(n_out))
        self.rec = nn.Parameter(torch.empty(n_out, n_out)) if recurrent else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.n_in)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.zeros_(self.bias)
        if self.rec is not None:
            # Weak recurrence at start (a tenth of the feed-forward scale): the layer starts close to
            # its feed-forward counterpart and learns how much recurrence to use.
            r = 0.1 / math.sqrt(self.n_out)
            nn.init.uniform_(self.rec, -r, r)

    @property
    def recurrent(self) -> bool:
        return self.rec is not None

    def currents(self, x_seq: Tensor) -> Tensor:
        """Feed-forward currents for all steps, [T, B, D] -> [T, B, N], as one matrix product.

        When the input is the same at every step (``direct`` encoding), it is computed once.
        """
        if is_time_constant(x_seq):
            once = nn.functional.linear(x_seq[0], self.weight, self.bias)
            return once.unsqueeze(0).expand(x_seq.shape[0], *once.shape)
        return nn.functional.linear(x_seq, self.weight, self.bias)

    def forward(self, x_seq: Tensor, state: LIFState | None = None) -> tuple[Tensor, LIFState]:
        """All T steps: spikes [T, B, N] and the final state."""
        return lif.scan(self.params, self.currents(x_seq), self.rec, state)

    def step(self, x: Tensor, state: LIFState) -> tuple[Tensor, LIFState]:
        """One step: ``x`` [B, D] -> spikes [B, N] and the new state (autograd as the caller allows)."""
        c = nn.functional.linear(x, self.weight, self.bias)
        if self.rec is not None:
            c = c + state.z @ self.rec.T
        return lif.step(self.params, state, c)

    def zero_state(self, batch: int, like: Tensor) -> LIFState:
        return lif.zero_state(batch, self.n_out, device=like.device, dtype=like.dtype)


def leak_kernel(T: int, kappa: float, *, device=None, dtype=torch.float32) -> Tensor:
    """[T, T] lower-triangular matrix K with K[t, s] = kappa^(t-s): a leaky integrator as one product."""
    t = torch.arange(T, device=device, dtype=dtype)
    diff = t[:, None] - t[None, :]
    return torch.where(
        diff >= 0,
        torch.as_tensor(kappa, dtype=dtype, device=device) ** diff.clamp(min=0),
        torch.zeros((), dtype=dtype, device=device),
    )


class Readout(nn.Module):
    """Non-spiking leaky integrator ``y[t] = kappa * y[t-1] + W_out z[t] + b_out``; ``y`` is [B, C]."""

    def __init__(self, n_in: int, n_classes: int, kappa: float) -> None:
        super().__init__()
        self.kappa = kappa
        self.linear = nn.Linear(n_in, n_classes)

    def forward(self, z_seq: Tensor, y0: Tensor | None = None) -> Tensor:
        """[T, B, N] spikes -> [T, B, C] readout, for all steps at once."""
        T = z_seq.shape[0]
        u = self.linear(z_seq)
        k = leak_kernel(T, self.kappa, device=u.device, dtype=u.dtype)
        y = torch.einsum("ts,sbc->tbc", k, u)
        if y0 is not None:
            powers = self.kappa ** torch.arange(1, T + 1, device=u.device, dtype=u.dtype)
            y = y + powers[:, None, None] * y0
        return y

    def step(self, z: Tensor, y: Tensor) -> Tensor:
        """One step: spikes [B, N], previous readout [B, C] -> new readout [B, C]."""
        return self.kappa * y + self.linear(z)


@dataclass
class NetState:
    """State of the whole network at one step: one LIF state per hidden layer and the readout."""

    layers: list[LIFState]
    y: Tensor

    def detach(self) -> NetState:
        return NetState([LIFState(s.v.detach(), s.z.detach()) for s in self.layers], self.y.detach())


@dataclass
class Rollout:
    """What a forward pass over T steps produced.

    ``spikes``: one [T, B, N_l] tensor per hidden layer; ``readout``: [T, B, C]; ``state``: the final
    state (detached), to continue from (truncated BPTT).
    """

    spikes: list[Tensor]
    readout: Tensor
    state: NetState

    @property
    def logits(self) -> Tensor:
        """The decision variable of every rule: the readout averaged over time, [B, C]."""
        return self.readout.mean(0)


class Network(nn.Module):
    """Feed-forward stack of LIF layers (each optionally recurrent) and a leaky readout."""

    def __init__(
        self,
        n_in: int,
        hidden: tuple[int, ...],
        n_classes: int,
        *,
        recurrent: bool,
        params: LIFParams,
        kappa: float,
    ) -> None:
        super().__init__()
        sizes = (n_in, *hidden)
        self.layers = nn.ModuleList(
            SpikingLinear(a, b, recurrent, params) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.readout = Readout(hidden[-1], n_classes, kappa)
        self.n_in, self.n_classes = n_in, n_classes

    def flatten(self, x_seq: Tensor) -> Tensor:
        """[T, B, ...] -> [T, B, D] (a view; keeps a broadcast time axis broadcast)."""
        return x_seq.reshape(x_seq.shape[0], x_seq.shape[1], -1) if x_seq.dim() != 3 else x_seq

    def zero_state(self, batch: int, like: Tensor) -> NetState:
        y = torch.zeros(batch, self.n_classes, device=like.device, dtype=like.dtype)
        return NetState([layer.zero_state(batch, like) for layer in self.layers], y)

    def forward(self, x_seq: Tensor, state: NetState | None = None) -> Rollout:
        """Run all T steps: ``x_seq`` [T, B, ...] -> :class:`Rollout`."""
        h = self.flatten(x_seq)
        spikes, finals = [], []
        for i, layer in enumerate(self.layers):
            h, s = layer(h, None if state is None else state.layers[i])
            spikes.append(h)
            finals.append(s)
        y = self.readout(h, None if state is None else state.y)
        return Rollout(spikes, y, NetState(finals, y[-1].detach()))

    def step(self, x: Tensor, state: NetState) -> tuple[list[Tensor], Tensor, NetState]:
        """One step for online rules: ``x`` [B, ...] -> (spikes per layer, readout [B, C], state)."""
        h = x.reshape(x.shape[0], -1)
        spikes, states = [], []
        for layer, s in zip(self.layers, state.layers, strict=True):
            h, s = layer.step(h, s)
            spikes.append(h)
            states.append(s)
        y = self.readout.step(h, state.y)
        return spikes, y, NetState(states, y)
