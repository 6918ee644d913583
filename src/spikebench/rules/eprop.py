"""e-prop: eligibility propagation (Bellec et al. 2020) for LIF networks."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from spikebench.config import ConfigError, RuleConfig
from spikebench.nn.network import Network
from spikebench.precision import add_mm_, as_state, full_precision
from spikebench.rules.base import RULES, Locality, Memory, Option, Spatial, Temporal
from spikebench.rules.online import (
    UPDATE,
    OnlineRule,
    StepView,
    add_grad,
    anticausal,
    feedback_matrices,
    tensor_version,
)

FEEDBACKS = ("symmetric", "random")
OPTIONS = (
    UPDATE,
    Option(
        "feedback",
        "symmetric",
        "learning signals through the transposed weights, or fixed random ones",
        FEEDBACKS,
    ),
    Option(
        "block",
        None,
        "steps per trace update with rule.update=sequence (the same gradient; null: rule.k)",
        type=int,
        minimum=1,
    ),
)


class Eligibility:
    """Filtered eligibility traces of one weight matrix ``W`` [N, D] for a batch and the gradient they
    give (Bellec et al. 2020, Methods, LIF neurons):

        eps_i[t]    = alpha eps_i[t-1] + pre_i[t]          eligibility vector, [B, D]
        e_ji[t]     = psi_j[t] eps_i[t]                    eligibility trace
        ebar_ji[t]  = kappa ebar_ji[t-1] + e_ji[t]         filtered as the readout filters, [B, N, D]
        dW_ji      += sum_b L_bj[t] ebar_bji[t]            for a learning signal L[t] [B, N]

    ``eps`` is exact for the soft reset with ``detach_reset`` (dv[t]/dv[t-1] = alpha); for the other
    reset modes it is the paper's LIF approximation, which ignores the reset.

    Blocks: advancing ``ebar`` [B, N, D] and contracting it with ``L`` at every step costs two passes
    over B*N*D numbers per step (64 x 256 x 256 float32: 17 MB). Both are done once per block of
    ``block`` steps instead, exactly: within a block t0..t1 the steps' ``psi``, ``eps`` and ``L`` are
    kept ([block, B, N + D + N]) and, with ``Lbar[s] = sum_{s<=t<=t1} kappa^{t-s} L[t]``,

        sum_{t0<=t<=t1} sum_b L_bj[t] ebar_bji[t] = sum_b (sum_t kappa^{t-t0+1} L_bj[t]) ebar_bji[t0-1]
                                                 + sum_{s, b} psi_bj[s] Lbar_bj[s] eps_bi[s]

    (one contraction with the carried ``ebar`` and one matrix product), and
    ``ebar[t1] = kappa^{t1-t0+1} ebar[t0-1] + sum_s kappa^{t1-s} psi[s] eps[s]^T`` (one batched product).
    The gradient of a block is therefore known ``block - 1`` steps late at most; memory stays
    independent of T. ``block = 1`` is the plain per-step recursion. A sequence shorter than one block
    never materialises ``ebar``; memory is O(block * B * (N + D)) besides it.

    While the presynaptic input is the same at every step (the bias' constant 1, or a ``direct``-encoded
    image into the first layer) the traces factorise: ``eps[t] = a[t] pre`` with ``a[t] = alpha a[t-1] +
    1``, so ``ebar_ji[t] = q_j[t] pre_i`` with ``q[t] = kappa q[t-1] + a[t] psi[t]`` [B, N] and the
    gradient is ``(sum_t L[t] q[t])^T pre``. When the input changes the full form takes over and the
    prefix's part of ``ebar``, ``q const^T``, stays factorised (it only decays). "The same" means the
    very tensor of the first step, not changed in place since (identity and version counter): values are
    never compared, which would wait for the device at every step.
    """

    def __init__(self, alpha: float, kappa: float, block: int = 1) -> None:
        self.alpha, self.kappa, self.block = alpha, kappa, block
        self.const: Tensor | None = None  # the presynaptic input while it is constant, [B, D]
        self._source: tuple[Tensor, int | None] | None = None  # the tensor it was copied from, its version
        self.a = 0.0
        self.q: Tensor | None = None  # [B, N], factorised form (then: the decaying prefix of ebar)
        self.lq: Tensor | None = None  # sum_t L[t] q[t] since the last flush, [B, N]
        self.eps: Tensor | None = None  # [B, D], full form
        self.ebar: Tensor | None = None  # [B, N, D], carried between blocks of the full form
        self.pending: list[tuple[Tensor, Tensor, Tensor]] = []  # (psi, eps, L) of the current block

    @property
    def full(self) -> bool:
        return self.eps is not None

    def step(self, psi: Tensor, pre: Tensor, signal: Tensor) -> Tensor | None:
        """Advance one step -- ``psi`` [B, N] surrogate derivatives, ``pre`` [B, D] presynaptic input,
        ``signal`` [B, N] learning signal -- and return the gradient [N, D] of the steps completed since
        the last one returned (None while a block is open)."""
        if not self.full:
            if self.const is None:
                # a copy: an encoder may hand out one tensor changed in place
                self.const, self.a, self.q = pre.clone(), 1.0, psi.clone()
                self._source = (pre, tensor_version(pre))
            elif pre is self._source[0] and tensor_version(pre) == self._source[1]:
                self.a = self.alpha * self.a + 1.0
                self.q.mul_(self.kappa).add_(psi, alpha=self.a)
            else:  # the input changed: continue in the full form, the prefix ebar = q const^T kept factorised
                before = self.flush()  # the constant phase's gradient
                self.eps = self.const * self.a
                after = self._advance(psi, pre, signal)
                return before if after is None else after if before is None else before.add_(after)
            lq = signal * self.q
            self.lq = lq if self.lq is None else self.lq.add_(lq)
            return self.flush() if self.block == 1 else None
        return self._advance(psi, pre, signal)

    def _advance(self, psi: Tensor, pre: Tensor, signal: Tensor) -> Tensor | None:
        self.eps = self.eps * self.alpha + pre
        self.pending.append((psi, self.eps, signal))
        return self.flush() if len(self.pending) == self.block else None

    def flush(self, last: bool = False) -> Tensor | None:
        """The gradient [N, D] of the steps not yet returned (None if there are none); ``last``: no step
        follows, so the carried trace is not advanced."""
        if not self.full:
            if self.lq is None:
                return None
            out, self.lq = as_state(self.lq.T @ self.const), None
            return out
        if not self.pending:
            return None
        psi, eps, signal = (torch.stack(v) for v in zip(*self.pending, strict=True))  # [k, B, .]
        self.pending = []
        k, B, N = psi.shape
        powers = self.kappa ** torch.arange(k, dtype=psi.dtype, device=psi.device)  # kappa^0 .. kappa^(k-1)
        lbar = anticausal(signal, self.kappa)
        out = as_state((psi * lbar).reshape(k * B, N).T @ eps.reshape(k * B, -1))
        carried = torch.einsum("k,kbn->bn", powers * self.kappa, signal)
        if self.q is not None:  # the factorised prefix, decayed since the input changed
            add_mm_(out, (carried * self.q).T, self.const)
        # The products with the per-sample traces ebar [B, N, D] stay float32 under bf16: they make one
        # pass over the trace (an inner dimension of one sample or the block's steps), which a bf16 cast
        # of the trace would double, and a bf16 result would cost another pass to add.
        with full_precision(psi.device.type):
            if self.ebar is not None:
                out.add_(torch.einsum("bn,bnd->nd", as_state(carried), self.ebar))
            if not last:
                if self.q is not None:
                    self.q.mul_(self.kappa**k)
                weighted = (psi * powers.flip(0)[:, None, None]).permute(1, 2, 0)  # [B, N, k]
                if self.ebar is None:
                    self.ebar = torch.bmm(weighted, as_state(eps).transpose(0, 1))
                else:
                    self.ebar.mul_(self.kappa**k).baddbmm_(weighted, as_state(eps).transpose(0, 1))
        return out


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
    With ``sequence`` the traces advance in blocks of ``rule.options.block`` steps (null: ``rule.k``, what
    configs written before the option meant; :class:`Eligibility`: the same gradient, fewer passes over
    the [B, N, D] traces); ``step`` needs every step's gradient at once and uses blocks of one step.

    Input gradient (attacks): the first layer's learning signal, filtered back in time by kappa, through
    its eligibility path ``psi``, the leak alpha and ``W_1`` (:meth:`OnlineRule.input_gradient`).
    """

    name = "eprop"
    locality = Locality(Spatial.BROADCAST, Temporal.ONLINE, weight_transport=True, memory=Memory.ONE)
    paper = (
        "Bellec, Scherr, Subramoney, Hajek, Salaj, Legenstein & Maass (2020), A solution to the learning "
        "dilemma for recurrent networks of spiking neurons, Nat. Commun."
    )
    deviations = (
        "the paper defines e-prop for one recurrent layer under a readout; the extension to several layers "
        "(a lower layer's learning signal sent down through the transposed forward weights, or its own random "
        "matrix) is this project's",
        "LIF neurons only (no adaptive ALIF neurons) and no firing-rate regularisation",
        "the readout leak is credited as in the paper: the eligibility traces are filtered by kappa",
    )
    options = OPTIONS

    def __init__(self, cfg: RuleConfig, net: Network, gen: torch.Generator) -> None:
        super().__init__(cfg, net, gen)
        self.feedback = self.opts["feedback"]
        self.block = (self.opts["block"] or cfg.k) if self.update == "sequence" else 1
        if self.feedback == "random":
            self.fixed = feedback_matrices(gen, net)

    @classmethod
    def check_config(cls, cfg: RuleConfig) -> None:
        super().check_config(cfg)
        if cfg.value("block") is not None and cls.option_values(cfg)["update"] == "step":
            raise ConfigError(
                "rule 'eprop': rule.options.block is for rule.update=sequence (step uses blocks of one step)"
            )

    @classmethod
    def locality_for(cls, cfg: RuleConfig) -> Locality:
        """Random feedback has no weight transport (rank 4); symmetric feedback has (rank 3)."""
        feedback = cls.option_values(cfg)["feedback"]
        return replace(cls.locality, weight_transport=feedback == "symmetric")

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
                signal = net.layers[i].vjp_input(signal)
        return out

    def begin(self, net: Network) -> None:
        kappa, block = net.readout.kappa, self.block
        self._ones: Tensor | None = None
        self._traces = [
            [
                (param, pre, Eligibility(layer.params.alpha, kappa, block))
                for param, pre in ((layer.weight, "input"), (layer.rec, "prev"), (layer.bias, "one"))
                if param is not None
            ]
            for layer in net.layers
        ]

    def accumulate(self, net: Network, view: StepView, signals: list[Tensor]) -> None:
        if self._ones is None:
            self._ones = view.y.new_ones(view.y.shape[0], 1)
        for i, traces in enumerate(self._traces):
            pres = {"input": view.inputs[i], "prev": view.prev[i], "one": self._ones}
            for param, pre, trace in traces:
                grad = trace.step(view.psi[i], pres[pre], signals[i])
                if grad is not None:
                    add_grad(param, grad.view_as(param))

    def finish(self, net: Network) -> None:
        for traces in self._traces:
            for param, _, trace in traces:
                grad = trace.flush(last=True)
                if grad is not None:
                    add_grad(param, grad.view_as(param))
