"""Convolutional SNN: all-at-once == step loop (float64), shapes, every rule that supports it learns, and
the others are refused in one line."""

import json

import pytest
import torch

from spikebench import components
from spikebench.cli import main
from spikebench.config import ConfigError, ModelConfig, RuleConfig
from spikebench.data import Encoding
from spikebench.data.encoders import Direct, Rate
from spikebench.dynamics import LIFParams, make_surrogate
from spikebench.nn import Network
from spikebench.rules import RULES


def make_net(recurrent: bool = False, dtype=torch.float64, seed: int = 0) -> Network:
    torch.manual_seed(seed)
    params = LIFParams(alpha=0.8, theta=0.5, surrogate=make_surrogate("fast_sigmoid", 5.0))
    net = Network.conv((2, 8, 8), (4, 6), 3, 2, (12,), 3, recurrent=recurrent, params=params, kappa=0.9)
    return net.to(dtype)


def step_loop(net: Network, x_seq: torch.Tensor):
    state = net.zero_state(x_seq.shape[1], x_seq)
    spikes, ys = [], []
    for t in range(x_seq.shape[0]):
        z, y, state = net.step(x_seq[t], state)
        spikes.append(z)
        ys.append(y)
    return [torch.stack(s) for s in zip(*spikes, strict=True)], torch.stack(ys)


@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("encoder", [Direct(), Rate()])
def test_forward_equals_step_loop_with_gradients(recurrent, encoder):
    net = make_net(recurrent)
    x = 2.0 * torch.rand(5, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x_seq = Encoding(encoder, 7, torch.Generator().manual_seed(2)).sequence(x)
    roll = net(x_seq)
    spikes, ys = step_loop(net, x_seq)
    assert [tuple(s.shape) for s in roll.spikes] == [(7, 5, 4 * 8 * 8), (7, 5, 6 * 4 * 4), (7, 5, 12)]
    assert roll.readout.shape == (7, 5, 3)
    assert all(s.sum() > 0 for s in roll.spikes)  # every layer fires: the comparison is not vacuous
    for a, b in zip(roll.spikes, spikes, strict=True):
        assert torch.equal(a, b)
    torch.testing.assert_close(roll.readout, ys, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(roll.readout.square().sum(), list(net.parameters()))
    ref = torch.autograd.grad(ys.square().sum(), list(net.parameters()))
    for g, r in zip(grads, ref, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12)


def test_continuing_from_a_state_equals_one_run():
    net = make_net(recurrent=True)
    x_seq = (torch.rand(8, 3, 2, 8, 8, dtype=torch.float64) < 0.4).double()
    whole = net(x_seq)
    first = net(x_seq[:3])
    rest = net(x_seq[3:], first.state)
    torch.testing.assert_close(torch.cat([first.readout, rest.readout]), whole.readout)
    assert torch.equal(torch.cat([first.spikes[1], rest.spikes[1]]), whole.spikes[1])


CONV_RULES = [n for n in RULES.names() if "conv" in RULES.get(n).archs]


def test_conv_is_supported_by_whole_sequence_and_traced_online_rules():
    assert {"bptt", "tbptt", "fa", "ottt", "decolle", "dfa"} <= set(CONV_RULES)


def test_cli_refuses_a_rule_without_conv_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    unsupported = [n for n in RULES.names() if n not in CONV_RULES]
    assert "eprop" in unsupported  # e-prop stays mlp-only
    for name in unsupported:
        args = ["train", "-q", "--out", str(out), "--set", "model.arch=conv", "--set", f"rule.name={name}"]
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"spikebench: error: rule {name!r} does not support model.arch='conv' (supports: mlp)"]
        assert not out.exists()


@pytest.mark.parametrize("name", CONV_RULES)
def test_every_conv_rule_lowers_the_loss_on_tiny_data(name):
    net = make_net(dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(24) % 3
    x = 0.1 * torch.rand(24, 2, 8, 8, generator=gen)
    for i, c in enumerate(y.tolist()):  # class = which horizontal band is bright
        x[i, :, 2 * c + 1 : 2 * c + 3, :] = 1.0
    rule = RULES.get(name)(RuleConfig(name=name, k=3), net, gen)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)

    def apply() -> None:
        opt.step()
        opt.zero_grad(set_to_none=True)

    enc = Encoding(Direct(), 6)
    # dfa: random feedback trains convolution layers slowly (it plateaus for ~25 steps here), as known
    # for non-spiking CNNs (Launay et al. 2019); fa too, while the forward weights come to align with
    # the feedback (its loss halves after ~26 steps here, bptt's after ~12); decolle with the paper's
    # mean-squared local loss halves it after ~30 steps (with rule.local_loss=ce after ~20)
    steps = 45 if name in ("dfa", "fa", "decolle") else 25
    losses = [rule.train_batch(net, x, y, enc, apply).loss for _ in range(steps)]
    assert losses[-1] < 0.5 * losses[0]


def test_build_network_for_conv_checks_the_input_shape():
    model = ModelConfig(arch="conv", channels=(4,), hidden=(8,))
    net = components.build_network(model, (1, 28, 28), 10)
    assert isinstance(net, Network) and net.blocks[0].out_shape == (4, 14, 14)
    with pytest.raises(ConfigError, match="images"):
        components.build_network(model, (28,), 10)
    with pytest.raises(ConfigError, match="to nothing"):
        components.build_network(ModelConfig(arch="conv", channels=(4, 4, 4, 4), pool=2), (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="odd"):
        ModelConfig(arch="conv", kernel=4)


def test_cli_trains_a_conv_network_on_digits(tmp_path, capsys):
    pytest.importorskip("sklearn")
    out = tmp_path / "conv"
    args = ["train", "-q", "--json", "--out", str(out)]
    for kv in (
        "data.name=digits",
        "data.limit_test=128",
        "data.timesteps=4",
        "model.arch=conv",
        "model.channels=[4]",
        "model.hidden=[32]",
        "train.batch_size=32",
        "train.lr=0.005",
    ):
        args += ["--set", kv]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["arch"] == "conv" and summary["test_samples"] == 128
    assert summary["test_accuracy"] > 0.3  # well above chance (0.1) after one epoch of 1438 images
    assert main(["eval", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == pytest.approx(summary["test_accuracy"])
