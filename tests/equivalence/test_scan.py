"""The fused LIF scan equals the reference step loop, forward and backward, and passes a float64
finite-difference gradient check when its spike function is made smooth."""

from dataclasses import dataclass

import pytest
import torch

from spikebench.dynamics import LIFParams, LIFState, scan, scan_steps
from spikebench.dynamics.surrogate import FastSigmoid, Surrogate, Triangle
from spikebench.nn import Network, SpikingLinear

CASES = [
    (reset, detach, rec) for reset in ("soft", "zero") for detach in (True, False) for rec in (False, True)
]


@dataclass(frozen=True)
class SmoothSpike(Surrogate):
    """Test-only: the forward pass is the smooth primitive itself, so finite differences are exact
    checks of the backward pass (which uses ``derivative``)."""

    scale: float = 2.0

    def heaviside(self, x):
        return torch.sigmoid(self.scale * x)

    def primitive(self, x):
        return torch.sigmoid(self.scale * x)

    def derivative(self, x):
        s = torch.sigmoid(self.scale * x)
        return self.scale * s * (1 - s)


def _inputs(T=7, B=3, N=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    cur = (torch.rand(T, B, N, generator=g, dtype=torch.float64) * 1.6).requires_grad_(True)
    rec = (torch.randn(N, N, generator=g, dtype=torch.float64) * 0.5).requires_grad_(True)
    v0 = torch.rand(B, N, generator=g, dtype=torch.float64)
    z0 = (torch.rand(B, N, generator=g, dtype=torch.float64) > 0.5).double()
    w = torch.randn(T, B, N, generator=g, dtype=torch.float64)
    return cur, rec, LIFState(v0, z0), w


@pytest.mark.parametrize("reset,detach,use_rec", CASES)
@pytest.mark.parametrize("surrogate", [FastSigmoid(2.0), Triangle(0.7)])
def test_fused_scan_equals_step_loop(reset, detach, use_rec, surrogate):
    p = LIFParams(alpha=0.8, theta=1.0, reset=reset, detach_reset=detach, surrogate=surrogate)
    cur, rec, s0, w = _inputs()
    r = rec if use_rec else None
    z_ref, sT_ref = scan_steps(p, cur, r, s0)
    z_fast, sT_fast = scan(p, cur, r, s0)
    torch.testing.assert_close(z_fast, z_ref, rtol=0, atol=0)
    torch.testing.assert_close(sT_fast.v, sT_ref.v)
    assert z_ref.sum() > 0 and z_ref.sum() < z_ref.numel()  # the case has spikes and silences
    params = [cur, rec] if use_rec else [cur]
    g_ref = torch.autograd.grad((z_ref * w).sum(), params)
    g_fast = torch.autograd.grad((z_fast * w).sum(), params)
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reset,detach,use_rec", CASES)
def test_fused_scan_gradcheck_with_smooth_spikes(reset, detach, use_rec):
    p = LIFParams(alpha=0.8, reset=reset, detach_reset=detach, surrogate=SmoothSpike(3.0))
    cur, rec, s0, w = _inputs(T=5, B=2, N=3, seed=1)

    def f(c, r):
        z, _ = scan(p, c, r if use_rec else None, s0)
        return (z * w[: z.shape[0]]).sum()

    if detach:
        # With a detached reset the backward pass deliberately differs from the forward function's
        # derivative only through the reset path; check against the step loop's autograd instead.
        def ref(c, r):
            z, _ = scan_steps(p, c, r if use_rec else None, s0)
            return (z * w[: z.shape[0]]).sum()

        g1 = torch.autograd.grad(f(cur, rec), [cur, rec], allow_unused=True)
        g2 = torch.autograd.grad(ref(cur, rec), [cur, rec], allow_unused=True)
        for a, b in zip(g1, g2, strict=True):
            if b is None:
                assert a is None or not a.abs().sum()
            else:
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    else:
        assert torch.autograd.gradcheck(f, (cur, rec), eps=1e-6, atol=1e-7)


def test_feedforward_currents_at_once_equal_per_step():
    torch.manual_seed(0)
    layer = SpikingLinear(6, 5, recurrent=False, params=LIFParams()).double()
    x = torch.rand(9, 4, 6, dtype=torch.float64)
    at_once = layer.currents(x)
    per_step = torch.stack([torch.nn.functional.linear(x[t], layer.weight, layer.bias) for t in range(9)])
    torch.testing.assert_close(at_once, per_step)
    static = x[0].unsqueeze(0).expand(9, 4, 6)
    torch.testing.assert_close(layer.currents(static), layer.currents(static.contiguous()))


def test_recurrent_layer_with_zero_weights_equals_feedforward():
    torch.manual_seed(0)
    p = LIFParams(surrogate=FastSigmoid(2.0))
    ff = SpikingLinear(6, 5, recurrent=False, params=p).double()
    rc = SpikingLinear(6, 5, recurrent=True, params=p).double()
    with torch.no_grad():
        rc.weight.copy_(ff.weight * 3)
        ff.weight.mul_(3)
        rc.bias.copy_(ff.bias)
        rc.rec.zero_()
    x = torch.rand(10, 4, 6, dtype=torch.float64)
    z_ff, _ = ff(x)
    z_rc, _ = rc(x)
    assert z_ff.sum() > 0
    torch.testing.assert_close(z_rc, z_ff, rtol=0, atol=0)
    g_ff = torch.autograd.grad(z_ff.sum(), ff.weight)[0]
    g_rc = torch.autograd.grad(z_rc.sum(), rc.weight)[0]
    torch.testing.assert_close(g_rc, g_ff)


@pytest.mark.parametrize("recurrent", [False, True])
def test_network_forward_equals_step_by_step(recurrent):
    torch.manual_seed(0)
    net = Network.mlp(6, (5, 4), 3, recurrent=recurrent, params=LIFParams(alpha=0.7), kappa=0.6).double()
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.mul_(4)
    x = torch.rand(8, 2, 6, dtype=torch.float64)
    roll = net(x)
    state = net.zero_state(2, x)
    ys, spikes = [], []
    for t in range(8):
        s, y, state = net.step(x[t], state)
        ys.append(y)
        spikes.append(s[-1])
    torch.testing.assert_close(roll.readout, torch.stack(ys))
    torch.testing.assert_close(roll.spikes[-1], torch.stack(spikes))
    assert roll.spikes[0].sum() > 0


def test_network_continues_from_state():
    """Running T steps at once equals two halves with the state carried over (forward values)."""
    torch.manual_seed(1)
    net = Network.mlp(6, (5,), 3, recurrent=True, params=LIFParams(alpha=0.7), kappa=0.6).double()
    with torch.no_grad():
        net.layers[0].weight.mul_(4)
    x = torch.rand(8, 2, 6, dtype=torch.float64)
    full = net(x)
    a = net(x[:3])
    b = net(x[3:], a.state)
    torch.testing.assert_close(torch.cat([a.readout, b.readout]), full.readout)
