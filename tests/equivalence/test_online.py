"""The online rules (float64): ottt, dfa and decolle equal an autodiff reference built step by step with
autograd inside each step only; step-wise and per-sequence updates sum to the same gradient; decolle's
first layer ignores deeper weights; dfa's hidden updates ignore the forward weights above them; no
autograd graph or per-step memory is kept across steps; non-default options train."""

import gc

import pytest
import torch
import torch.nn.functional as F

from spikebench.config import RuleConfig, TrainConfig
from spikebench.data import Split
from spikebench.data.encoders import Direct, Encoding
from spikebench.dynamics import LIFParams, lif
from spikebench.dynamics.lif import LIFState
from spikebench.nn import Network
from spikebench.nn.conv import SpikingConv
from spikebench.nn.network import NetState
from spikebench.rules import RULES
from spikebench.train.loop import fit
from tests.contract.test_rules import problem
from tests.equivalence.test_eprop import Ramp, batch, make, online_loss

T = 6


ONLINE = ["dfa", "eprop", "ottt", "decolle"]


def run_rule(name, net, x, labels, enc, **opts):
    """The rule's gradients (captured at every apply, summed by .grad accumulation) and the rule."""
    rule = RULES.get(name)(RuleConfig(name=name, **opts), net, torch.Generator().manual_seed(1))
    for p in net.parameters():
        p.grad = None
    calls: list[dict[str, torch.Tensor]] = []
    result = rule.train_batch(
        net, x, labels, enc, lambda: calls.append({n: p.grad.clone() for n, p in net.named_parameters()})
    )
    return calls, rule, result


def traced_reference(name, rule, net, x_seq, labels):
    """Per-sequence gradients of a trace-based rule, by autograd inside each step, for a
    :class:`Network`, dense or convolutional.

    State from earlier steps is a constant. Every layer's current is ``value + part - part.detach()``:
    the value of ``W x[t] + b + V z[t-1]`` (``K * x[t] + b`` for a convolution block), whose gradient
    w.r.t. the weights goes through the presynaptic traces (``part = W x_hat[t] + a[t] b + V z_hat[t-1]``,
    a block's ``x_hat`` a trace of its input maps) and, for the first layer, w.r.t. the input through its
    trace. Pooling is autograd's ``max_pool2d``. ottt backpropagates the instantaneous loss through the
    layers; dfa and decolle stop gradients between layers and credit each layer through
    ``<B_l e[t], z_l[t]>`` / the local loss of ``G_l p_l[t]`` (``p_l`` the layer's output, pooled for a
    block; decolle's mean-squared error or, with ``local_loss=ce``, cross-entropy). The
    readout gets the gradient of the loss itself."""
    x_seq = x_seq.detach().requires_grad_(True)
    T = x_seq.shape[0]
    d = rule.trace_decay(net)
    B = x_seq.shape[1]
    layers = net.layers
    state = net.zero_state(B, x_seq)
    x_hat = [0.0] * len(layers)
    z_hat = [0.0] * len(layers)
    a = 0.0
    objective = 0.0
    top = []
    for t in range(T):
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
        elif rule.local_loss == "ce":
            for i, out in enumerate(outs):
                objective = objective + F.cross_entropy(out @ rule.fixed[f"readout.{i}"].T, labels) / T
        else:  # the paper's local loss: 1/(2 B T) sum_b ||G_l p_l[t] - onehot||^2
            onehot = F.one_hot(labels, net.n_classes).to(x_seq.dtype)
            for i, out in enumerate(outs):
                r = out @ rule.fixed[f"readout.{i}"].T
                objective = objective + ((r - onehot) ** 2).sum() / (2 * B * T)
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


TRACED = [
    ("ottt", {}),
    ("decolle", {}),
    ("decolle", {"local_loss": "ce"}),
    ("dfa", {"trace": "none"}),
    ("dfa", {"trace": "presynaptic"}),
]


@pytest.mark.parametrize("name,opts", TRACED)
@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("encoder", [Direct(), Ramp()])
def test_traced_rules_equal_autodiff_within_each_step(name, opts, recurrent, encoder):
    net = make((5, 4), recurrent)
    x, labels = batch()
    enc = Encoding(encoder, T)
    calls, rule, _ = run_rule(name, net, x, labels, enc, **opts)
    assert len(calls) == 1
    ref, ref_x = traced_reference(name, rule, net, enc.sequence(x), labels)
    assert set(calls[0]) == set(ref)
    for n in ref:
        torch.testing.assert_close(calls[0][n], ref[n], rtol=1e-10, atol=1e-13, msg=n)
        assert ref[n].abs().max() > 0, n
    gx = rule.input_gradient(net, enc.sequence(x), labels)
    assert gx.shape == (T, *x.shape)
    torch.testing.assert_close(gx, ref_x, rtol=1e-10, atol=1e-13)
    assert ref_x.abs().max() > 0


