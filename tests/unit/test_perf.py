"""``spikebench perf``: the exact tensor-memory tracker, the FLOP count, alternate timing, peer
discovery, and a tiny end-to-end run (no timing assertions: the numbers come from ``spikebench perf``)."""

import json

import pytest
import torch

from spikebench.cli import main
from spikebench.config import ModelConfig
from spikebench.dynamics import LIFParams, fused, scan
from spikebench.nn import Network
from spikebench.perf import PerfOptions, TensorMemory, harness, measure_peak, peers, run_perf, training_flops
from spikebench.perf.harness import memory_growth, time_calls
from spikebench.perf.report import format_report
from spikebench.precision import bf16_supported
from spikebench.rules import RULES


def test_tracker_counts_known_allocations_and_frees():
    before = torch.ones(1000)  # exists before: not counted
    with TensorMemory() as tm:
        a = torch.empty(1000)  # 4000 B
        view = a.view(10, 100)  # a view allocates nothing
        b = torch.empty(500, dtype=torch.float64)  # 4000 B
        before.mul_(2)  # in place on an older storage: nothing
        assert tm.current_bytes == 8000
        del a
        assert tm.current_bytes == 8000  # the view keeps the storage alive
        del view
        assert tm.current_bytes == 4000
        del b
        assert tm.current_bytes == 0
        c = torch.empty(3000, dtype=torch.uint8)
    assert tm.peak_bytes == 8000
    assert tm.allocations == 3
    del c
    assert tm.current_bytes == 0


def test_tracker_sees_out_arguments_resized():
    a = torch.ones(250)
    with TensorMemory() as tm:
        out = torch.empty(0)
        torch.mul(a, 2, out=out)
        assert tm.current_bytes == 1000
    assert tm.peak_bytes == 1000


class _SavesAndAllocatesInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(torch.ones(10_000))  # 40 kB saved for backward
        return x * 2

    @staticmethod
    def backward(ctx, g):
        (big,) = ctx.saved_tensors
        tmp = torch.zeros(20_000)  # 80 kB that exists only inside backward
        return g * 2 + tmp[:1] * big[:1]


def test_tracker_sees_saved_tensors_and_custom_backward_allocations():
    x = torch.ones(100, requires_grad=True)
    with TensorMemory() as tm:
        y = _SavesAndAllocatesInBackward.apply(x)
        assert tm.current_bytes == 40_000 + 400
        y.sum().backward()
        assert tm.current_bytes == 400 + 400  # y and x.grad; the saved tensor is freed
    assert 120_400 <= tm.peak_bytes <= 122_000


def test_tracker_peak_of_fused_scan_grows_with_T():
    """BPTT through the scan keeps [T, B, N] potentials and spikes (the input gradient then takes the
    potentials' place): memory grows linearly in T."""
    p = LIFParams()
    peaks = {}
    for T in (10, 40):
        cur = torch.rand(T, 4, 32, requires_grad=True)
        with TensorMemory() as tm:
            scan(p, cur)[0].sum().backward()
        peaks[T] = tm.peak_bytes
        per_step = 4 * 32 * 4
        assert 2 * T * per_step <= tm.peak_bytes < 3 * T * per_step
    assert peaks[40] > 3 * peaks[10]


@pytest.mark.parametrize("reset", ["soft", "zero"])
def test_scan_backward_reuses_buffers_only_when_the_graph_is_not_kept(reset):
    """The backward pass writes the gradient over the saved potentials unless the graph is retained:
    retained graphs give the same gradient every time, and the final state is not a view of them."""
    p = LIFParams(alpha=0.8, reset=reset, detach_reset=False)
    g = torch.Generator().manual_seed(0)
    cur = (torch.rand(12, 3, 5, generator=g, dtype=torch.float64) * 1.5).requires_grad_(True)
    w = torch.randn(12, 3, 5, generator=g, dtype=torch.float64)
    z, state = scan(p, cur)
    v_final = state.v.clone()
    loss = (z * w).sum()
    g1 = torch.autograd.grad(loss, cur, retain_graph=True)[0]
    g2 = torch.autograd.grad(loss, cur, retain_graph=True)[0]
    g3 = torch.autograd.grad(loss, cur)[0]  # the last pass may reuse the saved buffer
    torch.testing.assert_close(g2, g1, rtol=0, atol=0)
    torch.testing.assert_close(g3, g1, rtol=0, atol=0)
    torch.testing.assert_close(state.v, v_final, rtol=0, atol=0)
    assert g1.abs().sum() > 0


def test_measure_peak_on_cpu_reports_tracker_and_rss():
    res = measure_peak(lambda: torch.empty(1 << 20).fill_(1.0), torch.device("cpu"))
    assert res.peak_bytes == 4 << 20
    assert res.method == TensorMemory.method
    assert res.rss_peak_bytes is None or res.rss_peak_bytes >= 0


