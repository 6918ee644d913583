"""The controls of claim C1 (similarity during training), from the records of a study's similarity runs.

Two networks of the same seed start from the same weights, so their CKA is 1 before training whatever
the rules do. Every comparison here is therefore made with a bptt network of *another* seed, the
partner ``p(s)`` of seed ``s`` (the next bptt seed after ``s``, cyclically):

- ``rule``: the rule's network of seed s against bptt of seed p(s), at the same epoch;
- ``ceiling``: bptt of seed s against bptt of seed p(s), at the same epoch (what two networks trained
  by the same exact rule from different initialisations share);
- ``floor``: the *untrained* network of seed s (epoch 0 of each run, one row per rule) against bptt of
  seed p(s) trained to the epoch (what a network that never learned shares).

Linear CKA (Kornblith et al. 2019) of per-neuron spike counts on the probe set, per hidden layer and
epoch. Gradient alignment, per layer (``all`` is left out: it weighs layers by their update sizes),
averaged over the measurements of the last epoch: the cosine of the rule's update with the exact
gradient of bptt's objective (``reference: bptt``) and of the rule's own (``reference: own``; the
per-step cross-entropy of the online rules), beside ``random_baseline``, the 97.5% quantile of |cos|
of a uniformly random direction in the layer's dimension
(:func:`~spikebench.analysis.alignment.random_cosine_quantile`). Test accuracy per rule and seed, and
chance (1 / classes), say whether a rule learned anything at all.

The record (``similarity_controls.json``)::

    {"schema": 1, "layers": [...], "cka": [{"rule", "seed", "layer", "epoch", "kind", "value"}],
     "alignment": [{"rule", "seed", "layer", "reference", "cosine", "random_baseline"}],
     "accuracy": {"<rule>": {"<seed>": acc}}, "chance": 0.1}

:func:`alignment_summary` condenses the alignment rows per rule, layer and reference into the mean cosine
over seeds with its bootstrap 95% CI over seeds (:func:`~spikebench.analysis.stats.bootstrap_ci`).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from spikebench.analysis.alignment import layer_of, random_cosine_quantile
from spikebench.analysis.analyze import _check_probe_sets, _layer_key, _read_jsonl, describe_runs
from spikebench.analysis.cka import linear_cka
from spikebench.analysis.errors import AnalysisError
from spikebench.analysis.probes import load_probes
from spikebench.analysis.stats import bootstrap_ci
from spikebench.records import ALIGNMENT_LOG, CHECKPOINT, REFERENCE_RULE, SUMMARY
from spikebench.rules import RULES

CONTROLS_SCHEMA = 1


def partners(seeds: list[int]) -> dict[int, int]:
    """For every seed in ``seeds`` (the bptt seeds), the next one after it, cyclically; at least two."""
    ordered = sorted(set(seeds))
    if len(ordered) < 2:
        raise AnalysisError(
            f"C1 controls need bptt runs of at least two seeds (found {ordered}): train bptt with another seed"
        )
    return {s: ordered[(i + 1) % len(ordered)] for i, s in enumerate(ordered)}


def partner_of(seed: int, pairs: dict[int, int]) -> int:
    """The bptt seed a run of ``seed`` is compared with: its partner when bptt has that seed, else the
    smallest bptt seed (never ``seed`` itself)."""
    return pairs.get(seed, min(pairs))


def _summary(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / SUMMARY).read_text())
    except (OSError, ValueError) as exc:
        raise AnalysisError(f"cannot read {path / 'summary.json'}: {exc}") from exc


def _checkpoint(path: Path) -> dict[str, Any]:
    import torch

    try:
        return torch.load(path / CHECKPOINT, map_location="cpu", weights_only=True)["model"]
    except Exception as exc:  # torch raises many types for corrupt files
        raise AnalysisError(f"cannot read the network of {path}: {type(exc).__name__}") from exc


def _checkpoint_classes(path: Path) -> int:
    """Number of classes of a run whose summary does not record it: its readout's bias length."""
    return int(_checkpoint(path)["readout.linear.bias"].numel())


