"""The layer protocol: what every spiking layer provides, to the network and to the learning rules.

A spiking layer (:class:`SpikingLayer`: :class:`~spikebench.nn.network.SpikingLinear`,
:class:`~spikebench.nn.conv.SpikingConv`) is ``n_neurons`` LIF neurons. Its input ``x`` (one step:
[B, *in_shape]) reaches them through a feed-forward synaptic product ``I = W x + b`` (a matrix
product, or a convolution), plus ``V z[t-1]`` when the layer is recurrent (``rec``, None otherwise).
It passes on its spikes, or their max pooling (one step: [B, *out_shape], flattened to
[B, n_outputs] between layers).

Besides running (``forward`` over all steps, ``step`` for one), a layer provides by hand the
vector-Jacobian products of its synaptic product, which the online rules (:mod:`spikebench.rules`)
compute without autograd: the gradient sent to the input (:meth:`SpikingLayer.vjp_input`), the weight
and bias gradients added to ``.grad`` (:meth:`SpikingLayer.add_weight_grad`,
:meth:`SpikingLayer.add_bias_grad`) and the gradient of the spikes given that of the output
(:meth:`SpikingLayer.vjp_output`, through max pooling). A rule asks the layer; it never looks at
which kind of layer it is.

Backward weights: every weight matrix or kernel may be paired with a tensor of its shape that the
backward pass uses in place of it where a gradient is sent back to the input (``backward_weight``,
and ``backward_rec`` for the recurrent weights, non-persistent buffers, None unless set; weight
gradients stay exact). :meth:`~spikebench.nn.network.Network.backward_weights` sets them for the
duration of a forward pass (feedback alignment, ``rules/fa.py``). The products below
(:class:`Dense`, :class:`Conv`; :func:`linear`, :func:`conv2d`) are the one place where this
happens, in autograd (:class:`_Synapse`) and in :meth:`SpikingLayer.vjp_input` alike.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from spikebench.dynamics import lif
from spikebench.dynamics.lif import LIFParams, LIFState
from spikebench.precision import add_mm_, as_state

Padding = int | tuple[int, ...]  # as conv2d takes it (an nn.Conv2d's .padding)


def is_time_constant(x_seq: Tensor) -> bool:
    """True when ``x_seq`` [T, ...] is one frame broadcast over time (``x.expand(T, ...)``)."""
    return x_seq.shape[0] == 1 or x_seq.stride(0) == 0


def add_grad(p: Tensor, g: Tensor) -> None:
    """``p.grad += g`` (``p.grad = g`` when there is none yet); ``g`` must be a fresh tensor (a bf16
    product result is taken into the parameter's float32)."""
    if p.grad is None:
        p.grad = g if g.dtype == p.dtype else g.to(p.dtype)
    else:
        p.grad.add_(g)


def add_outer(p: Tensor, delta: Tensor, pre: Tensor) -> None:
    """``p.grad += delta^T pre``, summed over the batch: ``delta`` [B, N], ``pre`` [B, D], ``p`` [N, D]."""
    if p.grad is None:
        p.grad = as_state(delta.T @ pre)
    else:
        add_mm_(p.grad, delta.T, pre)


# -- synaptic products and their vector-Jacobian products ------------------------------------------


class Dense:
    """``x W^T + b``: ``x`` [..., D], ``W`` [N, D] -> [..., N]."""

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return nn.functional.linear(x, weight, bias)

    def vjp_input(self, g: Tensor, weight: Tensor, x_shape: torch.Size) -> Tensor:
        """``g W`` [..., D] for ``g`` [..., N]."""
        return g @ weight

    def vjp_weight(self, g: Tensor, x: Tensor, weight_shape: torch.Size) -> Tensor:
        """``sum g^T x`` over every leading axis, [N, D]."""
        return g.reshape(-1, g.shape[-1]).T @ x.reshape(-1, x.shape[-1])

    def vjp_bias(self, g: Tensor) -> Tensor:
        return g.reshape(-1, g.shape[-1]).sum(0)


class Conv:
    """``conv2d(x, W, b)``, stride 1 and zero ``padding``: ``x`` [M, C, H, W] -> [M, C_out, H', W']."""

    def __init__(self, padding: Padding) -> None:
        self.padding = padding

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return nn.functional.conv2d(x, weight, bias, padding=self.padding)

    def vjp_input(self, g: Tensor, weight: Tensor, x_shape: torch.Size) -> Tensor:
        """The transposed convolution of ``g`` with ``weight`` into the input's shape ``x_shape``."""
        return torch.nn.grad.conv2d_input(x_shape, weight, g, padding=self.padding)

    def vjp_weight(self, g: Tensor, x: Tensor, weight_shape: torch.Size) -> Tensor:
        """The correlation of ``g`` with the input maps ``x``, summed over the batch and positions."""
        return torch.nn.grad.conv2d_weight(x, weight_shape, g, padding=self.padding)

    def vjp_bias(self, g: Tensor) -> Tensor:
        return g.sum((0, 2, 3))


DENSE = Dense()


class _Synapse(torch.autograd.Function):
    """``op.forward(x, W, b)`` whose backward pass to ``x`` uses ``backward`` in place of ``W``; the
    weight and bias gradients are exact."""

    @staticmethod
    def forward(ctx, op: Dense | Conv, x: Tensor, weight: Tensor, bias: Tensor | None, backward: Tensor):  # type: ignore[override]
        ctx.save_for_backward(x, backward)
        ctx.op, ctx.weight_shape, ctx.has_bias = op, weight.shape, bias is not None
        return op.forward(x, weight, bias)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        x, backward = ctx.saved_tensors
        # a bf16 forward product (autocast) hands back a bf16 gradient: the products in its precision
        x, backward = x.to(g.dtype), backward.to(g.dtype)
        op = ctx.op
        gx = gw = gb = None
        if ctx.needs_input_grad[1]:  # not needed for the first layer in training: skip the product
            gx = op.vjp_input(g, backward, x.shape)
        if ctx.needs_input_grad[2]:
            gw = op.vjp_weight(g, x, ctx.weight_shape)
        if ctx.has_bias and ctx.needs_input_grad[3]:
            gb = op.vjp_bias(g)
        return None, gx, gw, gb, None


def synapse(
    op: Dense | Conv, x: Tensor, weight: Tensor, bias: Tensor | None, backward: Tensor | None
) -> Tensor:
    """``op.forward(x, W, b)``; with ``backward`` (a tensor of the shape of ``W``), the gradient sent
    back to ``x`` is computed with ``backward`` in place of ``W``. Weight and bias gradients are
    unchanged."""
    if backward is None:
        return op.forward(x, weight, bias)
    return _Synapse.apply(op, x, weight, bias, backward)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None, backward: Tensor | None = None) -> Tensor:
    """``x W^T + b``; with ``backward`` (shape of ``W``), the gradient sent back to ``x`` is ``g B``
    instead of ``g W`` -- feedback alignment (Lillicrap et al. 2016). Weight gradients are unchanged."""
    return synapse(DENSE, x, weight, bias, backward)


