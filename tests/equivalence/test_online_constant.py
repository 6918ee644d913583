"""The online rules' shortcuts for a time-constant input (float64): with ``direct`` encoding (the same
tensor at every step) the first layer's current is computed once per sequence and, for the traced rules
with ``rule.update=sequence``, its weight gradient ``sum_t delta_1[t]^T x_hat[t]`` once as
``(sum_t a[t] delta_1[t])^T x``. The gradients, losses and weights equal those of the same values fed as
a new tensor at every step (no shortcut), for mlp and conv networks, for sequences that are constant
throughout, constant for a few steps and then change, and with weights that change within the sequence
(``rule.update=step`` with a real optimiser step)."""

import pytest
import torch

from spikebench.config import RuleConfig
from spikebench.data.encoders import Direct, Encoder, Encoding
from spikebench.rules import RULES
from tests.equivalence.test_eprop import Ramp, batch, make
from tests.equivalence.test_online_conv import ARCHS, conv_batch, conv_net

T = 7
RULE_OPTS = [
    ("ottt", {}),
    ("decolle", {}),
    ("dfa", {"trace": "none"}),
    ("dfa", {"trace": "presynaptic"}),
    ("eprop", {}),
]
CONV_RULE_OPTS = [r for r in RULE_OPTS if r[0] != "eprop"]


class Copies(Encoder):
    """``direct``'s values as a new tensor at every step: nothing is known to be constant."""

    def step(self, x, t, T, gen):
        return x.clone()


class Phases(Encoder):
    """Constant, then another constant, then changing: ``x`` itself for t < 2, ``other`` (one tensor)
    for 2 <= t < 4, ``x (t + 1) / T`` after; with ``fresh`` every step's frame is a new tensor."""

    def __init__(self, other: torch.Tensor, fresh: bool) -> None:
        self.other, self.fresh = other, fresh

    def step(self, x, t, T, gen):
        frame = x if t < 2 else self.other if t < 4 else x * (t + 1) / T
        return frame.clone() if self.fresh else frame


def train(name, opts, net, x, labels, encoder, update, lr):
    """Gradients at every apply (summed over the applies so far) and the loss of one batch; with ``lr``
    every apply is a real SGD step, so the weights change within the sequence in step mode."""
    rule = RULES.get(name)(
        RuleConfig(name=name, update=update, **opts), net, torch.Generator().manual_seed(1)
    )
    for p in net.parameters():
        p.grad = None
    calls = []

    def apply():
        calls.append({n: p.grad.clone() for n, p in net.named_parameters()})
        if lr:
            with torch.no_grad():
                for p in net.parameters():
                    p.sub_(p.grad, alpha=lr)

    result = rule.train_batch(net, x, labels, Encoding(encoder, T), apply)
    return calls, result, {n: p.detach().clone() for n, p in net.named_parameters()}


def count_current_calls(net, monkeypatch) -> list[int]:
    """Count the computations of the first layer's feed-forward current."""
    first, count = net.layers[0], [0]
    compute = first.current

    def counted(x):
        count[0] += 1
        return compute(x)

    monkeypatch.setattr(first, "current", counted)
    return count


def assert_same_training(make_net, x, labels, name, opts, fast, slow, update, lr, monkeypatch):
    net = make_net()
    count = count_current_calls(net, monkeypatch)
    got = train(name, opts, net, x, labels, fast, update, lr)
    ref = train(name, opts, make_net(), x, labels, slow, update, lr)
    (calls, result, weights), (ref_calls, ref_result, ref_weights) = got, ref
    assert len(calls) == len(ref_calls) == (T if update == "step" else 1)
    for step, (c, r) in enumerate(zip(calls, ref_calls, strict=True)):
        assert set(c) == set(r) == set(weights)
        for n in r:
            torch.testing.assert_close(c[n], r[n], rtol=1e-12, atol=1e-15, msg=f"{n} at apply {step}")
    assert all(ref_calls[-1][n].abs().max() > 0 for n in weights)
    for n in ref_weights:
        torch.testing.assert_close(weights[n], ref_weights[n], rtol=1e-12, atol=1e-15, msg=n)
    assert result.loss == pytest.approx(ref_result.loss, rel=1e-12)
    torch.testing.assert_close(result.logits, ref_result.logits, rtol=1e-12, atol=1e-15)
    return count[0]


