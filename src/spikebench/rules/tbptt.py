"""Truncated backpropagation through time (Williams & Peng 1990; Elman 1990).

The T steps are cut into windows of ``k`` steps, ``[0, k), [k, 2k), ...``. The network state
(membrane potentials, spikes, readout) is carried from one window to the next but detached at the
boundary, so gradients never cross it and memory grows as O(k), not O(T). Each window ``w`` is trained
on the decision the readout makes over it, weighted by its share of the sequence:

    L_w = (|w| / T) * CE(1/|w| sum_{t in w} y[t], label)

so that with ``k >= T`` there is one window and ``L = CE(1/T sum_t y[t], label)``: exactly ``bptt``.
``rule.update``: ``window`` applies an optimiser step after every window (updates during the sequence);
``sequence`` (default) accumulates the windows' gradients and applies once per sequence.
"""

from __future__ import annotations

import torch
from torch import Tensor

from spikebench.config import RuleConfig
from spikebench.data.encoders import Encoding
from spikebench.nn.network import Network
from spikebench.rules.base import (
    RULES,
    Apply,
    BatchResult,
    LearningRule,
    Locality,
    Memory,
    Option,
    Spatial,
    Temporal,
    sequence_loss,
)

UPDATES = ("sequence", "window")
OPTIONS = (
    Option("k", 5, "window length in steps", type=int, minimum=1),
    Option("update", "sequence", "apply the update after every window or once per sequence", UPDATES),
)


@RULES.register("tbptt")
class TBPTT(LearningRule):
    """Truncated BPTT: exact backprop within windows of rule.k steps, state detached between them."""

    name = "tbptt"
    locality = Locality(Spatial.EXACT, Temporal.TRUNCATED, weight_transport=True, memory=Memory.K)
    paper = "Williams & Peng (1990), An efficient gradient-based algorithm for on-line training of recurrent networks"
    deviations = (
        "each window is trained on the decision of the readout averaged over that window, weighted by the "
        "window's share of the sequence (with k >= T: exactly bptt's loss)",
    )
    archs = ("mlp", "conv")
    options = OPTIONS
    exact_input_gradient = True

    def __init__(self, cfg: RuleConfig, net: Network, gen: torch.Generator) -> None:
        super().__init__(cfg, net, gen)
        self.k = self.opts["k"]
        self.update = self.opts["update"]

    def train_batch(
        self, net: Network, x: Tensor, labels: Tensor, enc: Encoding, apply: Apply
    ) -> BatchResult:
        x_seq = enc.sequence(x)
        T = x_seq.shape[0]
        state, readouts = None, []
        total = x_seq.new_zeros((), dtype=torch.float32)  # summed on the device: one host sync per batch
        for start in range(0, T, self.k):
            rollout = net(x_seq[start : start + self.k], state)
            n = rollout.readout.shape[0]
            loss = (n / T) * sequence_loss(rollout.readout, labels)
            loss.backward()
            if self.update == "window":
                apply()
            total += loss.detach()
            readouts.append(rollout.readout.detach())
            state = rollout.state
        if self.update == "sequence":
            apply()
        return BatchResult(total.item(), torch.cat(readouts).mean(0))
