"""The training optimiser: torch's fused kernel on CPU, with the config's hyperparameters (the update of
the per-tensor implementation, in float64 to rounding)."""

import dataclasses

import pytest
import torch

from spikebench.config import TrainConfig
from spikebench.train.loop import make_optimizer

REFERENCE = {
    "sgd": lambda ps, c: torch.optim.SGD(
        ps, lr=c.lr, momentum=0.9, weight_decay=c.weight_decay, foreach=False, fused=False
    ),
    "adam": lambda ps, c: torch.optim.Adam(
        ps, lr=c.lr, weight_decay=c.weight_decay, foreach=False, fused=False
    ),
    "adamw": lambda ps, c: torch.optim.AdamW(
        ps, lr=c.lr, weight_decay=c.weight_decay, foreach=False, fused=False
    ),
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_fused_optimiser_takes_the_per_tensor_update(name):
    cfg = dataclasses.replace(TrainConfig(), optimizer=name, lr=3e-2, weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    start = [torch.randn(s, generator=g, dtype=torch.float64) for s in ((7, 5), (7,), (3, 7))]
    frozen = torch.nn.Parameter(torch.ones(4, dtype=torch.float64), requires_grad=False)
    ours = [torch.nn.Parameter(t.clone()) for t in start]
    ref = [torch.nn.Parameter(t.clone()) for t in start]
    opt = make_optimizer(cfg, [*ours, frozen])
    assert opt.defaults["fused"] and all(p is not frozen for p in opt.param_groups[0]["params"])
    ref_opt = REFERENCE[name](ref, cfg)
    for _ in range(6):
        grads = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in start]
        for ps, o in ((ours, opt), (ref, ref_opt)):
            for p, gr in zip(ps, grads, strict=True):
                p.grad = gr.clone()
            o.step()
    for a, b, s in zip(ours, ref, start, strict=True):
        assert not torch.equal(a, s)  # it moved
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
