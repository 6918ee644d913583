"""Fisher information of a trained spiking network, rule-agnostic: from the network's own likelihood.

The network's predictive distribution after the first t of T steps is
``p_t(c | x) = softmax(m_t)_c`` with ``m_t = 1/t sum_{s<t} y[s]`` the readout averaged over the first t
steps (``m_T`` is the decision variable of every rule). We report the trace of the empirical Fisher
information matrix (Martens 2020, "New insights and perspectives on the natural gradient method", §11;
Kirkpatrick et al. 2017 use its diagonal) over n samples with their true labels:

    F_t = 1/n sum_i || d/dtheta log p_t(y_i | x_i) ||^2,

per layer (the sum over that layer's parameters: ``layers.0``, ..., ``readout``) and in total, for every
prefix t = 1..T (how the information the readout carries builds up over time), with surrogate
derivatives for the spikes. "Empirical": the labels are the data's, not samples from the model.

Per-sample gradients without a loop over samples: samples in a batch do not interact, so the gradient
of the summed loss with respect to a layer's input currents ``c[t]`` [B, N] is, row by row, each
sample's own ``delta_i[t]``. A weight used at every step (``W``, ``V``, ``W_out``) has per-sample
gradient ``G_i = sum_t delta_i[t] a_i[t]^T`` (``a``: the layer's input, the previous spikes, or the
readout's input), whose squared norm is a sum over pairs of steps of products of inner products,

    ||G_i||^2 = sum_{s,t} <delta_i[s], delta_i[t]> <a_i[s], a_i[t]>

(Goodfellow 2015, "Efficient per-example gradient computations", extended over time), and a bias has
``||sum_t delta_i[t]||^2``. One backward pass per prefix gives every sample's gradient for that prefix.
This reads the currents of the network's layers, so it supports the multilayer perceptron
(:class:`~spikebench.nn.SpikingLinear` layers and the leaky :class:`~spikebench.nn.Readout`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from spikebench.analysis.errors import AnalysisError
from spikebench.dynamics import lif
from spikebench.nn import Network, Readout, SpikingLinear
from spikebench.nn.network import is_time_constant, leak_kernel


@dataclass
class FisherInfo:
    """Trace of the empirical Fisher per time prefix: ``prefix[t-1]`` = F_t in total and per layer."""

    samples: int
    prefix: list[float]
    prefix_layers: dict[str, list[float]]

    @property
    def total(self) -> float:
        """F_T: the trace for the decision variable (all T steps)."""
        return self.prefix[-1]

    @property
    def layers(self) -> dict[str, float]:
        """F_T per layer."""
        return {name: values[-1] for name, values in self.prefix_layers.items()}

    def to_dict(self) -> dict:
        return {
            "samples": self.samples,
            "total": self.total,
            "layers": self.layers,
            "prefix": self.prefix,
            "prefix_layers": self.prefix_layers,
        }


def _time_gram(a: Tensor) -> Tensor:
    """[T, B, D] -> [B, T, T] inner products between the steps of each sample."""
    if is_time_constant(a):  # the same input at every step (direct encoding): one inner product
        return a[0].pow(2).sum(-1)[:, None, None].expand(a.shape[1], a.shape[0], a.shape[0])
    return torch.einsum("sbd,tbd->bst", a, a)


def _sq_norm(delta: Tensor, gram: Tensor) -> Tensor:
    """Per-sample ``||sum_t delta[t] a[t]^T||^2`` from ``delta`` [t, B, N] and the time Gram of ``a``."""
    t = delta.shape[0]
    return (_time_gram(delta) * gram[:, :t, :t]).sum((1, 2))


def _check_supported(net: Network) -> None:
    if type(net.readout) is not Readout or any(type(layer) is not SpikingLinear for layer in net.layers):
        raise AnalysisError("Fisher information supports networks of SpikingLinear layers (model.arch=mlp)")


def _chunk(net: Network, x_seq: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Per prefix, the sum over the samples of the chunk of their squared gradient norms: {layer: [T]}."""
    T = x_seq.shape[0]
    with torch.enable_grad():
        h = SpikingLinear.flatten(x_seq).detach()
        currents, grams = [], []
        for layer in net.layers:
            c = layer.currents(h)
            z, _ = lif.scan(layer.params, c, layer.rec)
            prev = torch.cat([torch.zeros_like(z[:1]), z[:-1]]) if layer.rec is not None else None
            currents.append(c)
            grams.append((_time_gram(h.detach()), None if prev is None else _time_gram(prev.detach())))
            h = z
        u = net.readout.linear(h)  # y[t] = sum_{s<=t} kappa^(t-s) u[s] (Readout.forward)
        y = torch.einsum("ts,sbc->tbc", leak_kernel(T, net.readout.kappa, device=u.device, dtype=u.dtype), u)
        steps = torch.arange(1, T + 1, device=y.device, dtype=y.dtype)[:, None, None]
        probs = torch.softmax(y.detach().cumsum(0) / steps, -1)
        # d(-log p_t)/dm_t = softmax(m_t) - onehot(label); the sign does not matter for a squared norm
        err = probs - F.one_hot(labels, probs.shape[-1]).to(probs.dtype)
        readout_gram = _time_gram(h.detach())
        names = [f"layers.{i}" for i in range(len(net.layers))] + ["readout"]
        out = {name: torch.zeros(T, dtype=torch.float64, device=y.device) for name in names}
        for t in range(1, T + 1):
            cot = torch.zeros_like(y)
            cot[:t] = err[t - 1] / t  # dm_t/dy[s] = 1/t for s < t
            deltas = torch.autograd.grad(y, [*currents, u], cot, retain_graph=t < T)
            for name, delta, (g_in, g_rec) in zip(names, deltas, [*grams, (readout_gram, None)], strict=True):
                d = delta[:t]  # causal: nothing after step t reaches m_t
                sq = _sq_norm(d, g_in) + d.sum(0).pow(2).sum(-1)
                if g_rec is not None:
                    sq = sq + _sq_norm(d, g_rec)
                out[name][t - 1] = sq.double().sum()
    return out


def fisher_from_chunks(net: Network, chunks: Iterable[tuple[Tensor, Tensor]]) -> FisherInfo:
    """Trace of the empirical Fisher of ``net`` per layer and per time prefix (see the module
    docstring) over chunks of encoded inputs [T, b, ...] with their true labels [b]. Weights and
    ``.grad`` are not touched."""
    _check_supported(net)
    n, sums = 0, {}
    for x_seq, labels in chunks:
        part = _chunk(net, x_seq, labels)
        sums = part if not sums else {k: sums[k] + v for k, v in part.items()}
        n += int(labels.shape[0])
    if n == 0:
        raise AnalysisError("Fisher information needs at least one sample")
    prefix_layers = {k: (v / n).tolist() for k, v in sums.items()}
    total = (torch.stack(list(sums.values())).sum(0) / n).tolist()
    return FisherInfo(n, total, prefix_layers)


def fisher_information(net: Network, x_seq: Tensor, labels: Tensor, chunk: int = 100) -> FisherInfo:
    """:func:`fisher_from_chunks` on encoded inputs ``x_seq`` [T, n, ...] and labels [n], taken
    ``chunk`` samples at a time."""
    starts = range(0, x_seq.shape[1], chunk)
    return fisher_from_chunks(net, ((x_seq[:, i : i + chunk], labels[i : i + chunk]) for i in starts))
