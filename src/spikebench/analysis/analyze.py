"""``spikebench analyze``: analyses of finished runs, written as a JSON record plus plots (registry
"analysis").

- ``cka``: from the probes recorded with ``train.track=[cka]``, CKA between every pair of runs per layer
  and epoch (``cka.json``), a run x run heatmap per layer at each run's final epoch
  (``cka_final_<layer>.png``) and CKA with a reference run against epoch (``cka_vs_reference.png``).
- ``alignment``: from ``alignment.jsonl`` (``train.track=[grad_alignment]``), the cosine and norm ratio of
  each rule's update to the BPTT gradient against training steps (``alignment.json``,
  ``alignment.png``).
- ``fisher``: Fisher information of each run's trained network per time prefix, computed now from its
  checkpoint (``fisher.json``, ``fisher_prefix.png``), and over epochs when it was tracked with
  ``train.track=[fisher]`` (``fisher_epochs.png``).

Records carry ``"schema": 1`` and list the runs they come from (path, label, rule, recurrent, seed).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spikebench.analysis.cka import Kernel, cka_matrix
from spikebench.analysis.errors import AnalysisError
from spikebench.analysis.probes import ProbeRecord, load_probes
from spikebench.config import Config
from spikebench.io import atomic_save_fig, atomic_write_json
from spikebench.records import ALIGNMENT_LOG, FISHER_LOG, REFERENCE_RULE
from spikebench.registry import Registry
from spikebench.rundir import load_run, read_config
from spikebench.train.seeding import exact_numerics

ANALYSIS_SCHEMA = 1
PROBE_KEYS = ("dataset", "encoder", "timesteps", "samples", "digest", "encoding_seed")


@dataclass(frozen=True)
class AnalyzeOptions:
    """Options of the analyses (each reads the ones it needs).

    ``kernel``, ``bandwidth``, ``debiased``: CKA's kernel, RBF width factor and unbiased estimator;
    ``reference``: the run CKA is plotted against (default: the first bptt run, a feed-forward one if
    there is one); ``samples``: test
    samples for ``fisher`` (default: each run's ``train.fisher_size``); ``device``: where to compute.
    """

    kernel: Kernel = "linear"
    bandwidth: float = 1.0
    debiased: bool = False
    reference: Path | None = None
    samples: int | None = None
    device: str | None = None


@dataclass
class AnalysisOutput:
    """What an analysis produced: the JSON record, figures by file name, and summary lines."""

    name: str
    record: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


Analysis = Callable[[list[Path], AnalyzeOptions], AnalysisOutput]
ANALYSES: Registry[Analysis] = Registry("analysis")


@dataclass
class RunInfo:
    """A run directory with its config and a label for tables and plots (rule, "rec" if recurrent)."""

    path: Path
    cfg: Config
    label: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "label": self.label,
            "rule": self.cfg.rule.name,
            "recurrent": self.cfg.model.recurrent,
            "seed": self.cfg.train.seed,
        }


def describe_runs(run_dirs: list[Path]) -> list[RunInfo]:
    """Read each run's config (a run given twice counts once); label runs by rule (+ " rec" when
    recurrent), made unique by seed, then by folder name."""
    unique = {Path(p).resolve(): Path(p) for p in reversed(run_dirs)}
    paths = list(reversed(unique.values()))
    cfgs = [read_config(p) for p in paths]
    labels = [c.rule.name + (" rec" if c.model.recurrent else "") for c in cfgs]
    for extra in (lambda i: f" s{cfgs[i].train.seed}", lambda i: f" ({paths[i].name})"):
        dup = {x for x in labels if labels.count(x) > 1}
        labels = [x + extra(i) if x in dup else x for i, x in enumerate(labels)]
    return [RunInfo(p, c, x) for p, c, x in zip(paths, cfgs, labels, strict=True)]


def _reference(runs: list[RunInfo], reference: Path | None) -> int:
    if reference is not None:
        return [r.path.resolve() for r in runs].index(Path(reference).resolve())
    bptt = [i for i, r in enumerate(runs) if r.cfg.rule.name == REFERENCE_RULE]
    plain = [i for i in bptt if not runs[i].cfg.model.recurrent]
    return (plain or bptt or [0])[0]


def _figure(rows: int, cols: int, width: float = 4.2, height: float = 3.4) -> tuple[Any, np.ndarray]:
    """A matplotlib figure (no pyplot state, Agg canvas) and its [rows, cols] axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    return fig, np.asarray(fig.subplots(rows, cols, squeeze=False))


LEGEND_RUNS = 10  # a plot of more runs than this colours them by rule, one legend entry per rule


