"""Efficiency metrics (float64): per-layer firing rates and synaptic operations against a brute-force
count of the definitions and a count by hand on a tiny network; footprint and connection sparsity;
energy arithmetic; every rule's declared update cost against the matrix products its implementation
runs on a real batch, and against the traces it keeps."""

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from spikebench.config import RuleConfig
from spikebench.data.encoders import Direct, Encoding, Rate
from spikebench.dynamics import LIFParams
from spikebench.nn import Network
from spikebench.rules import RULES
from spikebench.rules.cost import rule_cost
from spikebench.rules.online import online_steps
from spikebench.train.efficiency import OpEnergy, footprint, measure


def brute_force(net: Network, x_seq: torch.Tensor) -> tuple[float, float, float]:
    """(effective ACs, effective MACs, dense) per sample by loops over every step, sample, input unit
    and outgoing weight, straight from the definitions."""
    r = net(x_seq)
    T, B = x_seq.shape[:2]
    acs = macs = dense = 0.0

    def connection(w, pre_seq, steps):
        nonlocal acs, macs, dense
        binary = bool(((pre_seq == 0) | (pre_seq == 1)).all())
        for t in steps:
            for b in range(B):
                for i in range(w.shape[1]):
                    for j in range(w.shape[0]):
                        dense += 1
                        if pre_seq[t, b, i] != 0 and w[j, i] != 0:
                            if binary:
                                acs += 1
                            else:
                                macs += 1

    pre = x_seq.reshape(T, B, -1)
    for layer, z in zip(net.layers, r.spikes, strict=True):
        connection(layer.weight, pre, range(T))
        if layer.rec is not None:
            prev = torch.cat([torch.zeros_like(z[:1]), z[:-1]])  # z[t-1], zero at t = 0
            connection(layer.rec, prev, range(T))
        pre = z
    connection(net.readout.linear.weight, pre, range(T))
    return acs / B, macs / B, dense / B


@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("encoder", ["direct", "rate"])
def test_synaptic_operations_match_a_brute_force_count(recurrent, encoder):
    torch.manual_seed(0)
    net = Network.mlp(
        6, (5, 4), 3, recurrent=recurrent, params=LIFParams(alpha=0.8, theta=0.4), kappa=0.7
    ).double()
    with torch.no_grad():
        net.layers[0].weight[0, :3] = 0.0  # some zero weights: they trigger no operation
    x = torch.rand(4, 6, dtype=torch.float64)
    x[:, 0] = 0.0  # a silent input: no operation either
    enc = Encoding(Direct() if encoder == "direct" else Rate(), 5, torch.Generator().manual_seed(3))
    rec = measure(net, x, enc, batch_size=3)
    enc.gen.manual_seed(3)
    acs, macs, dense = brute_force(net, torch.cat([enc.sequence(x[:3]), enc.sequence(x[3:])], 1))
    assert rec["synops"]["effective_acs"] == acs
    assert rec["synops"]["effective_macs"] == macs
    assert rec["synops"]["dense"] == dense
    assert (macs > 0) == (encoder == "direct")  # pixels are analogue, rate-coded pixels are spikes


def test_hand_count_on_a_tiny_network():
    """One input unit at 1.0, W = [[1], [0.3]] (theta 0.5, soft reset, alpha 0), readout weights all
    0.25; T = 4, one sample. Neuron 0 fires at every step, neuron 1 never. The input (1.0 is binary)
    meets 2 nonzero weights at each of 4 steps: 8 ACs; the readout gets 4 spikes x 2 classes: 8 ACs;
    dense: 4 steps x (2 + 4 weights) = 24; firing rate 4 / (2 neurons x 4 steps) = 0.5."""
    net = Network.mlp(1, (2,), 2, recurrent=False, params=LIFParams(alpha=0.0, theta=0.5), kappa=0.5).double()
    with torch.no_grad():
        net.layers[0].weight.copy_(torch.tensor([[1.0], [0.3]]))
        net.layers[0].bias.zero_()
        net.readout.linear.weight.fill_(0.25)
    rec = measure(net, torch.ones(1, 1, dtype=torch.float64), Encoding(Direct(), 4), batch_size=1)
    assert rec["synops"] == {"effective_acs": 16.0, "effective_macs": 0.0, "dense": 24.0}
    assert rec["layers"][0]["firing_rate"] == 0.5
    assert rec["layers"][0]["spikes_per_sample"] == 4.0
    assert rec["activation_sparsity"] == 0.5
    assert rec["neuron_updates"] == (2 + 2) * 4  # hidden neurons and readout units, every step
    e = rec["energy"]
    assert e["inference_pj"] == pytest.approx(16 * 0.9 + 16 * 4.6)
    assert e["dense_inference_pj"] == pytest.approx((24 + 16) * 4.6)


