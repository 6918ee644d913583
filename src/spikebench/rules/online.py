"""What the online rules (``ottt``, ``eprop``, ``dfa``, ``decolle``) share.

An online rule runs the network one step at a time -- ``x[t] = enc.step(x, t)``, then
:meth:`~spikebench.nn.network.Network.step` -- without autograd: state, traces and gradients are plain
tensors, so no graph spans time steps and memory does not grow with T. At every step it sees
:class:`StepView` and

1. turns the output error into a learning signal ``L_l[t]`` [B, N_l] for every hidden layer l: what the
   rule uses in place of ``dL/dz_l[t]`` (:meth:`OnlineRule.signals`, the only thing that differs between
   ``dfa``, ``ottt`` and ``decolle``);
2. adds its weight gradients to ``p.grad`` (:meth:`OnlineRule.accumulate`);
3. adds the exact gradient of the readout (:class:`ReadoutTrace`).

Loss (DESIGN §3): the per-step cross-entropy of the readout averaged over time,
``L = (1/T) sum_t CE(y[t], label)`` (batch mean), whose gradient w.r.t. the readout at t is
``e[t] = (softmax(y[t]) - onehot) / (B T)``. ``rule.update``: ``step`` applies an optimiser step after
every time step (the weights change within the sequence, OTTT_O of Xiao et al. 2022); ``sequence``
accumulates over the sequence and applies once at the end (OTTT_A), so the gradient applied is the sum
of the per-step gradients.

Time-constant input (``direct`` encoding hands the same tensor to every step): :func:`online_steps`
computes the first layer's feed-forward current once per sequence, and :class:`TracedRule` (with
``rule.update=sequence``) the first layer's weight gradient once, from ``sum_t a[t] delta_1[t]``
(:class:`ConstantInput`); e-prop's :class:`~spikebench.rules.eprop.Eligibility` factorises it itself.
The results are those of the step-by-step computation up to float rounding.

Convolutional networks (``model.arch: conv``; ``ottt``, ``decolle`` and ``dfa``): a convolution
block's neurons are its ``C_l * H * W`` LIF units before pooling, so ``L_l[t]``, ``psi_l[t]`` and
``delta_l[t]`` are [B, C_l*H*W] (channel-major); its input (and input trace) is a stack of feature maps
[B, C, H, W]: the image, or the previous block's max-pooled spikes. What depends on the kind of layer
the layer computes itself (:mod:`spikebench.nn.layers`): the weight gradient ``sum_b delta^T x_hat``
(``add_weight_grad``; for a block ``conv2d_weight(x_hat, delta)``, its bias gradient ``delta`` summed
over batch *and space*), the input gradient ``delta W`` (``vjp_input``; for a block the transposed
convolution) and the gradient of the spikes given that of the output (``vjp_output``; through a block's
max pooling, to the argmax of each window, with the indices the forward pass's pooling returns). All
are plain tensor operations: no autograd anywhere.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from spikebench.config import RuleConfig
from spikebench.data.encoders import Encoding
from spikebench.nn.layers import SpikingLayer, add_grad, add_outer, is_time_constant
from spikebench.nn.network import Network, Readout
from spikebench.precision import as_state
from spikebench.rules.base import Apply, BatchResult, LearningRule, Option

UPDATES = ("step", "sequence")
#: when an online rule applies its update: after every step, or once per sequence
UPDATE = Option("update", "sequence", "apply the update after every step or once per sequence", UPDATES)


@dataclass
class StepView:
    """What one step ``t`` of the forward pass produced (all [B, .] and without autograd history).

    ``inputs[l]``: presynaptic input of hidden layer l at t, shaped as the layer takes it
    (``layer.as_input``: the flattened encoded input ``x[t]`` for l = 0 and the output of layer l-1
    above for a dense layer, feature maps [B, C, H, W] for a convolution block);
    ``prev[l]``: ``z_l[t-1]``, the input of the recurrent weights; ``spikes[l]``: ``z_l[t]`` [B, N_l];
    ``psi[l]``: the surrogate derivative ``S'(v_l[t] - theta)`` [B, N_l]; ``outputs[l]``: what layer l
    passes on, flattened [B, D_l] (``spikes[l]`` itself for a dense layer, the max-pooled spikes for a
    convolution block); ``pool[l]``: a block's max-pooling argmax indices (None for dense layers and
    ``pool = 1``); ``y``: the readout [B, C]; ``onehot``: the labels [B, C]; ``error``: ``e[t] = dL/dy[t]``
    [B, C]; ``loss``: ``CE(y[t], label)`` (batch mean, a 0-d tensor); ``same_input``: ``inputs[0]`` is
    the very tensor of step t-1, unchanged (the encoder fed the same frame again, e.g. ``direct``
    encoding of a static input; always False at t = 0).
    """

    t: int
    T: int
    inputs: list[Tensor]
    prev: list[Tensor]
    spikes: list[Tensor]
    psi: list[Tensor]
    y: Tensor
    onehot: Tensor
    error: Tensor
    loss: Tensor
    outputs: list[Tensor]
    pool: list[Tensor | None]
    same_input: bool = False


def step_error(logits: Tensor, onehot: Tensor, T: int) -> Tensor:
    """Gradient of ``(1/T) CE(logits, label)`` (batch mean) w.r.t. ``logits`` [B, C]:
    ``(softmax(logits) - onehot) / (B T)``."""
    return (torch.softmax(logits, 1) - onehot).div_(logits.shape[0] * T)


def tensor_version(x: Tensor) -> int | None:
    """``x``'s version counter (it grows with every in-place change); None for an inference tensor,
    which has none."""
    return None if x.is_inference() else x._version


def online_steps(net: Network, frames: Iterable[Tensor], labels: Tensor, T: int) -> Iterator[StepView]:
    """Run ``net`` step by step over ``frames`` (T inputs [B, ...]) from the resting state.

    Each step's state is used once and dropped; call under ``torch.no_grad()``. The step is
    ``net.advance``, which also returns every layer's output and a block's max-pooling indices.

    A time-constant input is run once: when a frame is the very tensor of the previous step (``is``),
    not changed in place since (its version counter), the first layer's feed-forward current
    (``W_1 x + b_1``, or the first block's convolution) is reused rather than computed again, unless its
    weights changed in place in between (an optimiser step within the sequence, ``rule.update=step``).
    The view's ``inputs[0]`` is then the same tensor as at the previous step and ``same_input`` is True.
    ``direct`` encoding returns its input itself at every step; an encoder that builds a new tensor per
    step (even with equal values) is run step by step.
    """
    state = None
    layers = list(net.layers)
    first = layers[0]
    frame = x = current = key = None
    for t, f in enumerate(frames):
        same = f is frame and tensor_version(f) == key[0]
        weights = (tensor_version(first.weight), tensor_version(first.bias))
        if not same:
            frame, x = f, first.as_input(f)
        if not same or weights != key[1]:
            current, key = first.current(x), (tensor_version(f), weights)
        if state is None:
            state = net.zero_state(x.shape[0], x)
            onehot = F.one_hot(labels, net.n_classes).to(x.dtype)
        out = net.advance(x, state, current)
        psi = [
            layer.params.surrogate.derivative(s.v - layer.params.theta)
            for layer, s in zip(layers, out.state.layers, strict=True)
        ]
        yield StepView(
            t,
            T,
            [x, *(layer.as_input(o) for layer, o in zip(layers[1:], out.outputs[:-1], strict=True))],
            [s.z for s in state.layers],
            out.spikes,
            psi,
            out.y,
            onehot,
            step_error(out.y, onehot, T),
            F.cross_entropy(out.y, labels),
            out.outputs,
            out.pool,
            same,
        )
        state = out.state


class Trace:
    """A presynaptic trace ``s_hat[t] = decay * s_hat[t-1] + s[t]`` ([B, D], or [B, C, H, W] for the
    input maps of a convolution block), updated in place.

    With ``decay = 0`` it is the input itself (nothing is copied). Xiao et al. (2022).
    """

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.value: Tensor | None = None

    def update(self, s: Tensor) -> Tensor:
        """Advance by one step with input ``s`` and return the trace."""
        if self.decay == 0.0:
            return s
        if self.value is None:
            self.value = s.clone()
        else:
            self.value.mul_(self.decay).add_(s)
        return self.value


class ConstantInput:
    """The first layer's weight gradient ``sum_t delta[t]^T x_hat[t]`` while its input is the same ``x``
    at every step since the start of the sequence (``direct`` encoding), computed once.

    There the input trace (decay ``d``) is ``x_hat[t] = a[t] x`` with ``a[t] = d a[t-1] + 1`` (``a = 1``
    for ``d = 0``), so the sum is ``D^T x`` with ``D = sum_t a[t] delta[t]`` [B, N]: one product with
    the input per sequence (``conv2d_weight`` of the maps of ``D`` for a block) instead of one per step.
    :meth:`add` accumulates ``D``; :meth:`flush` adds ``D^T x`` to the gradient. ``x`` is copied: an
    encoder may hand out one tensor changed in place, and the product needs the values it had.
    """

    def __init__(self, x: Tensor) -> None:
        self.x = x.clone()
        self.a = 0.0  # a[t] of the last step added
        self.sum: Tensor | None = None

    def add(self, delta: Tensor, a: float) -> None:
        """One more step with the same input: ``D += a delta``."""
        self.a = a
        if self.sum is None:
            self.sum = delta * a
        else:
            self.sum.add_(delta, alpha=a)

    def flush(self, layer: SpikingLayer, trace: Trace) -> None:
        """Add ``D^T x`` to ``layer``'s weight gradient and set ``trace`` (the layer's input trace, not
        advanced meanwhile) to ``a x``, its value at the last step added, so that it can go on from
        there."""
        if self.sum is not None:
            layer.add_weight_grad(self.sum, self.x)
        if trace.decay != 0.0:
            trace.value = self.x * self.a


class ReadoutTrace:
    """Exact online gradient of ``L`` w.r.t. the leaky readout ``y[t] = kappa y[t-1] + W_out z[t] + b_out``.

    As ``y`` is linear in ``W_out`` and ``b_out``: ``dL/dW_out = sum_t e[t]^T z_hat[t]`` and
    ``dL/db_out = sum_t sum_b e[t] b_hat[t]``, with ``z_hat[t] = kappa z_hat[t-1] + z_L[t]`` [B, N_L] and
    ``b_hat[t] = kappa b_hat[t-1] + 1`` (as for the readout weights in Bellec et al. 2020).
    """

    def __init__(self, kappa: float) -> None:
        self.z_hat = Trace(kappa)
        self.kappa = kappa
        self.b_hat = 0.0

    def update(self, readout: Readout, z: Tensor, e: Tensor) -> None:
        """Add this step's gradient: ``z`` [B, N_L] top-layer spikes, ``e`` [B, C] = dL/dy[t]."""
        self.b_hat = self.kappa * self.b_hat + 1.0
        add_outer(readout.linear.weight, e, self.z_hat.update(z))
        add_grad(readout.linear.bias, e.sum(0).mul_(self.b_hat))


