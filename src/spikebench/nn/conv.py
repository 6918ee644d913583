"""The LIF convolution block of convolutional spiking networks.

A convolution block l has ``C_l`` feature maps of LIF neurons on an ``H_l x W_l`` grid. Its input
current at step t is a 2-D convolution of the previous block's output (zero "same" padding, odd
kernel), and the neurons follow the same LIF dynamics as every other layer
(:mod:`spikebench.dynamics.lif`):

    v[t] = alpha v[t-1] + (K_l * x[t]) + b_l - theta z[t-1],    z[t] = H(v[t] - theta)

(Fang et al. 2021 and Wu et al. 2019 use this block for spiking CNNs trained with surrogate BPTT).
The block's output is its spikes max-pooled over ``pool x pool`` windows, still in {0, 1}. The dense
layers (:class:`~spikebench.nn.network.SpikingLinear`, recurrent when asked) take the flattened output
of the last block (:meth:`spikebench.nn.network.Network.conv`). A block follows the layer protocol of
:mod:`spikebench.nn.layers`: its neurons are its ``C_l * H * W`` LIF units before pooling, channel-major.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from spikebench.dynamics.lif import LIFParams
from spikebench.nn.layers import Conv, SpikingLayer, add_grad, synapse


class SpikingConv(SpikingLayer):
    """A LIF convolution block: ``in_shape`` (C, H, W) -> ``channels`` maps of H x W LIF neurons,
    max-pooled by ``pool`` to ``out_shape`` (channels, H // pool, W // pool).

    ``conv.weight`` (also ``weight``) is [channels, C, kernel, kernel], ``conv.bias`` (``bias``)
    [channels]. A block has no recurrent weights.
    """

    kind = "conv"
    rec: ClassVar[None] = None
    backward_rec: ClassVar[None] = None

    def __init__(
        self, in_shape: tuple[int, int, int], channels: int, kernel: int, pool: int, params: LIFParams
    ) -> None:
        super().__init__()
        c, h, w = in_shape
        self.in_shape, self.params, self.pool = in_shape, params, pool
        self.conv = nn.Conv2d(c, channels, kernel, padding=kernel // 2)
        self.op = Conv(self.conv.padding)
        self.map_shape = (channels, h, w)
        self.out_shape = (channels, h // pool, w // pool)
        self.n_neurons = channels * h * w

    @property
    def weight(self) -> Tensor:  # type: ignore[override]
        return self.conv.weight

    @property
    def bias(self) -> Tensor:  # type: ignore[override]
        return self.conv.bias

    def product(self, x: Tensor) -> Tensor:
        """Input currents of maps [..., C, H, W] -> [..., N] (N = channels * H * W), as one batched
        convolution over the leading axes flattened."""
        lead = x.shape[: -len(self.in_shape)]
        frames = x.reshape(-1, *self.in_shape)
        out = synapse(self.op, frames, self.conv.weight, self.conv.bias, self.backward_weight)
        return out.reshape(*lead, self.n_neurons)

    def output(self, z: Tensor) -> Tensor:
        """Spikes [..., N] -> block output [..., channels, H // pool, W // pool] (max pooling)."""
        lead = z.shape[:-1]
        maps = z.reshape(-1, *self.map_shape)
        if self.pool > 1:
            maps = nn.functional.max_pool2d(maps, self.pool)
        return maps.reshape(*lead, *self.out_shape)

    def current(self, x: Tensor) -> Tensor:
        """Input current of one step's input maps ``x`` [B, C, H, W]: the convolution, flattened [B, N]."""
        return self.conv(x).reshape(x.shape[0], -1)

    def step_output(self, z: Tensor) -> tuple[Tensor, Tensor | None]:
        """The pooled spikes, flattened [B, n_outputs], and the argmax indices of the max pooling (None
        when ``pool`` is 1), which :meth:`vjp_output` uses to send a gradient back through it."""
        if self.pool == 1:
            return z, None
        out, idx = nn.functional.max_pool2d(z.reshape(-1, *self.map_shape), self.pool, return_indices=True)
        return out.reshape(out.shape[0], -1), idx

    def vjp_input(self, delta: Tensor) -> Tensor:
        """The transposed convolution [..., C, H, W] of the maps of ``delta`` [..., N]."""
        lead = delta.shape[:-1]
        maps = delta.reshape(-1, *self.map_shape)
        g = self.op.vjp_input(maps, self._backward_or_weight(), (maps.shape[0], *self.in_shape))
        return g.reshape(*lead, *self.in_shape)

    def add_weight_grad(self, delta: Tensor, x_hat: Tensor) -> None:
        """``dK += conv2d_weight(x_hat, delta)``: the correlation of the maps of ``delta`` with the
        input maps ``x_hat``, summed over the batch and positions."""
        maps = delta.reshape(-1, *self.map_shape)
        add_grad(self.conv.weight, self.op.vjp_weight(maps, x_hat, self.conv.weight.shape))

    def add_bias_grad(self, delta: Tensor, a: float) -> None:
        """``db += a sum_{b,y,x} delta``."""
        add_grad(self.conv.bias, delta.reshape(-1, *self.map_shape).sum((0, 2, 3)).mul_(a))

    def vjp_output(self, g: Tensor, ctx: Tensor | None) -> Tensor:
        """Through the max pooling: each window's gradient to its argmax ``ctx``, zero elsewhere."""
        if ctx is not None:
            g = nn.functional.max_unpool2d(
                g.reshape(-1, *self.out_shape), ctx, self.pool, output_size=self.map_shape[1:]
            )
        return g.reshape(g.shape[0], -1)

    def synaptic_counts(self, x: Tensor) -> tuple[float, float]:
        """Every nonzero input times the nonzero kernel weights it meets (zero padding excluded), by a
        convolution of the nonzero pattern with the nonzero kernel."""
        mask = (self.conv.weight != 0).to(torch.float64)
        frames = (x != 0).to(torch.float64).reshape(-1, *self.in_shape)
        effective = self.op.forward(frames, mask, None).sum().item()
        ones = torch.ones(1, *self.in_shape, dtype=torch.float64, device=x.device)
        return effective, self.op.forward(ones, torch.ones_like(mask), None).sum().item()
