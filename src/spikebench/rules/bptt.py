"""Backpropagation through time with surrogate gradients.

Exact gradient of the cross-entropy of the time-averaged readout, ``L = CE(1/T sum_t y[t], label)``,
through all layers and all T steps (Werbos 1990; with surrogate derivatives: Neftci, Mostafa & Zenke
2019; Zenke & Vogels 2021). Memory grows as O(T): every step's state is kept for the backward pass.
Feed-forward currents for all steps are one matrix product; the LIF recursion is one fused node per
layer (:func:`spikebench.dynamics.lif.scan`).
"""

from __future__ import annotations

from torch import Tensor

from spikebench.data.encoders import Encoding
from spikebench.nn.network import Network
from spikebench.rules.base import (
    RULES,
    Apply,
    BatchResult,
    LearningRule,
    Locality,
    Memory,
    Spatial,
    Temporal,
    sequence_loss,
)


@RULES.register("bptt")
class BPTT(LearningRule):
    """Backpropagation through time: exact credit assignment in space and time."""

    name = "bptt"
    locality = Locality(Spatial.EXACT, Temporal.FULL, weight_transport=True, memory=Memory.T)
    paper = "Werbos (1990), Backpropagation through time; surrogate gradients: Neftci, Mostafa & Zenke (2019)"
    archs = ("mlp", "conv")
    exact_input_gradient = True

    def train_batch(
        self, net: Network, x: Tensor, labels: Tensor, enc: Encoding, apply: Apply
    ) -> BatchResult:
        rollout = net(enc.sequence(x))
        loss = sequence_loss(rollout.readout, labels)
        loss.backward()
        apply()
        return BatchResult(loss.item(), rollout.logits.detach())
