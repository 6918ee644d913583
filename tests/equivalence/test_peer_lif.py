"""The peer layers ``spikebench perf`` benchmarks against compute what spikebench computes.

snnTorch's ``Leaky`` is spikebench's soft, detached reset; Norse's ``LIFBoxCell`` (Euler step with
dt * tau_mem_inv = 1 - alpha) and SpikingJelly's ``LIFNode`` (decay_input=False, hard reset to 0,
reset not detached) are spikebench's reset to zero with the reset's gradient. Checked in float64, with
the surrogate each peer uses; every peer is optional (skipped when not installed). Decay factors and
inputs are chosen so that the parameters are exact in float32 buffers too (0.75, 0.25, 4).
"""

import pytest
import torch

from spikebench.dynamics import LIFParams, scan
from spikebench.dynamics.surrogate import FastSigmoid, Sigmoid
from spikebench.nn import Network
from spikebench.perf.peers import SnnTorchMLP, protocol_layer

ALPHA = 0.75


def _currents(T=30, B=3, N=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    cur = (torch.rand(T, B, N, generator=g, dtype=torch.float64) * 1.2).requires_grad_(True)
    w = torch.randn(T, B, N, generator=g, dtype=torch.float64)
    return cur, w


# snnTorch's spike functions return float32 whatever the input dtype, so gradients through them carry
# float32 rounding; the other peers keep float64 throughout.
F32 = {"rtol": 1e-5, "atol": 1e-7}
F64 = {"rtol": 1e-10, "atol": 1e-12}


def _check(z_ref, z_peer, cur, w, tol):
    assert 0 < z_ref.sum() < z_ref.numel()
    torch.testing.assert_close(z_peer.double(), z_ref, rtol=0, atol=0)
    g_ref = torch.autograd.grad((z_ref * w).sum(), cur)[0]
    g_peer = torch.autograd.grad((z_peer * w).sum(), cur)[0]
    assert g_ref.abs().sum() > 0
    torch.testing.assert_close(g_peer, g_ref, **tol)


def test_snntorch_leaky_is_soft_detached_reset():
    snn = pytest.importorskip("snntorch")
    surrogate = pytest.importorskip("snntorch.surrogate")
    p = LIFParams(alpha=ALPHA, theta=1.0, reset="soft", detach_reset=True, surrogate=FastSigmoid(4.0))
    cur, w = _currents()
    leaky = snn.Leaky(beta=ALPHA, threshold=1.0, spike_grad=surrogate.fast_sigmoid(slope=4.0)).double()
    mem = torch.zeros_like(cur[0])
    out = []
    for t in range(cur.shape[0]):
        spk, mem = leaky(cur[t], mem)
        out.append(spk)
    _check(scan(p, cur)[0], torch.stack(out), cur, w, F32)


def test_norse_lif_box_is_reset_to_zero():
    norse = pytest.importorskip("norse.torch")
    p = LIFParams(alpha=ALPHA, theta=1.0, reset="zero", detach_reset=False, surrogate=FastSigmoid(1.0))
    cur, w = _currents(seed=1)
    params = norse.LIFBoxParameters(
        tau_mem_inv=torch.as_tensor(1.0 - ALPHA), v_th=torch.as_tensor(1.0), method="super"
    )
    cell = norse.LIFBoxCell(params, dt=1.0)
    state, out = None, []
    for t in range(cur.shape[0]):
        z, state = cell(cur[t] / (1.0 - ALPHA), state)  # v += dt tau_mem_inv (i - v): input scaled
        out.append(z)
    _check(scan(p, cur)[0], torch.stack(out), cur, w, F64)


def test_spikingjelly_lif_node_is_reset_to_zero():
    neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
    sj_surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")
    p = LIFParams(alpha=ALPHA, theta=1.0, reset="zero", detach_reset=False, surrogate=Sigmoid(4.0))
    cur, w = _currents(seed=2)
    node = neuron.LIFNode(
        tau=1.0 / (1.0 - ALPHA),
        decay_input=False,
        v_threshold=1.0,
        v_reset=0.0,
        detach_reset=False,
        surrogate_function=sj_surrogate.Sigmoid(alpha=4.0),
        step_mode="m",
    )
    _check(scan(p, cur)[0], node(cur), cur, w, F64)


def test_snntorch_protocol_layer_equals_spikebench():
    pytest.importorskip("snntorch")
    g = torch.Generator().manual_seed(3)
    n = 16
    weight = torch.randn(n, n, generator=g, dtype=torch.float64) * 0.4
    bias = torch.randn(n, generator=g, dtype=torch.float64) * 0.1
    x = torch.rand(40, 2, n, generator=g, dtype=torch.float64) * 2
    p = LIFParams(alpha=ALPHA, surrogate=FastSigmoid(4.0))
    ours = protocol_layer("spikebench", weight, bias, p)
    peer = protocol_layer("snntorch", weight, bias, p)
    z_ours, z_peer = ours(x), peer(x)
    assert 0 < z_ours.sum() < z_ours.numel()
    torch.testing.assert_close(z_peer.double(), z_ours, rtol=0, atol=0)
    g_ours = torch.autograd.grad(z_ours.sum(), ours.layer.weight)[0]
    g_peer = torch.autograd.grad(z_peer.sum(), peer.fc.weight)[0]
    torch.testing.assert_close(g_peer, g_ours, **F32)


def test_snntorch_network_equals_spikebench_network():
    pytest.importorskip("snntorch")
    torch.manual_seed(0)
    p = LIFParams(alpha=ALPHA, surrogate=FastSigmoid(4.0))
    net = Network.mlp(12, (10, 8), 4, recurrent=False, params=p, kappa=0.5).double()
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.mul_(4)
    peer = SnnTorchMLP(net)
    x = torch.rand(3, 12, dtype=torch.float64)
    x_seq = x.unsqueeze(0).expand(20, *x.shape)
    labels = torch.tensor([0, 3, 1])
    roll = net(x_seq)
    readout = peer(x_seq)
    assert roll.spikes[-1].sum() > 0
    torch.testing.assert_close(readout, roll.readout, rtol=1e-12, atol=1e-12)
    loss_ref = torch.nn.functional.cross_entropy(roll.readout.mean(0), labels)
    loss_peer = torch.nn.functional.cross_entropy(readout.mean(0), labels)
    g_ref = torch.autograd.grad(loss_ref, [layer.weight for layer in net.layers])
    g_peer = torch.autograd.grad(loss_peer, [fc.weight for fc in peer.fcs])
    for a, b in zip(g_peer, g_ref, strict=True):
        assert b.abs().sum() > 0
        torch.testing.assert_close(a, b, **F32)
