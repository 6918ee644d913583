"""The network: spiking layers in order and a leaky readout; the dense spiking layer.

Modules own parameters and call :mod:`spikebench.dynamics`; they hold no state between calls. Time
is the first axis everywhere: inputs [T, B, ...], spikes [T, B, N], readout [T, B, C]. Every layer
follows the layer protocol of :mod:`spikebench.nn.layers`; :class:`Network` knows nothing of the
kinds of its layers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from spikebench.dynamics.lif import LIFParams, LIFState
from spikebench.nn.conv import SpikingConv
from spikebench.nn.layers import (
    SpikingLayer,
    add_grad,
    add_outer,
    conv2d,
    dense_counts,
    is_time_constant,
    linear,
)
from spikebench.precision import as_state, full_precision

__all__ = [
    "NetState",
    "NetStep",
    "Network",
    "Readout",
    "Rollout",
    "SpikingLinear",
    "conv2d",
    "is_time_constant",
    "leak_kernel",
    "linear",
]


class SpikingLinear(SpikingLayer):
    """A LIF layer fed by a dense projection ``W x[t] + b`` and, if ``recurrent``, by ``V z[t-1]``.

    ``weight`` (W) is [N, D], ``bias`` [N], ``rec`` (V) [N, N] or None. Inputs are flattened:
    [T, B, ...] -> [T, B, D].
    """

    kind = "dense"

    def __init__(self, n_in: int, n_out: int, recurrent: bool, params: LIFParams) -> None:
        super().__init__()
        self.n_in, self.n_out, self.params = n_in, n_out, params
        self.in_shape, self.out_shape, self.n_neurons = (n_in,), (n_out,), n_out
        self.weight = nn.Parameter(torch.empty(n_out, n_in))
        self.bias = nn.Parameter(torch.empty(n_out))
        self.rec = nn.Parameter(torch.empty(n_out, n_out)) if recurrent else None
        self.register_buffer("backward_rec", None, persistent=False)
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

    def backward_slots(self) -> dict[str, Tensor]:
        slots = super().backward_slots()
        if self.rec is not None:
            slots["backward_rec"] = self.rec
        return slots

    @staticmethod
    def flatten(x_seq: Tensor) -> Tensor:
        """[T, B, ...] -> [T, B, D] (a view; keeps a broadcast time axis broadcast)."""
        return x_seq.reshape(x_seq.shape[0], x_seq.shape[1], -1) if x_seq.dim() != 3 else x_seq

    def product(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias, self.backward_weight)

    def forward(self, x_seq: Tensor, state: LIFState | None = None) -> tuple[Tensor, LIFState]:
        """All T steps: ``x_seq`` [T, B, ...] (flattened to [T, B, D]) -> spikes [T, B, N] and the final
        state."""
        return super().forward(self.flatten(x_seq), state)

    def output(self, z: Tensor) -> Tensor:
        return z

    def current(self, x: Tensor) -> Tensor:
        """Feed-forward current ``W x + b`` of one step's input ``x`` [B, D] -> [B, N]."""
        return nn.functional.linear(x, self.weight, self.bias)

    def step_output(self, z: Tensor) -> tuple[Tensor, None]:
        return z, None

    def as_input(self, h: Tensor) -> Tensor:
        return h.reshape(h.shape[0], -1)

    def vjp_input(self, delta: Tensor) -> Tensor:
        return delta @ self._backward_or_weight()

    def add_weight_grad(self, delta: Tensor, x_hat: Tensor) -> None:
        add_outer(self.weight, delta, x_hat)

    def add_bias_grad(self, delta: Tensor, a: float) -> None:
        add_grad(self.bias, delta.sum(0).mul_(a))

    def vjp_output(self, g: Tensor, ctx: None) -> Tensor:
        return g

    def synaptic_counts(self, x: Tensor) -> tuple[float, float]:
        return dense_counts(self.weight, x.reshape(*x.shape[:2], -1))


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
    """Non-spiking leaky integrator ``y[t] = kappa * y[t-1] + W_out z[t] + b_out``; ``y`` is [B, C].

    ``backward_weight``: as a spiking layer's (:mod:`spikebench.nn.layers`), for ``W_out``."""

    def __init__(self, n_in: int, n_classes: int, kappa: float) -> None:
        super().__init__()
        self.kappa = kappa
        self.linear = nn.Linear(n_in, n_classes)
        self.register_buffer("backward_weight", None, persistent=False)

    def backward_slots(self) -> dict[str, Tensor]:
        return {"backward_weight": self.linear.weight}

    def forward(self, z_seq: Tensor, y0: Tensor | None = None) -> Tensor:
        """[T, B, N] spikes -> [T, B, C] readout, for all steps at once."""
        T = z_seq.shape[0]
        # the projection may be a bf16 product; the integration is the readout's state: float32
        u = as_state(linear(z_seq, self.linear.weight, self.linear.bias, self.backward_weight))
        k = leak_kernel(T, self.kappa, device=u.device, dtype=u.dtype)
        with full_precision(u.device.type):
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


