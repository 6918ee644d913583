"""e-prop (float64): (1) the gradient from explicit eligibility traces equals autodiff of the loss with a
stop-gradient on the recurrent spikes, on every layer's input and on the reset; (2) the eligibility-trace
factorisation fed the true learning signal dE/dz[t] equals BPTT of a one-layer recurrent network; (3) a
one-layer feed-forward network with symmetric feedback gets exactly the BPTT gradient of the per-step
loss, input gradient included."""

import pytest
import torch
import torch.nn.functional as F

from spikebench.config import RuleConfig
from spikebench.data.encoders import Direct, Encoder, Encoding
from spikebench.dynamics import LIFParams
from spikebench.dynamics.lif import LIFState
from spikebench.dynamics.surrogate import FastSigmoid
from spikebench.nn import Network
from spikebench.nn.network import leak_kernel
from spikebench.rules import RULES
from spikebench.rules.eprop import Eligibility

T = 7


class Ramp(Encoder):
    """A deterministic input that changes at every step: ``x * (t + 1) / T``."""

    def step(self, x, t, T, gen):
        return x * (t + 1) / T


def make(hidden: tuple[int, ...], recurrent: bool, seed: int = 0) -> Network:
    torch.manual_seed(seed)
    p = LIFParams(alpha=0.8, surrogate=FastSigmoid(2.0))
    net = Network(6, hidden, 3, recurrent=recurrent, params=p, kappa=0.7).double()
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.mul_(3)
            if layer.rec is not None:
                layer.rec.mul_(10)
    return net


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(4, 6, generator=g, dtype=torch.float64) * 1.5, torch.tensor([0, 1, 2, 1])


def rule_grads(net, x, labels, enc, **opts) -> tuple[dict[str, torch.Tensor], object]:
    rule = RULES.get("eprop")(RuleConfig(name="eprop", **opts), net, torch.Generator().manual_seed(1))
    out: dict[str, torch.Tensor] = {}
    rule.train_batch(
        net, x, labels, enc, lambda: out.update({n: p.grad.clone() for n, p in net.named_parameters()})
    )
    return out, rule


def online_loss(readout: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(1/T) sum_t CE(y[t], label): the loss of the online rules."""
    return torch.stack([F.cross_entropy(y, labels) for y in readout]).mean()


def stopgrad_reference(net, x_seq, labels, feedback: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Autodiff form of e-prop: every layer runs with a stop-gradient on its input, on its recurrent
    spikes and on the reset (``v[t-1]`` keeps its gradient), and is credited through the objective
    ``sum_t <e[t], K_kappa(z_l M_l^T)[t]>``, ``e[t] = dL/dy[t]``, ``M_l`` [C, N_l] its feedback matrix
    and ``K_kappa`` the readout's leaky filter. The readout gets the gradient of the loss itself."""
    B = x_seq.shape[1]
    state = net.zero_state(B, x_seq)
    spikes = [[] for _ in net.layers]
    for t in range(x_seq.shape[0]):
        h = x_seq[t]
        new = []
        for i, layer in enumerate(net.layers):
            s = state.layers[i]
            h, s = layer.step(h.detach(), LIFState(s.v, s.z.detach()))
            spikes[i].append(h)
            new.append(s)
        state.layers = new
    z_top = torch.stack(spikes[-1]).detach()
    readout = net.readout(z_top).detach().requires_grad_(True)
    e = torch.autograd.grad(online_loss(readout, labels), readout)[0]
    K = leak_kernel(x_seq.shape[0], net.readout.kappa, dtype=x_seq.dtype)
    objective = online_loss(net.readout(z_top), labels)
    for zs, m in zip(spikes, feedback, strict=True):
        ybar = torch.einsum("ts,sbc->tbc", K, torch.stack(zs) @ m.detach().T)
        objective = objective + (e * ybar).sum()
    names = [n for n, _ in net.named_parameters()]
    grads = torch.autograd.grad(objective, list(net.parameters()))
    return dict(zip(names, grads, strict=True))


@pytest.mark.parametrize("hidden", [(5,), (5, 4)])
@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("feedback", ["symmetric", "random"])
@pytest.mark.parametrize("encoder", [Direct(), Ramp()])
def test_eprop_equals_autodiff_with_stop_gradient(hidden, recurrent, feedback, encoder):
    net = make(hidden, recurrent)
    x, labels = batch()
    enc = Encoding(encoder, T)
    got, rule = rule_grads(net, x, labels, enc, feedback=feedback)
    if feedback == "random":
        mats = [rule.fixed[f"feedback.{i}"].T for i in range(len(hidden))]
    else:  # the transposed forward path from each layer to the output
        mats = [net.readout.linear.weight]
        for layer in reversed(net.layers[1:]):
            mats.insert(0, mats[0] @ layer.weight)
    ref = stopgrad_reference(net, enc.sequence(x), labels, mats)
    assert set(got) == set(ref)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-10, atol=1e-13, msg=n)
        assert ref[n].abs().max() > 0, n


