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
    net = Network.mlp(6, hidden, 3, recurrent=recurrent, params=p, kappa=0.7).double()
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
@pytest.mark.parametrize("k", [1, 3, 20])
def test_eprop_equals_autodiff_with_stop_gradient(hidden, recurrent, feedback, encoder, k):
    net = make(hidden, recurrent)
    x, labels = batch()
    enc = Encoding(encoder, T)
    got, rule = rule_grads(net, x, labels, enc, feedback=feedback, k=k)
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
    traces = {name: Eligibility(p.alpha, 0.0, block=3) for name in ("weight", "rec", "bias")}
    ones = x.new_ones(4, 1)
    got = {name: 0.0 for name in traces}
    with torch.no_grad():
        for t in range(T):
            psi = p.surrogate.derivative(states[t].v - p.theta)
            signal = spikes[t].grad
            pres = {
                "weight": x_seq[t],
                "rec": spikes[t - 1] if t > 0 else torch.zeros_like(spikes[0]),
                "bias": ones,
            }
            for name, trace in traces.items():
                out = trace.step(psi, pres[name], signal)
                got[name] = got[name] if out is None else got[name] + out
        for name, trace in traces.items():
            out = trace.flush(last=True)
            got[name] = (got[name] if out is None else got[name] + out).reshape(getattr(layer, name).shape)
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


@pytest.mark.parametrize("block", [1, 2, 4, 10])
def test_blocked_eligibility_equals_the_per_step_recursion(block):
    """Blocks of any length (shorter than, dividing or not dividing T, longer than T) give exactly the
    gradient of the per-step recursion, through a constant prefix (factorised form: the same tensor) and
    changing inputs (an equal copy counts as a new input), and hand it out no later than the end of each
    block."""
    g = torch.Generator().manual_seed(3)
    steps = 9
    psi = torch.rand(steps, 2, 3, generator=g, dtype=torch.float64)
    signal = torch.randn(steps, 2, 3, generator=g, dtype=torch.float64)
    const = torch.rand(2, 4, generator=g, dtype=torch.float64)
    pres = [const, const, const] + [torch.rand(2, 4, generator=g, dtype=torch.float64) for _ in range(6)]
    pres[5] = const
    elig = Eligibility(0.8, 0.6, block)
    eps = torch.zeros(2, 4, dtype=torch.float64)
    ebar = torch.zeros(2, 3, 4, dtype=torch.float64)
    want = got = torch.zeros(3, 4, dtype=torch.float64)
    for t in range(steps):
        eps = 0.8 * eps + pres[t]
        ebar = 0.6 * ebar + psi[t][:, :, None] * eps[:, None, :]
        want = want + torch.einsum("bj,bji->ji", signal[t], ebar)
        out = elig.step(psi[t], pres[t], signal[t])
        if out is not None:
            got = got + out
        if block == 1 or (t >= 3 and (t - 3 + 1) % block == 0):  # a block just ended: nothing pending
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    assert (elig.ebar is None) == (block > steps - 3 - 1)
    rest = elig.flush(last=True)
    assert (rest is None) == ((steps - 3) % block == 0)
    torch.testing.assert_close(got if rest is None else got + rest, want, rtol=1e-12, atol=1e-14)
    assert elig.flush(last=True) is None
