"""Deep continuous local learning (DECOLLE)."""

from __future__ import annotations

import torch
from torch import Tensor

from spikebench.config import RuleConfig
from spikebench.nn.network import Network
from spikebench.rules.base import RULES, Locality
from spikebench.rules.online import StepView, TracedRule, random_matrix, step_error


@RULES.register("decolle")
class DECOLLE(TracedRule):
    """Deep continuous local learning: every hidden layer learns from its own loss through a fixed readout.

    Kaiser, Mostafa & Neftci (2020), "Synaptic plasticity dynamics for deep continuous local learning
    (DECOLLE)" (Front. Neurosci.). Hidden layer l has a fixed random readout ``G_l`` [C, N_l] (never
    trained) and a local loss at every step, ``L_l[t] = CE(G_l z_l[t], label) / T``. Gradients stop
    between layers (a layer's input is a constant for it) and through time except through presynaptic
    traces, as in :class:`~spikebench.rules.ottt.OTTT`:

        e_l[t] = (softmax(G_l z_l[t]) - onehot) / (B T)       g_l[t] = psi_l[t] * (G_l^T e_l[t])
        dW_l += g_l[t]^T a_hat_{l-1}[t],   dV_l += g_l[t]^T z_hat_l[t-1],   db_l += g_l[t] a[t]

    with traces ``a_hat[t] = alpha a_hat[t-1] + s[t]``. The network's readout is trained by the main
    loss on top of the last layer (its exact gradient, :class:`~spikebench.rules.online.ReadoutTrace`);
    the reported loss is the main loss. The local loss is a cross-entropy rather than the paper's
    mean-squared error, so that local and main losses measure the same thing and a local readout need
    only rank the right class first, not match a scale fixed by the random ``G_l``. ``G_l`` is uniform
    in +-1/sqrt(N_l) (the readout's initial scale). ``rule.update``: step|sequence (default sequence).

    Input gradient (attacks): the first layer's local loss through ``W_1`` and its trace
    (:meth:`OnlineRule.input_gradient`).
    """

    name = "decolle"
    locality = Locality(
        spatial="layer-local losses through fixed random readouts",
        temporal="online, presynaptic traces",
        weight_transport="no",
        memory="O(1)",
        rank=6,
    )

    def __init__(self, cfg: RuleConfig, net: Network, gen: torch.Generator) -> None:
        super().__init__(cfg, net, gen)
        like = net.readout.linear.weight
        self.fixed = {
            f"readout.{i}": random_matrix(gen, net.n_classes, layer.n_out, layer.n_out, like)
            for i, layer in enumerate(net.layers)
        }

    def signals(self, net: Network, view: StepView) -> list[Tensor]:
        out = []
        for i, z in enumerate(view.spikes):
            g = self.fixed[f"readout.{i}"]
            out.append(step_error(z @ g.T, view.onehot, view.T) @ g)
        return out
