"""Gradient attacks: FGSM and PGD, with any gradient source (exact, rule, or a transfer source)."""

from __future__ import annotations

import torch
from torch import Tensor

from spikebench.attacks.base import ATTACKS, Attack, AttackResult, Target
from spikebench.attacks.threat import AttackError, ThreatModel


def _gradient(target: Target):
    if target.gradient is None:
        raise AttackError("a gradient attack needs a gradient source")
    return target.gradient


@ATTACKS.register("fgsm")
class FGSM(Attack):
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size eps along the gradient."""

    kind = "gradient"

    def perturb(
        self, target: Target, x: Tensor, labels: Tensor, threat: ThreatModel, gen: torch.Generator
    ) -> AttackResult:
        """``x_adv = P(x + eps * s(grad_x L(x, y)))`` with ``s`` = sign (L-inf; the fast gradient method
        with ``g / ||g||_2`` for L2) and ``P`` the projection of ``threat``."""
        grad = _gradient(target)
        x_adv = threat.project(x + threat.eps * threat.steepest(grad(x, labels)), x)
        queries = torch.full((x.shape[0],), grad.draws, dtype=torch.long, device=x.device)
        return AttackResult(x_adv, queries)


@ATTACKS.register("pgd")
class PGD(Attack):
    """Projected gradient descent (Madry et al. 2018): steps of steepest ascent, projected, restarts."""

    kind = "gradient"

    def perturb(
        self, target: Target, x: Tensor, labels: Tensor, threat: ThreatModel, gen: torch.Generator
    ) -> AttackResult:
        """``x[k+1] = P(x[k] + a * s(grad_x L(x[k], y)))`` for ``steps`` steps (Madry et al. 2018, eq. 2),
        ``a = step_size`` (default ``2.5 eps / steps``), from ``x`` or a random start. With restarts,
        each later run attacks only the samples no earlier run has broken; a sample keeps the result of
        the run that broke it (or of the last run)."""
        opts = self.options
        grad = _gradient(target)
        alpha = opts.step_size or 2.5 * threat.eps / opts.steps
        best = x.clone()
        queries = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        idx = torch.arange(x.shape[0], device=x.device)
        for run in range(opts.restarts):
            x0, y = x[idx], labels[idx]
            xk = threat.random_start(x0, gen) if opts.random_start or run > 0 else x0
            for _ in range(opts.steps):
                xk = threat.project(xk + alpha * threat.steepest(grad(xk, y)), x0)
            queries[idx] += opts.steps * grad.draws
            best[idx] = xk
            if run == opts.restarts - 1:
                break
            queries[idx] += 1
            idx = idx[target.model(xk).argmax(1) == y]  # still unbroken: try again
            if idx.numel() == 0:
                break
        return AttackResult(best, queries)