def test_footprint_and_connection_sparsity():
    net = Network.mlp(4, (3,), 2, recurrent=True, params=LIFParams(), kappa=0.5)
    with torch.no_grad():
        net.layers[0].weight[0].zero_()  # 4 zero weights of 12 + 9 + 6 = 27
    f = footprint(net)
    assert f["parameters"] == 12 + 3 + 9 + 6 + 2
    assert f["footprint_bytes"] == 4 * f["parameters"]
    assert f["connection_sparsity"] == pytest.approx(4 / 27)


def test_conv_network_counts_each_spike_times_the_kernel_weights_it_meets():
    torch.manual_seed(1)
    net = Network.conv(
        (1, 6, 6), (2,), 3, 2, (4,), 3, recurrent=False, params=LIFParams(alpha=0.5, theta=0.2), kappa=0.5
    ).double()
    x = (torch.rand(2, 1, 6, 6, dtype=torch.float64) > 0.5).double()
    rec = measure(net, x, Encoding(Direct(), 3), batch_size=2)
    # by hand: each output position of each of the 2 channels meets the nonzero pixels of its 3x3
    # window (zero padding); the same frame at each of the 3 steps; per sample of 2
    pad = torch.nn.functional.pad(x[:, 0], (1, 1, 1, 1))
    windows = sum(
        int(pad[b, i : i + 3, j : j + 3].sum()) for b in range(2) for i in range(6) for j in range(6)
    )
    per_sample = windows * 2 / 2
    assert rec["connections"]["layers.0"]["effective_ops"] == 3 * per_sample
    assert rec["connections"]["layers.0"]["input"] == "spikes"


def test_energy_per_operation_is_configurable_and_checked():
    net = Network.mlp(2, (2,), 2, recurrent=False, params=LIFParams(), kappa=0.5)
    x = torch.rand(2, 2)
    a = measure(net, x, Encoding(Direct(), 3), 2, OpEnergy(mac_pj=1.0, add_pj=0.0))
    s = a["synops"]
    assert a["energy"]["inference_pj"] == pytest.approx(s["effective_macs"] + a["neuron_updates"])
    with pytest.raises(ValueError):
        OpEnergy(mac_pj=-1.0)


# -- the rule's own cost ---------------------------------------------------------------------------

T, B = 5, 3
ATEN = torch.ops.aten
# FlopCounterMode has no formula for the in-place products the online rules accumulate with
IN_PLACE = {
    ATEN.addmm_: lambda s, a, b, out_shape=None, **k: 2 * a[0] * a[1] * b[1],
    ATEN.baddbmm_: lambda s, a, b, out_shape=None, **k: 2 * a[0] * a[1] * a[2] * b[2],
}


def counted_macs(fn) -> int:
    with FlopCounterMode(display=False, custom_mapping=IN_PLACE) as fc:
        fn()
    return fc.get_total_flops() // 2


RULE_CASES = [
    ("bptt", {}),
    ("tbptt", {"k": 2}),
    ("fa", {}),
    ("fa", {"feedback": "symmetric"}),
    ("ottt", {}),
    ("dfa", {}),
    ("dfa", {"trace": "none"}),
    ("decolle", {}),
]


