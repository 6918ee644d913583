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


def _inference_cases():
    """Every branch of the recursion, in float32 (what attacks and evaluation run) and float64."""
    for reset, detach, rec in CASES:
        for surrogate in (FastSigmoid(2.0), Triangle(0.7)):
            for dtype in (torch.float32, torch.float64):
                yield LIFParams(alpha=0.8, reset=reset, detach_reset=detach, surrogate=surrogate), rec, dtype
    yield LIFParams(surrogate=SmoothSpike(3.0)), True, torch.float32  # a spike function of its own


@pytest.mark.parametrize("p,use_rec,dtype", list(_inference_cases()))
@pytest.mark.parametrize("given_state", [False, True])
def test_inference_scan_equals_training_scan_bit_for_bit(p, use_rec, dtype, given_state):
    """Without gradients the scan runs outside autograd and keeps no potentials: the spikes and final
    state are those of the autograd path (which the tests above check against the step loop), exactly."""
    cur, rec, s0, _ = _inputs(T=9, B=5, N=6, seed=3)
    cur, rec, s0 = cur.detach().to(dtype), rec.detach().to(dtype), LIFState(s0.v.to(dtype), s0.z.to(dtype))
    r, state = (rec if use_rec else None), (s0 if given_state else None)
    z_train, s_train = scan(p, cur.clone().requires_grad_(True), r, state)
    assert z_train.grad_fn is not None  # the autograd path
    with torch.no_grad():
        z_inf, s_inf = scan(p, cur, r, state)
    z_nograd_inputs, _ = scan(p, cur, r, state)  # gradients enabled, nothing requires one
    assert z_inf.grad_fn is None and z_inf.dtype == dtype
    for a in (z_inf, z_nograd_inputs):
        assert torch.equal(a, z_train.detach())
    assert torch.equal(s_inf.v, s_train.v) and torch.equal(s_inf.z, s_train.z)
    assert 0 < z_train.sum() < z_train.numel()
    if given_state:
        assert torch.equal(s0.v, _inputs(T=9, B=5, N=6, seed=3)[2].v.to(dtype))  # the state is not written


@pytest.mark.parametrize("use_rec", [False, True])
def test_inference_scan_under_bf16_equals_training_scan(use_rec):
    """bf16 currents (autocast products): inference takes each step's currents into float32 as it
    reaches them instead of copying all of them first and returns bf16 spikes; the spikes and state are
    the same, bit for bit."""
    from spikebench.precision import bf16_supported, compute

    if not bf16_supported("cpu"):
        pytest.skip("this CPU has no bf16")
    g = torch.Generator().manual_seed(4)
    layer = torch.nn.Linear(8, 6)
    x = torch.rand(10, 5, 8, generator=g) * 2
    rec = torch.randn(6, 6, generator=g) * 0.5 if use_rec else None
    with compute("bf16", "cpu"):
        z_train, s_train = scan(LIFParams(), layer(x.clone().requires_grad_(True)), rec)
        with torch.no_grad():
            currents = layer(x)
            assert currents.dtype == torch.bfloat16 and currents.stride(0) != 0
            z_inf, s_inf = scan(LIFParams(), currents, rec)
    assert s_inf.v.dtype == torch.float32 and z_inf.dtype == z_train.dtype == s_inf.z.dtype == torch.bfloat16
    assert torch.equal(z_inf, z_train.detach()) and torch.equal(s_inf.v, s_train.v)
    assert torch.equal(s_inf.z, z_train[-1].detach())
    assert 0 < z_inf.sum() < z_inf.numel()


@pytest.mark.parametrize("reset,detach,use_rec", CASES)
@pytest.mark.parametrize("surrogate", [FastSigmoid(2.0), Triangle(0.7)])
def test_bf16_training_scan_equals_the_float32_recursion_of_rounded_currents(
    reset, detach, use_rec, surrogate
):
    """Under bf16 the training scan reads bf16 currents step by step and returns bf16 spikes and a bf16
    gradient for the currents. Reference: the scan of the currents taken into float32 first (as
    autograd of ``currents.float()``), its gradient rounded to bf16 afterwards; without recurrent
    weights that is the float32 scan, with them the same node given float32 currents and the recurrent
    products' bf16 operands. Spikes, state and both gradients agree bit for bit."""
    from spikebench.dynamics.lif import _LIFScan
    from spikebench.precision import bf16_supported

    if not bf16_supported("cpu"):
        pytest.skip("this CPU has no bf16")
    p = LIFParams(alpha=0.8, theta=1.0, reset=reset, detach_reset=detach, surrogate=surrogate)
    cur, rec, s0, w = _inputs(T=9, B=5, N=6, seed=5)
    low = cur.detach().to(torch.bfloat16).requires_grad_(True)
    rec = rec.detach().float().requires_grad_(True) if use_rec else None
    s0 = LIFState(s0.v.float(), s0.z.float())
    w_low = w.to(torch.bfloat16)  # the gradient a bf16 product hands back to bf16 spikes
    # a state carried over from an earlier bf16 window holds bf16 spikes
    z, sT = scan(p, low, rec, LIFState(s0.v, s0.z.to(torch.bfloat16)))
    assert z.dtype == torch.bfloat16 and sT.v.dtype == torch.float32
    grads = torch.autograd.grad(z, [low, rec] if use_rec else [low], w_low)

    ref_in = low.detach().float().requires_grad_(True)
    if use_rec:
        z_ref, vs = _LIFScan.apply(ref_in, rec, s0.v, s0.z, p, None, torch.bfloat16)
        v_ref = vs[-1].clone()
    else:
        z_ref, s_ref = scan(p, ref_in, None, s0)
        v_ref = s_ref.v
    assert torch.equal(z.float(), z_ref.float()) and torch.equal(sT.v, v_ref)
    assert 0 < z_ref.sum() < z_ref.numel()
    ref = torch.autograd.grad(z_ref, [ref_in, rec] if use_rec else [ref_in], w_low.to(z_ref.dtype))
    assert grads[0].dtype == torch.bfloat16 and torch.equal(grads[0], ref[0].to(torch.bfloat16))
    if use_rec:
        assert torch.equal(grads[1], ref[1])
    assert grads[0].abs().sum() > 0


def test_inference_scan_keeps_no_potentials():
    """Inference allocates the spikes and two [B, N] potentials, not the [T, B, N] potentials the
    backward pass needs (nor, under bf16, a float32 copy of the currents)."""
    from spikebench.train.tensor_memory import TensorMemory

    T, B, N = 50, 8, 32
    cur = torch.rand(T, B, N) * 1.6
    with torch.no_grad(), TensorMemory() as tm:
        z, _ = scan(LIFParams(), cur)
    full = T * B * N * 4
    assert full <= tm.peak_bytes <= full + 4 * B * N * 4  # spikes + [B, N] buffers
    with TensorMemory() as tm:
        scan(LIFParams(), cur.clone().requires_grad_(True))
    assert tm.peak_bytes >= 3 * full  # the clone, spikes and potentials: what inference saves