def conv2d(
    x: Tensor, weight: Tensor, bias: Tensor | None, padding: Padding, backward: Tensor | None = None
) -> Tensor:
    """``conv2d(x, W, b)`` with stride 1 and zero ``padding`` (``x`` [B, C, H, W]); with ``backward`` (a
    kernel of the shape of ``W``), the gradient sent back to ``x`` is the transposed convolution of the
    output gradient with ``B`` instead of ``W`` -- feedback alignment for convolutions, as :func:`linear`.
    Weight and bias gradients are unchanged."""
    return synapse(Conv(padding), x, weight, bias, backward)


def dense_counts(weight: Tensor, x: Tensor) -> tuple[float, int]:
    """(multiply-adds of ``x W^T`` whose input and weight are both nonzero, summed over ``x`` [..., D];
    all multiply-adds of one sample and step)."""
    fanout = (weight != 0).sum(0).to(torch.float64)  # [D]
    nonzero = (x != 0).to(torch.float64).reshape(-1, x.shape[-1]).sum(0)  # [D]
    return float(nonzero @ fanout), weight.numel()


# -- the layers ----------------------------------------------------------------------------------


class SpikingLayer(nn.Module):
    """What every spiking layer provides (module docstring). Subclasses set ``params``, ``in_shape``,
    ``out_shape``, ``n_neurons``, ``weight``, ``bias``, ``rec`` and ``backward_rec`` (None without
    recurrent weights) and define the methods that raise here."""

    kind: ClassVar[str]  # "dense" or "conv", as records name it
    params: LIFParams
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    n_neurons: int
    weight: Tensor
    bias: Tensor
    rec: Tensor | None
    backward_rec: Tensor | None
    backward_weight: Tensor | None

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("backward_weight", None, persistent=False)

    @property
    def n_outputs(self) -> int:
        """Size of the layer's flattened output (``n_neurons``, or the pooled maps)."""
        return math.prod(self.out_shape)

    def backward_slots(self) -> dict[str, Tensor]:
        """The backward-weight buffers of the layer and the weights each stands in for."""
        return {"backward_weight": self.weight}

    # -- running ---------------------------------------------------------------------------------

    def product(self, x: Tensor) -> Tensor:
        """Feed-forward currents ``W x + b`` of inputs [..., *in_shape] -> [..., N], with the backward
        weight in the backward pass when it is set."""
        raise NotImplementedError

    def currents(self, x_seq: Tensor) -> Tensor:
        """Feed-forward currents for all steps, [T, B, *in_shape] -> [T, B, N], as one product.

        When the input is the same at every step (``direct`` encoding), it is computed once, and a bf16
        product is taken into float32 once (broadcast over T, the scan reads it without a per-step
        conversion; its gradient is summed over T in float32 and rounded to bf16 once)."""
        if is_time_constant(x_seq):
            once = as_state(self.product(x_seq[0]))
            return once.unsqueeze(0).expand(x_seq.shape[0], *once.shape)
        return self.product(x_seq)

    def output(self, z: Tensor) -> Tensor:
        """What the layer passes on, from its spikes [..., N]: [..., *out_shape]."""
        raise NotImplementedError

    def forward(self, x_seq: Tensor, state: LIFState | None = None) -> tuple[Tensor, LIFState]:
        """All T steps: ``x_seq`` [T, B, *in_shape] -> spikes [T, B, N] and the final state (what the
        layer passes on is :meth:`output` of the spikes)."""
        return lif.scan(self.params, self.currents(x_seq), self.rec, state, self.backward_rec)

    def current(self, x: Tensor) -> Tensor:
        """Feed-forward current of one step's input ``x`` [B, *in_shape] -> [B, N]."""
        raise NotImplementedError

    def step(self, x: Tensor, state: LIFState, current: Tensor | None = None) -> tuple[Tensor, LIFState]:
        """One step: ``x`` [B, *in_shape] -> spikes [B, N] and the new state (autograd as the caller
        allows).

        ``current``: the feed-forward current [B, N] if the caller already has it (:meth:`current`;
        e.g. computed once for an input that is the same at every step); ``x`` is then not used. It is
        not modified."""
        c = self.current(x) if current is None else current
        if self.rec is not None:
            c = c + state.z @ self.rec.T
        return lif.step(self.params, state, c)

    def step_output(self, z: Tensor) -> tuple[Tensor, Tensor | None]:
        """One step's output, flattened [B, n_outputs], from its spikes [B, N], and what
        :meth:`vjp_output` needs to send a gradient back through it (max pooling's argmax indices;
        None when there is nothing to remember)."""
        raise NotImplementedError

    def as_input(self, h: Tensor) -> Tensor:
        """``h`` [B, ...] shaped as the layer consumes it, [B, *in_shape]."""
        return h.reshape(h.shape[0], *self.in_shape)

    def zero_state(self, batch: int, like: Tensor) -> LIFState:
        return lif.zero_state(batch, self.n_neurons, device=like.device, dtype=like.dtype)

    # -- vector-Jacobian products by hand (no autograd) ---------------------------------------------

    def vjp_input(self, delta: Tensor) -> Tensor:
        """Gradient w.r.t. the input of ``sum delta * I`` for the feed-forward current ``I``: ``delta``
        [..., N] -> [..., *in_shape] (``delta W``; the transposed convolution for a convolution), with
        the backward weight in place of ``W`` when it is set."""
        raise NotImplementedError

    def add_weight_grad(self, delta: Tensor, x_hat: Tensor) -> None:
        """``dW += delta^T x_hat`` summed over the batch (and the positions of a convolution):
        ``delta`` [B, N], ``x_hat`` [B, *in_shape] (the input or its presynaptic trace)."""
        raise NotImplementedError

    def add_bias_grad(self, delta: Tensor, a: float) -> None:
        """``db += a sum delta`` over the batch (and the positions of a convolution), ``delta`` [B, N]."""
        raise NotImplementedError

    def vjp_output(self, g: Tensor, ctx: Tensor | None) -> Tensor:
        """Gradient w.r.t. the spikes [B, N] of ``g``, a gradient w.r.t. the output [B, ...]; ``ctx``:
        what :meth:`step_output` returned with that output."""
        raise NotImplementedError

    # -- counting ----------------------------------------------------------------------------------

    def synaptic_counts(self, x: Tensor) -> tuple[float, float]:
        """(multiply-adds of the feed-forward product whose input and weight are both nonzero, summed
        over the inputs ``x`` [T', B, ...]; all multiply-adds of one sample and step)."""
        raise NotImplementedError

    def _backward_or_weight(self) -> Tensor:
        return self.weight if self.backward_weight is None else self.backward_weight
