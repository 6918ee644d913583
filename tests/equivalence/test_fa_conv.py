"""Feedback alignment on convolutional networks (float64): the feedback convolution op (gradcheck with
``B = W``, a hand computation with a random ``B``); ``fa`` with symmetric feedback equals ``bptt``
(gradients and input gradient); random kernels change the credit below them and nothing above; the
time-constant (``direct``) shortcut is exact; the kernels are fixed, scaled as the forward init and
checkpointed; the attacks' ``rule`` gradient source works."""

import math

import pytest
import torch
import torch.nn.functional as F

from spikebench.attacks import Classifier, RuleGradient
from spikebench.config import RuleConfig
from spikebench.data.encoders import Direct, Encoding
from spikebench.nn.network import conv2d
from spikebench.rules import RULES
from tests.equivalence.test_eprop import Ramp
from tests.equivalence.test_online_conv import ARCHS, conv_batch, conv_net
from tests.equivalence.test_tbptt_fa import grads

T = 4
ENCODINGS = {"direct": Direct(), "ramp": Ramp()}  # time-constant input (one convolution) and not


def tensors(shape_x, shape_w, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape_x, generator=g, dtype=torch.float64)
    w = torch.randn(*shape_w, generator=g, dtype=torch.float64)
    b = torch.randn(shape_w[0], generator=g, dtype=torch.float64)
    fb = torch.randn(*shape_w, generator=g, dtype=torch.float64)
    return x, w, b, fb


# (x shape, kernel shape, padding): "same" 3x3 and 5x5 on odd/even maps, valid 3x3, 1x1
OPS = [
    ((2, 3, 6, 6), (4, 3, 3, 3), 1),
    ((3, 2, 7, 5), (3, 2, 5, 5), 2),
    ((2, 2, 6, 7), (3, 2, 3, 3), 0),
    ((2, 3, 4, 4), (2, 3, 1, 1), 0),
]


