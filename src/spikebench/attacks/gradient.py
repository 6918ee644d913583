"""Gradient attacks: FGSM and PGD, with any gradient source (exact, rule, or a transfer source)."""

from __future__ import annotations

import torch
from torch import Tensor

from spikebench.attacks.adapter import GradientSource
from spikebench.attacks.base import ATTACKS, Attack, AttackOptions, AttackResult, Target
from spikebench.attacks.threat import AttackError, ThreatModel


def _gradient(target: Target) -> GradientSource:
    if target.gradient is None:
        raise AttackError("a gradient attack needs a gradient source")
    return target.gradient


def wrong(target: Target, x: Tensor, labels: Tensor, logits: Tensor | None) -> Tensor:
    """[B] bool: ``x`` is misclassified by the attack's model (``logits`` of ``x`` if already known)."""
    if logits is None:
        logits = target.model(x)
    return logits.argmax(1) != labels


@ATTACKS.register("fgsm")
class FGSM(Attack):
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size eps along the gradient."""

    kind = "gradient"

    @classmethod
    def calls(cls, options: AttackOptions) -> int:
        return 1

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
    """Projected gradient descent (Madry et al. 2018) with restarts, keeping the best iterate."""

    kind = "gradient"

    def perturb(
        self, target: Target, x: Tensor, labels: Tensor, threat: ThreatModel, gen: torch.Generator
    ) -> AttackResult:
        """``x[k+1] = P(x[k] + a * s(grad_x L(x[k], y)))`` for ``steps`` steps (Madry et al. 2018, eq. 2),
        ``a = step_size`` (default ``2.5 eps / steps``), from ``x`` or a random start (later restarts
        always start at random).

        Every iterate of every restart is checked: a sample is broken as soon as one iterate is
        misclassified, keeps that iterate and is attacked no further (the best iterate); later restarts
        attack only the unbroken samples, and the attack stops once all are broken. An unbroken sample
        keeps the last iterate of the last restart.
        """
        opts = self.options
        grad = _gradient(target)
        alpha = opts.step_size or 2.5 * threat.eps / opts.steps
        best = x.clone()
        broken_at = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
        queries = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        for run in range(opts.restarts):
            idx = (broken_at < 0).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            x0, y = x[idx], labels[idx]
            xk = threat.random_start(x0, gen) if opts.random_start or run > 0 else x0
            for step in range(opts.steps + 1):
                g, logits = grad.evaluate(xk, y) if step < opts.steps else (None, None)
                if g is not None:
                    queries[idx] += grad.draws
                hit = wrong(target, xk, y, logits)
                best[idx[hit]], broken_at[idx[hit]] = xk[hit], step
                keep = ~hit
                idx, x0, y, xk = idx[keep], x0[keep], y[keep], xk[keep]
                if idx.numel() == 0 or g is None:
                    break
                xk = threat.project(xk + alpha * threat.steepest(g[keep]), x0)
            best[idx] = xk
        return AttackResult(best, queries, broken_at)