@dataclass
class NetStep:
    """What one step of :meth:`Network.advance` produced, per hidden layer and for the readout.

    ``spikes[l]``: [B, N_l]; ``outputs[l]``: what layer l passes on, flattened [B, D_l] (its spikes, or
    a convolution's max-pooled spikes); ``pool[l]``: what the layer's :meth:`vjp_output
    <spikebench.nn.layers.SpikingLayer.vjp_output>` needs (max pooling's argmax indices; None for
    layers without pooling); ``y``: the readout [B, C]; ``state``: the new state.
    """

    spikes: list[Tensor]
    outputs: list[Tensor]
    pool: list[Tensor | None]
    y: Tensor
    state: NetState


class Network(nn.Module):
    """Spiking layers in order (each following :mod:`spikebench.nn.layers`' protocol) and a leaky readout.

    ``stages``: the layers in order, in named groups; a group's name is its parameters' prefix
    (``layers.0.weight`` in a dense network built by :meth:`mlp`; ``blocks.0.conv.weight`` and
    ``dense.0.weight`` in a convolutional one built by :meth:`conv`) -- the names of checkpoints and of
    rule state keyed by parameter. :attr:`layers` lists every layer, group after group.
    """

    def __init__(self, stages: Mapping[str, Sequence[SpikingLayer]], readout: Readout) -> None:
        super().__init__()
        self.stages = tuple(stages)
        for name, group in stages.items():
            # registered directly: a group may be called "layers", as the property below
            self._modules[name] = nn.ModuleList(group)
        self.readout = readout
        self.n_classes = readout.linear.out_features
        if not self.layers:
            raise ValueError("a network needs at least one spiking layer")

    @classmethod
    def mlp(
        cls,
        n_in: int,
        hidden: tuple[int, ...],
        n_classes: int,
        *,
        recurrent: bool,
        params: LIFParams,
        kappa: float,
    ) -> Network:
        """Dense LIF layers (each optionally recurrent) on inputs flattened to ``n_in``, and the readout."""
        sizes = (n_in, *hidden)
        layers = [SpikingLinear(a, b, recurrent, params) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        return cls({"layers": layers}, Readout(hidden[-1], n_classes, kappa))

    @classmethod
    def conv(
        cls,
        in_shape: tuple[int, int, int],
        channels: tuple[int, ...],
        kernel: int,
        pool: int,
        hidden: tuple[int, ...],
        n_classes: int,
        *,
        recurrent: bool,
        params: LIFParams,
        kappa: float,
    ) -> Network:
        """LIF convolution blocks (:class:`~spikebench.nn.conv.SpikingConv`) on inputs [C, H, W] per
        step, then dense LIF layers (each optionally recurrent) on the last block's flattened output,
        and the readout. ``Rollout.spikes`` holds for block l its neurons' spikes
        [T, B, C_l * H_l * W_l] (channel-major, before pooling)."""
        blocks, shape = [], in_shape
        for c in channels:
            block = SpikingConv(shape, c, kernel, pool, params)
            blocks.append(block)
            shape = block.out_shape
        sizes = (math.prod(shape), *hidden)
        dense = [SpikingLinear(a, b, recurrent, params) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        return cls({"blocks": blocks, "dense": dense}, Readout(sizes[-1], n_classes, kappa))

    @property
    def layers(self) -> list[SpikingLayer]:
        """Every spiking layer, in order."""
        return [layer for name in self.stages for layer in self._modules[name]]  # type: ignore[union-attr]

    @property
    def in_shape(self) -> tuple[int, ...]:
        """The input of one step: [D] (a dense first layer flattens what it gets) or [C, H, W]."""
        return self.layers[0].in_shape

    @property
    def n_in(self) -> int:
        return math.prod(self.in_shape)

    def zero_state(self, batch: int, like: Tensor) -> NetState:
        y = torch.zeros(batch, self.n_classes, device=like.device, dtype=like.dtype)
        return NetState([layer.zero_state(batch, like) for layer in self.layers], y)

    def forward(self, x_seq: Tensor, state: NetState | None = None) -> Rollout:
        """Run all T steps: ``x_seq`` [T, B, ...] -> :class:`Rollout`.

        ``state``: continue from it (constant: no gradient flows into it)."""
        h, spikes, finals = x_seq, [], []
        for i, layer in enumerate(self.layers):
            z, s = layer(h, None if state is None else state.layers[i])
            h = layer.output(z)
            spikes.append(z)
            finals.append(s)
        h = h.reshape(h.shape[0], h.shape[1], -1)
        y = self.readout(h, None if state is None else state.y)
        return Rollout(spikes, y, NetState(finals, y[-1].detach()))

    def advance(self, x: Tensor, state: NetState, first_current: Tensor | None = None) -> NetStep:
        """One step for online rules: ``x`` [B, ...] -> :class:`NetStep`.

        ``first_current``: the first layer's feed-forward current [B, N_1], if the caller already has
        it (``layers[0].current(x)``): online rules compute it once per sequence while the input stays
        the same (:func:`spikebench.rules.online.online_steps`)."""
        h, spikes, outputs, pool, states = x, [], [], [], []
        for i, (layer, s) in enumerate(zip(self.layers, state.layers, strict=True)):
            z, s = layer.step(layer.as_input(h), s, first_current if i == 0 else None)
            h, ctx = layer.step_output(z)
            spikes.append(z)
            outputs.append(h)
            pool.append(ctx)
            states.append(s)
        y = self.readout.step(h, state.y)
        return NetStep(spikes, outputs, pool, y, NetState(states, y))

    def step(
        self, x: Tensor, state: NetState, first_current: Tensor | None = None
    ) -> tuple[list[Tensor], Tensor, NetState]:
        """:meth:`advance`, as (spikes per layer, readout [B, C], state)."""
        out = self.advance(x, state, first_current)
        return out.spikes, out.y, out.state

    @contextmanager
    def backward_weights(self, weights: Mapping[str, Tensor]) -> Iterator[None]:
        """Within the block, every weight matrix or kernel named in ``weights`` (by parameter name, e.g.
        ``layers.0.weight``, ``layers.0.rec``, ``readout.linear.weight``) sends gradients back to its
        input through the tensor given for it in place of itself (the layers' backward weights,
        :mod:`spikebench.nn.layers`), in autograd and in the layers' :meth:`vjp_input
        <spikebench.nn.layers.SpikingLayer.vjp_input>`. The tensors are read when a forward pass uses
        them: a graph built within the block keeps them."""
        names = {id(p): n for n, p in self.named_parameters()}
        slots = [
            (module, slot, names[id(p)], p)
            for module in (*self.layers, self.readout)
            for slot, p in module.backward_slots().items()
        ]
        known = {name: p for _, _, name, p in slots}
        for name, w in weights.items():
            if name not in known:
                raise ValueError(f"{name!r} is not a weight that can take backward weights: {sorted(known)}")
            if w.shape != known[name].shape:
                raise ValueError(
                    f"backward weights for {name!r} have shape {tuple(w.shape)}, not {tuple(known[name].shape)}"
                )
        before = [getattr(module, slot) for module, slot, _, _ in slots]
        for module, slot, name, _ in slots:
            setattr(module, slot, weights.get(name))
        try:
            yield
        finally:
            for (module, slot, _, _), old in zip(slots, before, strict=True):
                setattr(module, slot, old)
