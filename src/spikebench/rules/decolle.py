"""Deep continuous local learning (DECOLLE)."""

from __future__ import annotations

import torch
from torch import Tensor

from spikebench.config import RuleConfig
from spikebench.nn.network import Network
from spikebench.rules.base import RULES, Locality, Memory, Option, Spatial, Temporal
from spikebench.rules.online import UPDATE, StepView, TracedRule, random_matrix, step_error

LOCAL_LOSSES = ("mse", "ce")
OPTIONS = (
    UPDATE,
    Option("local_loss", "mse", "the loss of the local readouts (mse: the paper's)", LOCAL_LOSSES),
)


@RULES.register("decolle")
class DECOLLE(TracedRule):
    """Deep continuous local learning: every hidden layer learns from its own loss through a fixed readout.

    Kaiser, Mostafa & Neftci (2020), "Synaptic plasticity dynamics for deep continuous local learning
    (DECOLLE)" (Front. Neurosci.). Hidden layer l has a fixed random readout ``G_l`` [C, N_l] (never
    trained) and a local loss at every step on its local readout ``r_l[t] = G_l z_l[t]``. By default
    (``rule.local_loss: mse``) it is the paper's mean-squared error against the one-hot label,
    ``L_l[t] = 1/(2 B T) sum_b ||r_l[t] - onehot||^2``, with error ``e_l[t] = (r_l[t] - onehot) / (B T)``;
    ``ce``: the cross-entropy ``L_l[t] = CE(r_l[t], label) / T``, ``e_l[t] = (softmax(r_l[t]) - onehot) /
    (B T)`` (a local readout then need only rank the right class first, not match a scale fixed by the
    random ``G_l``). Gradients stop between layers (a layer's input is a constant for it) and through
    time except through presynaptic traces, as in :class:`~spikebench.rules.ottt.OTTT`:

        g_l[t] = psi_l[t] * (G_l^T e_l[t])
        dW_l += g_l[t]^T a_hat_{l-1}[t],   dV_l += g_l[t]^T z_hat_l[t-1],   db_l += g_l[t] a[t]

    with traces ``a_hat[t] = alpha a_hat[t-1] + s[t]``. The network's readout is trained by the main
    loss (the per-step cross-entropy of the online rules) on top of the last layer (its exact gradient,
    :class:`~spikebench.rules.online.ReadoutTrace`); the reported loss is the main loss. ``G_l`` is uniform
    in +-1/sqrt(N_l) (the readout's initial scale). ``rule.update``: step|sequence (default sequence).

    Input gradient (attacks): the first layer's local loss through ``W_1`` and its trace
    (:meth:`OnlineRule.input_gradient`).

    Convolutional networks: a convolution block's local readout reads its *output*, the max-pooled
    spikes ``p_l[t]`` (``G_l`` [C, D_l], ``D_l = C_l * H_l/pool * W_l/pool``, uniform in +-1/sqrt(D_l)),
    as in the paper, where each layer's readout sits after its pooling: the local loss judges what the
    layer passes on, and ``G_l`` is ``pool^2`` times smaller than on the neurons. The gradient of the
    local loss of ``G_l p_l[t]`` reaches the block's neurons through the pooling (each
    window's gradient to its argmax at t, the block's ``vjp_output``); the
    weight update is then that of :class:`~spikebench.rules.online.TracedRule` (a correlation with the
    trace of the input maps). (Readouts on the neurons before pooling trained no better in a short
    Fashion-MNIST check.)
    """

    name = "decolle"
    locality = Locality(Spatial.LAYER_LOCAL, Temporal.ONLINE, weight_transport=False, memory=Memory.ONE)
    paper = (
        "Kaiser, Mostafa & Neftci (2020), Synaptic plasticity dynamics for deep continuous local learning "
        "(DECOLLE), Front. Neurosci."
    )
    deviations = (
        "neurons are this project's LIF (one membrane, presynaptic traces decaying with its alpha) rather than "
        "the paper's two-trace current-based neurons with a refractory term",
        "the network's output is a readout trained by the main loss on the last layer (the paper reads the "
        "last layer's local readout); the per-step loss is that of the leaky readout y[t] = kappa y[t-1] + W_out z[t] + b_out (the paper's output is instantaneous); the readout's own weights get the exact gradient through their trace, but a hidden layer at step t is credited only through y[t], the leak's effect on later steps' losses is ignored",
        "rule.local_loss=ce (not the default) replaces the paper's mean-squared error by a cross-entropy",
    )
    archs = ("mlp", "conv")
    options = OPTIONS

    def __init__(self, cfg: RuleConfig, net: Network, gen: torch.Generator) -> None:
        super().__init__(cfg, net, gen)
        self.local_loss = self.opts["local_loss"]
        like = net.readout.linear.weight
        self.fixed = {
            f"readout.{i}": random_matrix(gen, net.n_classes, layer.n_outputs, layer.n_outputs, like)
            for i, layer in enumerate(net.layers)
        }

    def local_error(self, r: Tensor, onehot: Tensor, T: int) -> Tensor:
        """``e_l[t]``, the gradient of the local loss w.r.t. the local readout ``r`` [B, C]."""
        if self.local_loss == "ce":
            return step_error(r, onehot, T)
        return (r - onehot).div_(r.shape[0] * T)

    def signals(self, net: Network, view: StepView) -> list[Tensor]:
        out = []
        for i, (layer, o) in enumerate(zip(net.layers, view.outputs, strict=True)):
            g = self.fixed[f"readout.{i}"]
            out.append(layer.vjp_output(self.local_error(o @ g.T, view.onehot, view.T) @ g, view.pool[i]))
        return out