def _layer_dims(path: Path, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Parameters per layer: recorded with the alignment rows, else counted in the checkpoint."""
    for row in rows:
        if row.get("sizes"):
            return {k: int(v) for k, v in row["sizes"].items()}
    dims: dict[str, int] = {}
    for name, t in _checkpoint(path).items():
        dims[layer_of(name)] = dims.get(layer_of(name), 0) + t.numel()
    return dims


def _alignment_rows(path: Path, rule: str, seed: int, online: bool) -> list[dict[str, Any]]:
    rows = _read_jsonl(path / ALIGNMENT_LOG, "gradient alignment", "grad_alignment")
    if not rows:
        return []
    last = max(r["epoch"] for r in rows)
    rows = [r for r in rows if r["epoch"] == last]
    dims = _layer_dims(path, rows)
    out = []
    for reference in (REFERENCE_RULE, "own"):
        if reference == REFERENCE_RULE:
            series = [r["layers"] for r in rows]
        elif all("own" in r for r in rows):
            series = [r["own"] for r in rows]
        elif not online:  # the rule's objective is bptt's
            series = [r["layers"] for r in rows]
        else:  # recorded before the own objective was measured
            continue
        layers = sorted({k for s in series for k in s if k != "all"}, key=_layer_key)
        for layer in layers:
            cos = [s[layer]["cosine"] for s in series if s.get(layer, {}).get("cosine") is not None]
            if not cos or layer not in dims:
                continue
            out.append(
                {
                    "rule": rule,
                    "seed": seed,
                    "layer": layer,
                    "reference": reference,
                    "cosine": statistics.fmean(cos),
                    "random_baseline": random_cosine_quantile(dims[layer]),
                }
            )
    return out


def similarity_controls(run_dirs: list[Path]) -> dict[str, Any]:
    """The C1 control record of ``run_dirs`` (a study's similarity runs: every rule, bptt with at least
    two seeds, all with ``train.track=[cka, grad_alignment]``)."""
    runs = describe_runs(run_dirs)
    summaries = [_summary(r.path) for r in runs]
    probes = [load_probes(r.path) for r in runs]
    _check_probe_sets(runs, probes)
    bptt = {r.cfg.train.seed: i for i, r in enumerate(runs) if r.cfg.rule.name == REFERENCE_RULE}
    pairs = partners(list(bptt))
    layers = sorted({name for p in probes for e in p.epochs.values() for name in e}, key=_layer_key)
    cka: list[dict[str, Any]] = []
    alignment: list[dict[str, Any]] = []
    accuracy: dict[str, dict[str, float]] = {}
    classes = set()
    for i, (run, rec) in enumerate(zip(runs, probes, strict=True)):
        rule, seed = run.cfg.rule.name, run.cfg.train.seed
        other = probes[bptt[partner_of(seed, pairs)]]
        kind = "ceiling" if rule == REFERENCE_RULE else "rule"
        untrained = rec.epochs.get(0, {})
        for epoch in sorted(set(rec.epochs) & set(other.epochs)):
            for layer in layers:
                ref = other.epochs[epoch].get(layer)
                if ref is None:
                    continue
                if layer in rec.epochs[epoch]:
                    value = linear_cka(rec.epochs[epoch][layer], ref)
                    cka.append(
                        {
                            "rule": rule,
                            "seed": seed,
                            "layer": layer,
                            "epoch": epoch,
                            "kind": kind,
                            "value": value,
                        }
                    )
                if layer in untrained:
                    value = linear_cka(untrained[layer], ref)
                    cka.append(
                        {
                            "rule": rule,
                            "seed": seed,
                            "layer": layer,
                            "epoch": epoch,
                            "kind": "floor",
                            "value": value,
                        }
                    )
        online = RULES.get(rule).online if rule in RULES else summaries[i]["locality"]["temporal"] == "online"
        alignment += _alignment_rows(run.path, rule, seed, online)
        accuracy.setdefault(rule, {})[str(seed)] = float(summaries[i]["test_accuracy"])
        classes.add(int(summaries[i].get("n_classes") or _checkpoint_classes(run.path)))
    if len(classes) > 1:
        raise AnalysisError(f"the similarity runs have different numbers of classes: {sorted(classes)}")
    return {
        "schema": CONTROLS_SCHEMA,
        "layers": layers,
        "partners": {str(s): p for s, p in pairs.items()},
        "cka": cka,
        "alignment": alignment,
        "accuracy": accuracy,
        "chance": 1.0 / classes.pop(),
    }


def alignment_summary(record: dict[str, Any], n_boot: int = 4000, seed: int = 0) -> list[dict[str, Any]]:
    """Per rule, layer and reference (in the record's order): ``{"rule", "layer", "reference", "cosine",
    "ci95", "seeds", "random_baseline"}`` -- the mean cosine over seeds, its percentile bootstrap 95% CI
    over seeds (None with fewer than two seeds: one seed has no spread to resample) and the largest
    random-direction baseline among the seeds' rows."""
    groups: dict[tuple[str, Any, str], list[dict[str, Any]]] = {}
    for row in record.get("alignment") or []:
        groups.setdefault((row["rule"], row["layer"], row["reference"]), []).append(row)
    out = []
    for (rule, layer, reference), rows in groups.items():
        by_seed: dict[int, float] = {}
        for r in rows:
            by_seed[int(r["seed"])] = float(r["cosine"])
        values = [by_seed[s] for s in sorted(by_seed)]
        ci = None
        if len(values) >= 2:
            lo, hi = bootstrap_ci(values, method="percentile", n_boot=n_boot, seed=seed)
            ci = [lo, hi]
        out.append(
            {
                "rule": rule,
                "layer": layer,
                "reference": reference,
                "cosine": statistics.fmean(values),
                "ci95": ci,
                "seeds": len(values),
                "random_baseline": max(float(r["random_baseline"]) for r in rows),
            }
        )
    return out
