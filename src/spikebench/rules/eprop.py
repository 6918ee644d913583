"""e-prop: eligibility propagation (Bellec et al. 2020) for LIF networks."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from spikebench.config import RuleConfig
from spikebench.nn.network import Network
from spikebench.rules.base import RULES, Locality, choose
from spikebench.rules.online import OnlineRule, StepView, add_grad, random_matrix

FEEDBACKS = ("symmetric", "random")


class Eligibility:
    """Filtered eligibility traces of one weight matrix ``W`` [N, D] for a batch (Bellec et al. 2020,
    Methods, LIF neurons):

        eps_i[t]    = alpha eps_i[t-1] + pre_i[t]          eligibility vector, [B, D]
        e_ji[t]     = psi_j[t] eps_i[t]                    eligibility trace
        ebar_ji[t]  = kappa ebar_ji[t-1] + e_ji[t]         filtered as the readout filters, [B, N, D]

    and :meth:`contract` gives ``sum_b L_bj[t] ebar_bji[t]`` [N, D] for a learning signal ``L[t]`` [B, N].
    ``eps`` is exact for the soft reset with ``detach_reset`` (dv[t]/dv[t-1] = alpha); for the other
    reset modes it is the paper's LIF approximation, which ignores the reset.

    ``ebar`` does not factorise in general and is stored in full: B*N*D floats (64 x 256 x 784 float32:
    51 MB). While the presynaptic input is the same at every step (the bias' constant 1, or a
    ``direct``-encoded image into the first layer) it does: ``eps[t] = a[t] pre`` with
    ``a[t] = alpha a[t-1] + 1``, so ``ebar_ji[t] = q_j[t] pre_i`` with ``q[t] = kappa q[t-1] + a[t] psi[t]``
    [B, N]. That form is kept until the input changes, then expanded -- exact either way.
    """

    def __init__(self, alpha: float, kappa: float) -> None:
        self.alpha, self.kappa = alpha, kappa
        self.const: Tensor | None = None  # the presynaptic input while it is constant, [B, D]
        self.a = 0.0
        self.q: Tensor | None = None  # [B, N], factorised form
        self.eps: Tensor | None = None  # [B, D], full form
        self.ebar: Tensor | None = None  # [B, N, D], full form

    def update(self, psi: Tensor, pre: Tensor) -> None:
        """Advance one step: ``psi`` [B, N] surrogate derivatives, ``pre`` [B, D] presynaptic input."""
        if self.ebar is None:
            if self.const is None:
                self.const, self.a, self.q = pre, 1.0, psi.clone()
                return
            if pre is self.const or torch.equal(pre, self.const):
                self.a = self.alpha * self.a + 1.0
                self.q.mul_(self.kappa).add_(psi, alpha=self.a)
                return
            self.eps = self.const * self.a
            self.ebar = self.q[:, :, None] * self.const[:, None, :]
        self.eps.mul_(self.alpha).add_(pre)
        self.ebar.baddbmm_(psi[:, :, None], self.eps[:, None, :], beta=self.kappa)

    def contract(self, signal: Tensor) -> Tensor:
        """``sum_b signal_bj ebar_bji`` [N, D] for a learning signal [B, N]."""
        if self.ebar is None:
            return (signal * self.q).T @ self.const
        return torch.einsum("bj,bji->ji", signal, self.ebar)


@RULES.register("eprop")
class EProp(OnlineRule):
    """e-prop: online eligibility traces times a learning signal broadcast from the output error.

    Bellec, Scherr, Subramoney, Hajek, Salaj, Legenstein & Maass (2020), "A solution to the learning
    dilemma for recurrent networks of spiking neurons" (Nat. Commun. 11, 3625). For every hidden layer
    and each of its weight matrices (input ``W`` with presynaptic input ``x_{l-1}[t]``, recurrent ``V``
    with ``z_l[t-1]``, bias with the constant 1), with :class:`Eligibility` traces ``ebar``:

        L_j[t] = sum_k B_jk e_k[t],   e[t] = (softmax(y[t]) - onehot) / (B T)      (learning signal)
        dW_ji += sum_t L_j[t] ebar_ji[t]

    ``rule.feedback`` = ``symmetric`` (default): ``B = W_out^T`` for the last hidden layer; a lower layer
    l has no readout weights, so its learning signal is sent down through the transposed forward weights,
    ``L_l[t] = W_{l+1}^T L_{l+1}[t]`` (``B_l = W_{l+1}^T ... W_L^T W_out^T``): the feedback is the
    transpose of the forward path (weight transport, like ``W_out^T`` in the paper) and stays a linear
    broadcast of the output error, without the upper layers' derivatives (which would make it per-step
    backprop, i.e. OTTT). ``random``: a fixed random ``B_l`` [N_l, C] per layer, uniform in
    +-1/sqrt(N_l) (random e-prop, no weight transport). Gradients do not flow across layers or through
    recurrent spikes: this equals autodiff of the loss with a stop-gradient on ``V z[t-1]``, on every
    layer's input and on the reset (tested). The readout gets its exact gradient
    (:class:`~spikebench.rules.online.ReadoutTrace`). ``rule.update``: step|sequence (default sequence).

    Input gradient (attacks): the first layer's learning signal, filtered back in time by kappa, through
    its eligibility path ``psi``, the leak alpha and ``W_1`` (:meth:`OnlineRule.input_gradient`).
    """

    name = "eprop"
    locality = Locality(
        spatial="output error broadcast to every layer, symmetric or random feedback",
        temporal="online eligibility traces",
        weight_transport="symmetric: yes; random: no",
        memory="O(1)",
        rank=4,
    )
    options: ClassVar[tuple[str, ...]] = ("update", "feedback")
    default_feedback: ClassVar[str] = "symmetric"

    def __init__(self, cfg: RuleConfig, net: Network, gen: torch.Generator) -> None:
        super().__init__(cfg, net, gen)
        self.feedback = choose(cfg.feedback, FEEDBACKS, self.default_feedback, "rule.feedback", self.name)
        if self.feedback == "random":
            like = net.readout.linear.weight
            self.fixed = {
                f"feedback.{i}": random_matrix(gen, layer.n_out, net.n_classes, layer.n_out, like)
                for i, layer in enumerate(net.layers)
            }

    @classmethod
    def check_config(cls, cfg: RuleConfig) -> None:
        choose(cfg.feedback, FEEDBACKS, cls.default_feedback, "rule.feedback", cls.name)
        super().check_config(cfg)

    def signal_decay(self, net: Network) -> float:
        return net.readout.kappa

    def signals(self, net: Network, view: StepView) -> list[Tensor]:
        n = len(net.layers)
        if self.feedback == "random":
            return [view.error @ self.fixed[f"feedback.{i}"].T for i in range(n)]
        out: list[Tensor] = [view.error] * n
        signal = view.error @ net.readout.linear.weight
        for i in range(n - 1, -1, -1):
            out[i] = signal
            if i > 0:
                signal = signal @ net.layers[i].weight
        return out

    def begin(self, net: Network) -> None:
        kappa = net.readout.kappa
        self._ones: Tensor | None = None
        self._traces = [
            tuple(
                Eligibility(layer.params.alpha, kappa) if use else None
                for use in (True, layer.rec is not None, True)
            )
            for layer in net.layers
        ]

    def accumulate(self, net: Network, view: StepView, signals: list[Tensor]) -> None:
        if self._ones is None:
            self._ones = view.y.new_ones(view.y.shape[0], 1)
        for i, layer in enumerate(net.layers):
            w, v, b = self._traces[i]
            psi, signal = view.psi[i], signals[i]
            w.update(psi, view.inputs[i])
            add_grad(layer.weight, w.contract(signal))
            b.update(psi, self._ones)
            add_grad(layer.bias, b.contract(signal).view(-1))
            if v is not None:
                v.update(psi, view.prev[i])
                add_grad(layer.rec, v.contract(signal))
