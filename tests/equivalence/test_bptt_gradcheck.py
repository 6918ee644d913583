"""float64 gradient check of the bptt rule on a tiny network: the .grad it writes equals central
finite differences of its loss (spikes made smooth so that the loss is differentiable)."""

import pytest
import torch

from spikebench.config import RuleConfig
from spikebench.data.encoders import Direct, Encoding
from spikebench.dynamics import LIFParams
from spikebench.nn import Network
from spikebench.rules import RULES
from spikebench.rules.base import sequence_loss
from tests.equivalence.test_scan import SmoothSpike


@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("reset", ["soft", "zero"])
def test_bptt_grad_matches_finite_differences(recurrent, reset):
    torch.manual_seed(0)
    p = LIFParams(alpha=0.8, reset=reset, detach_reset=False, surrogate=SmoothSpike(3.0))
    net = Network.mlp(5, (4, 3), 3, recurrent=recurrent, params=p, kappa=0.7).double()
    x = torch.rand(2, 5, dtype=torch.float64) * 2
    labels = torch.tensor([0, 2])
    enc = Encoding(Direct(), 6)
    rule = RULES.get("bptt")(RuleConfig(), net, torch.Generator())
    captured = {}
    rule.train_batch(
        net,
        x,
        labels,
        enc,
        lambda: captured.update({n: q.grad.clone() for n, q in net.named_parameters()}),
    )
    assert set(captured) == {n for n, _ in net.named_parameters()}
    h = 1e-6
    for name, param in net.named_parameters():
        flat = param.data.view(-1)
        fd = torch.empty_like(flat)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + h
            up = sequence_loss(net(enc.sequence(x)).readout, labels).item()
            flat[i] = old - h
            down = sequence_loss(net(enc.sequence(x)).readout, labels).item()
            flat[i] = old
            fd[i] = (up - down) / (2 * h)
        torch.testing.assert_close(captured[name].view(-1), fd, rtol=1e-5, atol=1e-8, msg=name)
        assert fd.abs().max() > 0 or name.endswith("bias")
