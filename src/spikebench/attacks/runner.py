"""Run an attack on a trained run over a list of eps and record the results.

An attack is an :class:`~spikebench.attacks.request.AttackRequest`. :func:`run_attack` works on runs
already loaded (:func:`spikebench.rundir.load_run`) and returns a report (plain data, schema
:data:`SCHEMA`); :func:`attack_run` checks the request against the run's config, reads the runs from
disk (only the first n test samples), and writes ``RUN_DIR/attacks/<stem>.json`` (atomically) and a
robustness curve ``<stem>.png`` beside it, where ``<stem>`` is the request's
:attr:`~spikebench.attacks.request.AttackRequest.stem`. Perturbed inputs stay in the input domain the
dataset declares (:func:`spikebench.data.input_domain`: [0, 1] for images). One record per eps:

- ``accuracy``: fraction of the n test samples classified correctly both clean and under attack;
- ``attack_success_rate``: fraction of the originally correct samples that the attack makes wrong;
- ``mean_perturbation_norm`` / ``max_perturbation_norm``: ``||x_adv - x||`` in the threat norm;
- ``correct``: one character per attacked sample (the first n test samples, in order), "1" where the
  sample is classified correctly both clean and under attack, so ``accuracy`` is its fraction of "1";
  per-sample worst cases over attacks are ANDs of these (:mod:`spikebench.attacks.evidence`);
- ``queries``: mean model calls per sample spent by the attack (gradient evaluations x EOT draws for
  gradient attacks; the final evaluation is not counted); ``seconds``: wall-clock time of the attack;
- iterative gradient attacks (PGD, APGD) crafted on the target itself add ``convergence``: steps ->
  accuracy had each restart stopped after that many steps (10, 20, 50, 100 below the budget, and the
  budget), from the first iterate that broke each sample;
- with ``sanity_eps``, one more record at that (large) eps carries ``sanity: true``: there the attack
  must leave about no accuracy (at most :data:`spikebench.attacks.evidence.SANITY_MAX_ACCURACY`), or
  the report's notes say it failed; curves and verdicts skip it;
- transfer attacks add ``source_accuracy``: accuracy of the crafted examples on the run they were
  crafted on;
  gradient-free attacks add ``reference`` (exact-gradient PGD on the same samples with the same steps,
  restarts and EOT, with its ``correct`` string), ``masking_test`` (the exact sign test of
  :func:`spikebench.attacks.evidence.masking_test` on the samples where the two disagree) and
  ``gradient_masking``: true when that test finds the gradient-free attack significantly stronger --
  a sign that the exact gradients mislead (Athalye et al. 2018).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import spikebench
from spikebench import components
from spikebench.attacks.adapter import Classifier, ExactGradient, GradientSource, RuleGradient
from spikebench.attacks.base import ATTACKS, Target
from spikebench.attacks.gradient import PGD
from spikebench.attacks.request import GRAD_SOURCES, AttackRequest, Surrogate, report_stem
from spikebench.attacks.threat import AttackError, ThreatModel
from spikebench.data import input_domain
from spikebench.dynamics import make_surrogate
from spikebench.io import atomic_save_fig, atomic_write_json
from spikebench.precision import compute
from spikebench.rundir import Built, TrainedRun, load_run, read_config
from spikebench.train.seeding import exact_numerics, generator

log = logging.getLogger(__name__)

SCHEMA = 1
__all__ = ["GRAD_SOURCES", "SCHEMA", "AttackRequest", "attack_run", "report_stem", "run_attack"]

Run = Built | TrainedRun
"""A trained network with its config and test samples: read back from disk, or just trained."""


def check_compatible(target: Run, source: Run) -> None:
    """A transfer source must take inputs of the same shape and predict the same classes."""
    shape, src_shape = tuple(target.test.x.shape[1:]), tuple(source.test.x.shape[1:])
    if shape != src_shape:
        raise AttackError(f"source run takes inputs of shape {list(src_shape)}, the target {list(shape)}")
    if target.n_classes != source.n_classes:
        raise AttackError(f"source run has {source.n_classes} classes, the target {target.n_classes}")


def checkpoints(steps: int) -> list[int]:
    """Steps at which a convergence record reads the accuracy: 10, 20, 50, 100 below ``steps``, and
    ``steps``."""
    return [c for c in (10, 20, 50, 100) if c < steps] + [steps]


def _bits(ok: torch.Tensor) -> str:
    return "".join("1" if v else "0" for v in ok.tolist())


def _classifier(run: Run, seed: int, surrogate: Surrogate | None) -> Classifier:
    s = None
    if surrogate is not None:
        name, scale = surrogate
        s = make_surrogate(name, scale if scale is not None else run.cfg.model.surrogate_scale)
    enc = components.build_encoding(run.cfg, generator(seed, 99, run.device))  # reseeded per use
    return Classifier(run.net, enc, s)


def run_attack(
    target: Run,
    request: AttackRequest,
    *,
    source: Run | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Attack the first ``request.n`` test samples of ``target`` at every eps; return the report (module
    doc). ``source``: the run transfer examples are crafted on (``request.source_run`` is not read
    here). ``progress`` is called with the number of samples done after every batch.
    """
    from spikebench.attacks.evidence import MASKING_ALPHA, SANITY_MAX_ACCURACY, masking_test

    request.check_source(source is not None)
    if source is not None:
        check_compatible(target, source)
    options, seed, batch_size, surrogate = (
        request.options,
        request.seed,
        request.batch_size,
        request.surrogate,
    )
    domain = target.domain.bounds
    request.check_domain(domain, target.test.x[0].numel())
    cls = ATTACKS.get(request.attack)
    x_all, y_all = target.test.x[: request.n], target.test.y[: request.n]
    device = target.device
    model = _classifier(target, seed, surrogate)
    if request.grad_source == "transfer":
        assert source is not None
        crafter = _classifier(source, seed, surrogate)
        gradient: GradientSource = ExactGradient(crafter, options.eot)
    else:
        crafter = model
        gradient = (
            RuleGradient(model, target.rule, options.eot)
            if request.grad_source == "rule"
            else ExactGradient(model, options.eot)
        )
    craft = Target(crafter, gradient)
    check = cls.kind != "gradient" and request.reference
    if check:  # exact-gradient PGD beside the gradient-free attack, with its own encoder draws
        reference_model = _classifier(target, seed, surrogate)
        pgd, exact = PGD(options), Target(reference_model, ExactGradient(reference_model, options.eot))

    model.reseed(generator(seed, 98, device))
    starts = range(0, len(y_all), batch_size)
    clean = torch.cat([model(x_all[i : i + batch_size].to(device)).argmax(1).cpu() for i in starts]).eq(y_all)
    records = []
    track = cls.kind == "gradient" and crafter is model and options.steps >= 1
    for i, e in enumerate(request.sweep):
        threat = ThreatModel(request.norm, e, domain)
        # each eps draws from its own streams: its result does not depend on what ran before it
        gen, ref_gen = generator(seed, 100 + 10 * i, device), generator(seed, 101 + 10 * i, device)
        model.reseed(generator(seed, 102 + 10 * i, device))
        if crafter is not model:
            crafter.reseed(generator(seed, 103 + 10 * i, device))
        if check:
            exact.model.reseed(generator(seed, 104 + 10 * i, device))
        seconds = 0.0
        adv_ok, src_ok, ref_ok, norms, queries, broken_at = [], [], [], [], [], []
        for b in range(0, len(y_all), batch_size):
            x, y = x_all[b : b + batch_size].to(device), y_all[b : b + batch_size].to(device)
            t0 = time.perf_counter()
            result = cls(options).perturb(craft, x, y, threat, gen)
            seconds += time.perf_counter() - t0
            adv_ok.append(model(result.x_adv).argmax(1).eq(y).cpu())
            if crafter is not model:
                src_ok.append(crafter(result.x_adv).argmax(1).eq(y).cpu())
            if check:
                ref = pgd.perturb(exact, x, y, threat, ref_gen)
                ref_ok.append(exact.model(ref.x_adv).argmax(1).eq(y).cpu())
            norms.append(threat.norms(result.x_adv - x).cpu())
            queries.append(result.queries.cpu())
            if result.broken_at is not None:
                broken_at.append(result.broken_at.cpu())
            if progress is not None:
                progress(len(y))
        ok = clean & torch.cat(adv_ok)
        delta = torch.cat(norms).double()
        n_clean = int(clean.sum())
        record: dict[str, Any] = {
            "eps": e,
            "accuracy": ok.double().mean().item(),
            "attack_success_rate": 1.0 - int(ok.sum()) / n_clean if n_clean else None,
            "mean_perturbation_norm": delta.mean().item(),
            "max_perturbation_norm": delta.max().item(),
            "queries": torch.cat(queries).double().mean().item(),
            "seconds": seconds,
            "correct": _bits(ok),
        }
        if track and len(broken_at) == len(adv_ok):
            at = torch.cat(broken_at)
            record["convergence"] = {
                str(c): (clean & ~((at >= 0) & (at <= c))).double().mean().item()
                for c in checkpoints(options.steps)
            }
        if i >= len(request.eps):
            record["sanity"] = True
        if src_ok:
            record["source_accuracy"] = torch.cat(src_ok).double().mean().item()
        if check:
            ref = clean & torch.cat(ref_ok)
            record["reference"] = {
                "attack": "pgd",
                "grad_source": "exact",
                "accuracy": ref.double().mean().item(),
                "correct": _bits(ref),
            }
            test = masking_test(record["reference"]["correct"], record["correct"])
            record["masking_test"] = test.to_dict()
            record["gradient_masking"] = test.masked
        log.info("%s eps=%g: accuracy %.4f", request.attack, e, record["accuracy"])
        records.append(record)

    masked = [r["eps"] for r in records if r.get("gradient_masking") and not r.get("sanity")]
    notes = (
        [
            f"possible gradient masking: {request.attack} breaks significantly more samples than exact-gradient "
            f"PGD (one-sided sign test, p < {MASKING_ALPHA}) at eps {', '.join(f'{e:g}' for e in masked)}"
        ]
        if masked
        else []
    )
    for r in records:
        if r.get("sanity") and r["accuracy"] > SANITY_MAX_ACCURACY:
            notes.append(
                f"sanity check failed: {request.attack} leaves accuracy {r['accuracy']:.3f} at eps {r['eps']:g}, "
                f"where about none should remain (at most {SANITY_MAX_ACCURACY})"
            )
    cfg = target.cfg
    return {
        "schema": SCHEMA,
        "attack": request.attack,
        "kind": cls.kind,
        "description": ATTACKS.describe(request.attack),
        "grad_source": request.grad_source if cls.kind == "gradient" else None,
        "norm": request.norm,
        "eps": list(request.eps),
        "sanity_eps": request.sanity_eps,
        "n": len(y_all),
        "seed": seed,
        "options": dataclasses.asdict(options),
        "surrogate": None if surrogate is None else {"name": surrogate[0], "scale": surrogate[1]},
        "rule": cfg.rule.name,
        "dataset": cfg.data.name,
        "encoding": cfg.data.encoder,
        "recurrent": cfg.model.recurrent,
        "timesteps": cfg.data.timesteps,
        "clean_accuracy": clean.double().mean().item(),
        "records": records,
        "gradient_masking": bool(masked) if check else None,
        "notes": notes,
        "device": str(device),
        "spikebench_version": spikebench.__version__,
        "torch_version": torch.__version__,
    }


