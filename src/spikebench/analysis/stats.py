"""Statistics behind the report's verdicts: pure functions of arrays (numpy and scipy).

The unit of replication is the seed: a paired difference is one number per seed (the two networks of a
pair share seed and data), and every interval resamples seeds, never samples or epochs. Effects pooled over
rules use a hierarchical bootstrap (rules, then seeds within each rule). All random draws take a seed, so a
report rebuilt from the same records prints the same numbers.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as st

ArrayLike = Sequence[float] | np.ndarray

#: sign flips are enumerated exactly up to this many paired differences, Monte Carlo above
EXACT_SIGN_FLIP_MAX = 20
#: orderings are enumerated exactly up to this many points (8! = 40,320), Monte Carlo above
EXACT_PERMUTATION_MAX = 8


def _arr(x: ArrayLike) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError("expected a non-empty one-dimensional sample")
    return a


def bootstrap_ci(
    x: ArrayLike,
    statistic: Callable[[np.ndarray], float] = np.mean,
    level: float = 0.95,
    n_boot: int = 10000,
    method: str = "bca",
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap confidence interval of ``statistic`` over the units of ``x`` (e.g. per-seed paired
    differences), by the ``percentile`` or the bias-corrected and accelerated (``bca``, Efron 1987) method.

    A sample with no spread (or of one unit) gives the degenerate interval ``(s, s)``.
    """
    a = _arr(x)
    if method not in ("percentile", "bca"):
        raise ValueError(f"unknown bootstrap method {method!r}")
    s = float(statistic(a))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    if statistic is np.mean:
        boots = a[idx].mean(axis=1)
    else:
        boots = np.array([statistic(a[i]) for i in idx], dtype=np.float64)
    alpha = (1 - level) / 2
    if np.ptp(boots) == 0:
        return s, s
    if method == "percentile":
        lo, hi = np.quantile(boots, [alpha, 1 - alpha])
        return float(lo), float(hi)
    # bias correction from the share of replicates below the estimate, acceleration from the jackknife
    z0 = st.norm.ppf((np.sum(boots < s) + 0.5 * np.sum(boots == s)) / n_boot)
    jack = np.array([statistic(np.delete(a, i)) for i in range(a.size)], dtype=np.float64)
    d = jack.mean() - jack
    den = 6.0 * np.sum(d**2) ** 1.5
    acc = float(np.sum(d**3) / den) if den > 0 else 0.0
    z = st.norm.ppf([alpha, 1 - alpha])
    q = st.norm.cdf(z0 + (z0 + z) / (1 - acc * (z0 + z)))
    lo, hi = np.quantile(boots, q)
    return float(lo), float(hi)


