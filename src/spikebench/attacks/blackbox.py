"""Gradient-free attacks: Square, NES, SPSA (query the logits only) and random noise (no queries).

They see the network only through ``f(x) -> logits``, so they are blind to how gradients flow (or do
not flow) through spikes: if one of them breaks more samples than an exact-gradient attack at the same
eps, the gradients are misleading the gradient attack (gradient masking, Athalye et al. 2018).

Every query attack minimises the margin ``z_y - max_{j != y} z_j`` (:func:`~spikebench.attacks.base.margin`),
stops spending queries on a sample as soon as it is misclassified, and never exceeds ``queries`` model
calls per sample.
"""

from __future__ import annotations

import math
from abc import abstractmethod

import torch
from torch import Tensor

from spikebench.attacks.base import ATTACKS, Attack, AttackOptions, AttackResult, Target, margin
from spikebench.attacks.threat import AttackError, ThreatModel, image_layout

CHUNK = 2048  # samples per forward pass when an attack queries many perturbed copies at once


def _logits(target: Target, x: Tensor) -> Tensor:
    """Logits of many inputs [M, ...], in chunks of :data:`CHUNK` samples."""
    return torch.cat([target.model(x[i : i + CHUNK]) for i in range(0, x.shape[0], CHUNK)])


def _randint(high: int, gen: torch.Generator) -> int:
    return int(torch.randint(high, (1,), generator=gen, device=gen.device).item())


def _signs(shape: tuple[int, ...], gen: torch.Generator, like: Tensor) -> Tensor:
    """Uniform random +-1 of ``shape`` (Rademacher)."""
    bits = torch.randint(0, 2, shape, generator=gen, device=like.device)
    return bits.to(like.dtype) * 2 - 1


# ---------------------------------------------------------------------------------------------
# Square attack


def square_fraction(p_init: float, i: int, budget: int) -> float:
    """Fraction of features a square covers at iteration ``i`` of ``budget`` (Andriushchenko et al.
    2020, sec. 3): ``p_init`` halved at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of a
    10,000-query run, with the schedule rescaled to ``budget``."""
    it = int(i / budget * 10000)
    return p_init / 2 ** sum(it > b for b in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000))


def pseudo_gaussian(h: int, w: int, like: Tensor) -> Tensor:
    """The centre-peaked pattern of the L2 Square attack (Andriushchenko et al. 2020, sec. 3.2),
    [h, w]: ``eta(r, c) = sum_{k=d}^{n} 1 / (k + 1)^2`` with ``d`` the Chebyshev distance of (r, c) to
    the centre and ``n = max(h, w) // 2`` (concentric squares, heavier towards the middle)."""
    n = max(h, w) // 2
    rows = (torch.arange(h, device=like.device, dtype=like.dtype) - (h - 1) / 2).abs()
    cols = (torch.arange(w, device=like.device, dtype=like.dtype) - (w - 1) / 2).abs()
    d = torch.maximum(rows[:, None], cols[None, :]).floor().long()
    weights = 1.0 / (torch.arange(n + 1, device=like.device, dtype=like.dtype) + 1) ** 2
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[d] = sum_{k >= d} weights[k]
    return tail[d.clamp(max=n)]


def square_pattern(h: int, w: int, like: Tensor) -> Tensor:
    """Unit-norm [h, w] pattern of the L2 Square attack: two pseudo-Gaussian halves of opposite sign
    (split along the longer side), so that an update moves mass inside the square."""
    if h >= w and h > 1:
        top = h // 2
        p = torch.cat([pseudo_gaussian(top, w, like), -pseudo_gaussian(h - top, w, like)], 0)
    elif w > 1:
        left = w // 2
        p = torch.cat([pseudo_gaussian(h, left, like), -pseudo_gaussian(h, w - left, like)], 1)
    else:
        p = pseudo_gaussian(h, w, like)
    return p / p.norm()


