"""Alignment of a rule's update with the exact BPTT gradient, per layer, on the same batch and weights.

For a batch (x, labels) and the current weights, the reference is the exact surrogate-gradient BPTT
gradient ``g = dL/dtheta`` of the sequence loss ``L = CE(1/T sum_t y[t], label)``
(:func:`spikebench.rules.base.sequence_loss`); the rule's update ``u`` is what the rule accumulates in
``.grad`` over the whole sequence when its ``apply`` does not step (rules only add into ``.grad``, so at
fixed weights this is its per-sequence update). Per layer (``layers.0``, ``layers.1``, ..., ``readout``
and ``all`` for the whole network) we report

    cosine = <u, g> / (|u| |g|),        norm_ratio = |u| / |g|

(as in Lillicrap et al. 2016 and Bellec et al. 2020, who compare updates to backprop by their angle).
``cosine`` is None (null) when either vector is zero; ``norm_ratio`` is None when ``|g| = 0``.

A rule may follow another objective than bptt's: online rules minimise the per-step cross-entropy
``L_step = (1/T) sum_t CE(y[t], label)`` (:func:`step_loss`), and even its exact gradient is not
parallel to bptt's. :func:`measure_alignments` therefore also compares the update with the exact
(BPTT) gradient of the rule's *own* objective (:func:`own_objective`). How close a cosine is to what
chance gives depends on the dimension: :func:`random_cosine_quantile` is the 97.5% quantile of |cos|
between a fixed vector and a uniformly random direction in d dimensions.

Measuring leaves training untouched: the weights are not stepped, ``.grad`` is saved and restored, the
rule runs as a copy that shares the network (so its random streams and any state it keeps between
batches are not consumed or changed), the input is encoded with the caller's own generator, and the
global random state is restored.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from spikebench.analysis.errors import AnalysisError
from spikebench.data.encoders import Encoding
from spikebench.nn import Network
from spikebench.rules.base import LearningRule, sequence_loss


def layer_of(param_name: str) -> str:
    """The layer a parameter belongs to: ``layers.1.rec`` -> ``layers.1``, ``readout.linear.weight`` ->
    ``readout`` (a module list's entry, else the top-level module)."""
    parts = param_name.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]


Loss = Callable[[Tensor, Tensor], Tensor]


def step_loss(readout: Tensor, labels: Tensor) -> Tensor:
    """The online rules' objective: ``(1/T) sum_t CE(y[t], label)`` (batch mean) of the readout
    ``y`` [T, B, C], ``labels`` [B]."""
    return F.cross_entropy(readout.flatten(0, 1), labels.repeat(readout.shape[0]))


def own_objective(rule: LearningRule) -> tuple[str, Loss]:
    """The objective ``rule`` follows: ``("per-step", step_loss)`` for online rules, ``("sequence",
    sequence_loss)`` (bptt's) for rules that see the whole sequence."""
    return ("per-step", step_loss) if rule.online else ("sequence", sequence_loss)


def exact_gradient(net: Network, x_seq: Tensor, labels: Tensor, loss_fn: Loss) -> dict[str, Tensor]:
    """Exact BPTT gradient of ``loss_fn(readout, labels)`` at ``x_seq`` [T, B, ...], ``labels`` [B], by
    parameter name; ``.grad`` is not touched."""
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    with torch.enable_grad():
        loss = loss_fn(net(x_seq).readout, labels)
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(named, grads, strict=True)}


