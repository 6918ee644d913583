"""``spikebench perf``: what training costs, measured in one process, beside peer libraries.

Five measurements (all on random data of Fashion-MNIST shape; no dataset is read):

(a) **Rules.** For every registered rule, the default network (784-256-256-10, feed-forward, and in
    full mode also recurrent) trained with real ``rule.train_batch`` calls and the real optimiser:
    samples per second at T in ``timesteps`` (median over timed batches after warm-up) and peak
    training memory (:func:`spikebench.train.tensor_memory.measure_peak`) at those T, plus at
    ``long_timesteps`` for the online rules and ``bptt`` (memory that does or does not grow with T).
(a') **Network vs snnTorch.** The same network and BPTT built from snnTorch layers
    (:class:`~spikebench.perf.peers.SnnTorchMLP`) against spikebench's ``bptt``, timed alternately, in
    fp32 and bf16.
(b) **Open Neuromorphic SNN library benchmark protocol.** One Linear + one LIF layer, batch 16,
    T = 500, forward + backward with loss = sum of the output spikes, for n in ``protocol_sizes``
    neurons (= input features), for spikebench and each installed peer, timed alternately (every
    repeat runs every library once) so that a busy machine slows all of them alike. The Linear alone
    (forward + backward of the same product) is timed in the same rounds: the time a library needs
    above it (``neuron_s``) is what its neuron costs.
(c) **GEMM efficiency.** This machine's dense float32 matrix-product rate (``gemm_n``^3, median) and
    the fraction of it that ``bptt`` training reaches, counting its dense products
    (:func:`training_flops`).
(d) **Attack throughput.** Square, NES, SPSA and PGD on ``attack_samples`` random inputs of the default
    network (untrained; the labels are its own fp32 predictions, so every sample starts correct), in fp32
    and bf16 alternately: model calls per second as the attack counts them (a forward pass of one
    sample for the query attacks, a forward and backward pass of one sample for PGD).

(a') and (a) time fp32 and bf16 side by side (bf16 where the device supports it), so the rules and the
snnTorch network appear in one table with the ratio of ``bptt`` to snnTorch in each precision.

The library returns plain data (:func:`run_perf`); the CLI prints it (:mod:`spikebench.perf.report`).
"""

from __future__ import annotations

import gc
import logging
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

import spikebench
from spikebench import components, heap
from spikebench.attacks import ATTACKS, AttackOptions, Classifier, ExactGradient, Target, ThreatModel
from spikebench.config import Config, ConfigError, DataConfig, ModelConfig, RuleConfig, TrainConfig
from spikebench.dynamics import fused
from spikebench.dynamics.lif import LIFParams
from spikebench.nn.network import Network
from spikebench.perf.peers import PEERS, PeerError, SnnTorchMLP, peer_info, protocol_layer
from spikebench.precision import bf16_supported, compute
from spikebench.registry import SpikebenchError
from spikebench.rules import RULES
from spikebench.rundir import git_revision
from spikebench.train.loop import make_optimizer
from spikebench.train.tensor_memory import measure_peak

log = logging.getLogger(__name__)

PERF_SCHEMA = 1
INPUT_SHAPE = (1, 28, 28)  # Fashion-MNIST
N_CLASSES = 10

Progress = Callable[[str], None]
LINEAR_ONLY = "linear only"


