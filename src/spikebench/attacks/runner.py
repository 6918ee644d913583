"""Run an attack on a trained run over a list of eps and record the results.

:func:`run_attack` works on runs already loaded (:func:`spikebench.rundir.load_run`) and returns a
report (plain data, schema :data:`SCHEMA`); :func:`attack_run` loads the runs from disk, checks the
request first, and writes ``RUN_DIR/attacks/<stem>.json`` (atomically) and a robustness curve
``<stem>.png`` beside it, where ``<stem>`` is :func:`report_stem`. One record per eps:

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
import math
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
from spikebench.io import atomic_save_fig, atomic_write_json
from spikebench.precision import compute
from spikebench.records import ATTACKS_DIR
from spikebench.rundir import Built, load_run
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
    sanity_eps: float | None = None,
) -> None:
    """Raise :class:`AttackError` (or :class:`UnknownNameError`) for a request that cannot run; checks
    only what is known before any run is loaded (eps against the input domain [0, 1]: at most 1 for
    L-inf; L2 eps are checked against the input's dimension once it is known)."""
    cls = ATTACKS.get(attack)
    if not eps:
        raise AttackError("give at least one eps")
    for e in [*eps, *([] if sanity_eps is None else [sanity_eps])]:
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


def report_stem(
    attack: str, grad_source: str, norm: str, surrogate: tuple[str, float | None] | None = None
) -> str:
    """File name stem of a report: ``<attack>[-<grad source>][-<norm>][@<surrogate>[-<scale>]]``
    (source for gradient attacks, norm when it is not L-inf, the attack's surrogate for gradient
    attacks given one, e.g. ``pgd-exact@fast_sigmoid-8``)."""
    gradient = ATTACKS.get(attack).kind == "gradient"
    stem = f"{attack}-{grad_source}" if gradient else attack
    stem = stem if norm == "linf" else f"{stem}-{norm}"
    if gradient and surrogate is not None:
        name, scale = surrogate
        stem += f"@{name}" + ("" if scale is None else f"-{scale:g}")
    return stem


def checkpoints(steps: int) -> list[int]:
    """Steps at which a convergence record reads the accuracy: 10, 20, 50, 100 below ``steps``, and
    ``steps``."""
    return [c for c in (10, 20, 50, 100) if c < steps] + [steps]


def _bits(ok: torch.Tensor) -> str:
    return "".join("1" if v else "0" for v in ok.tolist())


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
    sanity_eps: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Attack the first ``n`` test samples of ``target`` at every eps; return the report (module doc).

    ``source``: the run transfer examples are crafted on. ``surrogate``: (name, scale or None for the
    model's) replacing the surrogate derivative in the attack's gradients. ``reference``: also run
    exact-gradient PGD beside a gradient-free attack (the gradient-masking check). ``sanity_eps``: add
    the sanity record at that eps. ``progress`` is called with the number of samples done after every
    batch.
    """
    from spikebench.attacks.evidence import MASKING_ALPHA, SANITY_MAX_ACCURACY, masking_test

    options = options or AttackOptions()
    request = {"norm": norm, "grad_source": grad_source, "surrogate": surrogate, "n": n}
    check_request(attack, eps, has_source=source is not None, sanity_eps=sanity_eps, **request)
    if source is not None:
        check_compatible(target, source)
    cls = ATTACKS.get(attack)
    x_all, y_all = target.data.test.x[:n], target.data.test.y[:n]
    if norm == "l2":  # the largest L2 distance inside the [0, 1] domain
        diameter = math.sqrt(x_all[0].numel())
        for e in [*eps, *([] if sanity_eps is None else [sanity_eps])]:
            if e > diameter:
                raise AttackError(
                    f"eps {e:g} is larger than any L2 distance between inputs in [0, 1]^{x_all[0].numel()} "
                    f"(at most {diameter:.4g})"
                )
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
    track = cls.kind == "gradient" and crafter is model and options.steps >= 1
    sweep = [*eps, *([] if sanity_eps is None else [sanity_eps])]
    for i, e in enumerate(sweep):
        threat = ThreatModel(norm, e)
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
        if i >= len(eps):
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
        log.info("%s eps=%g: accuracy %.4f", attack, e, record["accuracy"])
        records.append(record)

    masked = [r["eps"] for r in records if r.get("gradient_masking") and not r.get("sanity")]
    notes = (
        [
            f"possible gradient masking: {attack} breaks significantly more samples than exact-gradient "
            f"PGD (one-sided sign test, p < {MASKING_ALPHA}) at eps {', '.join(f'{e:g}' for e in masked)}"
        ]
        if masked
        else []
    )
    for r in records:
        if r.get("sanity") and r["accuracy"] > SANITY_MAX_ACCURACY:
            notes.append(
                f"sanity check failed: {attack} leaves accuracy {r['accuracy']:.3f} at eps {r['eps']:g}, "
                f"where about none should remain (at most {SANITY_MAX_ACCURACY})"
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
        "sanity_eps": sanity_eps,
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
    attack: str,
    eps: Sequence[float],
    *,
    source_run: Path | None = None,
    device: str | None = None,
    force: bool = False,
    precision: str | None = None,
    **kwargs: Any,
) -> tuple[dict[str, Any], Path]:
    """Load ``run_dir`` (and ``source_run``), :func:`run_attack` with ``kwargs``, and write the report
    and its plot under ``run_dir/attacks/`` as ``<stem>.json`` (:func:`report_stem`). Returns the report
    and the JSON path. Bad requests, and a report that exists already (unless ``force``), raise before
    anything is loaded or written. ``device`` and ``precision`` (the products' precision,
    :mod:`spikebench.precision`) default to the run's; the report records the precision used."""
    norm, grad_source = kwargs.get("norm", "linf"), kwargs.get("grad_source", "exact")
    check_request(
        attack,
        eps,
        norm=norm,
        grad_source=grad_source,
        has_source=source_run is not None,
        surrogate=kwargs.get("surrogate"),
        n=kwargs.get("n", 1000),
        sanity_eps=kwargs.get("sanity_eps"),
    )
    path = result_path(run_dir, attack, grad_source, norm, kwargs.get("surrogate"))
    if path.exists() and not force:
        raise AttackError(f"{path} exists already; use --force to overwrite it")
    target = load_run(run_dir, device, precision)
    source = load_run(source_run, device, precision) if source_run is not None else None
    with compute(target.precision, target.device):
        report = run_attack(target, attack, eps, source=source, **kwargs)
    report = {
        "run": str(run_dir),
        "source_run": None if source_run is None else str(source_run),
        **report,
        "precision": target.precision,
    }
    path.parent.mkdir(exist_ok=True)
    atomic_write_json(path, report)
    save_plot(report, path.with_suffix(".png"))
    return report, path


def result_path(
    run_dir: Path,
    attack: str,
    grad_source: str = "exact",
    norm: str = "linf",
    surrogate: tuple[str, float | None] | None = None,
) -> Path:
    """Where :func:`attack_run` writes the report of this request: ``run_dir/attacks/<stem>.json``."""
    return run_dir / ATTACKS_DIR / f"{report_stem(attack, grad_source, norm, surrogate)}.json"