def anticausal(seq: Tensor, decay: float) -> Tensor:
    """``out[t] = seq[t] + decay * out[t+1]`` along the first axis of ``seq`` [T, ...] (a new tensor)."""
    out = seq.clone()
    if decay != 0.0:
        for t in range(seq.shape[0] - 2, -1, -1):
            out[t].add_(out[t + 1], alpha=decay)
    return out


def random_matrix(gen: torch.Generator, rows: int, cols: int, fan_in: int, like: Tensor) -> Tensor:
    """A fixed random matrix [rows, cols], uniform in +-1/sqrt(fan_in) (the scale of the network's own
    initialisation), drawn from ``gen`` and placed on ``like``'s device with its dtype."""
    bound = 1.0 / math.sqrt(fan_in)
    m = torch.rand(rows, cols, generator=gen, device=gen.device, dtype=like.dtype)
    return m.mul_(2 * bound).sub_(bound).to(like.device)


def feedback_matrices(gen: torch.Generator, net: Network) -> dict[str, Tensor]:
    """Fixed random matrices ``B_l`` [N_l, C] that broadcast the output error to every hidden layer l
    (``N_l`` its neurons, a convolution block's before pooling), uniform in +-1/sqrt(N_l), keyed
    ``feedback.{l}`` (``dfa``, and ``eprop`` with random feedback)."""
    like = net.readout.linear.weight
    return {
        f"feedback.{i}": random_matrix(gen, layer.n_neurons, net.n_classes, layer.n_neurons, like)
        for i, layer in enumerate(net.layers)
    }


