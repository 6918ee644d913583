"""The verdicts' statistics against scipy's implementations and on constructed data with known answers."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats as st

from spikebench.analysis import stats

D = np.array([0.031, 0.012, 0.045, -0.004, 0.027, 0.038, 0.019, 0.022])


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_ci_agrees_with_scipy(method):
    lo, hi = stats.bootstrap_ci(D, method=method, n_boot=40000, seed=1)
    ref = st.bootstrap((D,), np.mean, method=method, n_resamples=40000, random_state=2).confidence_interval
    assert lo == pytest.approx(ref.low, abs=2e-3) and hi == pytest.approx(ref.high, abs=2e-3)
    assert lo < D.mean() < hi


def test_bootstrap_ci_degenerate_and_deterministic():
    assert stats.bootstrap_ci([0.2, 0.2, 0.2]) == pytest.approx((0.2, 0.2))
    assert stats.bootstrap_ci([0.5]) == (0.5, 0.5)
    assert stats.bootstrap_ci(D, seed=3) == stats.bootstrap_ci(D, seed=3)


def test_hierarchical_bootstrap_estimate_and_spread():
    groups = [[0.1, 0.12, 0.08], [0.3, 0.28], [0.2, 0.21, 0.19, 0.2]]
    est, lo, hi = stats.hierarchical_bootstrap(groups, n_boot=4000)
    assert est == pytest.approx(np.mean([0.1, 0.29, 0.2]))
    assert lo < est < hi and lo >= 0.08 and hi <= 0.3
    # identical groups without spread: a point interval
    assert stats.hierarchical_bootstrap([[0.1, 0.1], [0.1]])[1:] == pytest.approx((0.1, 0.1))
    # one group: the rule-level resampling adds nothing, so it matches the seed bootstrap's percentile CI
    _, lo1, hi1 = stats.hierarchical_bootstrap([D], n_boot=10000, seed=5)
    lo2, hi2 = stats.bootstrap_ci(D, method="percentile", n_boot=10000, seed=6)
    assert lo1 == pytest.approx(lo2, abs=3e-3) and hi1 == pytest.approx(hi2, abs=3e-3)


def test_crossed_bootstrap_resamples_seeds_jointly():
    # every rule shares the seed effect: resampling seeds jointly keeps the full seed-to-seed spread,
    # so the pooled CI is as wide as one rule's seed bootstrap (independent resampling would shrink it)
    seed_effect = np.array([0.7, 0.95, 0.85, 0.8])
    m = np.tile(seed_effect, (6, 1))
    est, lo, hi = stats.crossed_bootstrap(m, n_boot=20000)
    lo1, hi1 = stats.bootstrap_ci(seed_effect, method="percentile", n_boot=20000)
    assert est == pytest.approx(seed_effect.mean())
    assert lo == pytest.approx(lo1, abs=5e-3) and hi == pytest.approx(hi1, abs=5e-3)
    _, hlo, hhi = stats.hierarchical_bootstrap(list(m), n_boot=4000)
    assert hhi - hlo < (hi - lo) / 2
    # missing cells are left out; groups without spread give a point interval
    m2 = np.array([[0.1, np.nan], [0.3, 0.3]])
    assert stats.crossed_bootstrap(m2, n_boot=2000) == pytest.approx((0.2, 0.1, 0.3), abs=1e-12)


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_sign_flip_exact_matches_scipy_permutation_test(alternative):
    ref = st.permutation_test(
        (D,), np.mean, permutation_type="samples", alternative=alternative, n_resamples=np.inf
    ).pvalue
    assert stats.sign_flip_p(D, alternative) == pytest.approx(ref, rel=1e-12)


def test_sign_flip_known_answers():
    # all n differences positive: only the observed flip is as extreme, 1 / 2**n one-sided
    assert stats.sign_flip_p([0.1, 0.2, 0.3, 0.4, 0.5], "greater") == pytest.approx(1 / 32)
    assert stats.sign_flip_p([0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(2 / 32)
    assert stats.sign_flip_p([0.0, 0.0]) == 1.0
    # above the exact limit: Monte Carlo, close to the normal approximation for many equal differences
    big = np.r_[np.ones(20), -np.ones(5)]
    exact = sum(math.comb(25, k) for k in range(20, 26)) * 2 / 2**25  # |sum| >= 15 <=> >= 20 positive
    assert stats.sign_flip_p(big, n_mc=200000, seed=1) == pytest.approx(exact, abs=2e-3)


def test_holm_known_answer_and_bounds():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, max(.., 2*0.03), max(.., 0.04)
    assert stats.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    # Holm controls family-wise error: never below Benjamini-Hochberg's adjustment (false discovery rate)
    rng = np.random.default_rng(0)
    q = rng.uniform(size=12) ** 2
    assert np.all(stats.holm(q) >= st.false_discovery_control(q) - 1e-15)


def test_tost():
    tight = 0.001 * np.array([1, -1, 2, -2, 0, 1, -1, 0])
    assert stats.tost_p(tight, 0.01) < 0.001
    assert stats.tost_p(D, 0.01) > 0.5  # mean 0.024 lies outside a margin of 0.01
    # equals the larger of the two one-sided t-test p-values
    lo = st.ttest_1samp(D, -0.05, alternative="greater").pvalue
    hi = st.ttest_1samp(D, 0.05, alternative="less").pvalue
    assert stats.tost_p(D, 0.05) == pytest.approx(max(lo, hi))


def test_power_and_required_n_known_answers():
    # paired t, two-sided alpha 0.05, effect size 0.5 sd, power 0.8 -> 34 pairs (Cohen 1988; G*Power)
    assert stats.required_n(0.5, 1.0) == 34
    assert stats.paired_t_power(0.5, 1.0, 34) >= 0.8 > stats.paired_t_power(0.5, 1.0, 33)
    # effect size 1 -> 10 pairs
    assert stats.required_n(1.0, 1.0) == 10
    # power reduces to alpha with no effect
    assert stats.paired_t_power(0.0, 1.0, 10) == pytest.approx(0.05)
    # power against a simulated t-test
    rng = np.random.default_rng(0)
    sims = rng.normal(0.8, 1.0, size=(20000, 8))
    sim_power = np.mean(st.ttest_1samp(sims, 0.0, axis=1).pvalue < 0.05)
    assert stats.paired_t_power(0.8, 1.0, 8) == pytest.approx(sim_power, abs=0.01)


def test_minimum_detectable_effect_inverts_power():
    mde = stats.minimum_detectable_effect(0.02, 6)
    assert stats.paired_t_power(mde, 0.02, 6) == pytest.approx(0.8, abs=1e-6)
    assert stats.minimum_detectable_effect(0.02, 1) == math.inf


def test_spearman_matches_scipy_and_exact_permutation():
    x = [0, 1, 1, 2, 3, 4, 4]
    y = [0.90, 0.88, 0.86, 0.80, 0.83, 0.75, 0.70]
    rho, p = stats.spearman_test(x, y, "less")
    assert rho == pytest.approx(st.spearmanr(x, y).statistic)
    ref = st.permutation_test(
        (y,),
        lambda yy: st.spearmanr(x, yy).statistic,
        permutation_type="pairings",
        alternative="less",
        n_resamples=np.inf,
    ).pvalue
    assert p == pytest.approx(ref, rel=1e-9)
    # a perfect ordering of n distinct values: exactly one of n! orderings is as extreme
    assert stats.spearman_test(range(5), range(5), "greater") == pytest.approx((1.0, 1 / 120))
    assert math.isnan(stats.spearman([1, 2, 3], [1, 1, 1]))


def test_spearman_monte_carlo_above_exact_limit():
    x = np.arange(9)
    y = np.array([3, 1, 2, 0, 5, 4, 7, 8, 6])
    rho, p = stats.spearman_test(x, y, n_mc=100000, seed=0)
    perms = np.array(list(itertools.permutations(range(9))))
    d2 = ((perms - x) ** 2).sum(axis=1)  # rho = 1 - 6 sum d^2 / (n (n^2 - 1)) for distinct ranks
    null = 1 - 6 * d2 / (9 * 80)
    exact = np.mean(np.abs(null) >= abs(rho) - 1e-12)
    assert p == pytest.approx(exact, abs=3e-3)


def test_above_chance():
    assert stats.above_chance_p(10, 100, 0.1) > 0.4  # exactly at chance
    assert stats.above_chance_p(30, 100, 0.1) < 1e-6
    # the exact tail sum
    n, k, c = 20, 5, 0.1
    tail = sum(math.comb(n, i) * c**i * (1 - c) ** (n - i) for i in range(k, n + 1))
    assert stats.above_chance_p(k, n, c) == pytest.approx(tail)


@pytest.mark.parametrize(
    "x,se,text",
    [
        (0.8234, 0.047, "0.82"),
        (0.8234, 0.0047, "0.823"),
        (0.8234, 0.012, "0.823"),  # leading digit 1: two significant digits
        (0.8234, 0.15, "0.82"),
        (123.4, 7.0, "123"),
        (0.8234, None, "0.823"),
        (0.8234, 0.0, "0.823"),
        (1234.5, None, "1234"),
        (12.345, None, "12.3"),
        (None, 0.1, "–"),
    ],
)
def test_fmt_value(x, se, text):
    assert stats.fmt_value(x, se) == text


def test_exact_enumerations_are_complete():
    assert len(list(itertools.permutations(range(stats.EXACT_PERMUTATION_MAX)))) == 40320
