"""The compiled LIF kernel (spikebench.dynamics.fused) against the PyTorch loop it replaces: the same
spikes, potentials and final state bit for bit in every case it takes (both resets, float32 and bf16
currents, a time-constant frame, the potentials kept for a backward pass, any state, sizes that do not
fill a vector, one and two threads), the same gradients and trained weights for every rule, and the
loop where it cannot be built, saying so once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

from spikebench import components
from spikebench.config import load_config
from spikebench.dynamics import LIFParams, fused, lif
from spikebench.precision import bf16_supported, compute

RULES = ("bptt", "tbptt", "fa", "ottt", "eprop", "dfa", "decolle")

built = pytest.mark.skipif(
    fused._load() is not None, reason=f"the fused LIF kernel could not be built here: {fused._load()}"
)
needs_bf16 = pytest.mark.skipif(not bf16_supported("cpu"), reason="this CPU has no avx512_bf16/amx_bf16")


def _loop(monkeypatch, fn, *args):
    """``fn(*args)`` with the kernel switched off (the PyTorch loop)."""
    with monkeypatch.context() as m:
        m.setenv(fused.ENV, "off")
        return fn(*args)


def _case(T, *state, kind, seed=0):
    g = torch.Generator().manual_seed(seed)
    # currents around the threshold, so that spikes, resets and sub-threshold steps all occur
    frames = 1 if kind.startswith("constant") else T
    c = torch.randn(frames, *state, generator=g) * 0.7 + 0.35
    if kind == "bf16":
        c = c.to(torch.bfloat16)
    if frames == 1:
        c = c.expand(T, *state)  # as SpikingLayer.currents broadcasts a time-constant input
    v0 = torch.randn(*state, generator=g) * 0.5
    z0 = (torch.rand(*state, generator=g) < 0.3).float()
    low = torch.bfloat16 if kind in ("bf16", "constant-bf16") else None
    return c, v0, z0, low


@built
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("keep_v", [False, True])
@pytest.mark.parametrize("kind", ["fp32", "bf16", "constant-fp32", "constant-bf16"])
@pytest.mark.parametrize("reset", ["soft", "zero"])
# 91 neurons: no full vector; 19,200: several blocks; [B, C, H, W] state: any trailing shape
@pytest.mark.parametrize("shape", [(25, 7, 13), (10, 64, 300), (6, 3, 4, 5, 5)])
def test_the_kernel_equals_the_loop_bit_for_bit(monkeypatch, shape, reset, kind, keep_v, threads):
    c, v0, z0, low = _case(*shape, kind=kind)
    p = LIFParams(reset=reset)
    vs_k = torch.full(c.shape, float("nan")) if keep_v else None
    vs_l = torch.full(c.shape, float("nan")) if keep_v else None
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        done = fused.advance(c, v0, z0, low, vs_k, p.alpha, p.theta, reset == "soft")
        zs_l, v_l = _loop(monkeypatch, lif._advance, p, c, None, v0, z0, low, vs_l)
    finally:
        torch.set_num_threads(before)
    assert done is not None
    zs_k, v_k = done
    assert zs_k.dtype == zs_l.dtype == (low or torch.float32)
    assert torch.equal(zs_k, zs_l) and torch.equal(v_k, v_l)
    assert 0.05 < zs_k.float().mean() < 0.95  # the case exercises both branches
    if keep_v:
        assert torch.equal(vs_k, vs_l)
    assert torch.equal(v0, _case(*shape, kind=kind)[1])  # the initial state is not written


@built
def test_it_is_what_scan_runs_and_only_where_it_applies(monkeypatch):
    calls = []
    real = torch.ops.spikebench.lif_forward

    class Spy:
        def __call__(self, *args):
            calls.append(args[0].dtype)
            return real(*args)

    monkeypatch.setattr(torch.ops.spikebench, "lif_forward", Spy())
    c = torch.rand(5, 3, 8)
    lif.scan(LIFParams(), c)
    lif.scan(LIFParams(), c, rec=torch.rand(8, 8))  # recurrent: the loop
    lif.scan(LIFParams(), c.double())  # float64 (the equivalence tests): the loop
    strided = c.transpose(1, 2).contiguous().transpose(1, 2)  # not contiguous: the kernel gets a copy
    fast = lif.scan(LIFParams(), strided)
    monkeypatch.setenv(fused.ENV, "off")
    assert torch.equal(fast[0], lif.scan(LIFParams(), strided)[0])
    assert calls == [torch.float32, torch.float32]


def _train(rule: str, prec: str, recurrent: bool) -> dict[str, torch.Tensor]:
    cfg = load_config(
        None,
        [f"rule.name={rule}", "data.timesteps=6", "model.hidden=[32,32]", f"model.recurrent={recurrent}"],
    )
    torch.manual_seed(0)
    net = components.build_network(cfg.model, (1, 28, 28), 10)
    r = components.build_rule(cfg, net, torch.Generator().manual_seed(0))
    enc = components.build_encoding(cfg, torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(5)
    for _ in range(3):
        x, y = torch.rand(12, 1, 28, 28, generator=g), torch.randint(0, 10, (12,), generator=g)
        opt.zero_grad()
        with compute(prec, "cpu"):
            r.train_batch(net, x, y, enc, lambda: None)
        opt.step()
    return {n: t.detach().clone() for n, t in net.state_dict().items()}


@built
@pytest.mark.parametrize("prec", ["fp32", pytest.param("bf16", marks=needs_bf16)])
@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("rule", RULES)
def test_training_with_the_kernel_gives_the_same_weights(monkeypatch, rule, recurrent, prec):
    with_kernel = _train(rule, prec, recurrent)
    without = _loop(monkeypatch, _train, rule, prec, recurrent)
    assert with_kernel.keys() == without.keys()
    for name, t in with_kernel.items():
        assert torch.equal(t, without[name]), name


def test_where_it_cannot_be_built_the_loop_runs_and_says_so_once(tmp_path):
    script = (
        "import logging, torch\n"
        "logging.basicConfig(level=logging.WARNING, format='%(name)s: %(message)s')\n"
        "from spikebench.dynamics import LIFParams, fused, lif\n"
        "c = torch.rand(4, 2, 8)\n"
        "a = lif.scan(LIFParams(), c)[0]; b = lif.scan(LIFParams(), c)[0]\n"
        "assert torch.equal(a, b) and a.shape == (4, 2, 8)\n"
        "print(fused.describe())\n"
    )
    env = {**os.environ, "CXX": "/bin/false", "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    env.pop(fused.ENV, None)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if "fused LIF kernel unavailable" in line]
    assert len(warnings) == 1, out.stderr
    assert out.stdout.startswith("PyTorch loop (")


@built
def test_a_lock_left_by_a_killed_build_does_not_hang_the_next(tmp_path):
    from torch.utils.cpp_extension import get_default_build_root

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()
    build = fused.build_directory(tmp_path)
    shutil.copytree(fused.build_directory(root), build)  # this process's build, times kept: no rebuild
    (build / "lock").write_text("")  # what torch's builder leaves when it is killed mid-build
    script = "from spikebench.dynamics import fused; print(fused.describe())"
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    env.pop(fused.ENV, None)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "compiled kernel (spikebench::lif_forward)"
    assert not (build / "lock").exists()


def test_builds_are_kept_apart_by_python_torch_and_cpu(monkeypatch, tmp_path):
    here = fused.build_directory(tmp_path)
    assert here == fused.build_directory(tmp_path) and here.parent == tmp_path
    assert f"torch{torch.__version__.replace('+', '_')}" in here.name
    monkeypatch.setattr(fused.platform, "machine", lambda: "another-cpu")
    assert fused.build_directory(tmp_path) != here


def test_off_in_the_environment_keeps_the_loop(monkeypatch):
    monkeypatch.setenv(fused.ENV, "off")
    assert not fused.enabled()
    assert fused.describe() == f"PyTorch loop ({fused.ENV}=off)"
    state = torch.zeros(2, 4)
    assert fused.advance(torch.rand(3, 2, 4), state, state, None, None, 0.9, 1.0, True) is None