def hierarchical_bootstrap(
    groups: Sequence[ArrayLike], level: float = 0.95, n_boot: int = 10000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean over groups (rules) of the mean over units (seeds) within each group, with a percentile interval
    from resampling groups with replacement and then units within each chosen group.

    Returns ``(estimate, lo, hi)``. With one group this is the plain seed bootstrap of that group's mean.
    """
    arrs = [_arr(g) for g in groups]
    if not arrs:
        raise ValueError("expected at least one group")
    est = float(np.mean([g.mean() for g in arrs]))
    rng = np.random.default_rng(seed)
    k = len(arrs)
    out = np.empty(n_boot)
    for b in range(n_boot):
        chosen = rng.integers(0, k, size=k)
        out[b] = np.mean([arrs[j][rng.integers(0, arrs[j].size, size=arrs[j].size)].mean() for j in chosen])
    alpha = (1 - level) / 2
    lo, hi = np.quantile(out, [alpha, 1 - alpha])
    return est, float(lo), float(hi)


def crossed_bootstrap(
    values: ArrayLike | Sequence[Sequence[float]], level: float = 0.95, n_boot: int = 10000, seed: int = 0
) -> tuple[float, float, float]:
    """Hierarchical bootstrap for groups (rules) crossed with shared units (seeds): ``values[g][s]`` is
    group g's value at seed s (nan where absent). Each replicate resamples groups with replacement and,
    jointly for all of them, seeds with replacement, so that what a seed shares across rules (its data
    order, its reference network) is resampled as one unit. Statistic: the mean over groups of each group's
    mean over the chosen seeds (groups with none of the chosen seeds are left out of that replicate).

    Returns ``(estimate, lo, hi)`` with a percentile interval.
    """
    m = np.asarray(values, dtype=np.float64)
    if m.ndim != 2 or m.size == 0 or np.all(np.isnan(m)):
        raise ValueError("expected a non-empty groups x seeds matrix")
    est = float(np.nanmean(np.nanmean(m, axis=1)))
    rng = np.random.default_rng(seed)
    g, s = m.shape
    gi = rng.integers(0, g, size=(n_boot, g))
    si = rng.integers(0, s, size=(n_boot, s))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan slices: groups without a chosen seed
        out = np.nanmean(np.nanmean(m[gi[:, :, None], si[:, None, :]], axis=2), axis=1)
    out = out[~np.isnan(out)]
    alpha = (1 - level) / 2
    lo, hi = np.quantile(out, [alpha, 1 - alpha])
    return est, float(lo), float(hi)


def sign_flip_p(d: ArrayLike, alternative: str = "two-sided", n_mc: int = 100000, seed: int = 0) -> float:
    """p-value of the mean of paired differences ``d`` under the sign-flip null (each difference is as
    likely negative as positive). Exact over all 2**n flips for n <= :data:`EXACT_SIGN_FLIP_MAX`; Monte Carlo
    above (with ``seed``; the observed flip counted). ``alternative``: ``two-sided``, ``greater``, ``less``."""
    a = _arr(d)
    n = a.size
    obs = a.mean()
    if n <= EXACT_SIGN_FLIP_MAX:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
        null = signs @ a / n
        total = null.size
        extra = 0
    else:
        rng = np.random.default_rng(seed)
        null = rng.choice([-1.0, 1.0], size=(n_mc, n)) @ a / n
        total = n_mc + 1
        extra = 1
    tol = 1e-12 * max(1.0, abs(obs))
    if alternative == "greater":
        hits = np.sum(null >= obs - tol)
    elif alternative == "less":
        hits = np.sum(null <= obs + tol)
    elif alternative == "two-sided":
        hits = np.sum(np.abs(null) >= abs(obs) - tol)
    else:
        raise ValueError(f"unknown alternative {alternative!r}")
    return float(min(1.0, (hits + extra) / total))


def holm(p: ArrayLike) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error), in the order given."""
    a = _arr(p)
    m = a.size
    order = np.argsort(a, kind="stable")
    adj = np.maximum.accumulate((m - np.arange(m)) * a[order])
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


def tost_p(d: ArrayLike, margin: float) -> float:
    """Two one-sided paired t-tests (Schuirmann 1987) of ``|mean d| < margin``: the larger of the two
    one-sided p-values; small means the effect lies within the equivalence margin."""
    a = _arr(d)
    if a.size < 2:
        return 1.0
    se = a.std(ddof=1) / math.sqrt(a.size)
    if se == 0:
        return 0.0 if abs(a.mean()) < margin else 1.0
    df = a.size - 1
    p_low = st.t.sf((a.mean() + margin) / se, df)  # H0: mean <= -margin
    p_high = st.t.cdf((a.mean() - margin) / se, df)  # H0: mean >= margin
    return float(max(p_low, p_high))


def paired_t_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided one-sample (paired) t-test at ``n`` units to detect a mean ``effect`` when
    the differences have standard deviation ``sd`` (noncentral t)."""
    if n < 2:
        return 0.0
    if sd <= 0:
        return 1.0
    df = n - 1
    nc = abs(effect) / sd * math.sqrt(n)
    crit = st.t.ppf(1 - alpha / 2, df)
    return float(st.nct.sf(crit, df, nc) + st.nct.cdf(-crit, df, nc))


def required_n(effect: float, sd: float, alpha: float = 0.05, power: float = 0.8, n_max: int = 10000) -> int:
    """Smallest number of units (seeds) at which the paired t-test reaches ``power`` for ``effect``;
    ``n_max`` if none up to it does."""
    if sd <= 0:
        return 2
    if effect == 0:
        return n_max
    if paired_t_power(effect, sd, n_max, alpha) < power:
        return n_max
    lo, hi = 1, 2  # power grows with n: double, then bisect (power(lo) < target <= power(hi))
    while paired_t_power(effect, sd, hi, alpha) < power:
        lo, hi = hi, min(2 * hi, n_max)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if paired_t_power(effect, sd, mid, alpha) < power else (lo, mid)
    return hi


def minimum_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest mean difference the paired t-test detects with ``power`` at ``n`` units and spread ``sd``."""
    if n < 2:
        return math.inf
    if sd <= 0:
        return 0.0
    hi = sd
    while paired_t_power(hi, sd, n, alpha) < power:
        hi *= 2
    lo = 0.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if paired_t_power(mid, sd, n, alpha) < power else (lo, mid)
    return hi


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's rank correlation (average ranks for ties); nan when either side has no spread."""
    rx, ry = st.rankdata(_arr(x)), st.rankdata(_arr(y))
    if rx.size != ry.size:
        raise ValueError("x and y differ in length")
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def spearman_test(
    x: ArrayLike, y: ArrayLike, alternative: str = "two-sided", n_mc: int = 100000, seed: int = 0
) -> tuple[float, float]:
    """Spearman's rho and its permutation p over the orderings of ``y`` against ``x``: exact over all n!
    orderings for n <= :data:`EXACT_PERMUTATION_MAX`, Monte Carlo above (with ``seed``)."""
    xa, ya = _arr(x), _arr(y)
    rho = spearman(xa, ya)
    if math.isnan(rho):
        return rho, 1.0
    n = xa.size
    rx, ry = st.rankdata(xa), st.rankdata(ya)
    rx = (rx - rx.mean()) / np.sqrt(np.sum((rx - rx.mean()) ** 2))
    ry = (ry - ry.mean()) / np.sqrt(np.sum((ry - ry.mean()) ** 2))
    if n <= EXACT_PERMUTATION_MAX:
        perms = np.array(list(itertools.permutations(range(n))))
        null = ry[perms] @ rx
        extra, total = 0, null.size
    else:
        rng = np.random.default_rng(seed)
        null = rng.permuted(np.tile(ry, (n_mc, 1)), axis=1) @ rx
        extra, total = 1, n_mc + 1
    tol = 1e-12
    if alternative == "greater":
        hits = np.sum(null >= rho - tol)
    elif alternative == "less":
        hits = np.sum(null <= rho + tol)
    elif alternative == "two-sided":
        hits = np.sum(np.abs(null) >= abs(rho) - tol)
    else:
        raise ValueError(f"unknown alternative {alternative!r}")
    return rho, float(min(1.0, (hits + extra) / total))


def above_chance_p(correct: int, n: int, chance: float) -> float:
    """One-sided exact binomial p that ``correct`` of ``n`` right answers beat guessing at ``chance``."""
    if n <= 0:
        return 1.0
    return float(st.binomtest(int(correct), int(n), chance, alternative="greater").pvalue)


def fmt_value(x: float | None, se: float | None = None) -> str:
    """``x`` rounded to what its sampling error supports: to the decimal of the leading digit of ``se``
    (two significant digits of ``se`` when that digit is 1). Without an error estimate: three decimals
    below 10, one decimal below 100, whole numbers above. ``None`` or nan prints as an en dash."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if se is None or not math.isfinite(se) or se <= 0:
        return f"{x:.{3 if abs(x) < 10 else 1 if abs(x) < 100 else 0}f}"
    lead = math.floor(math.log10(se))
    if round(se / 10**lead) == 1:
        lead -= 1
    digits = max(0, -lead)
    return f"{x:.{digits}f}"
