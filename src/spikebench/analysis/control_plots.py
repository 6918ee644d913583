"""Plots of the C1 controls (:mod:`spikebench.analysis.controls`), each as PNG and SVG.

- ``cka_controls``: per hidden layer, CKA with bptt of another seed against epoch: each rule's mean
  over seeds, beside the ceiling (bptt vs bptt of another seed, black) and the floor (an untrained
  network vs trained bptt, grey): dashed means with a band from the smallest to the largest value over
  seeds (and rules).
- ``alignment_controls``: per reference (bptt's objective, the rule's own), the mean cosine over seeds
  of each rule's update per layer (error bars: smallest to largest seed), with the random-direction
  baseline of each layer (97.5% quantile of |cos|) drawn as a black bar.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from spikebench.analysis.analyze import _figure, _integer_ticks
from spikebench.analysis.errors import AnalysisError
from spikebench.io import save_figure


def _band(rows: list[dict[str, Any]]) -> tuple[list[int], list[float], list[float], list[float]]:
    by_epoch: dict[int, list[float]] = {}
    for r in rows:
        by_epoch.setdefault(r["epoch"], []).append(r["value"])
    epochs = sorted(by_epoch)
    return (
        epochs,
        [min(by_epoch[e]) for e in epochs],
        [float(np.mean(by_epoch[e])) for e in epochs],
        [max(by_epoch[e]) for e in epochs],
    )


def cka_figure(record: dict[str, Any]) -> Any:
    layers = record["layers"]
    fig, axes = _figure(1, max(len(layers), 1), width=4.6)
    rules = list(dict.fromkeys(r["rule"] for r in record["cka"] if r["kind"] == "rule"))
    for ax, layer in zip(axes[0], layers, strict=False):
        rows = [r for r in record["cka"] if r["layer"] == layer]
        for rule in rules:
            epochs, _, mean, _ = _band([r for r in rows if r["kind"] == "rule" and r["rule"] == rule])
            if epochs:
                ax.plot(epochs, mean, marker="o", linewidth=1, label=rule)
        for kind, color, label in (
            ("ceiling", "black", "ceiling: bptt vs bptt"),
            ("floor", "tab:gray", "floor: untrained vs bptt"),
        ):
            band = [r for r in rows if r["kind"] == kind]
            if band:
                epochs, lo, mean, hi = _band(band)
                ax.fill_between(epochs, lo, hi, color=color, alpha=0.2, linewidth=0)
                ax.plot(epochs, mean, color=color, linestyle="--", linewidth=2, label=label)
        ax.set_title(f"{layer}: CKA with bptt of another seed")
        ax.set_xlabel("epoch")
        _integer_ticks(ax)
        ax.set_ylabel("linear CKA")
        ax.set_ylim(0.0, 1.05)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    return fig


def alignment_figure(record: dict[str, Any]) -> Any:
    refs = [r for r in ("bptt", "own") if any(a["reference"] == r for a in record["alignment"])]
    fig, axes = _figure(1, max(len(refs), 1), width=5.5)
    titles = {"bptt": "cosine with bptt's gradient", "own": "cosine with its own objective's exact gradient"}
    for ax, ref in zip(axes[0], refs, strict=False):
        rows = [a for a in record["alignment"] if a["reference"] == ref]
        layers = list(dict.fromkeys(a["layer"] for a in rows))
        rules = list(dict.fromkeys(a["rule"] for a in rows))
        width = 0.8 / max(len(rules), 1)
        for k, rule in enumerate(rules):
            xs, mean, err = [], [], [[], []]
            for j, layer in enumerate(layers):
                vals = [a["cosine"] for a in rows if a["rule"] == rule and a["layer"] == layer]
                if vals:
                    m = float(np.mean(vals))
                    xs.append(j - 0.4 + width * (k + 0.5))
                    mean.append(m)
                    err[0].append(m - min(vals))
                    err[1].append(max(vals) - m)
            ax.bar(xs, mean, width, yerr=err, label=rule, capsize=2)
        for j, layer in enumerate(layers):
            base = max(a["random_baseline"] for a in rows if a["layer"] == layer)
            ax.hlines([base, -base], j - 0.45, j + 0.45, colors="black", linewidth=2)
        ax.axhline(0.0, color="grey", linewidth=0.5)
        ax.set_xticks(range(len(layers)), layers)
        low = min([0.0, *(a["cosine"] for a in rows)])
        ax.set_ylim(min(-0.1, low - 0.05), 1.05)
        ax.set_ylabel("cosine (black: random direction, 97.5%)")
        ax.set_title(titles[ref])
        ax.grid(alpha=0.3, axis="y")
    axes[0, 0].legend(fontsize=7)
    return fig


def plot_controls(record: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write both control figures of ``record`` into ``out_dir`` (created); returns the files."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AnalysisError(f"cannot create {out_dir}: {exc.strerror or exc}") from exc
    written = save_figure(cka_figure(record), out_dir / "cka_controls", dpi=120)
    if record["alignment"]:
        written += save_figure(alignment_figure(record), out_dir / "alignment_controls", dpi=120)
    return written
