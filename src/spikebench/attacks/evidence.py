"""What attack records say beyond one accuracy: per-sample worst cases, convergence, masking tests.

All functions work on the plain data of attack reports (:mod:`spikebench.attacks.runner`): an eps
record's ``correct`` string ("1" = correct both clean and under attack, one character per attacked
sample, the first n test samples in order) and its ``convergence`` (steps -> accuracy).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spikebench.analysis import stats

#: a sanity record (a large eps) with a higher accuracy than this fails: the attack is not working
SANITY_MAX_ACCURACY = 0.05
#: a convergence record still improving: accuracy fell by more than this between its last two checkpoints
CONVERGENCE_TOL = 0.005
#: level of the one-sided sign test that flags gradient masking
MASKING_ALPHA = 0.05


def _rows(report: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
    return report.get("records", []) if isinstance(report, Mapping) else report


def record_at(
    report: Mapping[str, Any] | Sequence[Mapping[str, Any]], eps: float
) -> Mapping[str, Any] | None:
    """The (non-sanity) eps record of ``report`` (a report, or its list of records) at ``eps``."""
    for r in _rows(report):
        if not r.get("sanity") and math.isclose(float(r["eps"]), eps, rel_tol=1e-9, abs_tol=1e-12):
            return r
    return None


def worst_case(records_by_stem: Mapping[str, Any], eps: float) -> str:
    """Per-sample worst case at ``eps`` over the given attacks: the AND of their ``correct`` strings
    ("1" only where every attack left the sample correct). ``records_by_stem`` maps report stems to
    reports (or to their lists of records); attacks without a record at ``eps`` are left out.

    Raises ValueError when none has one, or when their strings differ in length (different samples).
    """
    strings = []
    for stem, report in records_by_stem.items():
        r = record_at(report, eps)
        if r is not None and isinstance(r.get("correct"), str):
            strings.append((stem, r["correct"]))
    if not strings:
        raise ValueError(f"no attack record with per-sample results at eps {eps:g}")
    lengths = {len(s) for _, s in strings}
    if len(lengths) > 1:
        detail = ", ".join(f"{stem}: {len(s)}" for stem, s in strings)
        raise ValueError(f"attack records at eps {eps:g} cover different numbers of samples ({detail})")
    return all_correct([s for _, s in strings])


def all_correct(strings: Sequence[str]) -> str:
    """The AND of equal-length ``correct`` strings: "1" only where every one has "1"."""
    return "".join("1" if all(c == "1" for c in column) else "0" for column in zip(*strings, strict=True))


def accuracy(correct: str) -> float:
    """Fraction of "1" in a ``correct`` string."""
    return correct.count("1") / len(correct) if correct else float("nan")


def still_improving(convergence: Mapping[str, float] | None, tol: float = CONVERGENCE_TOL) -> bool:
    """True when accuracy fell by more than ``tol`` between the last two checkpoints of a convergence
    record (steps -> accuracy): more steps would likely lower it further. False with fewer than two."""
    if not convergence or len(convergence) < 2:
        return False
    steps = sorted(convergence, key=int)
    return float(convergence[steps[-2]]) - float(convergence[steps[-1]]) > tol


def binomial_tail(k: int, n: int) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, 1/2)`` (exact); 1 for ``k <= 0``."""
    if k <= 0:
        return 1.0
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n


@dataclass(frozen=True)
class MaskingTest:
    """Exact one-sided sign test on the samples where a gradient attack and a gradient-free attack
    disagree: ``free_only`` samples only the gradient-free attack broke, ``gradient_only`` only the
    gradient attack broke; ``p = P(X >= free_only)``, ``X ~ Binomial(free_only + gradient_only, 1/2)``
    (no difference in strength). ``masked``: ``p < alpha``, the gradient-free attack is significantly
    stronger, a sign that the gradients mislead (Athalye et al. 2018)."""

    free_only: int
    gradient_only: int
    p: float
    alpha: float = MASKING_ALPHA

    @property
    def masked(self) -> bool:
        return self.p < self.alpha

    def to_dict(self) -> dict[str, Any]:
        return {
            "free_only": self.free_only,
            "gradient_only": self.gradient_only,
            "p": self.p,
            "alpha": self.alpha,
            "masked": self.masked,
        }


def masking_test(gradient_correct: str, free_correct: str, alpha: float = MASKING_ALPHA) -> MaskingTest:
    """:class:`MaskingTest` of paired ``correct`` strings of the same samples (concatenate strings of
    several eps or runs, in the same order, to pool them)."""
    if len(gradient_correct) != len(free_correct):
        raise ValueError(
            f"paired results must cover the same samples ({len(gradient_correct)} vs {len(free_correct)})"
        )
    free_only = sum(g == "1" and f == "0" for g, f in zip(gradient_correct, free_correct, strict=True))
    gradient_only = sum(g == "0" and f == "1" for g, f in zip(gradient_correct, free_correct, strict=True))
    return MaskingTest(free_only, gradient_only, binomial_tail(free_only, free_only + gradient_only), alpha)


def holm(pvalues: Iterable[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given), each at most 1, as a list
    (:func:`spikebench.analysis.stats.holm`)."""
    ps = list(pvalues)
    return [float(x) for x in stats.holm(ps)] if ps else []