@pytest.mark.parametrize("encoder", [Direct(), Ramp()])
def test_eligibility_with_true_learning_signal_equals_bptt(encoder):
    """Bellec et al. (2020): dE/dW_ji = sum_t dE/dz_j[t] e_ji[t], with dE/dz_j[t] the total
    derivative through the spike z_j[t] (recurrent weights and the leaky readout; the reset is detached)
    -- an exact identity for one recurrent layer, so the eligibility traces are unfiltered (kappa = 0)."""
    net = make((5,), True)
    layer = net.layers[0]
    x, labels = batch(1)
    x_seq = Encoding(encoder, T).sequence(x)
    state = net.zero_state(4, x)
    spikes, states, readout = [], [], []
    for t in range(T):
        (z,), y, state = net.step(x_seq[t], state)
        z.retain_grad()
        spikes.append(z)
        states.append(state.layers[0])
        readout.append(y)
    online_loss(torch.stack(readout), labels).backward()
    assert layer.rec.grad.abs().max() > 0
    p = layer.params
    w, v, b = (Eligibility(p.alpha, 0.0) for _ in range(3))
    ones = x.new_ones(4, 1)
    got = {"weight": 0.0, "rec": 0.0, "bias": 0.0}
    with torch.no_grad():
        for t in range(T):
            psi = p.surrogate.derivative(states[t].v - p.theta)
            signal = spikes[t].grad
            w.update(psi, x_seq[t])
            v.update(psi, spikes[t - 1] if t > 0 else torch.zeros_like(spikes[0]))
            b.update(psi, ones)
            got["weight"] = got["weight"] + w.contract(signal)
            got["rec"] = got["rec"] + v.contract(signal)
            got["bias"] = got["bias"] + b.contract(signal).view(-1)
    for name in got:
        torch.testing.assert_close(got[name], getattr(layer, name).grad, rtol=1e-10, atol=1e-13, msg=name)


def test_one_layer_feedforward_eprop_is_bptt_of_the_online_loss():
    """Without recurrent weights or a layer below, nothing is stopped: e-prop is exact."""
    net = make((5,), False)
    x, labels = batch(2)
    enc = Encoding(Ramp(), T)
    got, rule = rule_grads(net, x, labels, enc)
    x_seq = enc.sequence(x).requires_grad_(True)
    loss = online_loss(net(x_seq).readout, labels)
    ref = torch.autograd.grad(loss, [x_seq, *net.parameters()])
    for (n, _), g in zip(net.named_parameters(), ref[1:], strict=True):
        torch.testing.assert_close(got[n], g, rtol=1e-10, atol=1e-13, msg=n)
    gx = rule.input_gradient(net, x_seq.detach(), labels)
    torch.testing.assert_close(gx, ref[0], rtol=1e-10, atol=1e-13)
    assert ref[0].abs().max() > 0


def test_factorised_and_full_eligibility_agree():
    """The factorised form (constant input) expands into the full one when the input changes."""
    g = torch.Generator().manual_seed(3)
    psi = torch.rand(6, 2, 3, generator=g, dtype=torch.float64)
    const = torch.rand(2, 4, generator=g, dtype=torch.float64)
    later = torch.rand(2, 4, generator=g, dtype=torch.float64)
    pres = [const, const.clone(), const, later, const, later]
    signal = torch.rand(2, 3, generator=g, dtype=torch.float64)
    elig = Eligibility(0.8, 0.6)
    eps = torch.zeros(2, 4, dtype=torch.float64)
    ebar = torch.zeros(2, 3, 4, dtype=torch.float64)
    for t in range(6):
        elig.update(psi[t], pres[t])
        eps = 0.8 * eps + pres[t]
        ebar = 0.6 * ebar + psi[t][:, :, None] * eps[:, None, :]
        assert (elig.ebar is None) == (t < 3)
        torch.testing.assert_close(elig.contract(signal), torch.einsum("bj,bji->ji", signal, ebar))
