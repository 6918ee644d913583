"""Deep continuous local learning (DECOLLE)."""

from __future__ import annotations

import torch
from torch import Tensor

from spikebench.config import RuleConfig
from spikebench.nn.network import Network
from spikebench.rules.base import RULES, Locality
from spikebench.rules.online import StepView, TracedRule, n_outputs, random_matrix, spike_grad, step_error


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

    Convolutional networks: a convolution block's local readout reads its *output*, the max-pooled
    spikes ``p_l[t]`` (``G_l`` [C, D_l], ``D_l = C_l * H_l/pool * W_l/pool``, uniform in +-1/sqrt(D_l)),
    as in the paper, where each layer's readout sits after its pooling: the local loss judges what the
    layer passes on, and ``G_l`` is ``pool^2`` times smaller than on the neurons. The gradient of the
    local loss ``CE(G_l p_l[t], label) / T`` reaches the block's neurons through the pooling (each
    window's gradient to its argmax at t, :func:`~spikebench.rules.online.spike_grad`); the
    weight update is then that of :class:`~spikebench.rules.online.TracedRule` (a correlation with the
    trace of the input maps). (Readouts on the neurons before pooling trained no better in a short
    Fashion-MNIST check.)
    """

    name = "decolle"
    locality = Locality(
        spatial="layer-local losses through fixed random readouts",
        temporal="online, presynaptic traces",
        weight_transport="no",
        memory="O(1)",
        rank=6,
    )
    archs = ("mlp", "conv")

    def __init__(self, cfg: RuleConfig, net: Network, gen: torch.Generator) -> None:
        super().__init__(cfg, net, gen)
        like = net.readout.linear.weight
        self.fixed = {
            f"readout.{i}": random_matrix(gen, net.n_classes, n_outputs(layer), n_outputs(layer), like)
            for i, layer in enumerate(net.layers)
        }

    def signals(self, net: Network, view: StepView) -> list[Tensor]:
        out = []
        for i, (layer, o) in enumerate(zip(net.layers, view.outputs, strict=True)):
            g = self.fixed[f"readout.{i}"]
            out.append(spike_grad(layer, step_error(o @ g.T, view.onehot, view.T) @ g, view.pool[i]))
        return out