@pytest.mark.parametrize("xs,ws,pad", OPS)
def test_feedback_conv_with_B_equal_W_is_conv2d(xs, ws, pad):
    x, w, b, _ = tensors(xs, ws, 0)
    x.requires_grad_(True)
    w.requires_grad_(True)
    b.requires_grad_(True)
    fb = w.detach().clone()
    assert torch.autograd.gradcheck(lambda x, w, b: conv2d(x, w, b, (pad, pad), fb), (x, w, b))
    out = conv2d(x, w, b, (pad, pad), fb)
    ref = F.conv2d(x, w, b, padding=pad)
    assert torch.equal(out, ref)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, w, b), g)
    want = torch.autograd.grad(ref, (x, w, b), g)
    for a, r in zip(got, want, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("xs,ws,pad", OPS)
def test_feedback_conv_with_random_B_matches_hand_computation(xs, ws, pad):
    """``out[n,o,i,j] = b[o] + sum_{c,a,e} W[o,c,a,e] xp[n,c,i+a,j+e]`` (``xp`` zero-padded): the input
    gradient is ``sum_o g[n,o,i,j] B[o,c,a,e]`` scattered to ``xp[n,c,i+a,j+e]``, the weight gradient
    ``sum_{n,i,j} g[n,o,i,j] xp[n,c,i+a,j+e]``, the bias gradient ``sum_{n,i,j} g[n,o,i,j]``."""
    x, w, b, fb = tensors(xs, ws, 1)
    x.requires_grad_(True)
    w.requires_grad_(True)
    b.requires_grad_(True)
    out = conv2d(x, w, b, (pad, pad), fb)
    torch.testing.assert_close(out, F.conv2d(x, w, b, padding=pad), rtol=0, atol=0)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    gx, gw, gb = torch.autograd.grad(out, (x, w, b), g)

    xp = F.pad(x.detach(), (pad, pad, pad, pad))
    H, W = out.shape[2:]
    hx, hw = torch.zeros_like(xp), torch.zeros_like(w)
    for a in range(ws[2]):
        for e in range(ws[3]):
            hx[:, :, a : a + H, e : e + W] += torch.einsum("noij,oc->ncij", g, fb[:, :, a, e])
            hw[:, :, a, e] = torch.einsum("noij,ncij->oc", g, xp[:, :, a : a + H, e : e + W])
    hx = hx[:, :, pad : pad + xs[2], pad : pad + xs[3]]
    torch.testing.assert_close(gx, hx, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw, hw, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gb, g.sum((0, 2, 3)), rtol=1e-12, atol=1e-12)
    true_gx = torch.autograd.grad(F.conv2d(x, w, b, padding=pad), x, g)[0]
    assert not torch.allclose(gx, true_gx)  # the feedback kernel is what is used
    # weight and bias gradients are exact whatever B is
    assert torch.autograd.gradcheck(lambda w, b: conv2d(x.detach(), w, b, (pad, pad), fb), (w, b))


def test_feedback_conv_skips_the_input_gradient_when_not_needed():
    x, w, b, fb = tensors(*OPS[0][:2], 3)
    w.requires_grad_(True)
    gw = torch.autograd.grad(conv2d(x, w, b, (1, 1), fb).square().sum(), w)[0]
    ref = torch.autograd.grad(F.conv2d(x, w, b, padding=1).square().sum(), w)[0]
    torch.testing.assert_close(gw, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("recurrent", [False, True])
def test_fa_with_symmetric_feedback_equals_bptt_on_conv(encoding, arch, recurrent):
    in_shape, channels, pool = arch
    net = conv_net(in_shape, channels, pool, recurrent)
    x, labels = conv_batch(in_shape)
    enc = Encoding(ENCODINGS[encoding], T)
    with torch.no_grad():
        assert all(0 < s.mean() < 1 for s in net(enc.sequence(x)).spikes)
    ref = grads("bptt", net, x, labels, enc)
    got = grads("fa", net, x, labels, enc, feedback="symmetric")
    assert set(got) == set(ref) == {n for n, _ in net.named_parameters()}
    for n in ref:
        assert ref[n].abs().max() > 0, n
        torch.testing.assert_close(got[n], ref[n], rtol=1e-10, atol=1e-13, msg=n)
    x_seq = enc.sequence(x)
    fa = RULES.get("fa")(RuleConfig(name="fa", feedback="symmetric"), net, torch.Generator())
    bptt = RULES.get("bptt")(RuleConfig(name="bptt"), net, torch.Generator())
    gx = fa.input_gradient(net, x_seq, labels)
    assert gx.shape == (T, *x.shape) and gx.abs().max() > 0
    torch.testing.assert_close(gx, bptt.input_gradient(net, x_seq, labels), rtol=1e-10, atol=1e-13)


def symmetric_above_blocks(rule, net) -> None:
    """Keep the rule's random kernels for the convolution blocks; use the forward weights themselves
    as the feedback of the dense layers and the readout."""
    params = dict(net.named_parameters())
    state = rule.state_dict()
    rule.load_state_dict(
        {n: params[n].detach() if n.startswith(("dense.", "readout.")) else v for n, v in state.items()}
    )


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("recurrent", [False, True])
def test_fa_random_feedback_on_conv(arch, recurrent):
    in_shape, channels, pool = arch
    net = conv_net(in_shape, channels, pool, recurrent)
    x, labels = conv_batch(in_shape, 1)
    enc = Encoding(Ramp(), T)
    ref = grads("bptt", net, x, labels, enc)
    # all feedback random: the readout's gradient needs none and is bptt's; every other gradient differs
    got = grads("fa", net, x, labels, enc)
    for n in ref:
        if n.startswith("readout."):
            torch.testing.assert_close(got[n], ref[n], rtol=1e-10, atol=1e-13, msg=n)
        else:
            assert not torch.allclose(got[n], ref[n]), n

    # random kernels only (dense layers and readout symmetric): what lies above the top block's input
    # is bptt's -- the readout, the last dense layer and the top block's own kernel -- and what lies
    # below it (the blocks under the top one, the input) got its credit through a random kernel
    rule = RULES.get("fa")(RuleConfig(name="fa"), net, torch.Generator().manual_seed(1))
    symmetric_above_blocks(rule, net)
    for p in net.parameters():
        p.grad = None
    rule.train_batch(net, x, labels, enc, lambda: None)
    top = f"blocks.{len(channels) - 1}."
    for n, p in net.named_parameters():
        below = n.startswith("blocks.") and not n.startswith(top)
        if below:
            assert not torch.allclose(p.grad, ref[n]), n
        else:
            torch.testing.assert_close(p.grad, ref[n], rtol=1e-10, atol=1e-13, msg=n)
    assert {"readout.linear.weight", "dense.0.weight", f"{top}conv.weight"} <= set(ref)
    x_seq = enc.sequence(x)
    bptt = RULES.get("bptt")(RuleConfig(name="bptt"), net, torch.Generator())
    gx = rule.input_gradient(net, x_seq, labels)
    assert not torch.allclose(gx, bptt.input_gradient(net, x_seq, labels))


@pytest.mark.parametrize("arch", ARCHS)
def test_fa_time_constant_shortcut_is_exact_on_conv(arch):
    """A ``direct`` input (one frame broadcast over time: one convolution for all steps) gives the
    gradients of the same frames materialised step by step, and the same input gradient summed over
    time (the broadcast frame is one variable; the attacks chain ``g[t]`` through the encoder)."""
    in_shape, channels, pool = arch
    net = conv_net(in_shape, channels, pool, True)
    x, labels = conv_batch(in_shape, 2)
    rule = RULES.get("fa")(RuleConfig(name="fa"), net, torch.Generator().manual_seed(3))
    broadcast = Encoding(Direct(), T).sequence(x)
    assert broadcast.stride(0) == 0
    frames = broadcast.contiguous()
    params = list(net.parameters())
    for p in params:
        p.grad = None
    with net.backward_weights(rule.backward_weights(net)):
        a = torch.autograd.grad(F.cross_entropy(net(broadcast).logits, labels), params)
        b = torch.autograd.grad(F.cross_entropy(net(frames).logits, labels), params)
    for ga, gb in zip(a, b, strict=True):
        torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-13)
    gx_a = rule.input_gradient(net, broadcast, labels)
    gx_b = rule.input_gradient(net, frames, labels)
    assert gx_a.shape == gx_b.shape == (T, *x.shape)
    torch.testing.assert_close(gx_a.sum(0), gx_b.sum(0), rtol=1e-10, atol=1e-13)
    assert gx_b.abs().max() > 0


def test_fa_conv_kernels_are_fixed_scaled_and_checkpointed():
    in_shape, channels, pool = ARCHS[1]
    net = conv_net(in_shape, channels, pool, True)
    rule = RULES.get("fa")(RuleConfig(name="fa"), net, torch.Generator().manual_seed(5))
    state = rule.state_dict()
    params = dict(net.named_parameters())
    assert set(state) == {n for n, p in params.items() if p.dim() >= 2}
    assert {"blocks.0.conv.weight", "blocks.1.conv.weight", "dense.0.rec"} <= set(state)
    for n, v in state.items():
        assert v.shape == params[n].shape and v.dtype == params[n].dtype
        bound = 1 / math.sqrt(v[0].numel())  # C_in * k * k for a kernel
        assert v.abs().max() <= bound and v.abs().max() > 0.5 * bound, n
    big = conv_net((8, 9, 9), (16,), 1, False)
    k = RULES.get("fa")(RuleConfig(name="fa"), big, torch.Generator().manual_seed(0)).state_dict()
    k = k["blocks.0.conv.weight"]
    assert abs(k.abs().max().item() * math.sqrt(8 * 9) - 1) < 0.01  # uniform up to the bound
    assert abs(k.mean().item()) < 0.1 / math.sqrt(8 * 9)

    x, labels = conv_batch(in_shape)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    rule.train_batch(net, x, labels, Encoding(Direct(), T), opt.step)
    assert not torch.equal(params["blocks.0.conv.weight"].detach(), state["blocks.0.conv.weight"])
    for n, v in rule.state_dict().items():
        assert torch.equal(v, state[n]), n  # fixed: the forward weights moved, the feedback did not
    other = RULES.get("fa")(RuleConfig(name="fa"), net, torch.Generator().manual_seed(6))
    assert not torch.equal(other.state_dict()["blocks.0.conv.weight"], state["blocks.0.conv.weight"])
    other.load_state_dict(state)
    for n in state:
        assert torch.equal(other.state_dict()[n], state[n])


def test_attack_rule_gradient_of_fa_on_conv():
    """``RuleGradient`` chains fa's input gradient [T, B, C, H, W] through the encoder to the image."""
    in_shape, channels, pool = ARCHS[1]
    net = conv_net(in_shape, channels, pool, False)
    x, labels = conv_batch(in_shape, 4)
    for enc, weight in ((Encoding(Ramp(), T), lambda t: (t + 1) / T), (Encoding(Direct(), T), lambda t: 1)):
        rule = RULES.get("fa")(RuleConfig(name="fa"), net, torch.Generator().manual_seed(1))
        g = RuleGradient(Classifier(net, enc), rule)(x, labels)
        g_seq = rule.input_gradient(net, enc.sequence(x), labels)
        assert g.shape == x.shape and g.abs().max() > 0
        want = sum(g_seq[t] * weight(t) for t in range(T))
        torch.testing.assert_close(g, want, rtol=1e-12, atol=1e-14)