@dataclass(frozen=True)
class PerfOptions:
    """What ``spikebench perf`` measures and how often.

    ``repeats``: timed calls per measurement (median reported), after ``warmup`` untimed ones; a
    measurement stops early once it has taken ``budget_s`` seconds and has ``min_repeats`` timings.
    ``threads``: torch intra-op threads (None: torch's default). Protocol sizes above
    ``protocol_uncapped_n`` are skipped when their estimated time exceeds ``protocol_cap_s``; peak
    memory of the protocol is measured up to ``protocol_memory_max_n`` (one extra call per library).
    (d) runs each of ``attacks`` on ``attack_samples`` inputs at L-inf ``attack_eps`` with a budget of
    ``attack_queries`` model calls per sample (query attacks; NES and SPSA with as many antithetic pairs
    per estimate as that budget allows, at most the default 20) or ``attack_steps`` steps (gradient
    attacks).
    """

    repeats: int = 5
    min_repeats: int = 3
    warmup: int = 1
    budget_s: float = 30.0
    device: str = "cpu"
    threads: int | None = None
    batch: int = 128
    timesteps: tuple[int, ...] = (25, 100, 200)
    long_timesteps: tuple[int, ...] = (400,)
    recurrent: tuple[bool, ...] = (False, True)
    rules: tuple[str, ...] | None = None  # None: every registered rule
    protocol_batch: int = 16
    protocol_timesteps: int = 500
    protocol_sizes: tuple[int, ...] = (512, 4096, 16384)
    protocol_memory_max_n: int = 4096
    protocol_uncapped_n: int = 4096
    protocol_cap_s: float = 300.0
    gemm_n: int = 2048
    precisions: tuple[str, ...] = ("fp32", "bf16")  # (a), (a'), (d): bf16 beside fp32 where supported
    attacks: tuple[str, ...] = ("square", "nes", "spsa", "pgd")
    attack_samples: int = 500  # the attack runner's batch
    attack_queries: int = 100
    attack_steps: int = 20
    attack_eps: float = 0.03

    @classmethod
    def quick(cls, repeats: int | None = None) -> PerfOptions:
        """Fewer repeats, feed-forward only, no n = 16384 and protocol memory at n = 512 only."""
        return cls(
            repeats=repeats or 3,
            min_repeats=min(2, repeats or 3),
            budget_s=10.0,
            recurrent=(False,),
            protocol_sizes=(512, 4096),
            protocol_memory_max_n=512,
            attack_samples=200,
            attack_queries=50,
        )

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.warmup < 0 or self.min_repeats < 1:
            raise ConfigError("perf: repeats and min_repeats must be >= 1 and warmup >= 0")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"perf: threads must be >= 1, got {self.threads}")
        if not self.precisions or not set(self.precisions) <= {"fp32", "bf16"}:
            raise ConfigError(f"perf: precisions must be fp32 and/or bf16, got {list(self.precisions)}")
        for name in self.attacks:
            ATTACKS.get(name)  # an unknown attack is an error before anything runs
        if min(self.attack_samples, self.attack_queries, self.attack_steps) < 1 or not self.attack_eps > 0:
            raise ConfigError("perf: attack samples, queries and steps must be >= 1 and eps > 0")


@dataclass
class Timing:
    """Wall-clock seconds of the timed calls of one measurement (``cpu_s``: process CPU time)."""

    seconds: list[float]
    cpu_seconds: list[float]

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def min_s(self) -> float:
        return min(self.seconds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "median_s": self.median_s,
            "min_s": self.min_s,
            "repeats": len(self.seconds),
            "cpu_median_s": statistics.median(self.cpu_seconds),
        }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    fns: dict[str, Callable[[], object]], device: torch.device, opts: PerfOptions
) -> dict[str, Timing]:
    """Time several callables alternately: ``warmup`` untimed rounds, then rounds in which every
    callable runs once, until ``repeats`` rounds or (after ``min_repeats``) ``budget_s`` seconds.

    Round r starts with callable r (mod their number), so that none is always first or always after
    the same one (a busy machine then slows all of them alike)."""
    for _ in range(opts.warmup):
        for fn in fns.values():
            fn()
    timings = {k: Timing([], []) for k in fns}
    keys = list(fns)
    start = time.perf_counter()
    for r in range(opts.repeats):
        if r >= opts.min_repeats and time.perf_counter() - start > opts.budget_s:
            break
        for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
            fn = fns[k]
            _sync(device)
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            _sync(device)
            timings[k].seconds.append(time.perf_counter() - t0)
            timings[k].cpu_seconds.append(time.process_time() - c0)
    return timings


# ---------------------------------------------------------------------------------------------
# (a) rules