def bptt_gradient(net: Network, x_seq: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Exact BPTT gradient of :func:`sequence_loss` (bptt's objective)."""
    return exact_gradient(net, x_seq, labels, sequence_loss)


def random_cosine_quantile(d: int, q: float = 0.975) -> float:
    """The ``q`` quantile of ``|cos|`` between a fixed vector and a direction drawn uniformly from the
    sphere in ``d`` dimensions: ``cos^2 ~ Beta(1/2, (d-1)/2)``, so the quantile is
    ``sqrt(I^-1_q(1/2, (d-1)/2))`` (inverse regularised incomplete beta function). 1 for ``d = 1``."""
    if d < 1:
        raise ValueError(f"dimension must be positive, got {d}")
    if d == 1:
        return 1.0
    from scipy.special import betaincinv  # scipy comes with scikit-learn

    return math.sqrt(float(betaincinv(0.5, (d - 1) / 2.0, q)))


def rule_update(
    net: Network, rule: LearningRule, x: Tensor, labels: Tensor, enc: Encoding
) -> dict[str, Tensor]:
    """The update ``rule`` accumulates in ``.grad`` for one batch (``x`` [B, ...] analogue input) at
    fixed weights, by parameter name. ``.grad`` and the rule itself are left as they were."""
    shared: dict[int, Any] = {id(m): m for m in net.modules()}
    shared.update({id(t): t for t in (*net.parameters(), *net.buffers())})
    try:
        probe = copy.deepcopy(rule, memo=shared)  # shares the network, copies the rule's own state
    except (TypeError, copy.Error) as exc:
        raise AnalysisError(f"rule {rule.name!r} cannot be copied to measure its update: {exc}") from exc
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    saved = [p.grad for _, p in named]
    for _, p in named:
        p.grad = None
    try:
        with torch.enable_grad():
            probe.train_batch(net, x, labels, enc, lambda: None)
        return {n: torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for n, p in named}
    finally:
        for (_, p), g in zip(named, saved, strict=True):
            p.grad = g


def _compare(u: Tensor, g: Tensor) -> dict[str, float | None]:
    u, g = u.double(), g.double()
    nu, ng = float(torch.linalg.vector_norm(u)), float(torch.linalg.vector_norm(g))
    cosine = float(u @ g) / nu / ng if nu > 0 and ng > 0 else None
    if cosine is not None:
        cosine = max(-1.0, min(1.0, cosine))
    return {
        "cosine": cosine,
        "norm_ratio": nu / ng if ng > 0 else None,
        "rule_norm": nu,
        "bptt_norm": ng,
    }


def layer_sizes(net: Network) -> dict[str, int]:
    """Number of trainable parameters per layer (as :func:`layer_of` groups them): the dimension of the
    vectors whose cosine :func:`compare_updates` reports."""
    out: dict[str, int] = {}
    for name, p in net.named_parameters():
        if p.requires_grad:
            out[layer_of(name)] = out.get(layer_of(name), 0) + p.numel()
    return out


def compare_updates(update: dict[str, Tensor], reference: dict[str, Tensor]) -> dict[str, dict]:
    """Per layer (and ``all``): cosine, norm ratio and both norms of ``update`` against ``reference``
    (both by parameter name, as :func:`rule_update` and :func:`bptt_gradient` return them). ``all`` is
    the cosine of the concatenated parameters: layers with larger updates weigh more in it."""
    layers: dict[str, list[str]] = {}
    for name in reference:
        layers.setdefault(layer_of(name), []).append(name)
    layers["all"] = list(reference)
    out = {}
    for layer, names in layers.items():
        u = torch.cat([update[n].flatten() for n in names])
        g = torch.cat([reference[n].flatten() for n in names])
        out[layer] = _compare(u, g)
    return out


def measure_alignment(
    net: Network, rule: LearningRule, x: Tensor, labels: Tensor, enc: Encoding
) -> dict[str, dict]:
    """Alignment of ``rule``'s update with BPTT on one batch, per layer (see the module docstring).

    ``enc`` should own a generator used for nothing else: both passes see the same encoded input (its
    state is rewound between them), and it is advanced afterwards.
    """
    return measure_alignments(net, rule, x, labels, enc, own=False)["bptt"]


def measure_alignments(
    net: Network, rule: LearningRule, x: Tensor, labels: Tensor, enc: Encoding, own: bool = True
) -> dict[str, Any]:
    """:func:`measure_alignment` against bptt's gradient (``"bptt"``) and, with ``own``, against the
    exact gradient of the rule's own objective (``"own"``; the same comparison when that objective is
    bptt's), with the objective's name (``"objective"``). One encoded input serves every pass."""
    device = next(net.parameters()).device
    cuda = (
        []
        if device.type != "cuda"
        else [torch.cuda.current_device() if device.index is None else device.index]
    )
    with torch.random.fork_rng(devices=cuda):
        start = enc.gen.get_state() if enc.gen is not None else None
        x_seq = enc.sequence(x)
        if start is not None:
            enc.gen.set_state(start)
        update = rule_update(net, rule, x, labels, enc)
        out: dict[str, Any] = {"bptt": compare_updates(update, bptt_gradient(net, x_seq, labels))}
        if own:
            objective, loss_fn = own_objective(rule)
            out["objective"] = objective
            if objective == "sequence":
                out["own"] = out["bptt"]
            else:
                out["own"] = compare_updates(update, exact_gradient(net, x_seq, labels, loss_fn))
    return out
