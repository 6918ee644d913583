"""One attack request: what to attack with, at which eps, on how many samples, with which seed.

The ``attack`` command, a study's attack jobs (:class:`spikebench.studies.jobs.AttackJob`) and the
runner (:func:`spikebench.attacks.runner.attack_run`) pass an :class:`AttackRequest`; its :attr:`stem`
names the record the runner writes (``RUN_DIR/attacks/<stem>.json``, :func:`report_stem`), and is the
only place stems are computed. The stems the report reads are named in :mod:`spikebench.records`.

A request is checked when it is made, for everything that does not depend on the run (names, eps,
options); what does -- eps against the run's input domain, the transfer source -- is checked by
:meth:`AttackRequest.check_domain` and :meth:`AttackRequest.check_source` before a run is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from spikebench.attacks.base import ATTACKS, AttackOptions
from spikebench.attacks.threat import NORMS, AttackError, Norm, ThreatModel
from spikebench.dynamics import SURROGATES
from spikebench.records import ATTACKS_DIR

GRAD_SOURCES: tuple[str, ...] = ("exact", "rule", "transfer")

Surrogate = tuple[str, float | None]
"""(surrogate name, scale or None for the network's own scale)."""


def report_stem(attack: str, grad_source: str, norm: str, surrogate: Surrogate | None = None) -> str:
    """File name stem of a report: ``<attack>[-<grad source>][-<norm>][@<surrogate>[-<scale>]]``
    (source for gradient attacks, norm when it is not L-inf, the attack's surrogate for gradient
    attacks given one, e.g. ``pgd-exact@fast_sigmoid-8``)."""
    gradient = ATTACKS.get(attack).kind == "gradient"
    stem = f"{attack}-{grad_source}" if gradient else attack
    stem = stem if norm == "linf" else f"{stem}-{norm}"
    if gradient and surrogate is not None:
        name, scale = surrogate
        stem += f"@{name}" + ("" if scale is None else f"-{scale:g}")
    return stem


@dataclass(frozen=True)
class AttackRequest:
    """An attack of a trained run (see :func:`spikebench.attacks.runner.run_attack` for the record).

    ``attack``: a registered attack; ``eps``: the perturbation budgets, in ``norm``; ``grad_source``:
    where a gradient attack's gradients come from (``exact``, the run's ``rule``, or ``transfer`` from
    ``source_run``); ``options``: the attacks' options (steps, restarts, queries, ...); ``n``: the
    first n test samples (None: all); ``seed``: of every random stream of the attack; ``surrogate``:
    (name, scale or None) replacing the surrogate derivative in the attack's gradients;
    ``sanity_eps``: one more record at that large eps, where no accuracy should remain; ``reference``:
    exact-gradient PGD beside a gradient-free attack (the gradient-masking check); ``batch_size``:
    samples attacked at once (results do not depend on it); ``device`` and ``precision``: where and in
    which precision the products run (None: the run's own).
    """

    attack: str
    eps: tuple[float, ...]
    norm: Norm = "linf"
    grad_source: str = "exact"
    options: AttackOptions = field(default_factory=AttackOptions)
    n: int | None = 1000
    seed: int = 0
    surrogate: Surrogate | None = None
    sanity_eps: float | None = None
    reference: bool = True
    batch_size: int = 500
    source_run: Path | None = None
    device: str | None = None
    precision: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", tuple(float(e) for e in self.eps))
        if self.surrogate is not None:
            object.__setattr__(self, "surrogate", tuple(self.surrogate))
        cls = ATTACKS.get(self.attack)
        cls(self.options)  # an attack refuses options it cannot keep
        kind = cls.kind
        if not self.eps:
            raise AttackError("give at least one eps")
        if self.norm not in NORMS:
            raise AttackError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        for e in self.sweep:
            if not (math.isfinite(e) and e > 0):
                raise AttackError(f"eps must be a positive number, got {e}")
        if self.grad_source not in GRAD_SOURCES:
            raise AttackError(
                f"grad-source must be one of {', '.join(GRAD_SOURCES)}, got {self.grad_source!r}"
            )
        if kind != "gradient" and self.grad_source != "exact":
            raise AttackError(
                f"attack {self.attack!r} uses no gradients; --grad-source applies to gradient attacks"
            )
        if self.surrogate is not None:
            SURROGATES.get(self.surrogate[0])
            if self.surrogate[1] is not None and not self.surrogate[1] > 0:
                raise AttackError(f"surrogate scale must be positive, got {self.surrogate[1]}")
        if self.n is not None and self.n < 1:
            raise AttackError(f"n must be a positive number of test samples, got {self.n}")
        if self.batch_size < 1:
            raise AttackError(f"batch size must be a positive integer, got {self.batch_size}")

    @property
    def kind(self) -> str:
        """The attack's kind: ``gradient``, ``query`` or ``noise``."""
        return ATTACKS.get(self.attack).kind

    @property
    def sweep(self) -> tuple[float, ...]:
        """Every eps attacked: ``eps``, then ``sanity_eps`` when given."""
        return (*self.eps, *(() if self.sanity_eps is None else (self.sanity_eps,)))

    @property
    def stem(self) -> str:
        """The record's file name stem (:func:`report_stem`)."""
        return report_stem(self.attack, self.grad_source, self.norm, self.surrogate)

    def path(self, run_dir: Path) -> Path:
        """Where the record of this request on ``run_dir`` is written: ``run_dir/attacks/<stem>.json``."""
        return run_dir / ATTACKS_DIR / f"{self.stem}.json"

    def check_source(self, has_source: bool) -> None:
        """A transfer attack needs a source run; no other attack takes one."""
        if self.grad_source == "transfer" and not has_source:
            raise AttackError("--grad-source transfer needs --source-run DIR (the run to craft examples on)")
        if self.grad_source != "transfer" and has_source:
            raise AttackError("--source-run is only used with --grad-source transfer")

    def check_domain(self, domain: tuple[float, float], features: int | None = None) -> None:
        """Every eps fits inputs in ``domain`` = (lo, hi): at most hi - lo for L-inf, and for L2 at most
        the largest distance between two inputs of ``features`` features, (hi - lo) * sqrt(features)."""
        for e in self.sweep:
            ThreatModel(self.norm, e, domain)
        if self.norm == "l2" and features is not None:
            lo, hi = domain
            diameter = (hi - lo) * math.sqrt(features)
            for e in self.sweep:
                if e > diameter:
                    raise AttackError(
                        f"eps {e:g} is larger than any L2 distance between inputs in "
                        f"[{lo:g}, {hi:g}]^{features} (at most {diameter:.4g})"
                    )