@pytest.mark.parametrize("name,opts", RULE_OPTS)
@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("update,lr", [("sequence", 0.0), ("step", 0.0), ("step", 0.5)])
def test_direct_input_shortcut_changes_nothing(name, opts, recurrent, update, lr, monkeypatch):
    x, labels = batch(7)
    calls = assert_same_training(
        lambda: make((5, 4), recurrent), x, labels, name, opts, Direct(), Copies(), update, lr, monkeypatch
    )
    # once per sequence, unless the weights change at every step
    assert calls == (T if lr else 1)


@pytest.mark.parametrize("name,opts", RULE_OPTS)
@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("update,lr", [("sequence", 0.0), ("step", 0.5)])
def test_input_constant_for_a_while_then_changing(name, opts, recurrent, update, lr, monkeypatch):
    x, labels = batch(8)
    other = batch(9)[0]
    calls = assert_same_training(
        lambda: make((5, 4), recurrent),
        x,
        labels,
        name,
        opts,
        Phases(other, fresh=False),
        Phases(other, fresh=True),
        update,
        lr,
        monkeypatch,
    )
    assert calls == (T if lr else 2 + T - 4)


@pytest.mark.parametrize("name,opts", CONV_RULE_OPTS)
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("phases", [False, True])
@pytest.mark.parametrize("update,lr", [("sequence", 0.0), ("step", 0.5)])
def test_conv_direct_input_shortcut_changes_nothing(name, opts, arch, phases, update, lr, monkeypatch):
    in_shape, channels, pool = arch
    x, labels = conv_batch(in_shape, 5)
    fast, slow = Direct(), Copies()
    if phases:
        other = conv_batch(in_shape, 6)[0]
        fast, slow = Phases(other, fresh=False), Phases(other, fresh=True)
    calls = assert_same_training(
        lambda: conv_net(in_shape, channels, pool, False),
        x,
        labels,
        name,
        opts,
        fast,
        slow,
        update,
        lr,
        monkeypatch,
    )
    assert calls == (T if lr else 2 + T - 4 if phases else 1)


@pytest.mark.parametrize("name", ["ottt", "dfa", "decolle", "eprop"])
def test_a_frame_changed_in_place_is_not_reused(name):
    """An encoder that hands out the same tensor, changed in place, is run step by step."""

    class InPlace(Encoder):
        def __init__(self):
            self.buf = None

        def step(self, x, t, T, gen):
            if self.buf is None:
                self.buf = x.clone()
            return self.buf.copy_(x * (t + 1) / T)

    x, labels = batch(10)
    (got,), result, _ = train(name, {}, make((5, 4), False), x, labels, InPlace(), "sequence", 0.0)
    (ref,), ref_result, _ = train(name, {}, make((5, 4), False), x, labels, Ramp(), "sequence", 0.0)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-12, atol=1e-15, msg=n)
    assert result.loss == pytest.approx(ref_result.loss, rel=1e-12)


@pytest.mark.parametrize("name", ["ottt", "dfa", "decolle", "eprop"])
def test_input_gradient_of_a_broadcast_sequence(name):
    """``input_gradient`` of a time-constant ``x_seq`` (a broadcast view) equals that of the same values
    in memory."""
    net = make((5, 4), True)
    x, labels = batch(11)
    rule = RULES.get(name)(RuleConfig(name=name), net, torch.Generator().manual_seed(1))
    x_seq = Encoding(Direct(), T).sequence(x)
    assert x_seq.stride(0) == 0
    g = rule.input_gradient(net, x_seq, labels)
    ref = rule.input_gradient(net, x_seq.contiguous(), labels)
    torch.testing.assert_close(g, ref, rtol=1e-12, atol=1e-15)
    assert ref.abs().max() > 0
