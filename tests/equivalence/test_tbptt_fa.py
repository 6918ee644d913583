"""tbptt with k >= T equals bptt; fa with symmetric feedback equals bptt; tbptt windows match an
independent step-by-step reference (float64)."""

import pytest
import torch
import torch.nn.functional as F

from spikebench.config import RuleConfig
from spikebench.data.encoders import Direct, Encoding, Rate
from spikebench.dynamics import LIFParams
from spikebench.dynamics.surrogate import FastSigmoid
from spikebench.nn import Network
from spikebench.rules import RULES

T = 9


def make(recurrent: bool, seed: int = 0) -> Network:
    torch.manual_seed(seed)
    p = LIFParams(alpha=0.8, surrogate=FastSigmoid(2.0))
    net = Network.mlp(6, (5, 4), 3, recurrent=recurrent, params=p, kappa=0.7).double()
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.mul_(3)
            if layer.rec is not None:
                layer.rec.mul_(10)
    return net


def grads(rule_name: str, net: Network, x, labels, enc, **opts) -> dict[str, torch.Tensor]:
    rule = RULES.get(rule_name)(RuleConfig(name=rule_name, **opts), net, torch.Generator().manual_seed(1))
    for p in net.parameters():
        p.grad = None
    out: dict[str, torch.Tensor] = {}

    def apply():
        out.update({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})

    rule.train_batch(net, x, labels, enc, apply)
    return out


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(4, 6, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 1])


@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("k", [T, T + 3])
def test_tbptt_with_k_at_least_T_equals_bptt(recurrent, k):
    net = make(recurrent)
    x, y = batch()
    enc = Encoding(Direct(), T)
    ref = grads("bptt", net, x, y, enc)
    got = grads("tbptt", net, x, y, enc, k=k)
    assert set(got) == set(ref) == {n for n, _ in net.named_parameters()}
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-12, atol=1e-14, msg=n)


@pytest.mark.parametrize("recurrent", [False, True])
def test_tbptt_windows_match_step_by_step_reference(recurrent):
    """Reference: Network.step with autograd, the state detached every k steps, loss per window."""
    k = 4
    net = make(recurrent)
    x, y = batch(1)
    enc = Encoding(Direct(), T)
    got = grads("tbptt", net, x, y, enc, k=k)
    for p in net.parameters():
        p.grad = None
    state = net.zero_state(4, x)
    for start in range(0, T, k):
        state = state.detach()
        ys = []
        for _ in range(start, min(start + k, T)):
            _, yt, state = net.step(x, state)
            ys.append(yt)
        (len(ys) / T * F.cross_entropy(torch.stack(ys).mean(0), y)).backward()
    for n, p in net.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-10, atol=1e-12, msg=n)
    full = grads("bptt", net, x, y, enc)
    assert not torch.allclose(got["layers.0.weight"], full["layers.0.weight"])  # truncation matters


@pytest.mark.parametrize("recurrent", [False, True])
def test_fa_with_symmetric_feedback_equals_bptt(recurrent):
    net = make(recurrent)
    x, y = batch(2)
    enc = Encoding(Direct(), T)
    ref = grads("bptt", net, x, y, enc)
    got = grads("fa", net, x, y, enc, feedback="symmetric")
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-12, atol=1e-14, msg=n)


@pytest.mark.parametrize("recurrent", [False, True])
def test_fa_random_feedback_changes_hidden_credit_only(recurrent):
    net = make(recurrent)
    x, y = batch(3)
    enc = Encoding(Direct(), T)
    ref = grads("bptt", net, x, y, enc)
    got = grads("fa", net, x, y, enc)
    # the readout's own gradient needs no feedback: identical; hidden layers get random-feedback credit
    torch.testing.assert_close(got["readout.linear.weight"], ref["readout.linear.weight"])
    assert not torch.allclose(got["layers.0.weight"], ref["layers.0.weight"])
    if recurrent:
        assert not torch.allclose(got["layers.1.rec"], ref["layers.1.rec"])


def test_fa_feedback_is_fixed_and_checkpointed():
    net = make(True)
    rule = RULES.get("fa")(RuleConfig(name="fa"), net, torch.Generator().manual_seed(5))
    state = rule.state_dict()
    assert set(state) == {n for n, p in net.named_parameters() if p.dim() == 2}
    other = RULES.get("fa")(RuleConfig(name="fa"), net, torch.Generator().manual_seed(6))
    assert not torch.equal(other.state_dict()["layers.0.weight"], state["layers.0.weight"])
    other.load_state_dict(state)
    for n in state:
        assert torch.equal(other.state_dict()[n], state[n])


def test_tbptt_rate_encoding_consumes_one_draw_per_step():
    """Windows see consecutive steps of one encoded sequence (not a fresh encoding per window)."""
    net = make(False)
    x, y = batch(4)
    a = grads("tbptt", net, x, y, Encoding(Rate(), T, torch.Generator().manual_seed(0)), k=T)
    b = grads("bptt", net, x, y, Encoding(Rate(), T, torch.Generator().manual_seed(0)))
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-12, atol=1e-14)
