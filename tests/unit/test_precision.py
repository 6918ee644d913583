"""bf16 mixed precision: where it must agree with float32 (spikes except threshold ties, gradients of
every rule to a stated tolerance), that state, gradients and optimiser stay float32, and the fallback or
refusal on hardware without bf16."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from spikebench import components, precision
from spikebench.cli import main
from spikebench.config import ConfigError, load_config
from spikebench.dynamics import lif
from spikebench.precision import PrecisionError, as_state, bf16_supported, compute, resolve
from spikebench.train.loop import make_optimizer

RULES = ("bptt", "tbptt", "fa", "ottt", "eprop", "dfa", "decolle")
CONV_RULES = ("bptt", "fa", "ottt", "dfa", "decolle")
BF16_EPS = 2.0**-8  # relative rounding step of bfloat16 (8 bits of mantissa)
GRAD_COSINE = 0.99  # stated tolerance: the whole gradient's cosine with the float32 gradient

needs_bf16 = pytest.mark.skipif(not bf16_supported("cpu"), reason="this CPU has no avx512_bf16/amx_bf16")


def build(rule: str, *extra: str):
    cfg = load_config(None, [f"rule.name={rule}", "data.timesteps=8", *extra])
    net = components.build_network(cfg.model, (1, 28, 28), 10)
    return cfg, net, components.build_rule(cfg, net, torch.Generator().manual_seed(0))


def batch(n: int = 16):
    g = torch.Generator().manual_seed(5)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_the_config_key_is_validated():
    assert load_config(None, ["train.precision=bf16"]).train.precision == "bf16"
    with pytest.raises(ConfigError, match="train.precision must be one of fp32, bf16, auto"):
        load_config(None, ["train.precision=fp16"])


def test_without_bf16_hardware_bf16_is_refused_and_auto_falls_back_saying_so(monkeypatch, caplog):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    assert not bf16_supported("cpu")
    with pytest.raises(PrecisionError, match="no bf16 support"):
        resolve("bf16", "cpu")
    with caplog.at_level(logging.WARNING, logger="spikebench.precision"):
        assert resolve("auto", "cpu") == "fp32"
    assert [r.getMessage() for r in caplog.records] == [
        "precision auto: this CPU has no bf16 support; running in fp32"
    ]
    assert resolve("fp32", "cpu") == "fp32"
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert resolve("bf16", "cpu") == resolve("auto", "cpu") == "bf16"


def test_state_casts_only_low_precision():
    x64 = torch.ones(2, dtype=torch.float64)
    assert as_state(x64) is x64
    assert as_state(torch.ones(2, dtype=torch.bfloat16)).dtype == torch.float32


def _potentials(p: lif.LIFParams, currents: torch.Tensor, rec: torch.Tensor | None) -> torch.Tensor:
    """Float32 membrane potentials [T, B, N] of the reference step loop."""
    state = lif.zero_state(currents.shape[1], currents.shape[2])
    vs = []
    for t in range(currents.shape[0]):
        c = currents[t] if rec is None else currents[t] + state.z @ rec.T
        _, state = lif.step(p, state, c)
        vs.append(state.v)
    return torch.stack(vs)


@needs_bf16
@pytest.mark.parametrize("recurrent", [False, True])
def test_bf16_spikes_equal_fp32_spikes_except_at_threshold_ties(recurrent):
    """Under the same weights, a spike differs only where the float32 potential is within the bf16
    rounding of the threshold. Until a neuron's first disagreement (with its inputs, and for a recurrent
    layer its layer's spikes, still equal) the potentials differ by at most the accumulated current
    error ``|dI| / (1 - alpha)``, with ``|dI| <= 2 eps (sum |W||x| + |b| (+ sum |V|))``."""
    torch.manual_seed(0)
    _, net, _ = build("bptt", "model.hidden=[128,128]", f"model.recurrent={str(recurrent).lower()}")
    for layer in net.layers:  # a busier network: many neurons near threshold
        layer.weight.data.mul_(3.0)
    x, _ = batch(32)
    with torch.no_grad():
        seq = x.reshape(1, 32, -1).expand(8, 32, -1)
        ref = net(seq)
        with compute("bf16", "cpu"):
            low = net(seq)
    h = h16 = seq
    checked = disagreements = 0
    for layer, z32, z16 in zip(net.layers, ref.spikes, low.spikes, strict=True):
        p = layer.params
        currents = layer.currents(h)
        v = _potentials(p, currents, layer.rec)
        scale = h.abs() @ layer.weight.abs().T + layer.bias.abs()
        if layer.rec is not None:
            scale = scale + layer.rec.abs().sum(1)
        tol = 2 * BF16_EPS * scale / (1 - p.alpha)
        differ = z32 != z16
        disagreements += int(differ.sum())
        inputs_equal = (h == h16).all(-1)  # the layer's inputs at t, per sample
        own_equal = (~differ).all(-1)  # the layer's spikes at t, per sample
        for t, b, n in differ.nonzero().tolist():
            if differ[:t, b, n].any():
                continue  # not the first disagreement of this neuron
            if not inputs_equal[: t + 1, b].all() or (layer.rec is not None and not own_equal[:t, b].all()):
                continue  # caused upstream
            checked += 1
            assert abs(v[t, b, n] - p.theta) < tol[t, b, n], (t, b, n)
        h, h16 = z32, z16
    total = sum(z.numel() for z in ref.spikes)
    # ties are rare; a flipped spike then changes that neuron's later steps (its reset) and its targets
    assert 0 < checked < 0.005 * total and disagreements < 0.03 * total


def _rule_grads(rule: str, prec: str, *extra: str) -> tuple[dict[str, torch.Tensor], float]:
    torch.manual_seed(0)
    cfg, net, r = build(rule, *extra)
    x, y = batch()
    enc = components.build_encoding(cfg, torch.Generator().manual_seed(1))
    with compute(prec, "cpu"):
        result = r.train_batch(net, x, y, enc, lambda: None)
    return {n: p.grad for n, p in net.named_parameters() if p.grad is not None}, result.loss


@needs_bf16
@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("rule", RULES)
def test_bf16_gradients_agree_with_fp32_for_every_rule(rule, recurrent):
    extra = ("model.hidden=[64,64]", f"model.recurrent={str(recurrent).lower()}")
    g32, loss32 = _rule_grads(rule, "fp32", *extra)
    g16, loss16 = _rule_grads(rule, "bf16", *extra)
    assert g32.keys() == g16.keys() and len(g32) > 0
    assert all(g.dtype == torch.float32 for g in g16.values())
    flat32 = torch.cat([g.flatten() for g in g32.values()])
    flat16 = torch.cat([g16[n].flatten() for n in g32])
    assert torch.nn.functional.cosine_similarity(flat32, flat16, 0) > GRAD_COSINE
    assert loss16 == pytest.approx(loss32, rel=0.02)


@needs_bf16
@pytest.mark.parametrize("rule", CONV_RULES)
def test_bf16_gradients_agree_with_fp32_for_convolutions(rule):
    extra = ("model.arch=conv", "model.channels=[4]", "model.hidden=[32]")
    g32, _ = _rule_grads(rule, "fp32", *extra)
    g16, _ = _rule_grads(rule, "bf16", *extra)
    flat32 = torch.cat([g.flatten() for g in g32.values()])
    flat16 = torch.cat([g16[n].flatten() for n in g32])
    assert torch.nn.functional.cosine_similarity(flat32, flat16, 0) > GRAD_COSINE


def test_under_bf16_state_readout_and_optimiser_stay_float32():
    cfg, net, r = build("bptt", "model.hidden=[32]", "model.recurrent=true")
    x, y = batch(4)
    opt = make_optimizer(cfg.train, net.parameters())
    with compute("bf16", "cpu"):
        rollout = net(x.reshape(1, 4, -1).expand(8, 4, -1))
        assert rollout.readout.dtype == rollout.state.layers[0].v.dtype == torch.float32
        # spikes are exactly 0 or 1: training and inference pass them on in bf16 (no cast before the
        # next product), the same values
        assert all(z.dtype == torch.bfloat16 for z in rollout.spikes)
        with torch.no_grad():
            inference = net(x.reshape(1, 4, -1).expand(8, 4, -1))
        assert all(z.dtype == torch.bfloat16 for z in inference.spikes)
        assert all(torch.equal(a, b) for a, b in zip(rollout.spikes, inference.spikes, strict=True))
        assert torch.equal(rollout.readout, inference.readout)
        r.train_batch(net, x, y, components.build_encoding(cfg, torch.Generator()), opt.step)
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert all(v.dtype == torch.float32 for s in opt.state.values() for v in s.values() if v.dim() > 0)


@needs_bf16
def test_spike_counts_under_bf16_are_exact_beyond_bf16_integers():
    """bf16 spikes of more steps than bf16 holds integers exactly (256): counts are summed in float32."""
    from spikebench.analysis.probes import spike_counts

    cfg, net, _ = build("bptt", "model.hidden=[4]", "data.timesteps=301")
    with torch.no_grad():
        net.layers[0].weight.zero_()
        net.layers[0].bias.fill_(2.0)  # v = 2 at every step: a spike at each of the 301 steps
    x, _ = batch(3)
    with compute("bf16", "cpu"):
        counts = spike_counts(net, cfg, x)["layers.0"]
    assert counts.dtype == torch.int16 and bool((counts == 301).all())


@needs_bf16
def test_a_bf16_run_records_its_precision_and_evaluates_in_either(fake_data, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--set", "model.hidden=[32]", "--set", "data.timesteps=4", "--set", "train.precision=bf16"]
    assert main(["train", "-q", *args, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["precision"] == "bf16"
    capsys.readouterr()
    accuracies = {}
    for prec in ("bf16", "fp32"):
        assert main(["eval", str(out), "--device", "cpu", "--precision", prec, "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["precision"] == prec and result["device"] == "cpu"
        accuracies[prec] = result["test_accuracy"]
    assert accuracies["bf16"] == summary["test_accuracy"]
    assert abs(accuracies["fp32"] - accuracies["bf16"]) < 0.05


def test_bf16_refused_in_one_line_without_hardware(fake_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset())
    out = tmp_path / "run"
    code = main(
        ["train", "-q", "--set", "train.precision=bf16", "--set", "train.device=cpu", "--out", str(out)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "no bf16 support" in err[0]
    assert not out.exists()
