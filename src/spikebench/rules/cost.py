"""What a learning rule's own updates cost per training sample, from its declared structure.

The forward pass (the network's inference, :mod:`spikebench.train.efficiency`) is the same for every
rule; this is what a rule adds to it to compute its update, for one sample of T steps whose input
changes from step to step (a time-constant input lets some rules do less; not counted here):

- ``macs``: multiply-accumulates of matrix products: the errors sent through weights or feedback
  matrices, the learning signals, and the weight gradients (an outer product per weight per step for
  online rules, one product per weight over the sequence for offline ones);
- ``elementwise``: elementwise multiply-adds (surrogate derivative times error, trace and eligibility
  updates);
- ``state``: numbers per sample the update must keep while the sequence runs (potentials and spikes of
  every step for backprop through time, presynaptic traces, eligibility traces);
- ``fixed``: numbers in fixed matrices the rule owns besides the network (feedback matrices, local
  readouts), shared by all samples.

Notation, per hidden layer l: ``N_l`` neurons, ``S_l`` multiply-accumulates of its feed-forward
current at one step (``N_l D_l`` for a dense layer with fan-in ``D_l``; for a convolution block, those
of its convolution, output positions x ``C_in k k``), ``R_l = N_l^2`` when it is recurrent, else 0,
``I_l`` the size of its input, ``O_l`` of its output; ``C`` classes. Each rule's formula is documented
with the rule's cost function below; a test checks ``macs`` against a count of the matrix products the
implementation runs on a real batch (:class:`torch.utils.flop_counter.FlopCounterMode`), and
``state`` against the traces it keeps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from spikebench.registry import Registry
from spikebench.rules.base import LearningRule


@dataclass(frozen=True)
class RuleCost:
    """A rule's update cost per training sample (module docstring)."""

    macs: float
    elementwise: float
    state: float
    fixed: float
    formula: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Shape:
    """The sizes of one hidden layer the formulas need."""

    neurons: int
    synapses: int  # S_l
    rec: int  # R_l
    inputs: int  # I_l
    outputs: int  # O_l


def shapes(net: nn.Module) -> list[Shape]:
    """:class:`Shape` of every hidden layer of a dense or convolutional network."""
    out = []
    for layer in net.layers:
        # a neuron's synapses: one per weight of a dense row, one per kernel weight of a convolution
        synapses = layer.n_neurons * layer.weight[0].numel()
        rec = 0 if layer.rec is None else layer.rec.numel()
        out.append(Shape(layer.n_neurons, synapses, rec, math.prod(layer.in_shape), layer.n_outputs))
    return out


CostFn = Callable[[LearningRule, nn.Module, int], RuleCost]
COSTS: Registry[CostFn] = Registry("rule cost")


def rule_cost(rule: LearningRule, net: nn.Module, T: int) -> RuleCost | None:
    """The cost of ``rule``'s updates for a sample of ``T`` steps, or None for a rule that declares none
    (a plugin without a cost function registered in :data:`COSTS`)."""
    if rule.name not in COSTS:
        return None
    return COSTS.get(rule.name)(rule, net, T)


def _backprop_through_time(net: nn.Module, T: int, window: int, fixed: float, name: str) -> RuleCost:
    """Exact (or feedback-alignment) backprop through windows of ``window`` steps:

    macs = sum_l [T S_l + [l > 0] T S_l + T R_l + (T - n_w) R_l] + 2 T C O_L

    (weight gradients, errors sent down through the weights -- not into the input --, recurrent weight
    gradients, errors through the recurrent weights within each of the ``n_w`` windows; the readout's
    weight gradient and error); elementwise = T (2 sum_l N_l + C) (surrogate derivative times error, the
    leak's error, the readout's filter); state = window (I_1 + 2 sum_l N_l) (the input, potentials
    and spikes of every step of a window)."""
    s, C = shapes(net), net.n_classes
    n_w = math.ceil(T / window)
    macs = sum(T * x.synapses * (2 if i > 0 else 1) + T * x.rec + (T - n_w) * x.rec for i, x in enumerate(s))
    macs += 2 * T * C * s[-1].outputs
    n = sum(x.neurons for x in s)
    return RuleCost(
        float(macs), float(T * (2 * n + C)), float(window * (s[0].inputs + 2 * n)), float(fixed), name
    )


@COSTS.register("bptt")
def _bptt(rule: LearningRule, net: nn.Module, T: int) -> RuleCost:
    return _backprop_through_time(net, T, T, 0, "backprop through all T steps")


@COSTS.register("tbptt")
def _tbptt(rule: LearningRule, net: nn.Module, T: int) -> RuleCost:
    k = min(rule.k, T)
    return _backprop_through_time(net, T, k, 0, f"backprop through windows of k={k} steps")


