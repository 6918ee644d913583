"""Plots of a study, drawn from records with matplotlib and saved as PNG (shown in the report) and SVG
(for papers), reproducibly (:func:`spikebench.io.save_figure`).

Figures are made without pyplot (:func:`subplots`), so drawing a report chooses no backend and leaves
pyplot's state, and a caller's interactive session, as they were.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spikebench.io import save_figure
from spikebench.report.records import RunRecord, group, stat


def subplots(*args: Any, figsize: tuple[float, float] | None = None, **kwargs: Any) -> tuple[Any, Any]:
    """Like ``matplotlib.pyplot.subplots``, but a figure of its own (saved through the Agg renderer)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)[0]  # the PNG, which the report shows


def accuracy_vs_locality(runs: list[RunRecord], path: Path) -> Path:
    """Mean test accuracy (± std over seeds) per rule, rules ordered by locality rank (a categorical axis:
    points, never lines; feed-forward and recurrent side by side); and accuracy against peak memory."""
    fig, (a, b) = subplots(1, 2, figsize=(10, 4))
    ok = [r for r in runs if r.ok]
    order = sorted({(r.summary["locality"]["rank"], r.rule) for r in ok})
    position = {name: i for i, (_, name) in enumerate(order)}
    for recurrent, marker, shift in ((False, "o", -0.12), (True, "s", 0.12)):
        by_rule = group([r for r in ok if r.recurrent == recurrent], lambda r: r.rule)
        names = sorted(by_rule, key=position.__getitem__)
        if not names:
            continue
        accs = [stat(r.summary["test_accuracy"] for r in by_rule[n]) for n in names]
        label = "recurrent" if recurrent else "feed-forward"
        a.errorbar(
            [position[n] + shift for n in names],
            [s.mean for s in accs],
            yerr=[s.std for s in accs],
            marker=marker,
            linestyle="none",
            capsize=3,
            label=label,
        )
        mems = [
            stat(
                (r.summary.get("peak_batch_tensor_bytes") or r.summary.get("peak_memory_bytes") or 0) / 2**20
                for r in by_rule[n]
            )
            for n in names
        ]
        b.scatter([m.mean for m in mems], [s.mean for s in accs], marker=marker, label=label)
        for name, m, s in zip(names, mems, accs, strict=True):
            b.annotate(name, (m.mean, s.mean), fontsize=7, xytext=(3, 3), textcoords="offset points")
    a.set_xticks(range(len(order)), [f"{name}\n(rank {rank})" for rank, name in order], fontsize=8)
    a.set(xlabel="rule, least to most local", ylabel="test accuracy", title="accuracy vs locality")
    b.set(xlabel="training memory of one batch (MiB)", ylabel="test accuracy", title="accuracy vs memory")
    a.grid(axis="y", alpha=0.3)
    a.legend(loc="best", fontsize=8)
    b.legend(loc="best", fontsize=8)
    return _save(fig, path)


def robustness_curves(runs: list[RunRecord], attack: str, path: Path) -> Path | None:
    """Accuracy vs eps under ``attack``, feed-forward (solid) and recurrent (dashed), one colour per rule."""
    by = group(
        [r for r in runs if r.ok and r.attack_curve(attack)], lambda r: (r.dataset, r.rule, r.recurrent)
    )
    if not by:
        return None
    datasets = sorted({k[0] for k in by})
    fig, axes = subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    colours = {}
    for ax, ds in zip(axes[0], datasets, strict=True):
        for (d, rule, rec), rs in sorted(by.items()):
            if d != ds:
                continue
            eps = sorted(rs[0].attack_curve(attack))
            acc = [stat(r.attack_curve(attack).get(e) for r in rs).mean for e in eps]
            colour = colours.setdefault(rule, f"C{len(colours) % 10}")
            ax.plot(
                eps, acc, "--" if rec else "-", marker="o", color=colour, label=rule + (" rec" if rec else "")
            )
        ax.set(xlabel="eps", ylabel="accuracy", title=f"{attack} on {ds}")
        ax.legend(fontsize=7)
    return _save(fig, path)


def attack_bars(runs: list[RunRecord], attacks: list[str], path: Path) -> Path | None:
    """Per rule, accuracy (mean over the eps sweep) under each attack."""
    by_rule = group([r for r in runs if r.ok], lambda r: r.rule)
    names = sorted(by_rule, key=lambda n: by_rule[n][0].summary["locality"]["rank"])
    present = [a for a in attacks if any(r.attack_curve(a) for r in runs)]
    if not names or not present:
        return None
    fig, ax = subplots(figsize=(max(6, 1.2 * len(names)), 4))
    width = 0.8 / len(present)
    for i, attack in enumerate(present):
        vals = []
        for n in names:
            s = stat(sum(c.values()) / len(c) for r in by_rule[n] if (c := r.attack_curve(attack)))
            vals.append(s.mean if s else 0.0)
        ax.bar([j + i * width for j in range(len(names))], vals, width, label=attack)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names, rotation=30)
    ax.set(ylabel="accuracy (mean over eps)", title="accuracy under attack, by gradient source")
    ax.legend(fontsize=7)
    return _save(fig, path)


def forest(
    title: str,
    rows: list[tuple[str, float, float, float]],
    pooled: tuple[float, float, float] | None,
    path: Path,
    null: float = 0.0,
    margin: float | None = None,
    xlabel: str = "effect",
) -> Path | None:
    """A forest plot: one point with its 95% CI bar per row (``label, effect, lo, hi``), the pooled effect as
    a diamond at the bottom, the null as a vertical line and the equivalence margin as a shaded band.
    Written as PNG and, beside it, SVG; returns the PNG's path."""
    if not rows:
        return None
    labels = [r[0] for r in rows] + (["pooled"] if pooled else [])
    fig, ax = subplots(figsize=(7.5, 0.45 * len(labels) + 1.4))
    y = list(range(len(labels)))[::-1]
    if margin is not None:
        ax.axvspan(null - margin, null + margin, color="0.9", label=f"margin ±{margin:g}")
    ax.axvline(null, color="0.4", lw=1, ls=":", label=f"null ({null:g})")
    for yi, (_, m, lo, hi) in zip(y, rows, strict=False):
        ax.errorbar([m], [yi], xerr=[[m - lo], [hi - m]], fmt="o", color="C0", capsize=3)
    if pooled:
        m, lo, hi = pooled
        ax.errorbar([m], [y[-1]], xerr=[[m - lo], [hi - m]], fmt="D", color="C3", capsize=4, ms=8)
    ax.set_yticks(y, labels)
    ax.set(xlabel=xlabel, title=title, ylim=(-0.8, len(labels) - 0.2))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, path)
