"""Centered kernel alignment (CKA) between two representations of the same n inputs.

Kornblith, Norouzi, Lee & Hinton (2019), "Similarity of Neural Network Representations Revisited":
for representations ``x`` [n, d_x] and ``y`` [n, d_y] (one row per input, e.g. per-neuron spike counts
of a layer over a probe set) with Gram matrices ``K``, ``L`` [n, n],

    CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)).

HSIC estimators:

- biased (Gretton et al. 2005): ``HSIC_0(K, L) = tr(K H L H) / (n - 1)^2`` with the centring matrix
  ``H = I - 11^T / n``;
- debiased, the unbiased estimator of Song et al. (2012), Eq. 5, with ``K~``, ``L~`` the Gram matrices
  with their diagonals set to zero::

      HSIC_1(K, L) = [ tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1 ] / (n(n-3))

  (Kornblith et al. use it for debiased CKA; it needs n >= 4).

Kernels: linear ``K = X X^T``; RBF ``K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2))`` with
``sigma = bandwidth * sqrt(median squared distance)``, the median taken over all n^2 entries of the
squared-distance matrix, diagonal included (Kornblith et al.'s convention).

Numerical safety (spiking layers have silent neurons, and whole layers can be silent): everything is
computed in float64; feature columns that are constant over the inputs are set to exactly zero after
centring; a representation with no variance over the inputs (every row the same -- e.g. a silent layer
-- or a centred Gram matrix below ``RTOL`` times the size of the Gram matrix) has CKA = 0 with any
other representation, as does one whose self-similarity estimate ``HSIC(K, K)`` is not positive (the
debiased estimator can be <= 0 for tiny or degenerate samples). When more than half of the pairwise
distances are zero, the RBF width uses the median of the non-zero ones. The result is never NaN.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from spikebench.analysis.errors import AnalysisError

Matrix = Tensor | np.ndarray
Kernel = Literal["linear", "rbf"]

RTOL = 1e-10
"""A centred Gram matrix smaller than this fraction of its Gram matrix (Frobenius norms) counts as zero."""


def _matrix(x: Matrix, name: str = "x") -> Tensor:
    """``x`` as a float64 [n, d] tensor (numpy arrays go to the CPU), checked to be finite."""
    t = torch.from_numpy(np.asarray(x)) if isinstance(x, np.ndarray) else x
    if t.dim() == 1:
        t = t[:, None]
    if t.dim() != 2:
        raise AnalysisError(f"CKA needs an [n, d] matrix for {name}, got shape {tuple(t.shape)}")
    t = t.detach().to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise AnalysisError(f"CKA input {name} has non-finite values")
    return t


def _check_n(n: int, m: int, debiased: bool) -> None:
    if n != m:
        raise AnalysisError(f"CKA needs the same inputs for both representations: {n} vs {m} rows")
    if n == 0:
        raise AnalysisError("CKA needs at least one input")
    if debiased and n < 4:
        raise AnalysisError(f"debiased CKA needs at least 4 inputs, got {n}")


def centered_features(x: Matrix) -> Tensor:
    """``x`` [n, d] minus its column means, in float64; columns constant over the inputs are exactly 0."""
    t = _matrix(x)
    constant = (t.amax(0) == t.amin(0)) if t.shape[0] else torch.ones(t.shape[1], dtype=torch.bool)
    return (t - t.mean(0, keepdim=True)).masked_fill(constant, 0.0)


def gram_linear(x: Matrix) -> Tensor:
    """Linear-kernel Gram matrix ``X X^T`` [n, n] (float64) of ``x`` [n, d]."""
    t = _matrix(x)
    return t @ t.T


def _median(values: Tensor) -> Tensor:
    """Median of a 1-D tensor, the mean of the two middle values for an even count (as numpy's)."""
    v = values.sort().values
    m = v.numel()
    return (v[(m - 1) // 2] + v[m // 2]) / 2


def gram_rbf(x: Matrix, bandwidth: float = 1.0) -> Tensor:
    """RBF-kernel Gram matrix [n, n] (float64) of ``x`` [n, d], ``sigma = bandwidth * sqrt(median d^2)``.

    The median is over all n^2 squared distances, diagonal included; when it is 0 (most rows equal)
    the median of the non-zero squared distances is used; when all rows are equal the Gram matrix is
    all ones (a representation without variance).
    """
    if not bandwidth > 0:
        raise AnalysisError(f"RBF bandwidth must be positive, got {bandwidth}")
    t = centered_features(x)  # distances are translation-invariant; centring reduces cancellation
    sq = (t * t).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (t @ t.T)).clamp_min(0.0)
    d2.fill_diagonal_(0.0)
    flat = d2.flatten()
    med = _median(flat)
    if med <= 0:
        positive = flat[flat > 0]
        if positive.numel() == 0:
            return torch.ones_like(d2)
        med = _median(positive)
    return torch.exp(-d2 / (2.0 * bandwidth**2 * med))


class _Prepared:
    """A Gram matrix prepared for HSIC: ``HSIC(K, L) = <P_K, Q_L> / scale`` for any pair.

    Biased: ``P = Q = H K H``, ``scale = (n-1)^2``. Debiased: ``Q = K~`` and
    ``P = K~ + (1^T K~ 1) / ((n-1)(n-2)) 11^T - (K~ 1 1^T + 1 1^T K~) / (n-2)``, ``scale = n(n-3)``,
    so that ``<P_K, Q_L>`` is the bracket of Song et al.'s Eq. 5 (a symmetric bilinear form).
    """

    def __init__(self, gram: Tensor, debiased: bool) -> None:
        if gram.dim() != 2 or gram.shape[0] != gram.shape[1]:
            raise AnalysisError(f"a Gram matrix must be square, got shape {tuple(gram.shape)}")
        gram = gram.detach().to(torch.float64)
        if not bool(torch.isfinite(gram).all()):
            raise AnalysisError("Gram matrix has non-finite values")
        n = gram.shape[0]
        self.n = n
        centred = gram - gram.mean(0, keepdim=True) - gram.mean(1, keepdim=True) + gram.mean()
        self.constant = bool(torch.linalg.norm(centred) <= RTOL * torch.linalg.norm(gram))
        if not debiased:
            self.p = self.q = centred
            self.scale = float(max(n - 1, 1) ** 2)
            return
        kt = gram.clone()
        kt.fill_diagonal_(0.0)
        rows = kt.sum(1)
        self.q = kt
        self.p = kt + rows.sum() / ((n - 1) * (n - 2)) - (rows[:, None] + rows[None, :]) / (n - 2)
        self.scale = float(n * (n - 3))

    def hsic(self, other: _Prepared) -> float:
        return float((self.p * other.q).sum()) / self.scale


def _ratio(hxy: float, hxx: float, hyy: float) -> float:
    """``hxy / sqrt(hxx hyy)``, and 0 when a self-similarity is not positive."""
    if not (hxx > 0 and hyy > 0):
        return 0.0
    return hxy / math.sqrt(hxx) / math.sqrt(hyy)


def hsic(gram_x: Matrix, gram_y: Matrix, debiased: bool = False) -> float:
    """HSIC between two Gram matrices [n, n]: ``HSIC_0`` (Gretton et al. 2005) or, with ``debiased``,
    the unbiased ``HSIC_1`` (Song et al. 2012, Eq. 5)."""
    kx, ky = _matrix(gram_x, "gram_x"), _matrix(gram_y, "gram_y")
    _check_n(kx.shape[0], ky.shape[0], debiased)
    return _Prepared(kx, debiased).hsic(_Prepared(ky, debiased))


def cka(gram_x: Matrix, gram_y: Matrix, debiased: bool = False) -> float:
    """CKA from two Gram matrices [n, n] of the same n inputs (see the module docstring); a float,
    0 when either representation has no variance, never NaN."""
    kx, ky = _matrix(gram_x, "gram_x"), _matrix(gram_y, "gram_y")
    _check_n(kx.shape[0], ky.shape[0], debiased)
    px, py = _Prepared(kx, debiased), _Prepared(ky, debiased)
    if px.constant or py.constant:
        return 0.0
    return _ratio(px.hsic(py), px.hsic(px), py.hsic(py))


def _unbiased_linear(x: Tensor, y: Tensor) -> float:
    """The bracket of Song et al.'s Eq. 5 for ``K = x x^T``, ``L = y y^T`` without forming K or L.

    ``tr(K~ L~) = ||x^T y||_F^2 - sum_i |x_i|^2 |y_i|^2``, ``1^T K~ 1 = |x^T 1|^2 - sum_i |x_i|^2``,
    ``K~ 1 = x (x^T 1) - (|x_i|^2)_i``.
    """
    n = x.shape[0]
    kx, ky = (x * x).sum(1), (y * y).sum(1)
    sx, sy = x.sum(0), y.sum(0)
    trace = float(torch.linalg.norm(x.T @ y) ** 2 - kx @ ky)
    total_x, total_y = float(sx @ sx - kx.sum()), float(sy @ sy - ky.sum())
    cross = float((x @ sx - kx) @ (y @ sy - ky))
    return trace + total_x * total_y / ((n - 1) * (n - 2)) - 2.0 * cross / (n - 2)


def linear_cka(x: Matrix, y: Matrix, debiased: bool = False) -> float:
    """Linear CKA of ``x`` [n, d_x] and ``y`` [n, d_y], computed in feature space.

    Biased: ``||X^T Y||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` on column-centred features (Kornblith et
    al. 2019, Eq. 5); debiased: from Song et al.'s unbiased HSIC written with features. Equal to
    ``cka(gram_linear(x), gram_linear(y), debiased)``. 0 when either has no variance; never NaN.
    """
    a, b = centered_features(x), centered_features(y)
    _check_n(a.shape[0], b.shape[0], debiased)
    if not bool(a.any()) or not bool(b.any()):
        return 0.0
    if debiased:
        return _ratio(_unbiased_linear(a, b), _unbiased_linear(a, a), _unbiased_linear(b, b))
    hxy = float(torch.linalg.norm(a.T @ b) ** 2)
    return _ratio(hxy, float(torch.linalg.norm(a.T @ a) ** 2), float(torch.linalg.norm(b.T @ b) ** 2))


def rbf_cka(x: Matrix, y: Matrix, bandwidth: float = 1.0, debiased: bool = False) -> float:
    """RBF-kernel CKA of ``x`` [n, d_x] and ``y`` [n, d_y] (``sigma = bandwidth * sqrt(median d^2)``
    per representation); 0 when either has no variance; never NaN."""
    return cka(gram_rbf(x, bandwidth), gram_rbf(y, bandwidth), debiased)


def cka_matrix(
    reps: list[Matrix], kernel: Kernel = "linear", bandwidth: float = 1.0, debiased: bool = False
) -> np.ndarray:
    """CKA between every pair of representations of the same n inputs: [R, R], symmetric.

    Each Gram matrix is built and prepared once, so R representations cost R Gram matrices and
    R(R+1)/2 inner products.
    """
    mats = [_matrix(r, f"reps[{i}]") for i, r in enumerate(reps)]
    for m in mats:
        _check_n(mats[0].shape[0], m.shape[0], debiased)
    if kernel == "linear":
        grams = [gram_linear(centered_features(m)) for m in mats]
    else:
        grams = [gram_rbf(m, bandwidth) for m in mats]
    prepared = [_Prepared(g, debiased) for g in grams]
    selfs = [p.hsic(p) for p in prepared]
    out = np.zeros((len(mats), len(mats)))
    for i, pi in enumerate(prepared):
        for j in range(i, len(prepared)):
            pj = prepared[j]
            value = 0.0 if pi.constant or pj.constant else _ratio(pi.hsic(pj), selfs[i], selfs[j])
            out[i, j] = out[j, i] = value
    return out