class OnlineRule(LearningRule):
    """Base class of the online rules: the step loop, the readout gradient, update modes, fixed state.

    Subclasses define :meth:`signals` and :meth:`accumulate`, and keep fixed random matrices in
    ``self.fixed`` (saved by :meth:`state_dict`).
    """

    options: ClassVar[tuple[Option, ...]] = (UPDATE,)

    def __init__(self, cfg: RuleConfig, net: Network, gen: torch.Generator) -> None:
        super().__init__(cfg, net, gen)
        self.update = self.opts["update"]
        self.fixed: dict[str, Tensor] = {}

    # -- what subclasses define ----------------------------------------------------------------

    @abstractmethod
    def signals(self, net: Network, view: StepView) -> list[Tensor]:
        """The learning signal ``L_l[t]`` [B, N_l] of every hidden layer: what the rule uses for
        ``dL/dz_l[t]``."""

    def begin(self, net: Network) -> None:
        """Reset the traces at the start of a sequence."""

    @abstractmethod
    def accumulate(self, net: Network, view: StepView, signals: list[Tensor]) -> None:
        """Add this step's gradients of the hidden layers to ``.grad``."""

    def finish(self, net: Network) -> None:
        """Add what :meth:`accumulate` still holds at the end of the sequence (``rule.update=sequence``
        only: in step mode every step's gradient must be complete when it is applied)."""

    def signal_decay(self, net: Network) -> float:
        """Decay of the filter the rule applies to the learning signal (0: none; e-prop: kappa)."""
        return 0.0

    def trace_decay(self, net: Network) -> float:
        """Decay of the presynaptic traces (0: the inputs themselves); default: the membrane's alpha."""
        return net.layers[0].params.alpha

    # -- shared ---------------------------------------------------------------------------------

    def train_batch(
        self, net: Network, x: Tensor, labels: Tensor, enc: Encoding, apply: Apply
    ) -> BatchResult:
        T = enc.T
        with torch.no_grad():
            self.begin(net)
            readout = ReadoutTrace(net.readout.kappa)
            loss = x.new_zeros(())
            y_sum = None
            for view in online_steps(net, (enc.step(x, t) for t in range(T)), labels, T):
                self.accumulate(net, view, self.signals(net, view))
                readout.update(net.readout, view.spikes[-1], view.error)
                if self.update == "step":
                    apply()
                loss += view.loss
                y_sum = view.y.clone() if y_sum is None else y_sum.add_(view.y)
            self.finish(net)
            if self.update == "sequence":
                apply()
        return BatchResult(loss.item() / T, y_sum / T)

    def input_gradient(self, net: Network, x_seq: Tensor, labels: Tensor) -> Tensor:
        """The input gradient implied by the rule's first-layer update.

        The rule updates ``W_1`` with ``sum_t delta[t]^T x_hat[t]``, where ``x_hat`` is the input or its
        presynaptic trace (decay ``a``, :meth:`trace_decay`) and ``delta[s] = psi_1[s] * L_bar[s]``,
        ``L_bar[s] = sum_{t>=s} k^{t-s} L_1[t]`` (``k``: :meth:`signal_decay`). Treating ``W_1 x_hat[t]``
        as the current it credits gives ``dL/dx[r] = W_1^T sum_{s>=r} a^{s-r} delta[s]``: [T, B, ...]
        like ``x_seq``; for a convolution block first, ``W_1^T`` is the transposed convolution
        (the layer's ``vjp_input``). O(T) memory (attacks see the whole sequence anyway). A time-constant
        ``x_seq`` (one frame broadcast over time, ``direct`` encoding) is fed as that one frame at every
        step, so its first-layer current is computed once (:func:`online_steps`).
        """
        T = x_seq.shape[0]
        frames = [x_seq[0]] * T if is_time_constant(x_seq) else x_seq
        with torch.no_grad():
            sig, psi = [], []
            for view in online_steps(net, frames, labels, T):
                sig.append(self.signals(net, view)[0])
                psi.append(view.psi[0])
            delta = torch.stack(psi) * anticausal(torch.stack(sig), self.signal_decay(net))
            g = net.layers[0].vjp_input(anticausal(delta, self.trace_decay(net)))
        return as_state(g).reshape(x_seq.shape)

    def state_dict(self) -> dict[str, Tensor]:
        return dict(self.fixed)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if set(state) != set(self.fixed):
            raise ValueError(
                f"rule {self.name!r} state has keys {sorted(state)}, expected {sorted(self.fixed)}"
            )
        for key, value in state.items():
            if value.shape != self.fixed[key].shape:
                raise ValueError(f"rule {self.name!r} state {key!r} has shape {tuple(value.shape)}")
            self.fixed[key].copy_(value)