def _run_styles(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Line keywords per run (``RunInfo.to_dict`` form). Up to ``LEGEND_RUNS`` runs each get their own
    colour and legend entry; more are drawn thin in the colour of their rule (plus " rec" when
    recurrent) and labelled by it, so that :func:`_legend` has one entry per rule."""
    if len(runs) <= LEGEND_RUNS:
        return [{"marker": ".", "label": r["label"]} for r in runs]
    from matplotlib import colormaps

    groups = [r["rule"] + (" rec" if r["recurrent"] else "") for r in runs]
    names = list(dict.fromkeys(groups))
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return [
        {"color": cmap(names.index(g) % cmap.N), "linewidth": 0.8, "alpha": 0.7, "label": g} for g in groups
    ]


def _legend(fig: Any) -> None:
    """One legend for the whole figure, outside the axes on the right, so that however many entries it
    has it never squeezes the plots (entries from every axes, each label once)."""
    entries: dict[str, Any] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside right upper", fontsize=8)


def _integer_ticks(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _float_or_nan(v: float | None) -> float:
    return float("nan") if v is None else v


# ---------------------------------------------------------------------------------------------
# CKA


def _check_probe_sets(runs: list[RunInfo], probes: list[ProbeRecord]) -> None:
    first = {k: probes[0].meta.get(k) for k in PROBE_KEYS}
    for run, rec in zip(runs[1:], probes[1:], strict=True):
        other = {k: rec.meta.get(k) for k in PROBE_KEYS}
        if other != first:
            diff = ", ".join(f"{k} {first[k]} vs {other[k]}" for k in PROBE_KEYS if first[k] != other[k])
            raise AnalysisError(
                f"runs {runs[0].path} and {run.path} do not share a probe set ({diff}); "
                "CKA compares runs on the same data, encoder, timesteps and train.probe_size"
            )


def _layer_key(name: str) -> tuple[int, str]:
    tail = name.rsplit(".", 1)[-1]
    return (int(tail), name) if tail.isdigit() else (1 << 30, name)


@ANALYSES.register("cka")
def analyze_cka(run_dirs: list[Path], opts: AnalyzeOptions) -> AnalysisOutput:
    """CKA between the hidden layers of runs, per layer and epoch (Kornblith et al. 2019)."""
    paths = [*run_dirs, *([] if opts.reference is None else [opts.reference])]
    runs = describe_runs(paths)
    probes = [load_probes(r.path) for r in runs]
    _check_probe_sets(runs, probes)
    ref = _reference(runs, opts.reference)
    layers = sorted({name for p in probes for e in p.epochs.values() for name in e}, key=_layer_key)
    epochs = sorted({e for p in probes for e in p.epochs})

    def matrix(layer: str, chosen: list[int | None]) -> list[list[float | None]]:
        """CKA between runs for ``layer``, run i at epoch ``chosen[i]`` (None: left out)."""
        have = [(i, e) for i, e in enumerate(chosen) if e is not None and layer in probes[i].epochs[e]]
        out: list[list[float | None]] = [[None] * len(runs) for _ in runs]
        if have:
            reps = [probes[i].epochs[e][layer] for i, e in have]
            values = cka_matrix(reps, opts.kernel, opts.bandwidth, opts.debiased)
            for a, (i, _) in enumerate(have):
                for b, (j, _) in enumerate(have):
                    out[i][j] = float(values[a, b])
        return out

    final = {layer: matrix(layer, [max(p.epochs) for p in probes]) for layer in layers}
    pairs = []
    for epoch in epochs:
        for layer in layers:
            m = matrix(layer, [epoch if epoch in p.epochs else None for p in probes])
            pairs += [
                {"layer": layer, "epoch": epoch, "a": i, "b": j, "cka": m[i][j]}
                for i in range(len(runs))
                for j in range(i + 1, len(runs))
                if m[i][j] is not None
            ]
    record = {
        "schema": ANALYSIS_SCHEMA,
        "analysis": "cka",
        "kernel": opts.kernel,
        "bandwidth": opts.bandwidth if opts.kernel == "rbf" else None,
        "debiased": opts.debiased,
        "probe": {k: probes[0].meta.get(k) for k in PROBE_KEYS},
        "runs": [{**r.to_dict(), "epochs": sorted(p.epochs)} for r, p in zip(runs, probes, strict=True)],
        "reference": ref,
        "layers": layers,
        "final": final,
        "pairs": pairs,
    }
    out = AnalysisOutput("cka", record)
    labels = [r.label for r in runs]
    for layer in layers:
        out.figures[f"cka_final_{layer.replace('.', '_')}.png"] = _heatmap(final[layer], labels, layer, opts)
    out.figures["cka_vs_reference.png"] = _cka_vs_reference(record, labels)
    for layer in layers:
        row = ", ".join(
            f"{labels[i]} {v:.3f}" for i, v in enumerate(final[layer][ref]) if i != ref and v is not None
        )
        out.lines.append(f"{layer}: CKA with {labels[ref]} at the final epoch: {row or 'no other run'}")
    return out


def _heatmap(values: list[list[float | None]], labels: list[str], layer: str, opts: AnalyzeOptions) -> Any:
    fig, axes = _figure(1, 1, width=1.0 + 0.6 * len(labels) + 2.0, height=1.0 + 0.6 * len(labels))
    ax = axes[0, 0]
    data = np.array([[_float_or_nan(v) for v in row] for row in values])
    image = ax.imshow(data, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    if len(labels) <= 12:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if np.isfinite(data[i, j]):
                    color = "black" if data[i, j] > 0.6 else "white"
                    ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=8, color=color)
    kind = f"{'debiased ' if opts.debiased else ''}{opts.kernel} CKA"
    ax.set_title(f"{kind}, {layer}, final epoch")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def _cka_vs_reference(record: dict[str, Any], labels: list[str]) -> Any:
    layers, ref = record["layers"], record["reference"]
    styles = _run_styles(record["runs"])
    fig, axes = _figure(1, max(len(layers), 1))
    for ax, layer in zip(axes[0], layers, strict=False):
        for i, style in enumerate(styles):
            if i == ref:
                continue
            points = sorted(
                (p["epoch"], p["cka"])
                for p in record["pairs"]
                if p["layer"] == layer and {p["a"], p["b"]} == {i, ref}
            )
            if points:
                ax.plot(*zip(*points, strict=True), **style)
        ax.set_title(f"{layer}: CKA with {labels[ref]}")
        ax.set_xlabel("epoch")
        _integer_ticks(ax)
        ax.set_ylabel("CKA")
        ax.set_ylim(0.0, 1.05)
        ax.grid(alpha=0.3)
    _legend(fig)
    return fig


# ---------------------------------------------------------------------------------------------
# gradient alignment


def _read_jsonl(path: Path, what: str, track: str) -> list[dict[str, Any]]:
    if not path.is_file():
        raise AnalysisError(f"{path.parent} has no {what} records (train it with train.track=[{track}])")
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise AnalysisError(f"cannot read {path}: {exc}") from exc


@ANALYSES.register("alignment")
def analyze_alignment(run_dirs: list[Path], opts: AnalyzeOptions) -> AnalysisOutput:
    """Cosine and norm ratio of each rule's update to the BPTT gradient, per layer, over training."""
    runs = describe_runs(run_dirs)
    series = []
    for run in runs:
        rows = _read_jsonl(run.path / ALIGNMENT_LOG, "gradient alignment", "grad_alignment")
        layers = list(dict.fromkeys(name for row in rows for name in row["layers"]))
        series.append(
            {
                "step": [row["step"] for row in rows],
                "epoch": [row["epoch"] for row in rows],
                "layers": {
                    name: {
                        key: [row["layers"].get(name, {}).get(key) for row in rows]
                        for key in ("cosine", "norm_ratio")
                    }
                    for name in layers
                },
            }
        )
    record = {
        "schema": ANALYSIS_SCHEMA,
        "analysis": "alignment",
        "runs": [r.to_dict() for r in runs],
        "series": series,
    }
    out = AnalysisOutput("alignment", record)
    out.figures["alignment.png"] = _alignment_plot(runs, series)
    for run, s in zip(runs, series, strict=True):
        means = []
        for name, values in s["layers"].items():
            cos = [v for v in values["cosine"] if v is not None]
            means.append(f"{name} {np.mean(cos):.3f}" if cos else f"{name} n/a")
        out.lines.append(f"{run.label}: mean cosine with BPTT: {', '.join(means)}")
    return out


def _alignment_plot(runs: list[RunInfo], series: list[dict[str, Any]]) -> Any:
    layers = list(dict.fromkeys(name for s in series for name in s["layers"]))
    styles = _run_styles([r.to_dict() for r in runs])
    fig, axes = _figure(2, len(layers))
    for col, layer in enumerate(layers):
        for style, s in zip(styles, series, strict=True):
            if layer not in s["layers"]:
                continue
            for row, key in enumerate(("cosine", "norm_ratio")):
                y = [_float_or_nan(v) for v in s["layers"][layer][key]]
                axes[row, col].plot(s["step"], y, **style)
        axes[0, col].set_title(f"{layer}")
        axes[0, col].set_ylabel("cosine with BPTT")
        axes[0, col].set_ylim(-1.05, 1.05)
        axes[1, col].set_ylabel("|update| / |BPTT gradient|")
        axes[1, col].set_yscale("log")
        for row in range(2):
            axes[row, col].set_xlabel("training step (batches)")
            axes[row, col].grid(alpha=0.3)
    _legend(fig)
    return fig


# ---------------------------------------------------------------------------------------------
# Fisher information


@ANALYSES.register("fisher")
def analyze_fisher(run_dirs: list[Path], opts: AnalyzeOptions) -> AnalysisOutput:
    """Trace of the empirical Fisher information of trained networks, per layer and time prefix."""
    from spikebench.analysis.tracking import probe_fisher

    runs = describe_runs(run_dirs)
    results = []
    for run in runs:
        built = load_run(run.path, opts.device, n_test=opts.samples or run.cfg.train.fisher_size)
        split = built.test
        if len(split) == 0:
            raise AnalysisError(f"{run.path}: no test samples to compute Fisher information on")
        built.net.eval()
        with exact_numerics():
            info = probe_fisher(built.net, built.cfg, split)
        tracked = run.path / FISHER_LOG
        epochs = _read_jsonl(tracked, "Fisher", "fisher") if tracked.is_file() else []
        results.append({"final": info.to_dict(), "epochs": epochs})
    record = {
        "schema": ANALYSIS_SCHEMA,
        "analysis": "fisher",
        "runs": [r.to_dict() for r in runs],
        "results": results,
    }
    out = AnalysisOutput("fisher", record)
    out.figures["fisher_prefix.png"] = _fisher_prefix_plot(runs, results)
    if any(r["epochs"] for r in results):
        out.figures["fisher_epochs.png"] = _fisher_epochs_plot(runs, results)
    for run, r in zip(runs, results, strict=True):
        final = r["final"]
        layers = ", ".join(f"{k} {v:.4g}" for k, v in final["layers"].items())
        n = final["samples"]
        out.lines.append(f"{run.label}: Fisher trace {final['total']:.4g} ({layers}) on {n} samples")
    return out


def _fisher_prefix_plot(runs: list[RunInfo], results: list[dict[str, Any]]) -> Any:
    layers = list(dict.fromkeys(k for r in results for k in r["final"]["prefix_layers"]))
    panels = ["total", *layers]
    styles = _run_styles([r.to_dict() for r in runs])
    fig, axes = _figure(1, len(panels))
    for ax, panel in zip(axes[0], panels, strict=True):
        for style, r in zip(styles, results, strict=True):
            final = r["final"]
            y = final["prefix"] if panel == "total" else final["prefix_layers"].get(panel)
            if y:
                ax.plot(range(1, len(y) + 1), y, **style)
        ax.set_title(f"Fisher trace, {panel}")
        ax.set_xlabel("time prefix t (readout over steps 1..t)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    _legend(fig)
    return fig


def _fisher_epochs_plot(runs: list[RunInfo], results: list[dict[str, Any]]) -> Any:
    styles = _run_styles([r.to_dict() for r in runs])
    fig, axes = _figure(1, 1, width=6.0)
    ax = axes[0, 0]
    for style, r in zip(styles, results, strict=True):
        if r["epochs"]:
            epochs, totals = [e["epoch"] for e in r["epochs"]], [e["total"] for e in r["epochs"]]
            ax.plot(epochs, totals, **style)
    ax.set_title("Fisher trace (all T steps) over training")
    ax.set_xlabel("epoch")
    _integer_ticks(ax)
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    _legend(fig)
    return fig


# ---------------------------------------------------------------------------------------------


def write_output(output: AnalysisOutput, out_dir: Path) -> list[Path]:
    """Write ``<name>.json`` and the figures (PNG) into ``out_dir``, each file atomically."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AnalysisError(f"cannot create {out_dir}: {exc.strerror or exc}") from exc
    written = []
    for name, fig in output.figures.items():
        atomic_save_fig(fig, out_dir / name, dpi=120)
        written.append(out_dir / name)
    path = out_dir / f"{output.name}.json"
    atomic_write_json(path, output.record)
    return [path, *written]


def run_analysis(
    name: str, run_dirs: list[Path], opts: AnalyzeOptions, out_dir: Path
) -> tuple[AnalysisOutput, list[Path]]:
    """Run the registered analysis ``name`` on ``run_dirs`` and write its record and plots to ``out_dir``
    (nothing is written when the analysis fails)."""
    output = ANALYSES.get(name)(run_dirs, opts)
    return output, write_output(output, out_dir)