@ATTACKS.register("square")
class Square(Attack):
    """Square attack (Andriushchenko et al. 2020): random square updates accepted when the margin drops."""

    kind = "query"

    def perturb(
        self, target: Target, x: Tensor, labels: Tensor, threat: ThreatModel, gen: torch.Generator
    ) -> AttackResult:
        """Random search over the vertices of the L-inf ball (Alg. 1, with the square-size schedule of
        :func:`square_fraction`) or, for L2, over mass moved between squares of pseudo-Gaussian patterns
        (sec. 3.2). Each sample is viewed as (C, H, W) by :func:`image_layout`; squares are placed at
        random positions and the same square is used for all samples of an iteration. An update is kept
        when it lowers the margin; a sample stops as soon as it is misclassified."""
        budget = self.options.queries
        B = x.shape[0]
        C, H, W = image_layout(tuple(x.shape[1:]))
        xs = x.reshape(B, C, H, W)

        def query(v: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
            logits = _logits(target, v.reshape(v.shape[0], *x.shape[1:]))
            return margin(logits, y), logits.argmax(1) != y

        delta = self._init_linf(xs, threat, gen) if threat.norm == "linf" else self._init_l2(xs, threat, gen)
        best = threat.clip(xs + delta)
        best_margin, broken = query(best, labels)
        queries = torch.ones(B, dtype=torch.long, device=x.device)
        for i in range(1, budget):
            idx = (~broken).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            area = square_fraction(self.options.p_init, i, budget) * H * W
            sh = min(max(round(math.sqrt(area)), 1), H)
            sw = min(max(round(area / sh), 1), W)
            step = self._step_linf if threat.norm == "linf" else self._step_l2
            cand = step(xs[idx], best[idx], threat, sh, sw, gen)
            m, b = query(cand, labels[idx])
            queries[idx] += 1
            better = m < best_margin[idx]
            keep = idx[better]
            best[keep] = cand[better]
            best_margin[keep] = m[better]
            broken[keep] = b[better]
        return AttackResult(best.reshape(x.shape), queries)

    @staticmethod
    def _init_linf(xs: Tensor, threat: ThreatModel, gen: torch.Generator) -> Tensor:
        """Vertical stripes of +-eps (one sign per sample, channel and column), Alg. 1's start."""
        B, C, H, W = xs.shape
        return threat.eps * _signs((B, C, 1, W), gen, xs).expand(B, C, H, W)

    @staticmethod
    def _init_l2(xs: Tensor, threat: ThreatModel, gen: torch.Generator) -> Tensor:
        """A grid of up to 5 x 5 tiles, each a pseudo-Gaussian bump of random sign, scaled to norm eps."""
        B, C, H, W = xs.shape
        nh, nw = min(5, H), min(5, W)
        th, tw = H // nh, W // nw
        delta = torch.zeros_like(xs)
        bump = pseudo_gaussian(th, tw, xs)
        for r in range(nh):
            for c in range(nw):
                sign = _signs((B, C, 1, 1), gen, xs)
                delta[:, :, r * th : (r + 1) * th, c * tw : (c + 1) * tw] = sign * bump
        return threat.scale_to_eps(delta)

    @staticmethod
    def _step_linf(
        x: Tensor, best: Tensor, threat: ThreatModel, sh: int, sw: int, gen: torch.Generator
    ) -> Tensor:
        """Set one square of the perturbation to +-eps per channel (the sign flipped where that would
        leave the sample unchanged). The square is written twice, the second time with the flipped
        signs (the same values where none flipped), so that no sample's test is read back."""
        n, C, H, W = x.shape
        r, c = _randint(H - sh + 1, gen), _randint(W - sw + 1, gen)
        window = (slice(None), slice(None), slice(r, r + sh), slice(c, c + sw))
        signs = threat.eps * _signs((n, C, 1, 1), gen, x)
        cand = best.clone()
        cand[window] = threat.clip(x[window] + signs)
        same = (cand[window] - best[window]).abs().flatten(1).amax(1) < 1e-7
        signs = torch.where(same[:, None, None, None], -signs, signs)
        cand[window] = threat.clip(x[window] + signs)
        return cand

    @staticmethod
    def _step_l2(
        x: Tensor, best: Tensor, threat: ThreatModel, sh: int, sw: int, gen: torch.Generator
    ) -> Tensor:
        """Move the perturbation's mass from a second square into a first one, refilled with a new
        pattern of random sign plus its old direction; the whole perturbation is then rescaled to
        norm eps (sec. 3.2)."""
        n, C, H, W = x.shape
        delta = best - x
        r1, c1 = _randint(H - sh + 1, gen), _randint(W - sw + 1, gen)
        r2, c2 = _randint(H - sh + 1, gen), _randint(W - sw + 1, gen)
        in1 = torch.zeros(H, W, dtype=torch.bool, device=x.device)
        in1[r1 : r1 + sh, c1 : c1 + sw] = True
        in2 = torch.zeros_like(in1)
        in2[r2 : r2 + sh, c2 : c2 + sw] = True
        norm_all = delta.flatten(1).norm(dim=1)
        norm_union = (delta * (in1 | in2)).flatten(1).norm(dim=1)
        old = delta[:, :, r1 : r1 + sh, c1 : c1 + sw]
        new = square_pattern(sh, sw, x) * _signs((n, C, 1, 1), gen, x)
        new = new + old / old.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None, None]
        room = (threat.eps**2 - norm_all**2).clamp_min(0) + norm_union**2
        new = new * (room.sqrt() / new.flatten(1).norm(dim=1).clamp_min(1e-12))[:, None, None, None]
        delta = delta * ~(in2 & ~in1)
        delta[:, :, r1 : r1 + sh, c1 : c1 + sw] = new
        return threat.clip(x + threat.scale_to_eps(delta))