def save_plot(report: dict[str, Any], path: Path) -> None:
    """Robustness curve (accuracy against eps) of a report as a PNG, written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    rows = [r for r in report["records"] if not r.get("sanity")]
    eps = [r["eps"] for r in rows]
    label = report["attack"] + (f" ({report['grad_source']})" if report["grad_source"] else "")
    ax.plot(eps, [r["accuracy"] for r in rows], "o-", label=label)
    if any("reference" in r for r in rows):
        ax.plot(eps, [r["reference"]["accuracy"] for r in rows], "s--", label="pgd (exact)")
    if any("source_accuracy" in r for r in rows):
        ax.plot(eps, [r["source_accuracy"] for r in rows], "^:", label="on source run")
    ax.axhline(report["clean_accuracy"], color="grey", lw=0.8, ls=":", label="clean")
    ax.set_xlabel(f"eps ({report['norm']})")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    if len(eps) > 1 and min(eps) > 0 and max(eps) / min(eps) > 20:
        ax.set_xscale("log")
    ax.set_title(f"{report['rule']} on {report['dataset']} ({report['encoding']}), n={report['n']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_save_fig(fig, path)


def attack_run(
    run_dir: Path,
    request: AttackRequest,
    *,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, Any], Path]:
    """Read ``run_dir`` (and ``request.source_run``) back, :func:`run_attack`, and write the report and
    its plot under ``run_dir/attacks/`` as ``<stem>.json`` (:meth:`AttackRequest.path`). Returns the
    report and the JSON path. A request that does not fit the run's input domain, and a report that
    exists already (unless ``force``), raise before anything is loaded or written. The report records
    the products' precision used (:mod:`spikebench.precision`; the request's, or the run's)."""
    request.check_source(request.source_run is not None)
    request.check_domain(input_domain(read_config(run_dir).data).bounds)
    path = request.path(run_dir)
    if path.exists() and not force:
        raise AttackError(f"{path} exists already; use --force to overwrite it")
    device, precision = request.device, request.precision
    target = load_run(run_dir, device, precision, n_test=request.n)
    source = None
    if request.source_run is not None:
        source = load_run(request.source_run, device, precision, n_test=request.n)
    with exact_numerics(), compute(target.precision, target.device):
        report = run_attack(target, request, source=source, progress=progress)
    report = {
        "run": str(run_dir),
        "source_run": None if request.source_run is None else str(request.source_run),
        **report,
        "precision": target.precision,
    }
    path.parent.mkdir(exist_ok=True)
    atomic_write_json(path, report)
    save_plot(report, path.with_suffix(".png"))
    return report, path
