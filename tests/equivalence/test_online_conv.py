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
from spikebench.dynamics import LIFParams, lif
from spikebench.dynamics.lif import LIFState
from spikebench.dynamics.surrogate import FastSigmoid
from spikebench.nn.conv import ConvNetwork, SpikingConv
from spikebench.nn.network import NetState
from spikebench.rules import RULES
from tests.equivalence.test_eprop import Ramp, online_loss
from tests.equivalence.test_online import _live_tensor_bytes, run_rule

T = 4
CONV_ONLINE = ["ottt", "decolle", "dfa"]
# (input maps, channels, pool): one block; two blocks on odd sizes (7 -> 3 -> 1, pooling drops a row
# and a column); no pooling
ARCHS = [((1, 6, 6), (2,), 2), ((2, 7, 7), (3, 2), 2), ((1, 5, 5), (2, 2), 1)]


def conv_net(in_shape, channels, pool, recurrent: bool, seed: int = 2) -> ConvNetwork:
    torch.manual_seed(seed)
    p = LIFParams(alpha=0.8, theta=0.5, surrogate=FastSigmoid(2.0))
    net = ConvNetwork(in_shape, channels, 3, pool, (5,), 3, recurrent=recurrent, params=p, kappa=0.7)
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


def conv_reference(name, rule, net, x_seq, labels):
    """Per-sequence gradients of a trace-based rule on a ConvNetwork, by autograd inside each step.

    As ``traced_reference`` of ``test_online``: state from earlier steps is a constant, and every
    layer's current is ``value + part - part.detach()`` with ``part`` its current computed from the
    presynaptic traces (``K * x_hat[t] + a[t] b`` for a block, a trace of its input maps), so weight
    gradients go through the traces and the first layer's input gradient through the input's trace.
    Pooling is autograd's ``max_pool2d``. ottt backpropagates the step's loss through every layer;
    decolle and dfa stop gradients between layers and credit each layer through
    ``CE(G_l p_l[t]) / T`` (``p_l`` the layer's output, pooled for a block) / ``<B_l e[t], z_l[t]>``."""
    x_seq = x_seq.detach().requires_grad_(True)
    d = rule.trace_decay(net)
    B = x_seq.shape[1]
    layers = net.layers
    state = net.zero_state(B, x_seq)
    x_hat = [0.0] * len(layers)
    z_hat = [0.0] * len(layers)
    a = 0.0
    objective = 0.0
    top = []
    for t in range(x_seq.shape[0]):
        a = d * a + 1.0
        h = x_seq[t]
        new, zs, outs = [], [], []
        for i, layer in enumerate(layers):
            s = state.layers[i]
            x_hat[i] = d * x_hat[i] + (h if i == 0 else h.detach())
            h_value = h if name == "ottt" and i > 0 else h.detach()
            if isinstance(layer, SpikingConv):
                w, b, pad = layer.conv.weight, layer.conv.bias, layer.conv.padding
                part = F.conv2d(x_hat[i], w, padding=pad) + a * b[:, None, None]
                value = F.conv2d(h_value, w.detach(), b.detach(), padding=pad)
                current = (value + part - part.detach()).reshape(B, -1)
            else:
                z_hat[i] = d * z_hat[i] + s.z
                part = F.linear(x_hat[i], layer.weight) + a * layer.bias
                value = F.linear(h_value, layer.weight.detach(), layer.bias.detach())
                if layer.rec is not None:
                    part = part + z_hat[i] @ layer.rec.T
                    value = value + s.z @ layer.rec.detach().T
                current = value + part - part.detach()
            z, s = lif.step(layer.params, s, current)
            if isinstance(layer, SpikingConv):
                maps = z.reshape(B, *layer.map_shape)
                h = F.max_pool2d(maps, layer.pool) if layer.pool > 1 else maps
                nxt = layers[i + 1]
                out = h.reshape(B, -1)
                h = h if isinstance(nxt, SpikingConv) else out
            else:
                h = out = z
            zs.append(z)
            outs.append(out)
            new.append(LIFState(s.v.detach(), s.z.detach()))
        y = (net.readout.kappa * state.y + net.readout.linear(zs[-1].detach())).detach()
        if name == "ottt":
            objective = (
                objective
                + F.cross_entropy(net.readout.kappa * state.y + net.readout.linear(zs[-1]), labels) / T
            )
        elif name == "dfa":
            y_var = y.clone().requires_grad_(True)
            e = torch.autograd.grad(F.cross_entropy(y_var, labels) / T, y_var)[0]
            for i, z in enumerate(zs):
                objective = objective + (z * (e @ rule.fixed[f"feedback.{i}"].T)).sum()
        else:
            for i, out in enumerate(outs):
                objective = objective + F.cross_entropy(out @ rule.fixed[f"readout.{i}"].T, labels) / T
        top.append(zs[-1].detach())
        state = NetState(new, y)
    hidden = [(n, p) for n, p in net.named_parameters() if not n.startswith("readout.")]
    grads = torch.autograd.grad(objective, [x_seq] + [p for _, p in hidden])
    ref = dict(zip([n for n, _ in hidden], grads[1:], strict=True))
    readout = net.readout.linear
    gw, gb = torch.autograd.grad(
        online_loss(net.readout(torch.stack(top)), labels), [readout.weight, readout.bias]
    )
    ref.update({"readout.linear.weight": gw, "readout.linear.bias": gb})
    return ref, grads[0]


TRACED = [("ottt", {}), ("decolle", {}), ("dfa", {"trace": "none"}), ("dfa", {"trace": "presynaptic"})]


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
    ref, ref_x = conv_reference(name, rule, net, x_seq, labels)
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
    live, saved = [], []

    def pack(t):
        saved.append(t.numel())
        return t

    in_shape, channels, pool = ARCHS[1]
    for steps in (5, 15):
        net = conv_net(in_shape, channels, pool, True)
        x, labels = conv_batch(in_shape, 3)
        rule = RULES.get(name)(RuleConfig(name=name), net, torch.Generator().manual_seed(1))
        before = _live_tensor_bytes()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            result = rule.train_batch(
                net,
                x,
                labels,
                Encoding(Direct(), steps),
                lambda before=before: live.append(_live_tensor_bytes() - before),
            )
        assert result.logits.grad_fn is None
        assert all(p.grad.grad_fn is None for p in net.parameters())
    assert saved == []
    assert live[0] == live[1] > 0


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
