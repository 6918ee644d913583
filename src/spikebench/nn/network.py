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
from spikebench.precision import as_state, full_precision


class _FeedbackLinear(torch.autograd.Function):
    """``x W^T + b`` whose backward pass to ``x`` uses ``feedback`` in place of ``W`` (weight grads exact)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, feedback: Tensor):  # type: ignore[override]
        ctx.save_for_backward(x, feedback)
        ctx.has_bias = bias is not None
        return nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        x, feedback = ctx.saved_tensors
        g2 = g.reshape(-1, g.shape[-1])
        gw = g2.T @ x.reshape(-1, x.shape[-1])
        gb = g2.sum(0) if ctx.has_bias else None
        # not needed for the first layer in training: skip the product
        gx = g @ feedback if ctx.needs_input_grad[0] else None
        return gx, gw, gb, None


def linear(x: Tensor, weight: Tensor, bias: Tensor | None, feedback: Tensor | None = None) -> Tensor:
    """``x W^T + b``; with ``feedback`` (shape of ``W``), the gradient sent back to ``x`` is ``g B``
    instead of ``g W`` -- feedback alignment (Lillicrap et al. 2016). Weight gradients are unchanged."""
    if feedback is None:
        return nn.functional.linear(x, weight, bias)
    return _FeedbackLinear.apply(x, weight, bias, feedback)


Padding = int | tuple[int, ...]  # as conv2d takes it (an nn.Conv2d's .padding)


class _FeedbackConv2d(torch.autograd.Function):
    """``conv2d(x, W, b)`` (stride 1, zero ``padding``) whose backward pass to ``x`` is the transposed
    convolution with ``feedback`` in place of ``W`` (weight and bias grads exact): the convolutional
    counterpart of :class:`_FeedbackLinear`."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, feedback: Tensor, padding: Padding):  # type: ignore[override]
        ctx.save_for_backward(x, feedback)
        ctx.weight_shape, ctx.padding, ctx.has_bias = weight.shape, padding, bias is not None
        return nn.functional.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        x, feedback = ctx.saved_tensors
        # a bf16 forward product (autocast) hands back a bf16 gradient: the products in its precision
        x, feedback = x.to(g.dtype), feedback.to(g.dtype)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:  # not needed for the first layer in training: skip the transposed conv
            gx = torch.nn.grad.conv2d_input(x.shape, feedback, g, padding=ctx.padding)
        if ctx.needs_input_grad[1]:
            gw = torch.nn.grad.conv2d_weight(x, ctx.weight_shape, g, padding=ctx.padding)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.sum((0, 2, 3))
        return gx, gw, gb, None, None


def conv2d(
    x: Tensor, weight: Tensor, bias: Tensor | None, padding: Padding, feedback: Tensor | None = None
) -> Tensor:
    """``conv2d(x, W, b)`` with stride 1 and zero ``padding`` (``x`` [B, C, H, W]); with ``feedback`` (a
    kernel of the shape of ``W``), the gradient sent back to ``x`` is the transposed convolution of the
    output gradient with ``B`` instead of ``W`` -- feedback alignment for convolutions, as :func:`linear`.
    Weight and bias gradients are unchanged."""
    if feedback is None:
        return nn.functional.conv2d(x, weight, bias, padding=padding)
    return _FeedbackConv2d.apply(x, weight, bias, feedback, padding)