@COSTS.register("fa")
def _fa(rule: LearningRule, net: nn.Module, T: int) -> RuleCost:
    fixed = sum(m.numel() for m in rule.matrices.values())
    return _backprop_through_time(net, T, T, fixed, f"backprop through all T steps, {rule.mode} feedback")


def _traced(net: nn.Module, T: int, signal_macs: int, decay: float, fixed: float, name: str) -> RuleCost:
    """Online rules with presynaptic traces (``ottt``, ``dfa``, ``decolle``), per step:

    macs = signal + sum_l (S_l + R_l) + C O_L

    (the rule's learning signals, the outer products of every layer's feed-forward and recurrent
    weights with their traces, the readout's); elementwise = T (sum_l (N_l + I_l + [R_l > 0] N_l) + O_L)
    (``psi L`` and the trace updates); state = sum_l (I_l + [R_l > 0] N_l) + O_L when the traces decay
    (with decay 0 they are the inputs themselves), else O_L (the readout's trace)."""
    s, C = shapes(net), net.n_classes
    macs = T * (signal_macs + sum(x.synapses + x.rec for x in s) + C * s[-1].outputs)
    traces = sum(x.inputs + (x.neurons if x.rec else 0) for x in s) if decay != 0.0 else 0
    elementwise = T * (sum(x.neurons for x in s) + traces + s[-1].outputs)
    return RuleCost(float(macs), float(elementwise), float(traces + s[-1].outputs), float(fixed), name)


@COSTS.register("ottt")
def _ottt(rule: LearningRule, net: nn.Module, T: int) -> RuleCost:
    """signal = C O_L + sum_{l>0} S_l (the error backpropagated through the layers at each step)."""
    s = shapes(net)
    signal = net.n_classes * s[-1].outputs + sum(x.synapses for x in s[1:])
    return _traced(net, T, signal, rule.trace_decay(net), 0, "per-step backprop, presynaptic traces")


@COSTS.register("dfa")
def _dfa(rule: LearningRule, net: nn.Module, T: int) -> RuleCost:
    """signal = sum_l C N_l (the error projected to every layer by ``B_l``)."""
    s = shapes(net)
    signal = net.n_classes * sum(x.neurons for x in s)
    fixed = sum(m.numel() for m in rule.fixed.values())
    return _traced(net, T, signal, rule.trace_decay(net), fixed, f"direct feedback, trace={rule.trace}")


@COSTS.register("decolle")
def _decolle(rule: LearningRule, net: nn.Module, T: int) -> RuleCost:
    """signal = sum_l 2 C O_l (each local readout's forward product and its error sent back)."""
    s = shapes(net)
    signal = 2 * net.n_classes * sum(x.outputs for x in s)
    fixed = sum(m.numel() for m in rule.fixed.values())
    return _traced(net, T, signal, rule.trace_decay(net), fixed, "layer-local readouts, presynaptic traces")


@COSTS.register("eprop")
def _eprop(rule: LearningRule, net: nn.Module, T: int) -> RuleCost:
    """e-prop in the per-step form of Bellec et al. (2020): for each weight matrix with ``P``
    presynaptic inputs (``I_l``, ``N_l`` for the recurrent weights, 1 for the bias) and ``N_l`` neurons,
    an eligibility vector ``eps`` [P] and a filtered eligibility trace ``ebar`` [N_l, P] per sample:

    macs = T (signal + sum_matrices N_l P + C O_L),  elementwise = T sum_matrices (P + 2 N_l P),
    state = sum_matrices (P + N_l P) + O_L

    (signal: ``C O_L + sum_{l>0} S_l`` symmetric, ``sum_l C N_l`` random). The implementation gets the
    same gradient with fewer passes (blocks of ``rule.options.block`` steps, factorised constant inputs); the
    per-step form is what an online device would run."""
    s, C = shapes(net), net.n_classes
    if rule.feedback == "random":
        signal = C * sum(x.neurons for x in s)
    else:
        signal = C * s[-1].outputs + sum(x.synapses for x in s[1:])
    pres = [(x.neurons, p) for x in s for p in (x.inputs, x.neurons if x.rec else 0, 1) if p]
    macs = T * (signal + sum(n * p for n, p in pres) + C * s[-1].outputs)
    elementwise = T * sum(p + 2 * n * p for n, p in pres)
    state = sum(p + n * p for n, p in pres) + s[-1].outputs
    fixed = sum(m.numel() for m in rule.fixed.values())
    return RuleCost(
        float(macs),
        float(elementwise),
        float(state),
        float(fixed),
        f"eligibility traces, {rule.feedback} feedback",
    )