@pytest.mark.parametrize("name", ONLINE)
def test_step_updates_sum_to_the_sequence_update(name):
    net = make((5, 4), True)
    x, labels = batch(1)
    enc = Encoding(Ramp(), T)
    seq, _, r1 = run_rule(name, net, x, labels, enc, update="sequence")
    # apply() only records, so .grad keeps accumulating over the T steps
    steps, _, r2 = run_rule(name, net, x, labels, enc, update="step")
    assert len(seq) == 1 and len(steps) == T
    for n in seq[0]:
        torch.testing.assert_close(steps[-1][n], seq[0][n], rtol=1e-12, atol=1e-14, msg=n)
        assert not torch.equal(steps[0][n], steps[-1][n]) or steps[0][n].abs().max() == 0, n
    assert r1.loss == r2.loss
    torch.testing.assert_close(r1.logits, r2.logits)


def test_online_loss_and_logits():
    net = make((5, 4), False)
    x, labels = batch(2)
    enc = Encoding(Ramp(), T)
    _, _, result = run_rule("ottt", net, x, labels, enc)
    with torch.no_grad():
        readout = net(enc.sequence(x)).readout
    assert result.loss == pytest.approx(online_loss(readout, labels).item(), rel=1e-12)
    torch.testing.assert_close(result.logits, readout.mean(0))


@pytest.mark.parametrize("recurrent", [False, True])
def test_decolle_first_layer_ignores_deeper_weights(recurrent):
    x, labels = batch(3)
    enc = Encoding(Ramp(), T)
    grads = []
    for seed in (0, 1):
        net = make((5, 4), recurrent)
        g = torch.Generator().manual_seed(seed + 10)
        with torch.no_grad():
            for p in [*net.layers[1].parameters(), *net.readout.parameters()]:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 2)
        grads.append(run_rule("decolle", net, x, labels, enc)[0][0])
    for n in grads[0]:
        same = torch.equal(grads[0][n], grads[1][n])
        assert same == n.startswith("layers.0."), n
        assert grads[0][n].abs().max() > 0, n


@pytest.mark.parametrize("recurrent", [False, True])
def test_dfa_hidden_updates_ignore_forward_weights_above(recurrent):
    """With a zero readout the output error is the same whatever the upper weights; the first layer's
    update then does not change when the second layer's weights do (backprop's would)."""
    x, labels = batch(4)
    enc = Encoding(Ramp(), T)
    grads = []
    for seed in (0, 1):
        net = make((5, 4), recurrent)
        g = torch.Generator().manual_seed(seed + 20)
        with torch.no_grad():
            for p in net.layers[1].parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 2)
            for p in net.readout.parameters():
                p.zero_()
        grads.append(run_rule("dfa", net, x, labels, enc)[0][0])
    for n in grads[0]:
        if n.startswith("layers.0."):
            torch.testing.assert_close(grads[0][n], grads[1][n], rtol=0, atol=0, msg=n)
            assert grads[0][n].abs().max() > 0, n
        elif n.startswith("layers.1."):
            assert not torch.equal(grads[0][n], grads[1][n]), n


def _live_tensor_bytes() -> int:
    return sum(o.numel() * o.element_size() for o in gc.get_objects() if issubclass(type(o), torch.Tensor))


def assert_no_graph_and_no_growth(name, build, encoder, lengths) -> None:
    """A batch of rule ``name`` saves nothing for a backward pass, leaves no autograd history, and what
    is alive when it applies its update does not depend on the sequence length (``lengths``: two T);
    ``build()`` gives a fresh ``(net, x, labels)``."""
    live, saved = [], []

    def pack(t):
        saved.append(t.numel())
        return t

    for steps in lengths:
        net, x, labels = build()
        rule = RULES.get(name)(RuleConfig(name=name), net, torch.Generator().manual_seed(1))
        gc.collect()
        before = _live_tensor_bytes()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            result = rule.train_batch(
                net,
                x,
                labels,
                Encoding(encoder, steps),
                lambda b=before: live.append(_live_tensor_bytes() - b),
            )
        assert result.logits.grad_fn is None
        assert all(p.grad.grad_fn is None for p in net.parameters())
    assert saved == []
    assert live[0] == live[1] > 0


@pytest.mark.parametrize("name", ONLINE)
def test_no_graph_and_no_memory_across_steps(name):
    """Nothing is saved for a backward pass, and what is alive at the end of a sequence does not
    depend on its length."""
    assert_no_graph_and_no_growth(name, lambda: (make((5, 4), True), *batch(5)), Ramp(), (20, 60))


def _problem(n: int, seed: int) -> Split:
    return problem(n, seed, block=3)


@pytest.mark.parametrize(
    "name,opts",
    [("dfa", {"trace": "none"}), ("eprop", {"feedback": "random"}), ("ottt", {"update": "step"})],
)
def test_non_default_options_train(name, opts):
    torch.manual_seed(0)
    net = Network.mlp(12, (20,), 4, recurrent=True, params=LIFParams(alpha=0.8), kappa=0.8)
    rule = RULES.get(name)(RuleConfig(name=name, **opts), net, torch.Generator().manual_seed(0))
    cfg = TrainConfig(epochs=10, batch_size=32, lr=5e-3, schedule="constant")
    enc = Encoding(Direct(), 6)
    records = fit(
        cfg, net, rule, _problem(192, 1), _problem(96, 2), enc, enc, torch.Generator().manual_seed(0)
    )
    assert records[-1].train_loss < 0.5 * records[0].train_loss
    assert records[-1].test_accuracy > 0.9