@dataclass
class LayerFeedback:
    """Fixed matrices used in place of a layer's forward weights in the backward pass (shapes of
    ``weight`` and ``rec``; ``rec`` None for feed-forward layers). For a convolution block
    (:class:`~spikebench.nn.conv.SpikingConv`) ``weight`` is a kernel of the shape of ``conv.weight``
    and ``rec`` is None."""

    weight: Tensor
    rec: Tensor | None = None


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

    def currents(self, x_seq: Tensor, feedback: Tensor | None = None) -> Tensor:
        """Feed-forward currents for all steps, [T, B, D] -> [T, B, N], as one matrix product.

        When the input is the same at every step (``direct`` encoding), it is computed once.
        ``feedback``: see :func:`linear`.
        """
        if is_time_constant(x_seq):
            once = linear(x_seq[0], self.weight, self.bias, feedback)
            return once.unsqueeze(0).expand(x_seq.shape[0], *once.shape)
        return linear(x_seq, self.weight, self.bias, feedback)

    def forward(
        self, x_seq: Tensor, state: LIFState | None = None, feedback: LayerFeedback | None = None
    ) -> tuple[Tensor, LIFState]:
        """All T steps: spikes [T, B, N] and the final state. ``feedback``: fixed matrices used in place
        of ``weight`` and ``rec`` in the backward pass (feedback alignment)."""
        if feedback is None:
            return lif.scan(self.params, self.currents(x_seq), self.rec, state)
        return lif.scan(self.params, self.currents(x_seq, feedback.weight), self.rec, state, feedback.rec)

    def current(self, x: Tensor) -> Tensor:
        """Feed-forward current ``W x + b`` of one step's input ``x`` [B, D] -> [B, N]."""
        return nn.functional.linear(x, self.weight, self.bias)

    def step(self, x: Tensor, state: LIFState, current: Tensor | None = None) -> tuple[Tensor, LIFState]:
        """One step: ``x`` [B, D] -> spikes [B, N] and the new state (autograd as the caller allows).

        ``current``: the feed-forward current ``W x + b`` [B, N] if the caller already has it
        (:meth:`current`; e.g. computed once for an input that is the same at every step); ``x`` is
        then not used. It is not modified."""
        c = self.current(x) if current is None else current
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

    def forward(self, z_seq: Tensor, y0: Tensor | None = None, feedback: Tensor | None = None) -> Tensor:
        """[T, B, N] spikes -> [T, B, C] readout, for all steps at once (``feedback``: see :func:`linear`)."""
        T = z_seq.shape[0]
        # the projection may be a bf16 product; the integration is the readout's state: float32
        u = as_state(linear(z_seq, self.linear.weight, self.linear.bias, feedback))
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
class NetworkFeedback:
    """Feedback matrices for every hidden layer (``net.layers`` order: a
    :class:`~spikebench.nn.conv.ConvNetwork`'s blocks, then its dense layers) and for the readout
    ([C, N_L], the readout's shape)."""

    layers: list[LayerFeedback]
    readout: Tensor


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

    def forward(
        self, x_seq: Tensor, state: NetState | None = None, feedback: NetworkFeedback | None = None
    ) -> Rollout:
        """Run all T steps: ``x_seq`` [T, B, ...] -> :class:`Rollout`.

        ``state``: continue from it (constant: no gradient flows into it). ``feedback``: fixed matrices
        that replace the forward weights in the backward pass (feedback alignment).
        """
        h = self.flatten(x_seq)
        spikes, finals = [], []
        for i, layer in enumerate(self.layers):
            fb = None if feedback is None else feedback.layers[i]
            h, s = layer(h, None if state is None else state.layers[i], fb)
            spikes.append(h)
            finals.append(s)
        readout_fb = None if feedback is None else feedback.readout
        y = self.readout(h, None if state is None else state.y, readout_fb)
        return Rollout(spikes, y, NetState(finals, y[-1].detach()))

    def step(
        self, x: Tensor, state: NetState, first_current: Tensor | None = None
    ) -> tuple[list[Tensor], Tensor, NetState]:
        """One step for online rules: ``x`` [B, ...] -> (spikes per layer, readout [B, C], state).

        ``first_current``: the first layer's feed-forward current ``W_1 x + b_1`` [B, N_1], if the caller
        already has it (``layers[0].current(x)``): online rules compute it once per sequence while the
        input stays the same (:func:`spikebench.rules.online.online_steps`)."""
        h = x.reshape(x.shape[0], -1)
        spikes, states = [], []
        for i, (layer, s) in enumerate(zip(self.layers, state.layers, strict=True)):
            h, s = layer.step(h, s, first_current if i == 0 else None)
            spikes.append(h)
            states.append(s)
        y = self.readout.step(h, state.y)
        return spikes, y, NetState(states, y)

    def step_outputs(
        self, x: Tensor, state: NetState, first_current: Tensor | None = None
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor | None], Tensor, NetState]:
        """:meth:`step` in the form of :meth:`spikebench.nn.conv.ConvNetwork.step_outputs`: (spikes,
        outputs -- the spikes again --, pooling indices -- None for every layer --, readout, state)."""
        spikes, y, new = self.step(x, state, first_current)
        return spikes, spikes, [None] * len(spikes), y, new
