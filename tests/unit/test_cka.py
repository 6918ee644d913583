"""CKA: identities, invariances, the Gram form against the feature form, the unbiased estimator, and
numerical safety on silent neurons and tiny inputs."""

import math

import numpy as np
import pytest
import torch

from spikebench.analysis import AnalysisError, cka, gram_linear, gram_rbf, hsic, linear_cka, rbf_cka
from spikebench.analysis.cka import cka_matrix

KERNELS = {
    "linear": lambda x, y, d: linear_cka(x, y, debiased=d),
    "rbf": lambda x, y, d: rbf_cka(x, y, bandwidth=0.8, debiased=d),
}


def reps(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64) + 2.0
    y = torch.tanh(x @ torch.randn(6, 9, generator=g, dtype=torch.float64))
    return x, y + 0.5 * torch.randn(n, 9, generator=g, dtype=torch.float64)


def orthogonal(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("debiased", [False, True])
def test_self_similarity_is_one_and_cka_symmetric(kernel, debiased):
    f = KERNELS[kernel]
    x, y = reps()
    assert f(x, x, debiased) == pytest.approx(1.0, abs=1e-12)
    assert f(x, y, debiased) == pytest.approx(f(y, x, debiased), abs=1e-12)
    assert 0.05 < f(x, y, debiased) < 0.999


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("debiased", [False, True])
def test_invariant_to_orthogonal_transform_and_isotropic_scaling(kernel, debiased):
    f = KERNELS[kernel]
    x, y = reps(seed=1)
    base = f(x, y, debiased)
    qx, qy = orthogonal(x.shape[1], 2), orthogonal(y.shape[1], 3)
    assert f(x @ qx, y, debiased) == pytest.approx(base, abs=1e-10)
    assert f(x, y @ qy, debiased) == pytest.approx(base, abs=1e-10)
    assert f(7.5 * x, y, debiased) == pytest.approx(base, abs=1e-10)
    assert f(x, 0.01 * y, debiased) == pytest.approx(base, abs=1e-10)
    # not invariant to an arbitrary invertible linear map (Kornblith et al. 2019, Sec. 3)
    stretch = torch.diag(torch.tensor([30.0, 1, 1, 1, 1, 1], dtype=torch.float64))
    assert abs(f(x @ stretch, y, debiased) - base) > 1e-3


@pytest.mark.parametrize("debiased", [False, True])
def test_gram_form_equals_feature_form(debiased):
    x, y = reps(n=30, seed=4)
    feature = linear_cka(x, y, debiased=debiased)
    assert cka(gram_linear(x), gram_linear(y), debiased=debiased) == pytest.approx(feature, abs=1e-12)
    m = cka_matrix([x, y, x[:, :3]], "linear", debiased=debiased)
    assert m[0, 1] == pytest.approx(feature, abs=1e-12)
    assert np.allclose(m, m.T) and np.allclose(np.diag(m), 1.0)
    rbf = cka_matrix([x, y], "rbf", bandwidth=0.8, debiased=debiased)
    assert rbf[0, 1] == pytest.approx(rbf_cka(x, y, bandwidth=0.8, debiased=debiased), abs=1e-12)


def test_hsic_matches_the_formulas_written_with_matrices():
    x, y = reps(n=12, seed=5)
    k, l_ = gram_linear(x), gram_linear(y)
    n = k.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    assert hsic(k, l_) == pytest.approx(float(torch.trace(k @ h @ l_ @ h)) / (n - 1) ** 2, rel=1e-12)
    kt, lt = k - torch.diag(torch.diag(k)), l_ - torch.diag(torch.diag(l_))
    one = torch.ones(n, dtype=torch.float64)
    song = (
        torch.trace(kt @ lt)
        + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ kt @ lt @ one)
    ) / (n * (n - 3))
    assert hsic(k, l_, debiased=True) == pytest.approx(float(song), rel=1e-12)


def test_debiased_is_unbiased_near_zero_for_independent_data():
    g = torch.Generator().manual_seed(6)
    biased, debiased = [], []
    for _ in range(40):
        x = torch.randn(40, 30, generator=g, dtype=torch.float64)
        y = torch.randn(40, 30, generator=g, dtype=torch.float64)
        biased.append(linear_cka(x, y))
        debiased.append(linear_cka(x, y, debiased=True))
    assert np.mean(biased) > 0.4  # the biased estimator is far from 0 when d is close to n
    assert abs(np.mean(debiased)) < 0.02


def test_silent_and_constant_neurons_never_give_nan():
    x, y = reps(n=20, seed=7)
    silent = torch.cat([x, torch.zeros(20, 5, dtype=torch.float64)], 1)  # some neurons never fire
    for debiased in (False, True):
        assert math.isfinite(linear_cka(silent, y, debiased))
        assert linear_cka(silent, y, debiased) == pytest.approx(linear_cka(x, y, debiased), abs=1e-12)
        for dead in (torch.zeros(20, 4), torch.full((20, 4), 0.1), torch.full((20, 4), 3.0)):
            # a layer without variance over the inputs has CKA 0 with anything, itself included
            assert linear_cka(dead, y, debiased) == 0.0
            assert linear_cka(dead, dead, debiased) == 0.0
            assert rbf_cka(dead, y, debiased=debiased) == 0.0
            assert cka(gram_linear(dead), gram_linear(y), debiased) == 0.0
    m = cka_matrix([torch.zeros(20, 3), y], "rbf")
    assert np.isfinite(m).all() and m[0, 1] == 0.0 and m[0, 0] == 0.0


def test_spike_counts_with_mostly_identical_rows():
    counts = torch.zeros(30, 8, dtype=torch.uint8)
    counts[:5, :3] = torch.tensor([[1, 2, 0], [0, 4, 1], [3, 0, 0], [1, 1, 1], [2, 0, 5]], dtype=torch.uint8)
    other = counts.clone()
    other[:5, 3] = torch.tensor([2, 2, 1, 0, 3], dtype=torch.uint8)
    k = gram_rbf(counts)  # more than half of the distances are 0: the width uses the non-zero ones
    assert torch.isfinite(k).all() and not torch.all(k == 1)
    for f in KERNELS.values():
        value = f(counts, other, False)
        assert math.isfinite(value) and 0.0 < value <= 1.0 + 1e-12


def test_tiny_and_invalid_inputs():
    x, y = reps(n=3, seed=8)
    assert math.isfinite(linear_cka(x, y))
    assert linear_cka(x[:1], y[:1]) == 0.0  # one input: no variance
    with pytest.raises(AnalysisError, match="at least 4"):
        linear_cka(x, y, debiased=True)
    with pytest.raises(AnalysisError, match="at least 4"):
        rbf_cka(x, y, debiased=True)
    with pytest.raises(AnalysisError, match="same inputs"):
        linear_cka(x, y[:2])
    with pytest.raises(AnalysisError, match="non-finite"):
        linear_cka(x * float("nan"), y)
    with pytest.raises(AnalysisError, match="bandwidth"):
        rbf_cka(x, y, bandwidth=0.0)


def test_numpy_input_and_float_result():
    x, y = reps(seed=9)
    value = linear_cka(x.numpy().astype(np.float32), y.numpy())
    assert isinstance(value, float)
    assert value == pytest.approx(linear_cka(x.float(), y), abs=1e-6)