class _Trainer:
    """One rule training the default network on one fixed random batch, through ``train_batch``."""

    def __init__(self, cfg: Config, device: torch.device, seed: int = 0, precision: str = "fp32") -> None:
        torch.manual_seed(seed)
        self.device, self.precision = device, precision
        self.net = components.build_network(cfg.model, INPUT_SHAPE, N_CLASSES).to(device)
        self.rule = components.build_rule(cfg, self.net, torch.Generator(device).manual_seed(seed + 2))
        self.enc = components.build_encoding(cfg, torch.Generator(device).manual_seed(seed + 1))
        self.opt = make_optimizer(cfg.train, self.net.parameters())
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(cfg.train.batch_size, *INPUT_SHAPE, generator=g).to(device)
        self.y = torch.randint(0, N_CLASSES, (cfg.train.batch_size,), generator=g).to(device)

    def apply(self) -> None:
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def __call__(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        with compute(self.precision, self.device):
            result = self.rule.train_batch(self.net, self.x, self.y, self.enc, self.apply)
        if not math.isfinite(result.loss):
            raise SpikebenchError(f"perf: rule {self.rule.name!r} produced a non-finite loss")


def _config(rule: str, T: int, batch: int, recurrent: bool, device: str) -> Config:
    cfg = Config(
        data=DataConfig(timesteps=T),
        model=ModelConfig(recurrent=recurrent),
        rule=RuleConfig(name=rule),
        train=TrainConfig(batch_size=batch, device=device),  # type: ignore[arg-type]
    )
    components.validate(cfg)
    return cfg


def timed_precisions(opts: PerfOptions, device: torch.device) -> tuple[list[str], list[str]]:
    """The precisions of ``opts.precisions`` this device can time (bf16 where it is supported; fp32 if
    none is left), and a note for each one skipped."""
    timed = [p for p in opts.precisions if p == "fp32" or bf16_supported(device)]
    notes = (
        [] if timed == list(opts.precisions) else [f"bf16 skipped: this {device.type} has no bf16 support"]
    )
    return timed or ["fp32"], notes


def measure_rules(opts: PerfOptions, device: torch.device, progress: Progress) -> dict[str, Any]:
    """(a): throughput and peak memory of every rule (see the module docstring). With ``bf16`` among
    ``opts.precisions`` (and the device supporting it), the same rule in bf16 (an equal network and
    batch) is timed alternately with fp32 in the same rounds: ``samples_per_second_bf16`` and
    ``bf16_speedup`` beside the row's float32 numbers; memory is measured in the first precision."""
    timed, notes = timed_precisions(opts, device)
    first = timed[0]
    names = (
        list(opts.rules)
        if opts.rules is not None
        else sorted(RULES, key=lambda n: RULES.get(n).locality.rank)
    )
    rows, skipped = [], []
    for recurrent in opts.recurrent:
        for name in names:
            cls = RULES.get(name)
            online = bool(cls.online)
            grid = list(opts.timesteps)
            if online or name == "bptt":
                grid += [T for T in opts.long_timesteps if T not in grid]
            for T in grid:
                tag = f"{name} {'recurrent' if recurrent else 'feed-forward'} T={T}"
                try:
                    cfg = _config(name, T, opts.batch, recurrent, device.type)
                except ConfigError as exc:
                    skipped.append({"rule": name, "recurrent": recurrent, "T": T, "note": str(exc)})
                    break
                progress(f"rules: {tag}")
                trainers = {p: _Trainer(cfg, device, precision=p) for p in timed}
                trainer = trainers[first]
                row: dict[str, Any] = {"rule": name, "online": online, "recurrent": recurrent, "T": T}
                row["memory_in_T"] = cls.locality.memory
                row["precision"] = first
                if T in opts.timesteps:
                    timings = time_calls(dict(trainers), device, opts)
                    row.update(timings[first].to_dict())
                    row["samples_per_second"] = opts.batch / timings[first].median_s
                    if "bf16" in timings and first != "bf16":
                        row["samples_per_second_bf16"] = opts.batch / timings["bf16"].median_s
                        row["median_s_bf16"] = timings["bf16"].median_s
                        row["bf16_speedup"] = timings[first].median_s / timings["bf16"].median_s
                else:
                    trainer()  # warm-up: optimiser state exists before memory is measured
                gc.collect()
                mem = measure_peak(trainer, device)
                row.update(
                    peak_bytes=mem.peak_bytes, rss_peak_bytes=mem.rss_peak_bytes, memory_method=mem.method
                )
                rows.append(row)
                del trainer, trainers
    return {
        "batch": opts.batch,
        "precisions": timed,
        "notes": notes,
        "rows": rows,
        "skipped": skipped,
        "growth": memory_growth(rows),
    }


def memory_growth(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Peak memory at the longest T over the shortest T, per rule and recurrence."""
    out = []
    keys = {(r["rule"], r["recurrent"]) for r in rows}
    for rule, recurrent in sorted(keys):
        mine = sorted(
            (r for r in rows if (r["rule"], r["recurrent"]) == (rule, recurrent)), key=lambda r: r["T"]
        )
        lo, hi = mine[0], mine[-1]
        if lo["T"] == hi["T"] or not lo["peak_bytes"]:
            continue
        out.append(
            {
                "rule": rule,
                "recurrent": recurrent,
                "online": lo["online"],
                "T_low": lo["T"],
                "T_high": hi["T"],
                "ratio": hi["peak_bytes"] / lo["peak_bytes"],
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# (a') the default network against the same network from snnTorch layers


class _SnnTorchTrainer:
    """BPTT of :class:`SnnTorchMLP` (same loss, optimiser, data and initial weights as ``bptt``), its
    forward and backward pass under the precision's autocast (:func:`spikebench.precision.compute`)."""

    def __init__(self, ref: _Trainer, cfg: Config) -> None:
        self.model = SnnTorchMLP(ref.net).to(ref.x.device)
        self.opt = make_optimizer(cfg.train, self.model.parameters())
        self.x, self.y, self.T = ref.x, ref.y, cfg.data.timesteps
        self.device, self.precision = ref.device, ref.precision

    def __call__(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        with compute(self.precision, self.device):
            readout = self.model(self.x.unsqueeze(0).expand(self.T, *self.x.shape))
            F.cross_entropy(readout.mean(0), self.y).backward()
        self.opt.step()


def measure_network_vs_snntorch(
    opts: PerfOptions, device: torch.device, progress: Progress
) -> dict[str, Any]:
    """(a'): samples/s of ``bptt`` on the default network, spikebench vs snnTorch layers, T = the first
    of ``opts.timesteps``, in every timed precision, all timed alternately in the same rounds. The
    first precision's numbers are under ``spikebench`` / ``snntorch`` / ``speedup``; every precision's
    under ``precisions[p]``. With fp32 and bf16 both timed, ``bf16_over_fp32`` and
    ``bf16_over_snntorch_fp32`` compare bptt in bf16 with bptt and with the snnTorch network in fp32."""
    T = opts.timesteps[0]
    info = peer_info("snntorch")
    timed, _ = timed_precisions(opts, device)
    result: dict[str, Any] = {"T": T, "batch": opts.batch, "snntorch_version": info.version}
    cfg = _config("bptt", T, opts.batch, False, device.type)
    fns: dict[str, Callable[[], object]] = {}
    for precision in timed:
        fns[f"spikebench {precision}"] = ours = _Trainer(cfg, device, precision=precision)
        if info.available:
            fns[f"snntorch {precision}"] = _SnnTorchTrainer(ours, cfg)
    if not info.available:
        result["note"] = info.note
    progress(f"network: bptt 784-256-256-10, T={T}, spikebench vs snnTorch, {', '.join(timed)}")
    timings = time_calls(fns, device, opts)
    result["precisions"] = {}
    for precision in timed:
        entry: dict[str, Any] = {}
        for lib in ("spikebench", "snntorch"):
            if f"{lib} {precision}" in timings:
                timing = timings[f"{lib} {precision}"]
                entry[lib] = {**timing.to_dict(), "samples_per_second": opts.batch / timing.median_s}
        if "snntorch" in entry:
            ours_t, theirs = timings[f"spikebench {precision}"], timings[f"snntorch {precision}"]
            entry["speedup"] = theirs.median_s / ours_t.median_s
            entry["speedup_cpu_time"] = _cpu(theirs) / _cpu(ours_t)
        result["precisions"][precision] = entry
    if {"fp32", "bf16"} <= set(timed):
        # across precisions, from the same rounds: bptt in bf16 against bptt and the snnTorch network
        # in fp32
        bf16 = timings["spikebench bf16"].median_s
        result["bf16_over_fp32"] = timings["spikebench fp32"].median_s / bf16
        if "snntorch fp32" in timings:
            result["bf16_over_snntorch_fp32"] = timings["snntorch fp32"].median_s / bf16
    result.update(result["precisions"][timed[0]])
    return result


# ---------------------------------------------------------------------------------------------
# (b) Open Neuromorphic protocol


def measure_protocol(opts: PerfOptions, device: torch.device, progress: Progress) -> dict[str, Any]:
    """(b): forward + backward of Linear + LIF, [T, B, n] -> sum of spikes, per library."""
    T, B = opts.protocol_timesteps, opts.protocol_batch
    infos = [peer_info(name) for name in PEERS]
    libraries = ["spikebench"] + [i.name for i in infos if i.available]
    out: dict[str, Any] = {
        "T": T,
        "batch": B,
        "libraries": libraries,
        "peers": [asdict(i) for i in infos],
        "sizes": [],
    }
    p = LIFParams()
    history: list[tuple[int, float]] = []  # (n, seconds of one round of all libraries)
    for n in opts.protocol_sizes:
        entry: dict[str, Any] = {"n": n}
        if n > opts.protocol_uncapped_n and history:
            estimate = _round_estimate(history, n) * (opts.warmup + opts.min_repeats)
            if estimate > opts.protocol_cap_s:
                entry["skipped"] = (
                    f"estimated {estimate:.0f} s for {opts.warmup + opts.min_repeats} rounds "
                    f"> cap {opts.protocol_cap_s:.0f} s"
                )
                out["sizes"].append(entry)
                continue
        g = torch.Generator().manual_seed(n)
        bound = 1.0 / math.sqrt(n)
        weight = (torch.rand(n, n, generator=g) * 2 - 1).mul_(bound).to(device)
        bias = torch.zeros(n, device=device)
        x = torch.rand(T, B, n, generator=g).to(device)
        fns: dict[str, Callable[[], object]] = {}
        for lib in libraries:
            try:
                module = protocol_layer(lib, weight, bias, p)
            except PeerError as exc:
                entry.setdefault("notes", []).append(str(exc))
                continue
            fns[lib] = _fwd_bwd(module, x)
        # The dense product alone (same Linear, loss = sum of the currents), timed in the same rounds:
        # what every library shares; each library's time above it is its neuron's.
        linear = torch.nn.Linear(n, n, device=device)
        with torch.no_grad():
            linear.weight.copy_(weight)
            linear.bias.copy_(bias)
        fns[LINEAR_ONLY] = _fwd_bwd(linear, x)
        progress(f"protocol: n={n}, {', '.join(fns)}")
        capped = replace(opts, budget_s=min(opts.budget_s, opts.protocol_cap_s))
        timings = time_calls(fns, device, capped)
        shared = timings.pop(LINEAR_ONLY)
        entry["linear_only"] = shared.to_dict()
        base = timings["spikebench"].median_s
        entry["results"] = []
        for lib, timing in timings.items():
            row = {
                "library": lib,
                **timing.to_dict(),
                "ratio_to_spikebench": timing.median_s / base,
                "cpu_ratio_to_spikebench": _cpu(timing) / _cpu(timings["spikebench"]),
                "neuron_s": timing.median_s - shared.median_s,
            }
            if n <= opts.protocol_memory_max_n:
                gc.collect()
                mem = measure_peak(fns[lib], device)
                row.update(peak_bytes=mem.peak_bytes, rss_peak_bytes=mem.rss_peak_bytes)
            entry["results"].append(row)
        history.append((n, sum(t.median_s for t in timings.values()) + shared.median_s))
        out["sizes"].append(entry)
    return out


def _round_estimate(history: list[tuple[int, float]], n: int) -> float:
    """Seconds of one round at size ``n``, from rounds measured at smaller sizes: ``a n + b n^2``
    (neuron work grows as n, the dense products as n^2), fitted to the last two sizes; from one
    size, all of it is taken to grow as n^2 (an overestimate)."""
    n1, t1 = history[-1]
    if len(history) < 2:
        return t1 * (n / n1) ** 2
    n0, t0 = history[-2]
    b = max(0.0, (t1 / n1 - t0 / n0) / (n1 - n0))
    a = max(0.0, t1 / n1 - b * n1)
    return a * n + b * n * n


def _cpu(t: Timing) -> float:
    return statistics.median(t.cpu_seconds)


def _fwd_bwd(module: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        module.zero_grad(set_to_none=True)
        module(x).sum().backward()

    return run


# ---------------------------------------------------------------------------------------------
# (c) GEMM rate and BPTT efficiency


def gemm_rate(n: int, device: torch.device, opts: PerfOptions) -> dict[str, Any]:
    """Dense float32 ``[n, n] @ [n, n]`` rate of this machine: 2 n^3 FLOPs over the median time."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device)
    b = torch.randn(n, n, generator=g).to(device)
    out = torch.empty(n, n, device=device)
    timing = time_calls(
        {"mm": lambda: torch.mm(a, b, out=out)}, device, replace(opts, repeats=max(5, opts.repeats))
    )
    t = timing["mm"]
    return {"n": n, **t.to_dict(), "flops_per_second": 2 * n**3 / t.median_s}


def training_flops(net: Network, T: int, batch: int, time_constant_input: bool) -> int:
    """FLOPs of the dense products of one BPTT training batch of ``net`` (elementwise work not counted).

    Per hidden layer with ``n_in`` inputs and ``n_out`` neurons, one multiply-add = 2 FLOPs:

    - forward ``W x[t]``: ``2 B T' n_in n_out``, with T' = 1 for a first layer fed the same input at
      every step (``direct`` encoding computes it once) and T' = T otherwise;
    - backward ``dL/dW``: the same count again (for the time-constant input the T gradients are summed
      first, elementwise); ``dL/dx``: ``2 B T n_in n_out`` for every layer but the first (the input
      needs no gradient);
    - a recurrent layer adds ``V z[t-1]`` forward, the gradient through ``V`` and ``dL/dV``: 3 x
      ``2 B T n_out^2``.

    The readout ``W_out z[t]`` counts forward, ``dL/dW_out`` and ``dL/dz``: 3 x ``2 B T N C``; its leak
    (a [T, T] lower-triangular product over ``B C``) counts forward and backward: 2 x ``2 T^2 B C``.
    """
    total = 0
    for i, layer in enumerate(net.layers):
        steps = 1 if (i == 0 and time_constant_input) else T
        dense = 2 * batch * layer.n_in * layer.n_out
        total += 2 * dense * steps
        if i > 0:
            total += dense * T
        if layer.recurrent:
            total += 3 * 2 * batch * T * layer.n_out**2
    lin = net.readout.linear
    total += 3 * 2 * batch * T * lin.in_features * lin.out_features
    total += 2 * 2 * T * T * batch * lin.out_features
    return total


def efficiency(rules: dict[str, Any], gemm: dict[str, Any], opts: PerfOptions) -> dict[str, Any]:
    """(c): the GEMM fraction reached by ``bptt`` at each measured T (feed-forward network)."""
    net = components.build_network(ModelConfig(), INPUT_SHAPE, N_CLASSES)
    rows = []
    for r in rules["rows"]:
        if r["rule"] != "bptt" or r["recurrent"] or "median_s" not in r:
            continue
        flops = training_flops(net, r["T"], opts.batch, time_constant_input=True)
        achieved = flops / r["median_s"]
        rows.append(
            {
                "T": r["T"],
                "flops_per_batch": flops,
                "flops_per_second": achieved,
                "fraction_of_gemm": achieved / gemm["flops_per_second"],
            }
        )
    return {
        "rows": rows,
        "count": training_flops.__doc__.split("\n\n")[0].strip() if training_flops.__doc__ else "",
    }


# ---------------------------------------------------------------------------------------------
# (d) attack throughput


class _AttackCall:
    """One attack on a fixed batch in one precision. Every call starts from the same generator state,
    so every call does the same work; ``calls`` holds the model calls the last one spent."""

    def __init__(
        self, name: str, target: Target, x: torch.Tensor, y: torch.Tensor, opts: PerfOptions, precision: str
    ) -> None:
        # NES / SPSA: as many antithetic pairs per estimate as the budget allows, at most the default
        samples = min(AttackOptions.samples, max(1, (opts.attack_queries - 1) // 2))
        options = AttackOptions(queries=opts.attack_queries, steps=opts.attack_steps, samples=samples)
        self.attack, self.target, self.x, self.y = ATTACKS.get(name)(options), target, x, y
        self.threat, self.precision = ThreatModel("linf", opts.attack_eps), precision
        self.calls = 0

    def __call__(self) -> None:
        gen = torch.Generator(self.x.device).manual_seed(0)
        with compute(self.precision, self.x.device):
            result = self.attack.perturb(self.target, self.x, self.y, self.threat, gen)
        self.calls = int(result.queries.sum())


def measure_attacks(opts: PerfOptions, device: torch.device, progress: Progress) -> dict[str, Any]:
    """(d): model calls per second of each of ``opts.attacks`` on the default network (see the module
    docstring), every timed precision of an attack alternately in the same rounds."""
    timed, notes = timed_precisions(opts, device)
    T = opts.timesteps[0]
    cfg = _config("bptt", T, opts.batch, False, device.type)
    torch.manual_seed(0)
    net = components.build_network(cfg.model, INPUT_SHAPE, N_CLASSES).to(device)
    model = Classifier(net, components.build_encoding(cfg, torch.Generator(device).manual_seed(1)))
    x = torch.rand(opts.attack_samples, *INPUT_SHAPE, generator=torch.Generator().manual_seed(0)).to(device)
    y = model(x).argmax(1)  # the network's own predictions: every sample starts correct
    rows = []
    for name in opts.attacks:
        kind = ATTACKS.get(name).kind
        target = Target(model, ExactGradient(model) if kind == "gradient" else None)
        calls = {p: _AttackCall(name, target, x, y, opts, p) for p in timed}
        budget = f"{opts.attack_steps} steps" if kind == "gradient" else f"{opts.attack_queries} queries"
        progress(f"attacks: {name} ({budget}) on {opts.attack_samples} samples, {', '.join(timed)}")
        timings = time_calls(dict(calls), device, opts)
        row: dict[str, Any] = {"attack": name, "kind": kind}
        for p in timed:
            row[p] = {
                **timings[p].to_dict(),
                "calls": calls[p].calls,
                "calls_per_second": calls[p].calls / timings[p].median_s,
            }
        if "bf16" in row and "fp32" in row:
            row["bf16_speedup"] = row["bf16"]["calls_per_second"] / row["fp32"]["calls_per_second"]
        rows.append(row)
    return {
        "T": T,
        "samples": opts.attack_samples,
        "eps": opts.attack_eps,
        "queries": opts.attack_queries,
        "steps": opts.attack_steps,
        "precisions": timed,
        "notes": notes,
        "rows": rows,
    }


# ---------------------------------------------------------------------------------------------
# the whole run


def environment(device: torch.device) -> dict[str, Any]:
    """Where the numbers were measured."""
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    env = {
        "spikebench_version": spikebench.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "git_revision": git_revision(),
        "device": str(device),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "heap": heap.describe(),
        "lif_forward": fused.describe(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def run_perf(opts: PerfOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Run all five measurements and return them as one JSON-ready record (schema ``PERF_SCHEMA``)."""
    say = progress or (lambda msg: log.info(msg))
    device = components.resolve_device(opts.device)
    threads = torch.get_num_threads()
    if opts.threads is not None:
        torch.set_num_threads(opts.threads)
    try:
        return _run(opts, device, say)
    finally:
        torch.set_num_threads(threads)


def _run(opts: PerfOptions, device: torch.device, say: Progress) -> dict[str, Any]:
    started = time.time()
    record: dict[str, Any] = {
        "schema": PERF_SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "options": asdict(opts),
        "environment": environment(device),
    }
    say(f"gemm: {opts.gemm_n}^3 float32")
    record["gemm"] = gemm_rate(opts.gemm_n, device, opts)
    record["network_vs_snntorch"] = measure_network_vs_snntorch(opts, device, say)
    record["rules"] = measure_rules(opts, device, say)
    record["efficiency"] = efficiency(record["rules"], record["gemm"], opts)
    record["attacks"] = measure_attacks(opts, device, say)
    record["protocol"] = measure_protocol(opts, device, say)
    record["environment"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    record["seconds"] = time.time() - started
    return record