class TracedRule(OnlineRule):
    """An online rule whose hidden updates are ``delta_l[t] = psi_l[t] * L_l[t]`` times presynaptic
    traces (Xiao et al. 2022):

        dW_l += delta_l[t]^T x_hat_{l-1}[t],  dV_l += delta_l[t]^T z_hat_l[t-1],  db_l += delta_l[t] a[t]

    with ``x_hat[t] = d x_hat[t-1] + x[t]`` (input of the layer), ``z_hat`` the same for ``z_l[t-1]`` and
    ``a[t] = d a[t-1] + 1`` for the bias; ``d`` = :meth:`trace_decay` (0: the inputs themselves). For a
    convolution block (no recurrent weights) ``x_hat`` is a trace of its input maps and the products sum
    over positions too (the layer's ``add_weight_grad`` and ``add_bias_grad``).

    With ``rule.update=sequence``, while the first layer's input is the same at every step since the
    start of the sequence (``StepView.same_input``: ``direct`` encoding), its weight gradient is
    gathered as ``sum_t a[t] delta_1[t]`` and multiplied by the input once, at the end of the sequence
    (:class:`ConstantInput`); should the input change, that part is added then and the steps go on one
    by one. ``step`` needs every step's gradient complete and takes them one by one.
    """

    def begin(self, net: Network) -> None:
        d = self.trace_decay(net)
        self._traces = [(Trace(d), Trace(d)) for _ in net.layers]
        self._a = 0.0
        self._constant: ConstantInput | None = None

    def accumulate(self, net: Network, view: StepView, signals: list[Tensor]) -> None:
        self._a = self.trace_decay(net) * self._a + 1.0
        for i, layer in enumerate(net.layers):
            delta = view.psi[i] * signals[i]
            x_hat, z_hat = self._traces[i]
            if i == 0 and self._constant_input(net, view):
                self._constant.add(delta, self._a)
            else:
                layer.add_weight_grad(delta, x_hat.update(view.inputs[i]))
            layer.add_bias_grad(delta, self._a)
            if layer.rec is not None:
                add_outer(layer.rec, delta, z_hat.update(view.prev[i]))

    def _constant_input(self, net: Network, view: StepView) -> bool:
        """Whether the first layer's weight gradient of this step goes to :class:`ConstantInput` (the
        input has been the same since t = 0; ``rule.update=sequence``); adds what it holds when the
        input has just changed."""
        if self.update != "sequence":
            return False
        if view.t == 0:
            self._constant = ConstantInput(view.inputs[0])
            return True
        if self._constant is None:
            return False
        if view.same_input:
            return True
        self._flush_constant(net)
        return False

    def _flush_constant(self, net: Network) -> None:
        if self._constant is not None:
            self._constant.flush(net.layers[0], self._traces[0][0])
            self._constant = None

    def finish(self, net: Network) -> None:
        self._flush_constant(net)
