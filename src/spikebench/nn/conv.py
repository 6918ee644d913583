"""Convolutional spiking networks: LIF convolution blocks, then dense LIF layers and the leaky readout.

A convolution block l has ``C_l`` feature maps of LIF neurons on an ``H_l x W_l`` grid. Its input
current at step t is a 2-D convolution of the previous block's output (zero "same" padding, odd
kernel), and the neurons follow the same LIF dynamics as every other layer
(:mod:`spikebench.dynamics.lif`):

    v[t] = alpha v[t-1] + (K_l * x[t]) + b_l - theta z[t-1],    z[t] = H(v[t] - theta)

(Fang et al. 2021 and Wu et al. 2019 use this block for spiking CNNs trained with surrogate BPTT).
The block's output is its spikes max-pooled over ``pool x pool`` windows, still in {0, 1}. The dense
layers (:class:`~spikebench.nn.network.SpikingLinear`, recurrent when asked) take the flattened output
of the last block. :class:`ConvNetwork` has the interface of :class:`~spikebench.nn.network.Network`,
so rules that only call ``forward``/``step``/``zero_state`` work unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from spikebench.dynamics import lif
from spikebench.dynamics.lif import LIFParams, LIFState
from spikebench.nn.network import (
    LayerFeedback,
    NetState,
    NetworkFeedback,
    Readout,
    Rollout,
    SpikingLinear,
    conv2d,
    is_time_constant,
)


class SpikingConv(nn.Module):
    """A LIF convolution block: ``in_shape`` (C, H, W) -> ``channels`` maps of H x W LIF neurons,
    max-pooled by ``pool`` to ``out_shape`` (channels, H // pool, W // pool).

    ``conv.weight`` is [channels, C, kernel, kernel], ``conv.bias`` [channels].
    """

    def __init__(
        self, in_shape: tuple[int, int, int], channels: int, kernel: int, pool: int, params: LIFParams
    ) -> None:
        super().__init__()
        c, h, w = in_shape
        self.in_shape, self.params, self.pool = in_shape, params, pool
        self.conv = nn.Conv2d(c, channels, kernel, padding=kernel // 2)
        self.map_shape = (channels, h, w)
        self.out_shape = (channels, h // pool, w // pool)
        self.n_neurons = channels * h * w

    def currents(self, x_seq: Tensor, feedback: Tensor | None = None) -> Tensor:
        """Input currents for all steps, [T, B, C, H, W] -> [T, B, N] (N = channels * H * W), as one
        batched convolution over [T * B, C, H, W]; computed once when the input is time-constant.

        ``feedback``: a kernel of the shape of ``conv.weight`` used in place of it when the gradient is
        sent back to ``x_seq`` (:func:`~spikebench.nn.network.conv2d`; feedback alignment)."""
        T, B = x_seq.shape[:2]
        w, b, pad = self.conv.weight, self.conv.bias, self.conv.padding
        if is_time_constant(x_seq):
            once = conv2d(x_seq[0], w, b, pad, feedback).reshape(B, -1)
            return once.unsqueeze(0).expand(T, B, self.n_neurons)
        frames = x_seq.reshape(T * B, *self.in_shape)
        return conv2d(frames, w, b, pad, feedback).reshape(T, B, self.n_neurons)

    def pooled(self, z: Tensor) -> Tensor:
        """Spikes [..., N] -> block output [..., channels, H // pool, W // pool] (max pooling)."""
        lead = z.shape[:-1]
        maps = z.reshape(-1, *self.map_shape)
        if self.pool > 1:
            maps = nn.functional.max_pool2d(maps, self.pool)
        return maps.reshape(*lead, *self.out_shape)

    def forward(
        self, x_seq: Tensor, state: LIFState | None = None, feedback: LayerFeedback | None = None
    ) -> tuple[Tensor, Tensor, LIFState]:
        """All T steps: ``x_seq`` [T, B, C, H, W] -> spikes [T, B, N], pooled output [T, B, *out_shape]
        and the final state. ``feedback``: its ``weight``, a fixed kernel used in place of
        ``conv.weight`` in the backward pass (feedback alignment; a block has no recurrent weights)."""
        kernel = None if feedback is None else feedback.weight
        z, final = lif.scan(self.params, self.currents(x_seq, kernel), None, state)
        return z, self.pooled(z), final

    def current(self, x: Tensor) -> Tensor:
        """Input current of one step's input maps ``x`` [B, C, H, W]: the convolution, flattened [B, N]."""
        return self.conv(x).reshape(x.shape[0], -1)

    def step(
        self, x: Tensor, state: LIFState, current: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None, LIFState]:
        """One step: ``x`` [B, C, H, W] -> spikes [B, N], pooled output [B, *out_shape], the argmax
        indices of the max pooling (None when ``pool`` is 1; what online rules need to send a gradient
        back through the pooling, with ``max_unpool2d``) and the new state.

        ``current``: the convolution of ``x`` [B, N] if the caller already has it (:meth:`current`);
        ``x`` is then not used. It is not modified."""
        z, new = lif.step(self.params, state, self.current(x) if current is None else current)
        if self.pool == 1:
            return z, z.reshape(-1, *self.out_shape), None, new
        out, idx = nn.functional.max_pool2d(z.reshape(-1, *self.map_shape), self.pool, return_indices=True)
        return z, out, idx, new

    def zero_state(self, batch: int, like: Tensor) -> LIFState:
        return lif.zero_state(batch, self.n_neurons, device=like.device, dtype=like.dtype)


class ConvNetwork(nn.Module):
    """LIF convolution blocks, dense LIF layers (each optionally recurrent) and a leaky readout.

    Input ``x_seq`` [T, B, C, H, W]. ``Rollout.spikes`` holds one tensor per spiking layer: for block l
    its neurons' spikes [T, B, C_l * H_l * W_l] (channel-major, before pooling), then [T, B, N] per
    dense layer. ``readout`` is [T, B, classes]. ``layers`` lists the blocks, then the dense layers.
    """

    def __init__(
        self,
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
    ) -> None:
        super().__init__()
        blocks, shape = [], in_shape
        for c in channels:
            block = SpikingConv(shape, c, kernel, pool, params)
            blocks.append(block)
            shape = block.out_shape
        self.blocks = nn.ModuleList(blocks)
        sizes = (math.prod(shape), *hidden)
        self.dense = nn.ModuleList(
            SpikingLinear(a, b, recurrent, params) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.readout = Readout(sizes[-1], n_classes, kappa)
        self.in_shape, self.n_classes = in_shape, n_classes

    @property
    def layers(self) -> list[nn.Module]:
        """Every spiking layer in order: the convolution blocks, then the dense layers."""
        return [*self.blocks, *self.dense]

    def zero_state(self, batch: int, like: Tensor) -> NetState:
        y = torch.zeros(batch, self.n_classes, device=like.device, dtype=like.dtype)
        return NetState([layer.zero_state(batch, like) for layer in self.layers], y)

    def forward(
        self, x_seq: Tensor, state: NetState | None = None, feedback: NetworkFeedback | None = None
    ) -> Rollout:
        """Run all T steps: ``x_seq`` [T, B, C, H, W] -> :class:`~spikebench.nn.network.Rollout`.

        ``state``: continue from it (a constant: no gradient flows into it). ``feedback``: fixed kernels
        and matrices that replace the forward weights in the backward pass (feedback alignment), one
        :class:`~spikebench.nn.network.LayerFeedback` per entry of :attr:`layers`.
        """
        fbs = [None] * len(self.layers) if feedback is None else feedback.layers
        h, spikes, finals = x_seq, [], []
        for i, block in enumerate(self.blocks):
            z, h, s = block(h, None if state is None else state.layers[i], fbs[i])
            spikes.append(z)
            finals.append(s)
        h = h.reshape(h.shape[0], h.shape[1], -1)
        for i, layer in enumerate(self.dense, start=len(self.blocks)):
            h, s = layer(h, None if state is None else state.layers[i], fbs[i])
            spikes.append(h)
            finals.append(s)
        readout_fb = None if feedback is None else feedback.readout
        y = self.readout(h, None if state is None else state.y, readout_fb)
        return Rollout(spikes, y, NetState(finals, y[-1].detach()))

    def step(
        self, x: Tensor, state: NetState, first_current: Tensor | None = None
    ) -> tuple[list[Tensor], Tensor, NetState]:
        """One step for online use: ``x`` [B, C, H, W] -> (spikes per layer, readout [B, C], state).

        ``first_current``: the first block's convolution of ``x`` [B, N_1] (``layers[0].current(x)``)
        if the caller already has it, as in :meth:`spikebench.nn.network.Network.step`."""
        spikes, _, _, y, new = self.step_outputs(x, state, first_current)
        return spikes, y, new

    def step_outputs(
        self, x: Tensor, state: NetState, first_current: Tensor | None = None
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor | None], Tensor, NetState]:
        """:meth:`step`, also returning every layer's output flattened [B, D_l] (a block's pooled spikes,
        a dense layer's spikes) and every layer's max-pooling argmax indices (None for dense layers and
        ``pool = 1``): (spikes, outputs, indices, readout, state)."""
        h, spikes, outputs, indices, states = x, [], [], [], []
        for i, (block, s) in enumerate(zip(self.blocks, state.layers, strict=False)):
            z, h, idx, s = block.step(h, s, first_current if i == 0 else None)
            spikes.append(z)
            outputs.append(h.reshape(h.shape[0], -1))
            indices.append(idx)
            states.append(s)
        h = outputs[-1]
        for layer, s in zip(self.dense, state.layers[len(self.blocks) :], strict=True):
            h, s = layer.step(h, s)
            spikes.append(h)
            outputs.append(h)
            indices.append(None)
            states.append(s)
        y = self.readout.step(h, state.y)
        return spikes, outputs, indices, y, NetState(states, y)
