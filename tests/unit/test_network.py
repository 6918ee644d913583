"""The layer protocol and the one network (float64): every layer's hand-written vector-Jacobian
products equal autograd of its synaptic product and pooling; backward weights replace the weights in
the input gradient only, in autograd and by hand alike, for the duration of ``backward_weights`` and
nowhere else; checkpoints keep their parameter names."""

import pytest
import torch

from spikebench.dynamics import LIFParams
from spikebench.nn import Network, SpikingConv, SpikingLinear

B = 3


def layers() -> list:
    torch.manual_seed(0)
    p = LIFParams(alpha=0.8)
    return [
        SpikingLinear(5, 4, recurrent=False, params=p).double(),
        SpikingConv((2, 5, 5), 3, 3, 1, p).double(),
        SpikingConv((2, 6, 5), 3, 3, 2, p).double(),
    ]


def randn(*shape, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("layer", layers(), ids=["dense", "conv", "conv-pool"])
def test_hand_written_vjps_equal_autograd(layer):
    x = randn(B, *layer.in_shape, seed=1).requires_grad_(True)
    delta = randn(B, layer.n_neurons, seed=2)
    current = layer.current(x)
    assert current.shape == (B, layer.n_neurons)
    gx, gw, gb = torch.autograd.grad((current * delta).sum(), (x, layer.weight, layer.bias))
    torch.testing.assert_close(layer.vjp_input(delta), gx, rtol=1e-12, atol=1e-13)
    layer.zero_grad(set_to_none=True)
    layer.add_weight_grad(delta, x.detach())
    layer.add_bias_grad(delta, 0.5)
    torch.testing.assert_close(layer.weight.grad, gw, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(layer.bias.grad, 0.5 * gb, rtol=1e-12, atol=1e-13)
    layer.add_weight_grad(delta, x.detach())  # accumulates
    torch.testing.assert_close(layer.weight.grad, 2 * gw, rtol=1e-12, atol=1e-13)

    z = randn(B, layer.n_neurons, seed=3).requires_grad_(True)  # continuous: no ties in the pooling
    out, ctx = layer.step_output(z)
    assert out.shape == (B, layer.n_outputs)
    torch.testing.assert_close(out, layer.output(z).reshape(B, -1), rtol=0, atol=0)
    g = randn(B, layer.n_outputs, seed=4)
    (gz,) = torch.autograd.grad((out * g).sum(), z)
    torch.testing.assert_close(layer.vjp_output(g, ctx), gz, rtol=0, atol=0)


@pytest.mark.parametrize("layer", layers(), ids=["dense", "conv", "conv-pool"])
def test_backward_weight_replaces_the_weight_in_the_input_gradient_only(layer):
    x_seq = randn(4, B, *layer.in_shape, seed=5).requires_grad_(True)
    delta = randn(4, B, layer.n_neurons, seed=6)
    exact = torch.autograd.grad((layer.currents(x_seq) * delta).sum(), (x_seq, layer.weight, layer.bias))
    layer.backward_weight = randn(*layer.weight.shape, seed=7)
    try:
        currents = layer.currents(x_seq)
        torch.testing.assert_close(currents, layer.currents(x_seq.detach()), rtol=0, atol=0)
        gx, gw, gb = torch.autograd.grad((currents * delta).sum(), (x_seq, layer.weight, layer.bias))
        torch.testing.assert_close(gw, exact[1], rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(gb, exact[2], rtol=1e-12, atol=1e-13)
        assert not torch.allclose(gx, exact[0])
        # the one place: autograd's input gradient is the layer's own hand-written one
        torch.testing.assert_close(layer.vjp_input(delta), gx, rtol=1e-12, atol=1e-13)
    finally:
        layer.backward_weight = None
    torch.testing.assert_close(layer.vjp_input(delta), exact[0], rtol=1e-12, atol=1e-13)


def recurrent_mlp() -> Network:
    torch.manual_seed(1)
    return Network.mlp(6, (5, 4), 3, recurrent=True, params=LIFParams(alpha=0.8), kappa=0.7).double()


def test_backward_weights_hold_within_the_block_only():
    net = recurrent_mlp()
    x_seq = torch.rand(5, B, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(8))

    def input_grad() -> torch.Tensor:
        x = x_seq.clone().requires_grad_(True)
        return torch.autograd.grad(net(x).readout.square().sum(), x)[0]

    exact = input_grad()
    weights = {n: randn(*p.shape, seed=i) for i, (n, p) in enumerate(net.named_parameters()) if p.dim() >= 2}
    assert set(weights) == {f"layers.{i}.{w}" for i in (0, 1) for w in ("weight", "rec")} | {
        "readout.linear.weight"
    }
    keys = list(net.state_dict())
    with net.backward_weights(weights):
        assert net.layers[1].backward_rec is weights["layers.1.rec"]
        assert net.readout.backward_weight is weights["readout.linear.weight"]
        assert list(net.state_dict()) == keys  # not checkpointed
        assert not torch.allclose(input_grad(), exact)
    assert all(b is None for b in net.buffers()) and not list(net.buffers())
    torch.testing.assert_close(input_grad(), exact, rtol=0, atol=0)
    with net.backward_weights({"layers.0.weight": weights["layers.0.weight"]}):  # only some
        assert net.layers[0].backward_weight is not None and net.layers[1].backward_weight is None
    with (
        pytest.raises(ValueError, match="layers.0.bias"),
        net.backward_weights({"layers.0.bias": torch.zeros(5)}),
    ):
        pass
    with pytest.raises(ValueError, match="shape"), net.backward_weights({"layers.0.rec": torch.zeros(4, 4)}):
        pass
    assert not list(net.buffers())


# The parameter names of checkpoints written before the network was one class, written out.
MLP_KEYS = [
    "layers.0.weight",
    "layers.0.bias",
    "layers.0.rec",
    "layers.1.weight",
    "layers.1.bias",
    "layers.1.rec",
    "readout.linear.weight",
    "readout.linear.bias",
]
CONV_KEYS = [
    "blocks.0.conv.weight",
    "blocks.0.conv.bias",
    "blocks.1.conv.weight",
    "blocks.1.conv.bias",
    "dense.0.weight",
    "dense.0.bias",
    "dense.0.rec",
    "readout.linear.weight",
    "readout.linear.bias",
]


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_checkpoints_keep_their_parameter_names_and_load(arch):
    p = LIFParams()
    if arch == "mlp":
        net, keys = Network.mlp(6, (5, 4), 3, recurrent=True, params=p, kappa=0.7), MLP_KEYS
    else:
        net, keys = (
            Network.conv((2, 8, 8), (3, 4), 3, 2, (5,), 3, recurrent=True, params=p, kappa=0.7),
            CONV_KEYS,
        )
    assert list(net.state_dict()) == keys
    assert [n for n, _ in net.named_parameters()] == keys
    shapes = {k: v.shape for k, v in net.state_dict().items()}
    old = {k: randn(*shapes[k], seed=i).float() for i, k in enumerate(keys)}  # as an old checkpoint holds
    net.load_state_dict(old)  # strict
    for k, v in net.state_dict().items():
        assert torch.equal(v, old[k]), k
    assert [type(layer) for layer in net.layers] == (
        [SpikingLinear] * 2 if arch == "mlp" else [SpikingConv, SpikingConv, SpikingLinear]
    )
