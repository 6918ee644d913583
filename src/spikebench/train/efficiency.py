"""What a trained network costs per inference, from its actual spikes, and an energy estimate.

Definitions follow NeuroBench (Yik et al. 2025, "The neurobench framework for benchmarking neuromorphic
computing algorithms and systems", Nat. Commun. 16, 1545) where they overlap. Per sample and per
*connection* (a layer's feed-forward weights, its recurrent weights, the readout's weights), over the T
steps of one inference:

- **effective synaptic operations**: every nonzero presynaptic value times its number of nonzero
  outgoing weights (its fan-out). A binary input (spikes) makes them accumulates (ACs), an analogue
  input (``direct`` encoding's pixels) multiply-accumulates (MACs). A recurrent connection's input at
  step t is ``z[t-1]``, so the spikes of the last step trigger none. Biases are not counted (as in
  NeuroBench);
- **dense operations**: the same with every input and weight counted, what hardware that does not
  exploit sparsity runs (NeuroBench's "Dense");
- **activation sparsity**: 1 - spikes / (neurons x steps) over every spiking layer; per layer the mean
  firing rate (spikes per neuron per step);
- **footprint**: bytes of parameters and buffers; **connection sparsity**: the fraction of exactly zero
  weights among the weight matrices and kernels (not the biases).

Besides, every neuron's state update (``v = alpha v + c``, and the readout's ``y = kappa y + u``) is one
multiply-add per neuron per step (``neuron_updates``), not a synaptic operation.

The **energy estimate** multiplies these counts by energies per operation (:class:`OpEnergy`; default
Horowitz, ISSCC 2014, 45 nm, 32-bit float: multiply-add 4.6 pJ, add 0.9 pJ). It is an estimate: it
leaves out memory access, routing and static power, which dominate on real chips.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from spikebench.data.encoders import Encoding
from spikebench.nn.layers import dense_counts, is_time_constant
from spikebench.nn.network import Network
from spikebench.rules.base import LearningRule
from spikebench.rules.cost import rule_cost


@dataclass(frozen=True)
class OpEnergy:
    """Energy of one operation in picojoules, and where the numbers come from."""

    mac_pj: float = 4.6
    add_pj: float = 0.9
    source: str = "Horowitz, ISSCC 2014, 45 nm, 32-bit float: multiply-add 4.6 pJ, add 0.9 pJ"

    def __post_init__(self) -> None:
        if not (self.mac_pj >= 0 and self.add_pj >= 0):
            raise ValueError(f"energies per operation must be >= 0, got {self.mac_pj}, {self.add_pj}")


def _is_binary(x: Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


@dataclass
class _Counts:
    """Running sums over the test set for one connection."""

    name: str
    effective: float = 0.0
    dense: float = 0.0
    binary: bool = True


class _Counter:
    """Accumulates the counts of every connection and every spiking layer over batches."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.layers = list(net.layers)
        self.spikes = [0.0] * len(self.layers)
        self.neuron_steps = [0.0] * len(self.layers)
        self.connections: dict[str, _Counts] = {}
        self.samples = 0
        self.steps = 0

    def _add(self, name: str, effective: float, dense: float, binary: bool) -> None:
        c = self.connections.setdefault(name, _Counts(name))
        c.effective += effective
        c.dense += dense
        c.binary = c.binary and binary

    def dense_connection(self, name: str, weight: Tensor, x: Tensor, constant: bool, T: int) -> None:
        """``x`` [T', B, D] (T' = 1 when the input is the same at every step), ``weight`` [N, D]."""
        effective, dense = dense_counts(weight, x)
        self._add(name, (T if constant else 1) * effective, T * x.shape[1] * dense, _is_binary(x))

    def add_batch(self, x_seq: Tensor) -> None:
        """One batch: ``x_seq`` [T, B, ...], the encoded input."""
        net = self.net
        T, B = x_seq.shape[:2]
        constant = is_time_constant(x_seq)
        rollout = net(x_seq)
        h = x_seq[:1] if constant else x_seq
        for i, (layer, z) in enumerate(zip(self.layers, rollout.spikes, strict=True)):
            # every nonzero input times the nonzero weights it meets (a convolution: zero padding excluded)
            effective, dense = layer.synaptic_counts(h)
            self._add(f"layers.{i}", (T if constant else 1) * effective, T * B * dense, _is_binary(h))
            if layer.rec is not None:
                self.dense_connection(f"layers.{i}.rec", layer.rec, z[:-1], False, T - 1)
                # the dense count of the recurrent weights covers all T steps (z[-1] = 0 included)
                self.connections[f"layers.{i}.rec"].dense += B * layer.rec.numel()
            h = layer.output(z)
            constant = False
            self.spikes[i] += float(z.to(torch.float64).sum())
            self.neuron_steps[i] += z.numel()
        top = h.reshape(T, B, -1)
        self.dense_connection("readout", net.readout.linear.weight, top, False, T)
        self.samples += B
        self.steps = T

    def record(self) -> dict[str, Any]:
        n = max(self.samples, 1)
        layers = []
        for i, layer in enumerate(self.layers):
            neurons = layer.n_neurons
            conns = [c for name, c in self.connections.items() if name in (f"layers.{i}", f"layers.{i}.rec")]
            layers.append(
                {
                    "layer": i,
                    "kind": layer.kind,
                    "neurons": neurons,
                    "recurrent": layer.rec is not None,
                    "firing_rate": self.spikes[i] / max(self.neuron_steps[i], 1.0),
                    "spikes_per_sample": self.spikes[i] / n,
                    "synops_in": sum(c.effective for c in conns) / n,
                    "dense_macs_in": sum(c.dense for c in conns) / n,
                }
            )
        acs = sum(c.effective for c in self.connections.values() if c.binary) / n
        macs = sum(c.effective for c in self.connections.values() if not c.binary) / n
        dense = sum(c.dense for c in self.connections.values()) / n
        neurons = sum(r["neurons"] for r in layers) + self.net.n_classes
        return {
            "samples": self.samples,
            "timesteps": self.steps,
            "layers": layers,
            "connections": {
                c.name: {
                    "input": "spikes" if c.binary else "analogue",
                    "effective_ops": c.effective / n,
                    "dense_ops": c.dense / n,
                }
                for c in self.connections.values()
            },
            "activation_sparsity": 1.0 - sum(self.spikes) / max(sum(self.neuron_steps), 1.0),
            "synops": {"effective_acs": acs, "effective_macs": macs, "dense": dense},
            "dense_macs_per_step": dense / max(self.steps, 1),
            "neuron_updates": float(neurons * self.steps),
        }