def test_training_flops_counts_dense_products():
    net = Network.mlp(6, (5, 4), 3, recurrent=False, params=LIFParams(), kappa=0.9)
    T, B = 7, 2
    first = 2 * B * 6 * 5  # forward once (direct input) + dL/dW once, no dL/dx
    second = 2 * B * T * 5 * 4  # forward, dL/dW, dL/dx
    readout = 2 * B * T * 4 * 3
    leak = 2 * T * T * B * 3
    assert training_flops(net, T, B, True) == 2 * first + 3 * second + 3 * readout + 2 * leak
    assert training_flops(net, T, B, False) == 2 * first * T + 3 * second + 3 * readout + 2 * leak
    rec = Network.mlp(6, (5,), 3, recurrent=True, params=LIFParams(), kappa=0.9)
    ff = Network.mlp(6, (5,), 3, recurrent=False, params=LIFParams(), kappa=0.9)
    assert training_flops(rec, T, B, True) - training_flops(ff, T, B, True) == 3 * 2 * B * T * 25


def test_time_calls_alternates_and_respects_repeats():
    calls = []
    opts = PerfOptions(repeats=3, min_repeats=1, warmup=1)
    timings = time_calls(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, torch.device("cpu"), opts
    )
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then rounds starting in turn
    assert len(timings["a"].seconds) == 3 and timings["a"].median_s >= 0


def test_time_calls_stops_at_budget_after_min_repeats():
    calls = []
    opts = PerfOptions(repeats=50, min_repeats=2, warmup=0, budget_s=0.0)
    timings = time_calls({"a": lambda: calls.append(1)}, torch.device("cpu"), opts)
    assert len(timings["a"].seconds) == 2


def test_round_estimate_fits_linear_plus_quadratic():
    truth = lambda n: 2e-3 * n + 1e-6 * n * n  # noqa: E731
    history = [(512, truth(512)), (4096, truth(4096))]
    assert harness._round_estimate(history, 16384) == pytest.approx(truth(16384))
    assert harness._round_estimate(history[:1], 1024) == pytest.approx(truth(512) * 4)


def test_memory_growth_ratio():
    rows = [
        {"rule": "r", "recurrent": False, "online": True, "T": 400, "peak_bytes": 120},
        {"rule": "r", "recurrent": False, "online": True, "T": 25, "peak_bytes": 100},
        {"rule": "s", "recurrent": False, "online": False, "T": 25, "peak_bytes": 100},
    ]
    (g,) = memory_growth(rows)
    assert (g["rule"], g["T_low"], g["T_high"]) == ("r", 25, 400)
    assert g["ratio"] == pytest.approx(1.2)


def test_missing_peer_and_peer_needing_torchvision_are_reported(monkeypatch):
    real = peers.importlib.import_module

    def fake(name, *args):
        if name.startswith("norse"):
            raise ModuleNotFoundError("No module named 'torchvision'", name="torchvision")
        if name.startswith("snntorch"):
            raise ModuleNotFoundError("No module named 'snntorch'", name="snntorch")
        return real(name, *args)

    monkeypatch.setattr(peers.importlib, "import_module", fake)
    norse = peers.peer_info("norse")
    assert not norse.available and "torchvision" in norse.note
    snn = peers.peer_info("snntorch")
    assert not snn.available and "not installed" in snn.note


def test_unknown_protocol_library_is_an_error():
    with pytest.raises(peers.PeerError, match="known: spikebench"):
        peers.protocol_layer("brian", torch.zeros(2, 2), torch.zeros(2), LIFParams())