# ---------------------------------------------------------------------------------------------
# score-based gradient estimation: NES and SPSA


class _Estimator(Attack):
    """Iterate: estimate the gradient of the margin from ``samples`` antithetic pairs of queries, step,
    project, check. One iteration costs ``2 * samples + 1`` queries per sample still correct; a budget
    of fewer ``queries`` than that is refused (it could not be kept)."""

    kind = "query"

    def __init__(self, options: AttackOptions) -> None:
        super().__init__(options)
        per_iteration = 2 * options.samples + 1
        if options.queries < per_iteration:
            raise AttackError(
                f"{type(self).__name__}: {options.queries} queries are fewer than one gradient estimate "
                f"costs (2 * samples + 1 = {per_iteration}); raise queries or lower samples"
            )

    @abstractmethod
    def directions(self, shape: tuple[int, ...], gen: torch.Generator, like: Tensor) -> Tensor:
        """Random probe directions [n, samples, ...]."""

    @abstractmethod
    def update(self, xk: Tensor, g: Tensor, idx: Tensor, threat: ThreatModel, iters: int) -> Tensor:
        """New iterate (before projection) from the iterate ``xk`` and the estimated margin gradient ``g``."""

    def perturb(
        self, target: Target, x: Tensor, labels: Tensor, threat: ThreatModel, gen: torch.Generator
    ) -> AttackResult:
        opts = self.options
        k = opts.samples
        sigma = opts.sigma or threat.eps / 2
        iters = opts.queries // (2 * k + 1)
        self.reset(x)
        xk = x.clone()
        queries = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        broken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(iters):
            idx = (~broken).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            n, sample = idx.numel(), x.shape[1:]
            u = self.directions((n, k, *sample), gen, x)
            probes = xk[idx].unsqueeze(1) + sigma * torch.cat([u, -u], 1)  # [n, 2k, ...]
            logits = _logits(target, probes.reshape(n * 2 * k, *sample))
            m = margin(logits, labels[idx].repeat_interleave(2 * k)).reshape(n, 2 * k)
            diff = (m[:, :k] - m[:, k:]).reshape(n, k, *([1] * len(sample)))
            g = (diff * u).sum(1) / (2 * k * sigma)
            xk[idx] = threat.project(self.update(xk[idx], g, idx, threat, iters), x[idx])
            broken[idx] = target.model(xk[idx]).argmax(1) != labels[idx]
            queries[idx] += 2 * k + 1
        return AttackResult(xk, queries)

    def reset(self, x: Tensor) -> None:
        """Start a new batch (optimiser state)."""