def setup(name, opts, recurrent):
    torch.manual_seed(0)
    net = Network.mlp(12, (7, 6), 4, recurrent=recurrent, params=LIFParams(alpha=0.8, theta=0.3), kappa=0.7)
    net = net.double()
    rule = RULES.get(name)(RuleConfig(name=name, **opts), net, torch.Generator().manual_seed(1))
    x = torch.rand(B, 12, dtype=torch.float64)
    y = torch.randint(0, 4, (B,))
    return net, rule, x, y


@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("name,opts", RULE_CASES)
def test_declared_update_macs_equal_the_products_run_on_a_batch(name, opts, recurrent):
    """Rate-coded input (it changes every step). Counted: the matrix products of ``train_batch`` minus
    those of the forward pass the rule runs (step by step for online rules, windows for tbptt). The
    offline rules' implementation filters the readout's error with a [T', T'] matrix per window of T'
    > 1 steps (the leaky readout as one product, T'^2 C multiply-adds) where the declared form is the
    anticausal recursion (elementwise); that product is added to the declaration."""
    net, rule, x, y = setup(name, opts, recurrent)
    total = counted_macs(
        lambda: rule.train_batch(
            net, x, y, Encoding(Rate(), T, torch.Generator().manual_seed(2)), lambda: None
        )
    )
    enc = Encoding(Rate(), T, torch.Generator().manual_seed(2))
    if rule.online:

        def forward():
            for _ in online_steps(net, (enc.step(x, t) for t in range(T)), y, T):
                pass
    else:
        window = rule.k if name == "tbptt" else T

        def forward():
            xs, state = enc.sequence(x), None
            for s in range(0, T, window):
                state = net(xs[s : s + window], state).state

    with torch.no_grad():
        fwd = counted_macs(forward)
    cost = rule_cost(rule, net, T)
    extra = 0
    if not rule.online:
        window = rule.k if name == "tbptt" else T
        lengths = [min(window, T - s) for s in range(0, T, window)]
        extra = sum(n * n * net.n_classes for n in lengths if n > 1)
    assert (total - fwd) / B == cost.macs + extra


@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("name,opts", [c for c in RULE_CASES if c[0] in ("ottt", "dfa", "decolle")])
def test_declared_state_equals_the_traces_kept(name, opts, recurrent):
    net, rule, x, y = setup(name, opts, recurrent)
    rule.train_batch(net, x, y, Encoding(Rate(), T, torch.Generator().manual_seed(2)), lambda: None)
    kept = sum(t.value.numel() for pair in rule._traces for t in pair if t.value is not None)
    readout_trace = B * net.layers[-1].n_out  # the readout's presynaptic trace
    assert (kept + readout_trace) / B == rule_cost(rule, net, T).state
    assert rule_cost(rule, net, T).fixed == sum(m.numel() for m in rule.fixed.values())


@pytest.mark.parametrize("recurrent", [False, True])
def test_eprop_state_holds_an_eligibility_trace_per_synapse(recurrent):
    """After a rate-coded batch longer than one block, the input weights' traces are in the full form:
    ``eps`` [B, D] and ``ebar`` [B, N, D] per sample, the declared per-synapse state."""
    net, rule, x, y = setup("eprop", {"k": 2}, recurrent)
    rule.train_batch(net, x, y, Encoding(Rate(), T, torch.Generator().manual_seed(2)), lambda: None)
    cost = rule_cost(rule, net, T)
    for layer, traces in zip(net.layers, rule._traces, strict=True):
        _, _, elig = traces[0]  # the input weights
        assert elig.ebar.shape == (B, layer.n_out, layer.n_in) and elig.eps.shape == (B, layer.n_in)
    # the declared state is that of every matrix in the full form, and the readout's trace
    full = sum(
        layer.n_in * (1 + layer.n_out)
        + (layer.n_out * (1 + layer.n_out) if recurrent else 0)
        + 1
        + layer.n_out
        for layer in net.layers
    )
    assert cost.state == full + net.layers[-1].n_out
    assert math.isfinite(cost.macs) and cost.macs > 0