def footprint(net: nn.Module) -> dict[str, Any]:
    """Parameters, bytes of parameters and buffers, and connection sparsity (zero weights among the
    weight matrices and kernels, biases excluded), as NeuroBench's Footprint and ConnectionSparsity."""
    weights = [p for p in net.parameters() if p.dim() >= 2]
    n_w = sum(p.numel() for p in weights)
    zeros = sum(int((p == 0).sum()) for p in weights)
    tensors = [*net.parameters(), *net.buffers()]
    return {
        "parameters": sum(p.numel() for p in net.parameters()),
        "footprint_bytes": sum(t.numel() * t.element_size() for t in tensors),
        "connection_sparsity": zeros / n_w if n_w else 0.0,
    }


def inference_energy_pj(metrics: dict[str, Any], energy: OpEnergy) -> dict[str, float]:
    """Energy estimate of one inference (pJ): effective ACs x add + (effective MACs + neuron updates) x
    multiply-add; and the same network run densely (dense operations as multiply-adds)."""
    s = metrics["synops"]
    spiking = (
        s["effective_acs"] * energy.add_pj + (s["effective_macs"] + metrics["neuron_updates"]) * energy.mac_pj
    )
    dense = (s["dense"] + metrics["neuron_updates"]) * energy.mac_pj
    return {"inference_pj": spiking, "dense_inference_pj": dense}


@torch.no_grad()
def measure(
    net: Network,
    x: Tensor,
    enc: Encoding,
    batch_size: int,
    energy: OpEnergy | None = None,
    rule_cost: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Efficiency record of ``net`` (a :class:`~spikebench.nn.network.Network`, dense or convolutional)
    on inputs ``x`` [n, ...] encoded by ``enc``: counts per
    sample (module docstring), footprint, and energy estimates. ``rule_cost``: the learning rule's own
    cost per training sample (:func:`spikebench.rules.cost.rule_cost`, as a dict); with it the record
    also estimates the energy of one training sample: its forward pass (the inference counts) plus the
    rule's update operations (multiply-adds)."""
    energy = energy or OpEnergy()
    device = next(net.parameters()).device
    counter = _Counter(net)
    for i in range(0, x.shape[0], batch_size):
        counter.add_batch(enc.sequence(x[i : i + batch_size].to(device)))
    out = counter.record()
    out.update(footprint(net))
    out["energy"] = {
        "estimate": True,
        "mac_pj": energy.mac_pj,
        "add_pj": energy.add_pj,
        "source": energy.source,
        **inference_energy_pj(out, energy),
    }
    if rule_cost is not None:
        out["rule_cost"] = rule_cost
        if rule_cost.get("macs") is not None:
            update = (rule_cost["macs"] + rule_cost["elementwise"]) * energy.mac_pj
            out["energy"]["training_sample_pj"] = out["energy"]["inference_pj"] + update
    return out


def firing_rates(record: dict[str, Any]) -> list[float]:
    """Per-layer mean firing rates of an efficiency record."""
    return [r["firing_rate"] for r in record["layers"]]


def run_record(
    net: Network,
    rule: LearningRule,
    x: Tensor,
    enc: Encoding,
    batch_size: int,
    energy: OpEnergy | None = None,
) -> dict[str, Any]:
    """:func:`measure` on ``x`` (a run's test inputs) with the cost of ``rule``'s updates for ``enc.T``
    steps: the ``efficiency`` entry of a run's ``summary.json``. The network is left in the mode it was
    in."""
    cost = rule_cost(rule, net, enc.T)
    was_training = net.training
    net.eval()
    try:
        return measure(net, x, enc, batch_size, energy, None if cost is None else cost.to_dict())
    finally:
        net.train(was_training)
