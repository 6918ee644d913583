"""Run an attack on a trained run over a list of eps and record the results.

:func:`run_attack` works on runs already loaded (:func:`spikebench.train.run.load_run`) and returns a
report (plain data, schema :data:`SCHEMA`); :func:`attack_run` loads the runs from disk, checks the
request first, and writes ``RUN_DIR/attacks/<stem>.json`` (atomically) and a robustness curve
``<stem>.png`` beside it, where ``<stem>`` is :func:`report_stem`. One record per eps:

- ``accuracy``: fraction of the n test samples classified correctly both clean and under attack;
- ``attack_success_rate``: fraction of the originally correct samples that the attack makes wrong;
- ``mean_perturbation_norm`` / ``max_perturbation_norm``: ``||x_adv - x||`` in the threat norm;
- ``queries``: mean model calls per sample spent by the attack (gradient evaluations x EOT draws for
  gradient attacks; the final evaluation is not counted); ``seconds``: wall-clock time of the attack;
- transfer attacks add ``source_accuracy``: accuracy of the crafted examples on the run they were
  crafted on;
  gradient-free attacks add ``reference`` (exact-gradient PGD on the same samples with the same steps,
  restarts and EOT) and ``gradient_masking``: true when the gradient-free attack leaves a lower accuracy
  than that PGD -- a sign that the exact gradients mislead (Athalye et al. 2018).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

import spikebench
from spikebench import components
from spikebench.attacks.adapter import Classifier, ExactGradient, GradientSource, RuleGradient
from spikebench.attacks.base import ATTACKS, AttackOptions, Target
from spikebench.attacks.gradient import PGD
from spikebench.attacks.threat import AttackError, Norm, ThreatModel
from spikebench.dynamics import SURROGATES, make_surrogate
from spikebench.train.run import Built, load_run, write_json
from spikebench.train.seeding import generator

log = logging.getLogger(__name__)

SCHEMA = 1
GRAD_SOURCES: tuple[str, ...] = ("exact", "rule", "transfer")


def check_request(
    attack: str,
    eps: Sequence[float],
    *,
    norm: str = "linf",
    grad_source: str = "exact",
    has_source: bool = False,
    surrogate: tuple[str, float | None] | None = None,
    n: int | None = 1000,
) -> None:
    """Raise :class:`AttackError` (or :class:`UnknownNameError`) for a request that cannot run; checks
    only what is known before any run is loaded."""
    cls = ATTACKS.get(attack)
    if not eps:
        raise AttackError("give at least one eps")
    for e in eps:
        ThreatModel(norm, e)  # type: ignore[arg-type]  (validates norm and eps)
    if grad_source not in GRAD_SOURCES:
        raise AttackError(f"grad-source must be one of {', '.join(GRAD_SOURCES)}, got {grad_source!r}")
    if cls.kind != "gradient" and grad_source != "exact":
        raise AttackError(f"attack {attack!r} uses no gradients; --grad-source applies to gradient attacks")
    if grad_source == "transfer" and not has_source:
        raise AttackError("--grad-source transfer needs --source-run DIR (the run to craft examples on)")
    if grad_source != "transfer" and has_source:
        raise AttackError("--source-run is only used with --grad-source transfer")
    if surrogate is not None:
        SURROGATES.get(surrogate[0])
        if surrogate[1] is not None and not surrogate[1] > 0:
            raise AttackError(f"surrogate scale must be positive, got {surrogate[1]}")
    if n is not None and n < 1:
        raise AttackError(f"n must be a positive number of test samples, got {n}")


def check_compatible(target: Built, source: Built) -> None:
    """A transfer source must take inputs of the same shape and predict the same classes."""
    shape, src_shape = tuple(target.data.test.x.shape[1:]), tuple(source.data.test.x.shape[1:])
    if shape != src_shape:
        raise AttackError(f"source run takes inputs of shape {list(src_shape)}, the target {list(shape)}")
    if target.data.n_classes != source.data.n_classes:
        raise AttackError(
            f"source run has {source.data.n_classes} classes, the target {target.data.n_classes}"
        )


def report_stem(attack: str, grad_source: str, norm: str) -> str:
    """File name stem of a report: ``<attack>[-<grad source>][-<norm>]`` (source for gradient attacks,
    norm when it is not L-inf)."""
    stem = f"{attack}-{grad_source}" if ATTACKS.get(attack).kind == "gradient" else attack
    return stem if norm == "linf" else f"{stem}-{norm}"


def _classifier(run: Built, seed: int, surrogate: tuple[str, float | None] | None) -> Classifier:
    s = None
    if surrogate is not None:
        name, scale = surrogate
        s = make_surrogate(name, scale if scale is not None else run.cfg.model.surrogate_scale)
    enc = components.build_encoding(run.cfg, generator(seed, 99, run.device))  # reseeded per use
    return Classifier(run.net, enc, s)


def run_attack(
    target: Built,
    attack: str,
    eps: Sequence[float],
    *,
    norm: Norm = "linf",
    grad_source: str = "exact",
    source: Built | None = None,
    options: AttackOptions | None = None,
    n: int | None = 1000,
    seed: int = 0,
    surrogate: tuple[str, float | None] | None = None,
    batch_size: int = 500,
    reference: bool = True,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Attack the first ``n`` test samples of ``target`` at every eps; return the report (module doc).

    ``source``: the run transfer examples are crafted on. ``surrogate``: (name, scale or None for the
    model's) replacing the surrogate derivative in the attack's gradients. ``reference``: also run
    exact-gradient PGD beside a gradient-free attack (the gradient-masking check). ``progress`` is
    called with the number of samples done after every batch.
    """
    options = options or AttackOptions()
    request = {"norm": norm, "grad_source": grad_source, "surrogate": surrogate, "n": n}
    check_request(attack, eps, has_source=source is not None, **request)
    if source is not None:
        check_compatible(target, source)
    cls = ATTACKS.get(attack)
    x_all, y_all = target.data.test.x[:n], target.data.test.y[:n]
    device = target.device
    model = _classifier(target, seed, surrogate)
    if grad_source == "transfer":
        assert source is not None
        crafter = _classifier(source, seed, surrogate)
        gradient: GradientSource = ExactGradient(crafter, options.eot)
    else:
        crafter = model
        gradient = (
            RuleGradient(model, target.rule, options.eot)
            if grad_source == "rule"
            else ExactGradient(model, options.eot)
        )
    craft = Target(crafter, gradient)
    check = cls.kind != "gradient" and reference
    if check:  # exact-gradient PGD beside the gradient-free attack, with its own encoder draws
        reference_model = _classifier(target, seed, surrogate)
        pgd, exact = PGD(options), Target(reference_model, ExactGradient(reference_model, options.eot))

    model.reseed(generator(seed, 98, device))
    starts = range(0, len(y_all), batch_size)
    clean = torch.cat([model(x_all[i : i + batch_size].to(device)).argmax(1).cpu() for i in starts]).eq(y_all)
    records = []
    for i, e in enumerate(eps):
        threat = ThreatModel(norm, e)
        # each eps draws from its own streams: its result does not depend on what ran before it
        gen, ref_gen = generator(seed, 100 + 10 * i, device), generator(seed, 101 + 10 * i, device)
        model.reseed(generator(seed, 102 + 10 * i, device))
        if crafter is not model:
            crafter.reseed(generator(seed, 103 + 10 * i, device))
        if check:
            exact.model.reseed(generator(seed, 104 + 10 * i, device))
        seconds = 0.0
        adv_ok, src_ok, ref_ok, norms, queries = [], [], [], [], []
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
        }
        if src_ok:
            record["source_accuracy"] = torch.cat(src_ok).double().mean().item()
        if check:
            ref_acc = (clean & torch.cat(ref_ok)).double().mean().item()
            record["reference"] = {"attack": "pgd", "grad_source": "exact", "accuracy": ref_acc}
            record["gradient_masking"] = record["accuracy"] < ref_acc
        log.info("%s eps=%g: accuracy %.4f", attack, e, record["accuracy"])
        records.append(record)

    masked = [r["eps"] for r in records if r.get("gradient_masking")]
    notes = (
        [
            f"possible gradient masking: {attack} leaves a lower accuracy than exact-gradient PGD "
            f"at eps {', '.join(f'{e:g}' for e in masked)}"
        ]
        if masked
        else []
    )
    cfg = target.cfg
    return {
        "schema": SCHEMA,
        "attack": attack,
        "kind": cls.kind,
        "description": ATTACKS.describe(attack),
        "grad_source": grad_source if cls.kind == "gradient" else None,
        "norm": norm,
        "eps": list(eps),
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
    eps = [r["eps"] for r in report["records"]]
    label = report["attack"] + (f" ({report['grad_source']})" if report["grad_source"] else "")
    ax.plot(eps, [r["accuracy"] for r in report["records"]], "o-", label=label)
    if any("reference" in r for r in report["records"]):
        ax.plot(eps, [r["reference"]["accuracy"] for r in report["records"]], "s--", label="pgd (exact)")
    if any("source_accuracy" in r for r in report["records"]):
        ax.plot(eps, [r["source_accuracy"] for r in report["records"]], "^:", label="on source run")
    ax.axhline(report["clean_accuracy"], color="grey", lw=0.8, ls=":", label="clean")
    ax.set_xlabel(f"eps ({report['norm']})")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    if len(eps) > 1 and min(eps) > 0 and max(eps) / min(eps) > 20:
        ax.set_xscale("log")
    ax.set_title(f"{report['rule']} on {report['dataset']} ({report['encoding']}), n={report['n']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def attack_run(
    run_dir: Path,
    attack: str,
    eps: Sequence[float],
    *,
    source_run: Path | None = None,
    device: str | None = None,
    **kwargs: Any,
) -> tuple[dict[str, Any], Path]:
    """Load ``run_dir`` (and ``source_run``), :func:`run_attack` with ``kwargs``, and write the report
    and its plot under ``run_dir/attacks/``. Returns the report and the JSON path. Bad requests raise
    before anything is loaded or written."""
    check_request(
        attack,
        eps,
        norm=kwargs.get("norm", "linf"),
        grad_source=kwargs.get("grad_source", "exact"),
        has_source=source_run is not None,
        surrogate=kwargs.get("surrogate"),
        n=kwargs.get("n", 1000),
    )
    target = load_run(run_dir, device)
    source = load_run(source_run, device) if source_run is not None else None
    report = run_attack(target, attack, eps, source=source, **kwargs)
    report = {"run": str(run_dir), "source_run": None if source_run is None else str(source_run), **report}
    out = run_dir / "attacks"
    out.mkdir(exist_ok=True)
    stem = report_stem(attack, report["grad_source"] or "exact", report["norm"])
    path = out / f"{stem}.json"
    write_json(path, report)
    save_plot(report, out / f"{stem}.png")
    return report, path