@ATTACKS.register("nes")
class NES(_Estimator):
    """NES (Ilyas et al. 2018): antithetic Gaussian finite differences, projected sign/L2 steps."""

    def directions(self, shape: tuple[int, ...], gen: torch.Generator, like: Tensor) -> Tensor:
        """Gaussian search directions ``u ~ N(0, I)``; with the antithetic pairs ``x +- sigma u`` the
        estimate is ``g = 1 / (2 k sigma) sum_i (m(x + sigma u_i) - m(x - sigma u_i)) u_i`` (Ilyas et al.
        2018, Alg. 1)."""
        return torch.randn(shape, generator=gen, device=like.device, dtype=like.dtype)

    def update(self, xk: Tensor, g: Tensor, idx: Tensor, threat: ThreatModel, iters: int) -> Tensor:
        """Projected steepest descent on the margin (PGD with the estimate), step ``2.5 eps / iters``."""
        alpha = self.options.step_size or 2.5 * threat.eps / iters
        return xk - alpha * threat.steepest(g)


@ATTACKS.register("spsa")
class SPSA(_Estimator):
    """SPSA (Uesato et al. 2018): Rademacher finite differences with an Adam update of the input."""

    BETAS = (0.9, 0.999)

    def directions(self, shape: tuple[int, ...], gen: torch.Generator, like: Tensor) -> Tensor:
        """Rademacher directions ``v`` in {-1, +1}^d (Spall 1992; Uesato et al. 2018, Alg. 1), for which
        ``1 / v_j = v_j``: ``g = 1 / k sum_i (m(x + sigma v_i) - m(x - sigma v_i)) / (2 sigma) v_i``."""
        return _signs(shape, gen, like)

    def reset(self, x: Tensor) -> None:
        self.m = torch.zeros_like(x)
        self.v = torch.zeros_like(x)
        self.t = 0

    def update(self, xk: Tensor, g: Tensor, idx: Tensor, threat: ThreatModel, iters: int) -> Tensor:
        """An Adam step (Kingma & Ba 2015) on the margin with learning rate ``lr`` (default eps / 4):
        ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``, ``x -= lr m_hat / (sqrt(v_hat) + 1e-8)``.
        Every sample still attacked has taken the same number of steps, so one step counter serves all.
        """
        b1, b2 = self.BETAS
        lr = self.options.lr or threat.eps / 4
        self.t += 1
        self.m[idx] = b1 * self.m[idx] + (1 - b1) * g
        self.v[idx] = b2 * self.v[idx] + (1 - b2) * g * g
        m_hat = self.m[idx] / (1 - b1**self.t)
        v_hat = self.v[idx] / (1 - b2**self.t)
        return xk - lr * m_hat / (v_hat.sqrt() + 1e-8)


# ---------------------------------------------------------------------------------------------
# random noise


class _Noise(Attack):
    """Random noise rescaled to norm exactly eps in the threat norm, then clipped to the domain (which
    can only shrink it). Uses no queries: a baseline for what the attacks above add."""

    kind = "noise"

    @abstractmethod
    def draw(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """Noise of the shape of ``x`` [B, ...] (any scale)."""

    def perturb(
        self, target: Target, x: Tensor, labels: Tensor, threat: ThreatModel, gen: torch.Generator
    ) -> AttackResult:
        x_adv = threat.clip(x + threat.scale_to_eps(self.draw(x, gen)))
        return AttackResult(x_adv, torch.zeros(x.shape[0], dtype=torch.long, device=x.device))


@ATTACKS.register("gaussian-noise")
class GaussianNoise(_Noise):
    """Gaussian noise at norm eps: i.i.d. N(0, 1) per feature, rescaled to ||delta|| = eps."""

    def draw(self, x: Tensor, gen: torch.Generator) -> Tensor:
        return torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)


@ATTACKS.register("uniform-noise")
class UniformNoise(_Noise):
    """Uniform noise at norm eps: i.i.d. U(-1, 1) per feature, rescaled to ||delta|| = eps."""

    def draw(self, x: Tensor, gen: torch.Generator) -> Tensor:
        return 2 * torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) - 1
