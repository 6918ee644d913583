"""The CUDA path on a GPU: the fused scan, every rule's gradient against the CPU in float64, a training
step in fp32 and bf16, and the allocator's peak. Skipped, saying so, where no CUDA device is present."""

from __future__ import annotations

import pytest
import torch

from spikebench import components
from spikebench.config import load_config
from spikebench.dynamics import LIFParams, LIFState, scan, scan_steps
from spikebench.precision import bf16_supported, compute
from spikebench.rules import RULES
from spikebench.train.tensor_memory import measure_peak

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: CUDA checks not run")
CUDA = torch.device("cuda")


@pytest.mark.parametrize("use_rec", [False, True])
def test_fused_scan_on_cuda_equals_the_step_loop(use_rec):
    g = torch.Generator().manual_seed(0)
    cur = (torch.rand(7, 3, 4, generator=g, dtype=torch.float64) * 1.6).to(CUDA).requires_grad_(True)
    rec = (torch.randn(4, 4, generator=g, dtype=torch.float64) * 0.5).to(CUDA).requires_grad_(True)
    s0 = LIFState(
        torch.zeros(3, 4, dtype=torch.float64, device=CUDA),
        torch.zeros(3, 4, dtype=torch.float64, device=CUDA),
    )
    w = torch.randn(7, 3, 4, generator=g, dtype=torch.float64).to(CUDA)
    p = LIFParams(alpha=0.8)
    r = rec if use_rec else None
    z_ref, _ = scan_steps(p, cur, r, s0)
    z_fast, _ = scan(p, cur, r, s0)
    assert torch.equal(z_fast, z_ref)
    params = [cur, rec] if use_rec else [cur]
    for a, b in zip(
        torch.autograd.grad((z_fast * w).sum(), params),
        torch.autograd.grad((z_ref * w).sum(), params),
        strict=True,
    ):
        torch.testing.assert_close(a, b)


def _grads(rule: str, device: torch.device):
    """One batch's gradients of ``rule`` in float64 on ``device`` (fixed matrices drawn on the CPU)."""
    torch.manual_seed(0)
    overrides = [f"rule.name={rule}", "model.hidden=[32,32]", "data.timesteps=6", "model.recurrent=true"]
    cfg = load_config(None, overrides)
    net = components.build_network(cfg.model, (1, 28, 28), 10).to(torch.float64).to(device)
    r = components.build_rule(cfg, net, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(5)
    x = torch.rand(8, 1, 28, 28, generator=g, dtype=torch.float64).to(device)
    y = torch.randint(0, 10, (8,), generator=g).to(device)
    r.train_batch(net, x, y, components.build_encoding(cfg, None), lambda: None)
    return {n: p.grad.cpu() for n, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_gives_the_cpu_gradient_on_cuda_in_float64(rule):
    cpu, gpu = _grads(rule, torch.device("cpu")), _grads(rule, CUDA)
    assert cpu.keys() == gpu.keys()
    for n in cpu:
        torch.testing.assert_close(gpu[n], cpu[n], rtol=1e-7, atol=1e-10, msg=n)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_one_training_step_on_cuda_and_its_allocator_peak(precision):
    if precision == "bf16" and not bf16_supported(CUDA):
        pytest.skip("this GPU has no bf16")
    cfg = load_config(None, ["rule.name=bptt", "train.device=cuda"])
    net = components.build_network(cfg.model, (1, 28, 28), 10).to(CUDA)
    r = components.build_rule(cfg, net, torch.Generator(CUDA).manual_seed(0))
    x, y = torch.rand(64, 1, 28, 28, device=CUDA), torch.randint(0, 10, (64,), device=CUDA)
    enc = components.build_encoding(cfg, torch.Generator(CUDA).manual_seed(1))
    with compute(precision, CUDA):
        peak = measure_peak(lambda: r.train_batch(net, x, y, enc, lambda: None), CUDA)
    assert peak.peak_bytes > 0 and all(p.grad.dtype == torch.float32 for p in net.parameters())
