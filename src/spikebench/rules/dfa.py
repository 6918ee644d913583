"""Direct feedback alignment (DFA), online, for spiking networks."""

from __future__ import annotations

import torch
from torch import Tensor

from spikebench.config import RuleConfig
from spikebench.nn.network import Network
from spikebench.rules.base import RULES, Locality, Memory, Option, Spatial, Temporal
from spikebench.rules.online import UPDATE, StepView, TracedRule, feedback_matrices

TRACES = ("none", "presynaptic")
OPTIONS = (
    UPDATE,
    Option(
        "trace", "presynaptic", "what the error multiplies: the input at t, or its decaying trace", TRACES
    ),
)


@RULES.register("dfa")
class DFA(TracedRule):
    """Direct feedback alignment: the output error reaches every hidden layer through a fixed random matrix.

    Nøkland (2016), "Direct feedback alignment provides learning in deep neural networks" (NeurIPS),
    applied at every time step. With the output error ``e[t] = dL/dy[t]`` [B, C] of the per-step loss
    (:mod:`spikebench.rules.online`) and a fixed random ``B_l`` [N_l, C] per hidden layer:

        delta_l[t] = (B_l e[t]) * psi_l[t]                 psi_l = S'(v_l - theta)
        dW_l += delta_l[t]^T x_hat_{l-1}[t]     dV_l += delta_l[t]^T z_hat_l[t-1]     db_l += delta_l[t] a[t]

    ``rule.trace`` = ``none``: ``x_hat = x`` (the layer's input at t), ``z_hat[t-1] = z_l[t-1]``, ``a = 1``
    -- instantaneous temporal credit; ``presynaptic``: traces decaying with the membrane's ``alpha``
    (``x_hat[t] = alpha x_hat[t-1] + x[t]``, the same for ``z`` and ``a``), which credit the leak of the
    membrane. A hidden layer's update never involves forward weights above it (no weight transport);
    ``B_l`` is uniform in +-1/sqrt(N_l), the scale of the readout's weights. The readout is trained by
    its exact gradient. ``rule.update``: step|sequence (default sequence).

    Input gradient (attacks): ``W_1^T delta_1[t]``, through the trace when there is one
    (:meth:`OnlineRule.input_gradient`).

    Convolutional networks: a convolution block's ``B_l`` is [C_l * H_l * W_l, C], one row per neuron
    (before pooling: the error is projected straight onto the neurons, nothing is routed through the
    forward pooling), uniform in +-1/sqrt(N_l); the weight update is that of
    :class:`~spikebench.rules.online.TracedRule` (a correlation with the trace of the input maps).
    """

    name = "dfa"
    locality = Locality(Spatial.DIRECT_FEEDBACK, Temporal.ONLINE, weight_transport=False, memory=Memory.ONE)
    paper = "Nøkland (2016), Direct feedback alignment provides learning in deep neural networks, NeurIPS"
    deviations = (
        "the paper's rule is for feed-forward networks without time; applying it at every step with the "
        "per-step error, and the presynaptic traces of rule.trace, is this project's",
        "the per-step loss is that of the leaky readout y[t] = kappa y[t-1] + W_out z[t] + b_out (the paper's output is instantaneous); the readout's own weights get the exact gradient through their trace, but a hidden layer at step t is credited only through y[t], the leak's effect on later steps' losses is ignored",
    )
    archs = ("mlp", "conv")
    options = OPTIONS

    def __init__(self, cfg: RuleConfig, net: Network, gen: torch.Generator) -> None:
        super().__init__(cfg, net, gen)
        self.trace = self.opts["trace"]
        self.fixed = feedback_matrices(gen, net)

    def trace_decay(self, net: Network) -> float:
        return net.layers[0].params.alpha if self.trace == "presynaptic" else 0.0

    def signals(self, net: Network, view: StepView) -> list[Tensor]:
        return [view.error @ self.fixed[f"feedback.{i}"].T for i in range(len(net.layers))]
