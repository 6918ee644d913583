"""The online rules on convolutional networks (float64): ottt, decolle and dfa equal an autodiff reference
built with autograd inside each step only (convolutions, max pooling and all), input gradient included;
step-wise and per-sequence updates sum to the same gradient; no autograd graph or per-step memory is kept
across steps; the attacks' ``rule`` gradient source works on them."""

import pytest
import torch
import torch.nn.functional as F

from spikebench.attacks import Classifier, RuleGradient
from spikebench.config import RuleConfig
from spikebench.data.encoders import Direct, Encoding
from spikebench.dynamics import LIFParams
from spikebench.dynamics.surrogate import FastSigmoid
from spikebench.nn import Network
from spikebench.rules import RULES
from tests.equivalence.test_eprop import Ramp
from tests.equivalence.test_online import assert_no_graph_and_no_growth, run_rule, traced_reference

T = 4
CONV_ONLINE = ["ottt", "decolle", "dfa"]
# (input maps, channels, pool): one block; two blocks on odd sizes (7 -> 3 -> 1, pooling drops a row
# and a column); no pooling
ARCHS = [((1, 6, 6), (2,), 2), ((2, 7, 7), (3, 2), 2), ((1, 5, 5), (2, 2), 1)]


def conv_net(in_shape, channels, pool, recurrent: bool, seed: int = 2) -> Network:
    torch.manual_seed(seed)
    p = LIFParams(alpha=0.8, theta=0.5, surrogate=FastSigmoid(2.0))
    net = Network.conv(in_shape, channels, 3, pool, (5,), 3, recurrent=recurrent, params=p, kappa=0.7)
    net = net.double()
    with torch.no_grad():
        for layer in net.layers:
            for q in layer.parameters():
                q.mul_(3)
            if getattr(layer, "rec", None) is not None:
                layer.rec.mul_(3)
    return net


def conv_batch(in_shape, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, *in_shape, generator=g, dtype=torch.float64) * 1.5, torch.tensor([0, 2, 1])


TRACED = [
    ("ottt", {}),
    ("decolle", {}),
    ("decolle", {"local_loss": "ce"}),
    ("dfa", {"trace": "none"}),
    ("dfa", {"trace": "presynaptic"}),
]


@pytest.mark.parametrize("name,opts", TRACED)
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("recurrent", [False, True])
def test_conv_rules_equal_autodiff_within_each_step(name, opts, arch, recurrent):
    in_shape, channels, pool = arch
    net = conv_net(in_shape, channels, pool, recurrent)
    x, labels = conv_batch(in_shape)
    enc = Encoding(Ramp(), T)
    calls, rule, _ = run_rule(name, net, x, labels, enc, **opts)
    assert len(calls) == 1
    x_seq = enc.sequence(x)
    with torch.no_grad():
        spikes = net(x_seq).spikes
    assert all(0 < s.mean() < 1 for s in spikes)  # every layer fires, not always: pooling has choices
    ref, ref_x = traced_reference(name, rule, net, x_seq, labels)
    assert set(calls[0]) == set(ref) == {n for n, _ in net.named_parameters()}
    for n in ref:
        torch.testing.assert_close(calls[0][n], ref[n], rtol=1e-10, atol=1e-13, msg=n)
        assert ref[n].abs().max() > 0, n
    gx = rule.input_gradient(net, x_seq, labels)
    assert gx.shape == (T, *x.shape)
    torch.testing.assert_close(gx, ref_x, rtol=1e-10, atol=1e-13)
    assert ref_x.abs().max() > 0


def test_ottt_without_traces_is_per_step_backprop():
    """With the trace decay at 0, OTTT's hidden gradient is plain autograd of ``sum_t CE(y[t]) / T``
    through the network's own step, state from earlier steps a constant (pooling by autograd)."""
    in_shape, channels, pool = ARCHS[1]
    net = conv_net(in_shape, channels, pool, True)
    x, labels = conv_batch(in_shape, 1)
    enc = Encoding(Ramp(), T)
    rule = RULES.get("ottt")(RuleConfig(name="ottt"), net, torch.Generator().manual_seed(1))
    rule.trace_decay = lambda net: 0.0
    got = {}
    rule.train_batch(net, x, labels, enc, lambda: got.update({n: p.grad for n, p in net.named_parameters()}))
    hidden = {n: p for n, p in net.named_parameters() if not n.startswith("readout.")}
    state, objective = net.zero_state(3, x), 0.0
    for t in range(T):
        _, y, new = net.step(enc.step(x, t), state)
        objective = objective + F.cross_entropy(y, labels) / T
        state = new.detach()
    ref = torch.autograd.grad(objective, list(hidden.values()))
    for n, g in zip(hidden, ref, strict=True):
        torch.testing.assert_close(got[n], g, rtol=1e-10, atol=1e-13, msg=n)
        assert g.abs().max() > 0, n


@pytest.mark.parametrize("name", CONV_ONLINE)
def test_conv_step_updates_sum_to_the_sequence_update(name):
    in_shape, channels, pool = ARCHS[1]
    net = conv_net(in_shape, channels, pool, True)
    x, labels = conv_batch(in_shape, 2)
    enc = Encoding(Ramp(), T)
    seq, _, r1 = run_rule(name, net, x, labels, enc, update="sequence")
    steps, _, r2 = run_rule(name, net, x, labels, enc, update="step")
    assert len(seq) == 1 and len(steps) == T
    for n in seq[0]:
        torch.testing.assert_close(steps[-1][n], seq[0][n], rtol=1e-12, atol=1e-14, msg=n)
    assert r1.loss == r2.loss
    torch.testing.assert_close(r1.logits, r2.logits)


@pytest.mark.parametrize("name", CONV_ONLINE)
def test_conv_keeps_no_graph_and_no_memory_across_steps(name):
    in_shape, channels, pool = ARCHS[1]
    build = lambda: (conv_net(in_shape, channels, pool, True), *conv_batch(in_shape, 3))  # noqa: E731
    assert_no_graph_and_no_growth(name, build, Direct(), (5, 15))


@pytest.mark.parametrize("name", CONV_ONLINE)
def test_attack_rule_gradient_on_conv(name):
    """``RuleGradient`` chains the rule's input gradient [T, B, C, H, W] through the encoder to the image."""
    in_shape, channels, pool = ARCHS[1]
    net = conv_net(in_shape, channels, pool, False)
    x, labels = conv_batch(in_shape, 4)
    enc = Encoding(Ramp(), T)
    rule = RULES.get(name)(RuleConfig(name=name), net, torch.Generator().manual_seed(1))
    g = RuleGradient(Classifier(net, enc), rule)(x, labels)
    g_seq = rule.input_gradient(net, enc.sequence(x), labels)
    assert g.shape == x.shape and g.abs().max() > 0
    torch.testing.assert_close(g, sum(g_seq[t] * (t + 1) / T for t in range(T)), rtol=1e-12, atol=1e-14)
