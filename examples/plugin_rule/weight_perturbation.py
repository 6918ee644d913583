"""Weight perturbation: a learning rule in one file, as a spikebench plugin.

Every weight learns from one number, the change of the loss when all weights are perturbed at once:
no backward pass, no error sent through the network, no weight transport. For ``P`` random directions
``eps_p`` (Gaussian, one number per parameter) per batch and a width ``sigma``:

    g = 1/P sum_p (L(theta + sigma eps_p) - L(theta - sigma eps_p)) / (2 sigma) * eps_p

the antithetic estimate of the gradient of the Gaussian-smoothed loss ``E[L(theta + sigma eps)]``
(Salimans et al. 2017), which is defined even though a spiking network's loss is piecewise constant in
its hidden weights. ``L`` is bptt's loss, the cross-entropy of the time-averaged readout, so the rule
needs the whole sequence (memory O(T)). The estimate's variance grows with the number of weights: it
learns far more slowly than backprop -- the cost of locality that spikebench measures.

Use it with ``spikebench train --plugin examples/plugin_rule/weight_perturbation.py --set
rule.name=weight-perturbation``, or ``pip install examples/plugin_rule`` (its entry point then loads it
in every command).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from spikebench.config import RuleConfig
from spikebench.data.encoders import Encoding
from spikebench.nn import Network
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
)


@RULES.register("weight-perturbation")
class WeightPerturbation(LearningRule):
    """Weight perturbation: the loss change under random perturbations of all weights, sent to every weight."""

    name = "weight-perturbation"
    # one scalar broadcast to every weight, the whole sequence's loss, nothing transported
    locality = Locality(Spatial.BROADCAST, Temporal.FULL, weight_transport=False, memory=Memory.T)
    paper = (
        "Salimans, Ho, Chen, Sidor & Sutskever (2017), Evolution strategies as a scalable alternative to "
        "reinforcement learning, arXiv:1703.03864"
    )
    deviations = (
        "applied to a spiking network trained by supervised loss (the paper's setting is reinforcement "
        "learning), with every parameter perturbed at once",
    )
    archs = ("mlp", "conv")
    options = (
        Option("directions", 4, "random directions averaged per batch", type=int, minimum=1),
        Option("sigma", 0.01, "width of the perturbation of every weight", type=float, minimum=1e-6),
    )
    # the rule's own input gradient (below): the same estimator in input space

    def __init__(self, cfg: RuleConfig, net: Network, gen: torch.Generator) -> None:
        super().__init__(cfg, net, gen)
        self.directions, self.sigma = self.opts["directions"], self.opts["sigma"]
        self.seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        self.step = 0  # batches trained: batch s draws its directions from seed + s (resumable)
        self.input_draws = torch.Generator().manual_seed(self.seed)

    def losses(self, net: Network, x_seq: Tensor, labels: Tensor) -> Tensor:
        """Per-sample loss [B] of the time-averaged readout."""
        return F.cross_entropy(net(x_seq).logits, labels, reduction="none")

    def train_batch(
        self, net: Network, x: Tensor, labels: Tensor, enc: Encoding, apply: Apply
    ) -> BatchResult:
        x_seq = enc.sequence(x)
        params = [p for p in net.parameters() if p.requires_grad]
        draws = torch.Generator().manual_seed(self.seed + self.step)
        self.step += 1
        with torch.no_grad():
            logits = net(x_seq).logits
            theta = [p.detach().clone() for p in params]
            for _ in range(self.directions):
                eps = [torch.randn(p.shape, generator=draws).to(p) for p in params]
                change = []
                for sign in (1.0, -1.0):
                    for p, t, e in zip(params, theta, eps, strict=True):
                        p.copy_(t + sign * self.sigma * e)
                    change.append(self.losses(net, x_seq, labels).mean())
                scale = (change[0] - change[1]) / (2 * self.sigma * self.directions)
                for p, t, e in zip(params, theta, eps, strict=True):
                    p.copy_(t)
                    p.grad = e * scale if p.grad is None else p.grad.add_(e * scale)
        apply()
        return BatchResult(F.cross_entropy(logits, labels).item(), logits)

    def input_gradient(self, net: Network, x_seq: Tensor, labels: Tensor) -> Tensor:
        """The same estimator in input space, sample by sample: ``g_i = 1/P sum_p (L_i(x + sigma u_p) -
        L_i(x - sigma u_p)) / (2 sigma B) u_p`` for Gaussian ``u_p`` of the shape of ``x_seq`` [T, B, ...]
        (scaled like the gradient of the batch-mean loss)."""
        B = x_seq.shape[1]
        g = torch.zeros(x_seq.shape, dtype=x_seq.dtype, device=x_seq.device)
        with torch.no_grad():
            for _ in range(self.directions):
                u = torch.randn(x_seq.shape, generator=self.input_draws).to(g)
                d = self.losses(net, x_seq + self.sigma * u, labels) - self.losses(
                    net, x_seq - self.sigma * u, labels
                )
                g += u * (d / (2 * self.sigma * self.directions * B)).view(1, B, *[1] * (x_seq.dim() - 2))
        return g

    def state_dict(self) -> dict[str, Tensor]:
        return {"seed": torch.tensor(self.seed), "step": torch.tensor(self.step)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if set(state) != {"seed", "step"}:
            raise ValueError(f"rule {self.name!r} state has {sorted(state)}, expected seed and step")
        self.seed, self.step = int(state["seed"]), int(state["step"])
        self.input_draws = torch.Generator().manual_seed(self.seed)
