import pytest
import torch

from spikebench.dynamics import LIFParams, LIFState, step, zero_state
from spikebench.dynamics.surrogate import FastSigmoid


def run(p: LIFParams, currents: list[float]) -> tuple[list[float], list[float]]:
    state = zero_state(1, 1, dtype=torch.float64)
    vs, zs = [], []
    for c in currents:
        z, state = step(p, state, torch.tensor([[c]], dtype=torch.float64))
        vs.append(state.v.item())
        zs.append(z.item())
    return vs, zs


def test_soft_reset_trajectory_by_hand():
    # alpha 0.5, theta 1: v1 = 0.6; v2 = 0.3 + 0.6 = 0.9; v3 = 0.45 + 0.8 = 1.25 -> spike;
    # v4 = 0.625 + 0 - 1 = -0.375; v5 = -0.1875 + 1.5 = 1.3125 -> spike
    p = LIFParams(alpha=0.5, theta=1.0, reset="soft")
    vs, zs = run(p, [0.6, 0.6, 0.8, 0.0, 1.5])
    assert vs == pytest.approx([0.6, 0.9, 1.25, -0.375, 1.3125])
    assert zs == [0.0, 0.0, 1.0, 0.0, 1.0]


def test_zero_reset_trajectory_by_hand():
    # alpha 0.5: v3 = 1.25 spikes; v4 = 0.5 * 1.25 * (1 - 1) + 0.2 = 0.2; v5 = 0.1 + 1.0 = 1.1
    p = LIFParams(alpha=0.5, theta=1.0, reset="zero")
    vs, zs = run(p, [0.6, 0.6, 0.8, 0.2, 1.0])
    assert vs == pytest.approx([0.6, 0.9, 1.25, 0.2, 1.1])
    assert zs == [0.0, 0.0, 1.0, 0.0, 1.0]


def test_threshold_is_inclusive_and_scaled():
    p = LIFParams(alpha=0.0, theta=2.0)
    vs, zs = run(p, [1.999, 2.0])
    assert zs == [0.0, 1.0]


def test_detach_reset_changes_only_gradients():
    x = torch.tensor([[1.2]], dtype=torch.float64, requires_grad=True)
    grads, values = [], []
    for detach in (True, False):
        p = LIFParams(alpha=0.9, detach_reset=detach, surrogate=FastSigmoid(1.0))
        s = LIFState(torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64))
        z1, s = step(p, s, x)
        z2, s = step(p, s, x)
        (g,) = torch.autograd.grad(s.v.sum(), x)
        grads.append(g.item())
        values.append(s.v.item())
    assert values[0] == values[1]
    # v2 = 0.9 v1 + x - z1 with v1 = x: dv2/dx = 1.9 detached, 1.9 - psi(x - 1) otherwise
    psi = 1.0 / (1.0 + abs(1.2 - 1.0)) ** 2
    assert grads[0] == pytest.approx(1.9)
    assert grads[1] == pytest.approx(1.9 - psi)