def test_tiny_run_end_to_end(monkeypatch):
    monkeypatch.setattr(harness, "PEERS", ())  # peers are covered by tests/equivalence/test_peer_lif.py
    monkeypatch.setattr(
        harness, "peer_info", lambda name: peers.PeerInfo(name, None, f"{name} is not installed")
    )
    online = [n for n in RULES if RULES.get(n).online][:1]
    opts = PerfOptions(
        repeats=1,
        min_repeats=1,
        warmup=1,
        batch=4,
        timesteps=(3,),
        long_timesteps=(12,),
        recurrent=(False,),
        rules=("bptt", *online),
        protocol_sizes=(16, 32, 64),
        protocol_timesteps=8,
        protocol_uncapped_n=32,
        protocol_cap_s=1e-9,  # the third size is skipped by its time estimate
        gemm_n=32,
        threads=1,
        attack_samples=4,
        attack_queries=3,
        attack_steps=2,
    )
    threads = torch.get_num_threads()
    rec = run_perf(opts)
    assert torch.get_num_threads() == threads and rec["environment"]["torch_threads"] == 1
    json.dumps(rec)  # JSON-ready
    rows = rec["rules"]["rows"]
    assert {(r["rule"], r["T"]) for r in rows} >= {("bptt", 3), ("bptt", 12)}
    assert all(r["peak_bytes"] > 0 for r in rows)
    assert all(r["samples_per_second"] > 0 for r in rows if r["T"] == 3)
    if bf16_supported("cpu"):  # bf16 timed beside fp32 in the same rounds
        assert rec["rules"]["precisions"] == ["fp32", "bf16"]
        assert all(r["samples_per_second_bf16"] > 0 and r["bf16_speedup"] > 0 for r in rows if r["T"] == 3)
    else:
        assert rec["rules"]["precisions"] == ["fp32"] and rec["rules"]["notes"]
    bptt = {r["T"]: r["peak_bytes"] for r in rows if r["rule"] == "bptt"}
    assert bptt[12] > bptt[3]
    for name in online:
        mem = {r["T"]: r["peak_bytes"] for r in rows if r["rule"] == name}
        assert mem[12] <= 1.3 * mem[3], f"{name}: online memory grows with T"
    assert rec["efficiency"]["rows"][0]["flops_per_batch"] == training_flops(
        Network.mlp(784, ModelConfig().hidden, 10, recurrent=False, params=LIFParams(), kappa=0.9), 3, 4, True
    )
    sizes = rec["protocol"]["sizes"]
    first = sizes[0]["results"][0]
    assert first["library"] == "spikebench" and first["peak_bytes"] > 0
    assert first["neuron_s"] == pytest.approx(first["median_s"] - sizes[0]["linear_only"]["median_s"])
    assert [r["library"] for r in sizes[0]["results"]] == ["spikebench"]
    assert "results" in sizes[1] and "skipped" in sizes[2]
    assert "snntorch is not installed" in rec["network_vs_snntorch"]["note"]
    attacks = {r["attack"]: r for r in rec["attacks"]["rows"]}
    assert set(attacks) == {"square", "nes", "spsa", "pgd"}
    for name, r in attacks.items():
        for p in rec["attacks"]["precisions"]:
            # at least one call per sample, at most the budget (PGD: one gradient per step)
            budget = 4 * (2 if name == "pgd" else 3)
            assert 0 < r[p]["calls"] <= budget and r[p]["calls_per_second"] > 0
    text = format_report(rec)
    assert "Open Neuromorphic protocol" in text and "bptt" in text
    assert rec["environment"]["lif_forward"] == fused.describe()
    assert f"LIF forward recursion: {fused.describe()}" in text
    assert "calls/s fp32" in text and "spsa" in text
    if "bf16_over_fp32" in rec["network_vs_snntorch"]:  # no snnTorch here: bptt against itself only
        assert "bptt in bf16 is" in text and "the snnTorch network in fp32" not in text


@pytest.mark.parametrize(
    "argv,message",
    [
        (["perf", "--repeats", "0"], "--repeats must be >= 1"),
        (["perf", "--rules", "bptt,nope"], "unknown rule"),
        (["perf", "--threads", "0"], "threads must be >= 1"),
    ],
)
def test_cli_perf_usage_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "perf.json").exists()


def test_cli_perf_unwritable_out(capsys, tmp_path):
    assert main(["perf", "--out", str(tmp_path / "missing" / "perf.json")]) == 2
    assert "not a writable directory" in capsys.readouterr().err


@pytest.mark.skipif(not peers.peer_info("snntorch").available, reason="snnTorch is not installed")
def test_snntorch_network_timed_beside_bptt_in_every_precision():
    """(a') times bptt and the snnTorch network in each precision in the same rounds; the side-by-side
    table shows the snnTorch network and the bptt / snnTorch ratio in fp32 and bf16."""
    from spikebench.perf.report import _snntorch_rows

    opts = PerfOptions(repeats=1, min_repeats=1, warmup=0, batch=4, timesteps=(3,))
    net = harness.measure_network_vs_snntorch(opts, torch.device("cpu"), lambda msg: None)
    timed = ["fp32", "bf16"] if bf16_supported("cpu") else ["fp32"]
    assert list(net["precisions"]) == timed
    for p in timed:
        entry = net["precisions"][p]
        assert entry["snntorch"]["samples_per_second"] > 0 and entry["speedup"] > 0
        ratio = entry["snntorch"]["median_s"] / entry["spikebench"]["median_s"]
        assert entry["speedup"] == pytest.approx(ratio)
    assert net["speedup"] == net["precisions"]["fp32"]["speedup"]  # the fp32 numbers at the top level
    rows = _snntorch_rows(net)
    if bf16_supported("cpu"):
        assert [r[0] for r in rows] == ["snnTorch network", "bptt / snnTorch"]
        assert rows[1][3] == f"{net['precisions']['fp32']['speedup']:.2f}x"
        assert rows[1][4] == f"{net['precisions']['bf16']['speedup']:.2f}x"
        by = {p: net["precisions"][p] for p in timed}
        assert net["bf16_over_fp32"] == pytest.approx(
            by["fp32"]["spikebench"]["median_s"] / by["bf16"]["spikebench"]["median_s"]
        )
        assert net["bf16_over_snntorch_fp32"] == pytest.approx(
            by["fp32"]["snntorch"]["median_s"] / by["bf16"]["spikebench"]["median_s"]
        )
    else:
        assert rows == [] and "bf16_over_fp32" not in net


def test_perf_options_refuse_unknown_attack_and_bad_budget():
    from spikebench.registry import UnknownNameError

    with pytest.raises(UnknownNameError):
        PerfOptions(attacks=("nope",))
    with pytest.raises(harness.ConfigError, match="attack samples"):
        PerfOptions(attack_queries=0)
