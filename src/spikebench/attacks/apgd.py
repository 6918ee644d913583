"""APGD-CE: Auto-PGD on the cross-entropy (Croce & Hein 2020, "Reliable evaluation of adversarial
robustness with an ensemble of diverse parameter-free attacks", Algorithm 1).

Compared with PGD, APGD needs no step size: it starts at ``2 eps``, moves with momentum 0.75, and at
checkpoints (after ``0.22 N`` steps, then at shrinking intervals down to ``0.06 N``) halves the step of
every sample whose loss rose in at most 75% of the steps since the last checkpoint, or whose best loss
did not improve since a checkpoint without halving; such a sample restarts from its best point. The
schedule, including the reference implementation's count over the first interval, follows the authors'
code (as in torchattacks' ``APGD``).

Unlike the reference implementation, a sample is attacked no further once one iterate is
misclassified (that iterate is kept), so its later best loss is not tracked; the other samples are
attacked exactly as there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from spikebench.attacks.base import ATTACKS, Attack, AttackResult, Target
from spikebench.attacks.gradient import _gradient
from spikebench.attacks.threat import ThreatModel, _per_sample

RHO = 0.75  # fraction of rising steps below which a checkpoint halves the step
MOMENTUM = 0.75


def apgd_start(x: Tensor, threat: ThreatModel, gen: torch.Generator) -> Tensor:
    """APGD's random start: ``x + eps * t / ||t||`` (t uniform in [-1, 1] per feature for L-inf,
    standard normal for L2; drawn in the default dtype), clipped into the domain."""
    if threat.norm == "linf":
        t = 2 * torch.rand(x.shape, generator=gen, device=x.device).to(x.dtype) - 1
    else:
        t = torch.randn(x.shape, generator=gen, device=x.device).to(x.dtype)
    scale = t.reshape(t.shape[0], -1).abs().amax(1) if threat.norm == "linf" else threat.norms(t) + 1e-12
    return threat.clip(x + threat.eps * t / _per_sample(scale, t))


@ATTACKS.register("apgd")
class APGD(Attack):
    """Auto-PGD on the cross-entropy (Croce & Hein 2020): momentum, step-size halving, best iterate."""

    kind = "gradient"

    def perturb(
        self, target: Target, x: Tensor, labels: Tensor, threat: ThreatModel, gen: torch.Generator
    ) -> AttackResult:
        """``steps`` APGD iterations per restart from APGD's random start; later restarts attack only the
        samples no earlier iterate broke. A broken sample keeps its first misclassified iterate; an
        unbroken one the point of highest loss of the last restart."""
        best = x.clone()
        broken_at = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
        queries = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        for _ in range(self.options.restarts):
            idx = (broken_at < 0).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            x_out, hit, q = self.single_run(target, x[idx], labels[idx], threat, gen)
            best[idx], broken_at[idx] = x_out, hit
            queries[idx] += q
        return AttackResult(best, queries, broken_at)

    def single_run(
        self, target: Target, x: Tensor, y: Tensor, threat: ThreatModel, gen: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One APGD run: (points [B, ...], step of the first misclassified iterate or -1 [B], queries
        [B]). The point is that iterate where there is one, else the iterate of highest loss."""
        grad_source = _gradient(target)
        n = self.options.steps
        k, k_min, k_decr = max(int(0.22 * n), 1), max(int(0.06 * n), 1), max(int(0.03 * n), 1)
        B = x.shape[0]
        dev = x.device

        def loss_grad(z: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            g, logits = grad_source.evaluate(z, labels)
            if logits is None:
                logits = target.model(z)
            return F.cross_entropy(logits, labels, reduction="none"), g, logits.argmax(1) != labels

        x_adv = apgd_start(x, threat, gen)
        loss, grad, hit = loss_grad(x_adv, y)
        queries = torch.full((B,), grad_source.draws, dtype=torch.long, device=dev)
        broken_at = torch.where(hit, 0, -1)
        found = x_adv.clone()
        active = ~hit
        x_old, x_best, grad_best, loss_best = x_adv.clone(), x_adv.clone(), grad.clone(), loss.clone()
        step = torch.full((B,), 2.0 * threat.eps, dtype=x.dtype, device=dev)
        loss_steps = torch.zeros(n, B, dtype=loss.dtype, device=dev)
        loss_best_last = loss_best.clone()
        reduced_last = torch.ones(B, dtype=torch.bool, device=dev)
        since_check = 0
        for i in range(n):
            ai = active.nonzero().squeeze(1)
            if ai.numel() == 0:
                break
            z, z_old, x0 = x_adv[ai], x_old[ai], x[ai]
            a = MOMENTUM if i > 0 else 1.0
            z1 = threat.project(z + _per_sample(step[ai], z) * threat.steepest(grad[ai]), x0)
            z1 = threat.project(z + (z1 - z) * a + (z - z_old) * (1 - a), x0)
            x_old[ai], x_adv[ai] = z, z1
            loss_i, grad_i, hit_i = loss_grad(z1, y[ai])
            queries[ai] += grad_source.draws
            grad[ai] = grad_i
            loss_steps[i, ai] = loss_i
            broken_at[ai[hit_i]], found[ai[hit_i]] = i + 1, z1[hit_i]
            better = loss_i > loss_best[ai]
            bi = ai[better]
            x_best[bi], grad_best[bi], loss_best[bi] = z1[better], grad_i[better], loss_i[better]
            active[ai[hit_i]] = False
            since_check += 1
            if since_check == k:
                rising = sum((loss_steps[i - c] > loss_steps[i - c - 1]).long() for c in range(k))
                halve = (rising <= k * RHO) | (~reduced_last & (loss_best_last >= loss_best))
                reduced_last, loss_best_last = halve.clone(), loss_best.clone()
                step[halve] /= 2.0
                x_adv[halve], grad[halve] = x_best[halve], grad_best[halve]
                since_check, k = 0, max(k - k_decr, k_min)
        out = torch.where(_per_sample(broken_at >= 0, x), found, x_best)
        return out, broken_at, queries
