"""Feedback alignment (Lillicrap, Cownden, Tweed & Akerman 2016, "Random synaptic feedback weights
support error backpropagation for deep learning", Nat. Commun.), unrolled through time.

The forward pass is the network's. The backward pass is BPTT of the same loss as ``bptt``,
``L = CE(1/T sum_t y[t], label)``, except that wherever backprop would send an error backwards through
a forward weight matrix, it uses a fixed random matrix of the same shape instead:

    delta_in = delta_out B      (backprop:  delta_in = delta_out W)

for every feed-forward matrix ``W_l``, every recurrent matrix ``V_l`` (the error sent back in time
through the recurrent connections uses ``B_rec,l``) and the readout ``W_out``. Weight gradients are
still ``delta_out^T x`` with the true presynaptic activity. Temporal credit assignment is the full
unroll (memory O(T)); there is no weight transport.

On ``model.arch: conv`` a convolution block's input current is ``K_l * x`` (:mod:`spikebench.nn.conv`);
the error it sends to its input (the block below, or the encoded input for the first block) is the
transposed convolution with a fixed random kernel ``B_l`` of the shape of ``K_l`` instead of ``K_l``
(:func:`spikebench.nn.network.conv2d`), and ``K_l``'s gradient is still the exact correlation of the
block's error with its input maps. Max pooling, the spike nonlinearity and the leak are backpropagated
as in ``bptt`` (they have no weights to transport); blocks have no recurrent weights. The dense layers
and the readout above the blocks use random matrices as on ``mlp``.

``rule.feedback``: ``random`` (default; each ``B`` drawn once from a uniform distribution with the same
bound as the forward initialisation, ``1/sqrt(fan_in)`` -- ``fan_in = C_in k^2`` for a kernel -- and kept
fixed) or ``symmetric`` (``B = W`` at every step: exactly ``bptt``, the reference the tests compare
against).
"""

from __future__ import annotations

import math

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

FEEDBACKS = ("random", "symmetric")
OPTIONS = (Option("feedback", "random", "fixed random feedback matrices, or the forward weights", FEEDBACKS),)


def _uniform_like(w: Tensor, gen: torch.Generator) -> Tensor:
    """Uniform in +-1/sqrt(fan_in), ``fan_in`` the product of every axis but the first (``D`` for a
    matrix [N, D], ``C_in k k`` for a kernel [C_out, C_in, k, k])."""
    bound = 1.0 / math.sqrt(w[0].numel())
    u = torch.rand(w.shape, generator=gen, device=w.device, dtype=w.dtype)
    return (2 * u - 1) * bound


@RULES.register("fa")
class FeedbackAlignment(LearningRule):
    """Feedback alignment: BPTT with fixed random feedback matrices in place of transposed weights."""

    name = "fa"
    locality = Locality(Spatial.FEEDBACK_ALIGNMENT, Temporal.FULL, weight_transport=False, memory=Memory.T)
    paper = (
        "Lillicrap, Cownden, Tweed & Akerman (2016), Random synaptic feedback weights support error "
        "backpropagation for deep learning, Nat. Commun."
    )
    deviations = (
        "the paper's rule is for feed-forward networks; unrolling it through time, with random matrices also "
        "in place of the recurrent weights and convolution kernels, is this project's",
    )
    archs = ("mlp", "conv")
    options = OPTIONS

    def __init__(self, cfg: RuleConfig, net: Network, gen: torch.Generator) -> None:
        super().__init__(cfg, net, gen)
        self.mode = self.opts["feedback"]
        self.matrices: dict[str, Tensor] = {}  # by parameter name: every weight matrix and kernel
        if self.mode == "random":
            for name, p in net.named_parameters():
                if p.dim() >= 2:
                    self.matrices[name] = _uniform_like(p.detach(), gen)

    def backward_weights(self, net: Network) -> dict[str, Tensor]:
        """The matrices (and kernels, for convolution blocks) the backward pass uses, by the name of the
        weight each replaces (:meth:`~spikebench.nn.network.Network.backward_weights`): the forward
        weights themselves when symmetric."""
        if self.mode == "symmetric":
            return {n: p.detach() for n, p in net.named_parameters() if p.dim() >= 2}
        return self.matrices

    def train_batch(
        self, net: Network, x: Tensor, labels: Tensor, enc: Encoding, apply: Apply
    ) -> BatchResult:
        with net.backward_weights(self.backward_weights(net)):
            rollout = net(enc.sequence(x))
        loss = sequence_loss(rollout.readout, labels)
        loss.backward()
        apply()
        return BatchResult(loss.item(), rollout.logits.detach())

    def input_gradient(self, net: Network, x_seq: Tensor, labels: Tensor) -> Tensor:
        """The error sent to the input along the rule's backward path: through the random feedback
        matrices of every layer, the first layer's included (``delta_x = delta_1 B_1``; for a
        convolution block first, the transposed convolution of ``delta_1`` with its kernel ``B_1``).
        ``x_seq`` [T, B, ...]: [T, B, D] or [T, B, C, H, W] for ``arch: conv``."""
        x_seq = x_seq.detach().requires_grad_(True)
        with net.backward_weights(self.backward_weights(net)):
            rollout = net(x_seq)
        loss = sequence_loss(rollout.readout, labels)
        return torch.autograd.grad(loss, x_seq)[0]

    def state_dict(self) -> dict[str, Tensor]:
        return dict(self.matrices)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if set(state) != set(self.matrices):
            raise ValueError(f"rule 'fa' state has {sorted(state)}, expected {sorted(self.matrices)}")
        self.matrices = {k: v.to(self.matrices[k]) for k, v in state.items()}
