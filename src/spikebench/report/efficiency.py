"""The report's efficiency section: what each rule's trained network costs per inference and per
training sample (the ``efficiency`` record of every run's ``summary.json``,
:mod:`spikebench.train.efficiency`), and accuracy against those costs (C2's cost axes)."""

from __future__ import annotations

from pathlib import Path

from spikebench.io import save_figure
from spikebench.report.document import Block, Heading, Image, Para, Table
from spikebench.report.plots import subplots
from spikebench.report.records import RunRecord, Stat, group, stat


def _eff(r: RunRecord) -> dict | None:
    return (r.summary or {}).get("efficiency")


def _memory_mib(r: RunRecord) -> float | None:
    b = r.summary.get("peak_batch_tensor_bytes") or r.summary.get("peak_memory_bytes")
    return None if b is None else b / 2**20


def _num(s: Stat | None, scale: float = 1.0, fmt: str = ".3g") -> str:
    if s is None:
        return "–"
    return f"{s.mean * scale:{fmt}}" + (f" ± {s.std * scale:{fmt}}" if s.n > 1 else "")


def _rows(runs: list[RunRecord]) -> list[tuple[str, bool, list[RunRecord]]]:
    measured = [r for r in runs if r.ok and _eff(r) is not None]
    by = group(measured, lambda r: (r.summary["locality"]["rank"], r.rule, r.recurrent))
    return [(rule, rec, rs) for (_, rule, rec), rs in sorted(by.items())]


def _training_pj(e: dict) -> float | None:
    return e["energy"].get("training_sample_pj")


def efficiency_section(runs: list[RunRecord], out: Path) -> list[Block]:
    """Heading, table, notes and the accuracy-versus-cost plot for ``runs`` (those without an efficiency
    record, e.g. from an older spikebench, are left out)."""
    blocks: list[Block] = [Heading("Efficiency: spikes, synaptic operations and energy (estimates)")]
    rows = _rows(runs)
    if not rows:
        return [*blocks, Para("No run of this study has an efficiency record.")]
    table = []
    for rule, rec, rs in rows:
        effs = [_eff(r) for r in rs]
        n_layers = len(effs[0]["layers"])
        rates = " / ".join(
            _num(stat(e["layers"][i]["firing_rate"] for e in effs), fmt=".3f") for i in range(n_layers)
        )
        table.append(
            [
                rule,
                "rec" if rec else "ff",
                _num(stat(r.summary["test_accuracy"] for r in rs), fmt=".3f"),
                rates,
                _num(stat(e["synops"]["effective_acs"] for e in effs), 1e-6),
                _num(stat(e["synops"]["effective_macs"] for e in effs), 1e-6),
                _num(stat(e["synops"]["dense"] for e in effs), 1e-6),
                _num(stat(e["energy"]["inference_pj"] for e in effs), 1e-6),
                _num(stat(e["energy"]["dense_inference_pj"] for e in effs), 1e-6),
                _num(stat((e.get("rule_cost") or {}).get("macs") for e in effs), 1e-6),
                _num(stat((e.get("rule_cost") or {}).get("state") for e in effs), 1e-3),
                _num(stat(_training_pj(e) for e in effs), 1e-6),
                _num(stat(_memory_mib(r) for r in rs)),
            ]
        )
    blocks.append(
        Table(
            [
                "rule",
                "net",
                "accuracy",
                "firing rate per layer",
                "ACs (M)",
                "MACs (M)",
                "dense ops (M)",
                "inference (µJ)",
                "dense inference (µJ)",
                "update MACs (M)",
                "update state (k numbers)",
                "training sample (µJ)",
                "batch memory (MiB)",
            ],
            table,
        )
    )
    e0 = _eff(rows[0][2][0])["energy"]
    blocks.append(
        Para(
            "Per test sample, mean ± std over seeds. Firing rate: spikes per neuron per step. Synaptic "
            "operations follow NeuroBench: each nonzero input times its nonzero fan-out weights, recurrent "
            "weights included; accumulates (ACs) when the input is spikes, multiply-accumulates (MACs) when "
            "it is analogue (direct encoding's pixels); dense ops count every weight at every step. Update "
            "MACs and state: what the learning rule adds per training sample (its declared structure, "
            "checked against the products its implementation runs). Energies are estimates from "
            f"operation counts only ({e0['source']}; neuron updates count as multiply-adds); memory "
            "access, routing and static power are left out. A training sample's estimate is its forward "
            "pass plus the rule's update operations. Batch memory: exact tensor memory of one training "
            "batch on this machine."
        )
    )
    blocks.append(Image(accuracy_vs_cost(runs, out / "efficiency.png"), "accuracy vs cost"))
    return blocks


def accuracy_vs_cost(runs: list[RunRecord], path: Path) -> Path:
    """Points (one per rule and network, mean over seeds): test accuracy against estimated energy per
    inference, per training sample, and against the training memory of one batch."""
    fig, axes = subplots(1, 3, figsize=(13, 4))
    costs = [
        (lambda e, r: e["energy"]["inference_pj"] * 1e-6, "energy per inference (µJ, estimate)"),
        (lambda e, r: (_training_pj(e) or float("nan")) * 1e-6, "energy per training sample (µJ, estimate)"),
        (lambda e, r: _memory_mib(r), "training memory of one batch (MiB)"),
    ]
    for ax, (cost, label) in zip(axes, costs, strict=True):
        for rule, rec, rs in _rows(runs):
            x = stat(cost(_eff(r), r) for r in rs)
            y = stat(r.summary["test_accuracy"] for r in rs)
            if x is None or y is None:
                continue
            ax.scatter([x.mean], [y.mean], marker="s" if rec else "o", color="C1" if rec else "C0")
            ax.annotate(rule, (x.mean, y.mean), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set(xlabel=label, ylabel="test accuracy")
    axes[0].scatter([], [], marker="o", color="C0", label="feed-forward")
    axes[0].scatter([], [], marker="s", color="C1", label="recurrent")
    axes[0].legend()
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)[0]
