"""Fisher information: the batched per-sample computation equals an independent loop of per-sample
backward passes through the network's own forward, per layer and per time prefix (float64)."""

import pytest
import torch

from spikebench import components
from spikebench.analysis.alignment import layer_of
from spikebench.analysis.fisher import fisher_information
from spikebench.config import load_config


def tiny(recurrent: bool, encoder: str, reset: str = "soft"):
    cfg = load_config(
        None,
        [
            "model.hidden=[7,5]",
            f"model.recurrent={str(recurrent).lower()}",
            f"model.reset={reset}",
            "data.timesteps=6",
            f"data.encoder={encoder}",
        ],
    )
    torch.manual_seed(0)
    net = components.build_network(cfg.model, (12,), 4).double()
    with torch.no_grad():  # enough drive that every layer spikes
        for layer in net.layers:
            layer.weight.mul_(4.0)
            layer.bias.fill_(0.3)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(9, 12, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (9,), generator=g)
    x_seq = components.build_encoding(cfg, torch.Generator().manual_seed(2)).sequence(x)
    return net, x_seq, labels


def loop_reference(net, x_seq, labels):
    """Per sample and prefix t: grad of log softmax(mean of readout[:t])[label] by plain autograd."""
    named = list(net.named_parameters())
    T, n = x_seq.shape[0], x_seq.shape[1]
    per_layer: dict[str, torch.Tensor] = {}
    for i in range(n):
        readout = net(x_seq[:, i : i + 1]).readout  # [T, 1, C]
        for t in range(1, T + 1):
            log_p = torch.log_softmax(readout[:t].mean(0), -1)[0, labels[i]]
            grads = torch.autograd.grad(log_p, [p for _, p in named], retain_graph=True)
            for (name, _), g in zip(named, grads, strict=True):
                acc = per_layer.setdefault(layer_of(name), torch.zeros(T, dtype=torch.float64))
                acc[t - 1] += g.pow(2).sum() / n
    return per_layer


@pytest.mark.parametrize(
    "recurrent,encoder,reset", [(False, "direct", "soft"), (True, "rate", "soft"), (True, "direct", "zero")]
)
def test_trace_equals_independent_per_sample_loop(recurrent, encoder, reset):
    net, x_seq, labels = tiny(recurrent, encoder, reset)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    info = fisher_information(net, x_seq, labels, chunk=4)  # chunks of 4, 4 and 1 samples
    reference = loop_reference(net, x_seq, labels)
    assert set(info.prefix_layers) == set(reference) == {"layers.0", "layers.1", "readout"}
    for name, values in reference.items():
        assert torch.allclose(
            torch.tensor(info.prefix_layers[name], dtype=torch.float64), values, rtol=1e-10, atol=1e-14
        )
        assert info.layers[name] == pytest.approx(float(values[-1]), rel=1e-10)
    total = sum(reference.values())
    assert torch.allclose(torch.tensor(info.prefix, dtype=torch.float64), total, rtol=1e-10)
    assert info.total == pytest.approx(float(total[-1]), rel=1e-10)
    assert info.samples == 9 and len(info.prefix) == x_seq.shape[0]
    assert all(v > 0 for v in info.layers.values())  # every layer carries information here
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())


def test_chunking_does_not_change_the_result():
    net, x_seq, labels = tiny(True, "rate")
    a = fisher_information(net, x_seq, labels, chunk=100)
    b = fisher_information(net, x_seq, labels, chunk=2)
    assert a.prefix == pytest.approx(b.prefix, rel=1e-12)
    assert a.to_dict()["layers"] == pytest.approx(b.to_dict()["layers"], rel=1e-12)
