"""The ``spikebench`` command line. The CLI owns the terminal: progress bars, tables, error lines."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from spikebench import __version__, heap
from spikebench.config import ConfigError, parse_override
from spikebench.dynamics import fused
from spikebench.plugins import GROUP, load_entry_points
from spikebench.plugins import load as load_plugin
from spikebench.precision import PRECISIONS
from spikebench.registry import SpikebenchError, UnknownNameError

USAGE_ERRORS = (ConfigError, UnknownNameError)


class CLIError(SpikebenchError):
    """A usage error found by the CLI itself."""


class Progress:
    """Training hooks that draw one tqdm bar per epoch on stderr (silent when not a terminal)."""

    def __init__(self, label: str, enabled: bool | None = None) -> None:
        self.label, self.enabled, self.bar = label, enabled, None

    def epoch_start(self, epoch: int, n_batches: int) -> None:
        from tqdm import tqdm

        disable = None if self.enabled is None else not self.enabled
        self.bar = tqdm(
            total=n_batches,
            desc=f"{self.label} epoch {epoch}",
            unit="batch",
            leave=True,
            disable=disable,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def batch_end(self, loss: float, accuracy: float, samples_per_second: float) -> None:
        self.bar.set_postfix(
            loss=f"{loss:.3f}",
            acc=f"{accuracy:.3f}",
            samples_s=f"{samples_per_second:.0f}",
            refresh=False,
        )
        self.bar.update()

    def epoch_end(self, record) -> None:
        self.bar.set_postfix(
            loss=f"{record.train_loss:.3f}",
            acc=f"{record.train_accuracy:.3f}",
            test=f"{record.test_accuracy:.3f}",
            refresh=False,
        )
        self.bar.close()


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _fmt_bytes(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.0f} MiB"


def cmd_train(args: argparse.Namespace) -> int:
    from spikebench.analysis.tracking import Tracker
    from spikebench.components import load_config
    from spikebench.train.run import resume_run, train_run

    if args.resume:
        if args.config or args.set or args.out or args.force:
            raise CLIError("--resume RUN_DIR takes the run's own config: no -c, --set, --out or --force")
        out = Path(args.resume)
        summary = resume_run(
            out, hooks=Progress("resume", False if args.quiet else None), make_tracker=Tracker
        )
    else:
        cfg = load_config(args.config, args.set)
        out = (
            Path(args.out)
            if args.out
            else Path("runs") / (f"{cfg.rule.name}-{cfg.data.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        )
        summary = train_run(
            cfg,
            out,
            force=args.force,
            hooks=Progress(cfg.rule.name, False if args.quiet else None),
            make_tracker=Tracker,
        )
    if args.json:
        _print_json(summary)
    else:
        print(
            f"{summary['rule']} on {summary['dataset']}: test accuracy "
            f"{summary['test_accuracy']:.4f} after {summary['epochs']} epoch(s), "
            f"{summary['samples_per_second']:.0f} samples/s, "
            f"peak training memory {_fmt_bytes(summary['peak_memory_bytes'])}"
        )
        print(f"run written to {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from spikebench.train.run import eval_run

    result = eval_run(Path(args.run_dir), args.device, args.precision)
    if args.json:
        _print_json(result)
    else:
        print(
            f"{result['rule']} on {result['dataset']}: test accuracy "
            f"{result['test_accuracy']:.4f} ({result['test_samples']} samples)"
        )
        if result["backdoor"] is not None:
            print(f"backdoor attack success rate {result['backdoor']['attack_success_rate']:.4f}")
    return 0


def cmd_efficiency(args: argparse.Namespace) -> int:
    from spikebench.train.efficiency import OpEnergy
    from spikebench.train.run import efficiency_run

    if args.mac_pj < 0 or args.add_pj < 0:
        raise CLIError("--mac-pj and --add-pj must be >= 0")
    default = OpEnergy()
    source = (
        default.source if (args.mac_pj, args.add_pj) == (default.mac_pj, default.add_pj) else "user-given"
    )
    r = efficiency_run(Path(args.run_dir), OpEnergy(args.mac_pj, args.add_pj, source))
    if args.json:
        _print_json(r)
        return 0
    rates = ", ".join(f"{x['firing_rate']:.3f}" for x in r["layers"])
    s, e = r["synops"], r["energy"]
    print(f"{r['rule']}: firing rate per layer {rates}; activation sparsity {r['activation_sparsity']:.3f}")
    print(
        f"per inference: {s['effective_acs']:.4g} ACs, {s['effective_macs']:.4g} MACs, {s['dense']:.4g} dense ops; "
        f"energy estimate {e['inference_pj'] * 1e-6:.4g} uJ (dense {e['dense_inference_pj'] * 1e-6:.4g} uJ)"
    )
    if "training_sample_pj" in e:
        c = r["rule_cost"]
        print(
            f"per training sample: update {c['macs']:.4g} MACs + {c['elementwise']:.4g} elementwise, state "
            f"{c['state']:.4g} numbers; energy estimate {e['training_sample_pj'] * 1e-6:.4g} uJ"
        )
    print(
        f"energies per operation: {e['source']} ({e['mac_pj']} pJ per multiply-add, {e['add_pj']} pJ per add)"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from spikebench.nn.nir_io import CONVENTION, DT
    from spikebench.train.run import export_run

    if args.dt is not None and args.dt <= 0:
        raise CLIError("--dt must be positive")
    path = export_run(
        Path(args.run_dir), None if args.out is None else Path(args.out), args.dt, not args.no_readout
    )
    print(f"wrote {path} (NIR; dt = {args.dt or DT}: {CONVENTION})")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from spikebench.train.run import import_run

    out = Path(args.out)
    summary = import_run(Path(args.graph), out, args.set, force=args.force)
    if args.json:
        _print_json(summary)
    else:
        print(
            f"imported {args.graph} as {out}: {summary['dataset']} test accuracy {summary['test_accuracy']:.4f} "
            f"({summary['test_samples']} samples)"
        )
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    import os

    from spikebench.config import DataConfig
    from spikebench.data import load_dataset

    if args.no_download:
        os.environ["SPIKEBENCH_NO_DOWNLOAD"] = "1"
    ds = load_dataset(DataConfig(name=args.name, root=args.root))
    info = {
        "dataset": ds.name,
        "source": ds.source,
        "train": len(ds.train),
        "test": len(ds.test),
        "input_shape": list(ds.input_shape),
        "timesteps": ds.timesteps,
        "classes": ds.n_classes,
    }
    if args.json:
        _print_json(info)
    else:
        steps = f" per step x {ds.timesteps} steps" if ds.sequential else ""
        print(
            f"{ds.name}: {len(ds.train)} train / {len(ds.test)} test samples, input "
            f"{tuple(ds.input_shape)}{steps}, {ds.n_classes} classes, from {ds.source}"
        )
    return 0


class StudyProgress:
    """Progress over a study's jobs. In a terminal: one tqdm bar with the last job's rule and seed, the
    running, queued and failed counts, and the time left. Elsewhere (a log file, a batch scheduler): one
    line per finished job -- what it was, its outcome and its seconds."""

    def __init__(self, enabled: bool | None = None, labels: dict[str, str] | None = None) -> None:
        self.enabled, self.labels, self.bar = enabled, labels or {}, None
        self.tty = sys.stderr.isatty() if enabled is None else enabled
        self.total = self.finished = 0
        self.running = self.queued_jobs = 0

    def start(self, total: int, cached: int) -> None:
        self.total, self.finished = total, cached
        if self.enabled is False:
            return
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=cached, desc="study", unit="job", file=sys.stderr, dynamic_ncols=True
            )
        else:
            print(f"study: {total} jobs, {cached} cached", file=sys.stderr, flush=True)

    def queued(self, running: int, queued: int) -> None:
        self.running, self.queued_jobs = running, queued

    def update(self, outcome, running: int, failed: int) -> None:
        self.finished += 1
        label = self.labels.get(outcome.job, outcome.job)
        if self.bar is not None:
            self.bar.set_postfix_str(
                f"running {running}, queued {self.queued_jobs}, failed {failed}, last: {label}", refresh=False
            )
            self.bar.update()
        elif self.enabled is not False:
            why = f": {outcome.error}" if outcome.error else ""
            print(
                f"study: [{self.finished}/{self.total}] {label}: {outcome.status}{why} ({outcome.seconds:.1f} s)",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _positive(name: str, value: int | float | None) -> None:
    if value is not None and not value >= 1:
        raise CLIError(f"{name} must be a positive integer, got {value}")


def failure_summary(outcomes) -> list[str]:
    """One line per distinct failure reason, with how many jobs it stopped."""
    reasons: dict[str, int] = {}
    for o in outcomes:
        if o.status == "failed":
            reasons[o.error or "unknown error"] = reasons.get(o.error or "unknown error", 0) + 1
    return [
        f"  {n} job{'s' if n > 1 else ''} failed: {why}"
        for why, n in sorted(reasons.items(), key=lambda x: -x[1])
    ]


def cmd_study(args: argparse.Namespace) -> int:
    from spikebench import components
    from spikebench.studies import Mode
    from spikebench.studies.run import run_study

    _positive("--seeds", args.seeds)
    _positive("--workers", args.workers)
    rules = tuple(r.strip() for r in args.rules.split(",") if r.strip()) if args.rules is not None else None
    if rules is not None and not rules:
        raise CLIError("--rules expects rule names separated by commas")
    base = components.load_config(args.config, args.set)
    user_keys = tuple(parse_override(text)[0] for text in args.set)
    mode = Mode.make(args.quick, args.seeds, user_keys, evidence=args.evidence)
    suffix = "-quick" if args.quick else "-evidence" if args.evidence else ""
    out = Path(args.out) if args.out else Path("studies") / (args.name + suffix)
    if args.plan:
        from spikebench.studies.budget import estimate
        from spikebench.studies.definitions import plan_study
        from spikebench.studies.executors import default_workers

        plan = plan_study(args.name, base, mode, rules=rules)
        print(f"study {args.name}: {len(plan.runs)} runs, {len(plan.all_jobs())} jobs, into {out}")
        for line in estimate(plan, args.workers or default_workers()).lines():
            print(line)
        return 0
    result = run_study(
        args.name,
        base,
        mode,
        out,
        rules=rules,
        engine=args.engine,
        workers=args.workers,
        address=args.address,
        progress=lambda labels: StudyProgress(False if args.quiet else None, labels),
        wait=args.wait,
        argv=getattr(args, "argv", None),
    )
    counts = {s: result.count(s) for s in ("done", "cached", "failed", "skipped")}
    print(f"study {args.name}: " + ", ".join(f"{n} {s}" for s, n in counts.items()), file=sys.stderr)
    for line in failure_summary(result.outcomes):
        print(line, file=sys.stderr)
    print(result.paths["html"])
    return 1 if counts["failed"] else 0


def cmd_report(args: argparse.Namespace) -> int:
    from spikebench.report import build_report
    from spikebench.report.records import load_study
    from spikebench.studies.analysis_step import analyze_study
    from spikebench.studies.lock import StudyLock

    study = Path(args.study_dir)
    formats = ("md", "html") if args.format == "both" else (args.format,)
    load_study(study)  # a directory that is not a study is refused before anything is written
    with StudyLock(study):
        analyze_study(study)  # recomputed from the run records, never taken from an earlier report
        paths = build_report(study, formats)
    for line in load_study(study).problems:
        print(f"report: left out: {line}", file=sys.stderr)
    for path in paths.values():
        print(path)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from spikebench.studies.publish import publish_study

    print(publish_study(Path(args.study_dir), Path(args.dest), argv=getattr(args, "argv", None)))
    return 0


def _parse_eps(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise CLIError(f"--eps expects numbers separated by commas, got {text!r}") from exc


def _parse_surrogate(text: str | None) -> tuple[str, float | None] | None:
    if text is None:
        return None
    name, _, scale = text.partition("/")
    try:
        return name, float(scale) if scale else None
    except ValueError as exc:
        raise CLIError(f"--surrogate expects NAME or NAME/SCALE, got {text!r}") from exc


def cmd_attack(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from spikebench.attacks import AttackOptions, AttackRequest
    from spikebench.attacks.runner import attack_run

    for name in ("steps", "restarts", "queries", "eot", "n", "batch_size"):
        if getattr(args, name) < 1:
            raise CLIError(
                f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}"
            )
    options = AttackOptions(
        steps=args.steps,
        step_size=args.step_size,
        restarts=args.restarts,
        random_start=not args.no_random_start,
        queries=args.queries,
        eot=args.eot,
    )
    request = AttackRequest(
        args.attack,
        tuple(_parse_eps(args.eps)),
        norm=args.norm,
        grad_source=args.grad_source,
        options=options,
        n=args.n,
        seed=args.seed,
        surrogate=_parse_surrogate(args.surrogate),
        sanity_eps=args.sanity_eps,
        reference=not args.no_reference,
        batch_size=args.batch_size,
        source_run=Path(args.source_run) if args.source_run else None,
        device=args.device,
        precision=args.precision,
    )
    bar = tqdm(
        total=args.n * len(request.eps),
        desc=args.attack,
        unit="sample",
        disable=True if args.quiet else None,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    with bar:
        report, path = attack_run(Path(args.run_dir), request, force=args.force, progress=bar.update)
    if args.json:
        _print_json(report)
        return 0
    source = f" ({report['grad_source']} gradients)" if report["grad_source"] else ""
    print(
        f"{report['attack']}{source} on {report['rule']} / {report['dataset']}, {report['norm']}, "
        f"n={report['n']}, clean accuracy {report['clean_accuracy']:.4f}"
    )
    for r in report["records"]:
        asr = "n/a" if r["attack_success_rate"] is None else f"{r['attack_success_rate']:.4f}"
        ref = f"  exact PGD {r['reference']['accuracy']:.4f}" if "reference" in r else ""
        ref += "  (sanity check)" if r.get("sanity") else ""
        print(
            f"  eps {r['eps']:<8g} accuracy {r['accuracy']:.4f}  success rate {asr}  "
            f"mean norm {r['mean_perturbation_norm']:.4g}  queries {r['queries']:.0f}  "
            f"{r['seconds']:.1f} s{ref}"
        )
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"written to {path}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from spikebench.analysis.analyze import ANALYSES, AnalyzeOptions, run_analysis

    ANALYSES.get(args.analysis)  # an unknown name is a usage error, before anything runs
    if not args.bandwidth > 0:
        raise CLIError(f"--bandwidth must be positive, got {args.bandwidth}")
    if args.samples is not None and args.samples <= 0:
        raise CLIError(f"--samples must be positive, got {args.samples}")
    opts = AnalyzeOptions(
        kernel=args.kernel,
        bandwidth=args.bandwidth,
        debiased=args.debiased,
        reference=Path(args.reference) if args.reference else None,
        samples=args.samples,
        device=args.device,
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("runs") / f"analysis-{args.analysis}-{stamp}"
    output, written = run_analysis(args.analysis, [Path(d) for d in args.run_dirs], opts, out)
    if args.json:
        _print_json(output.record)
        return 0
    for line in output.lines:
        print(line)
    print(f"written to {out}: {', '.join(p.name for p in written)}")
    return 0


def cmd_perf(args: argparse.Namespace) -> int:
    import dataclasses
    import os

    from spikebench.io import atomic_write_json
    from spikebench.perf import PerfOptions, run_perf
    from spikebench.perf.report import format_report
    from spikebench.rules import RULES

    if args.repeats is not None and args.repeats < 1:
        raise CLIError(f"--repeats must be >= 1, got {args.repeats}")
    rules = tuple(r for r in args.rules.split(",") if r) if args.rules else None
    for name in rules or ():
        RULES.get(name)  # an unknown name is a usage error, before anything runs
    opts = PerfOptions.quick(args.repeats) if args.quick else PerfOptions(repeats=args.repeats or 5)
    precisions = tuple(p for p in args.precisions.split(",") if p)
    if not precisions or not set(precisions) <= {"fp32", "bf16"}:
        raise CLIError(f"--precisions must list fp32 and/or bf16, got {args.precisions!r}")
    opts = dataclasses.replace(
        opts, device=args.device, threads=args.threads, rules=rules, precisions=precisions
    )
    out = Path(args.out)
    parent = out.resolve().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise CLIError(f"cannot write {out}: {parent} is not a writable directory")

    def progress(msg: str) -> None:
        if not args.json:
            print(f"perf: {msg}", file=sys.stderr, flush=True)

    record = run_perf(opts, progress)
    atomic_write_json(out, record)
    if args.json:
        _print_json(record)
        return 0
    print(format_report(record))
    print(f"written to {out}")
    return 0


def _registries() -> dict[str, Any]:
    from spikebench.analysis.analyze import ANALYSES
    from spikebench.attacks import ATTACKS
    from spikebench.data import DATASETS, ENCODERS
    from spikebench.dynamics import SURROGATES
    from spikebench.rules import RULES
    from spikebench.studies import STUDIES

    return {
        "rules": RULES,
        "datasets": DATASETS,
        "encoders": ENCODERS,
        "surrogates": SURROGATES,
        "studies": STUDIES,
        "attacks": ATTACKS,
        "analyses": ANALYSES,
    }


def _ls_rules(reg, as_json: bool) -> None:
    """The rules from least to most local: declared properties, derived rank, paper and deviations."""
    rows = sorted(((n, reg.get(n)) for n in reg), key=lambda r: (r[1].locality.rank, r[0]))
    if as_json:
        _print_json(
            [
                {
                    "name": n,
                    "description": reg.describe(n),
                    **cls.locality.as_dict(),
                    "archs": list(cls.archs),
                    "paper": cls.paper,
                    "deviations": list(cls.deviations),
                    "options": [
                        {
                            "key": o.key,
                            "choices": list(o.choices),
                            "type": o.type.__name__,
                            "default": o.default,
                            "help": o.help,
                        }
                        for o in cls.options
                    ],
                    "input_gradient": "exact" if cls.exact_input_gradient else "own",
                }
                for n, cls in rows
            ]
        )
        return
    header = ("rule", "rank", "spatial", "temporal", "weight transport", "memory", "model.arch")
    table = [header] + [
        (
            n,
            str(cls.locality.rank),
            cls.locality.spatial.value,
            cls.locality.temporal.value,
            "yes" if cls.locality.weight_transport else "no",
            cls.locality.memory.value,
            ", ".join(cls.archs),
        )
        for n, cls in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print()
    print("rank = temporal (full 0, truncated 1, online 2) + 1 if a layer's error bypasses the layers above")
    print(
        "       + 1 without weight transport (eprop with rule.feedback=random: no weight transport, rank 4)"
    )
    for n, cls in rows:
        print(f"\n{n}: {cls.paper}")
        for d in cls.deviations or ("no deviation from the paper",):
            print(f"  - {d}")
        for o in cls.options:
            print(f"  option {o.describe()}")
        path = "exact (surrogate BPTT through the network)" if cls.exact_input_gradient else "the rule's own"
        print(f"  input gradient (pgd-rule): {path}")


def cmd_ls(args: argparse.Namespace) -> int:
    regs = _registries()
    if args.kind not in regs:
        import difflib

        close = difflib.get_close_matches(args.kind, list(regs), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CLIError(f"unknown kind {args.kind!r}{hint}; valid: {', '.join(regs)}")
    reg = regs[args.kind]
    if args.kind == "rules":
        _ls_rules(reg, args.json)
        return 0
    if args.json:
        _print_json([{"name": n, "description": reg.describe(n)} for n in reg])
        return 0
    width = max(len(n) for n in reg)
    for n in reg:
        print(f"{n.ljust(width)}  {reg.describe(n)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikebench",
        description="Train spiking neural networks with learning rules of varying locality "
        "and measure what the rule changes.",
        epilog=f"Every command keeps freed memory in its heap for reuse (glibc; training without page "
        f"faults on its per-step buffers); {heap.ENV}=system in the environment keeps the C library's "
        "defaults. A LIF layer without recurrent weights runs its time steps in a compiled kernel, "
        "built on first use with the C++ compiler (the same results as the PyTorch loop, which runs "
        f"where it cannot be built); {fused.ENV}=off keeps the loop.",
    )
    parser.add_argument("--version", action="version", version=f"spikebench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train one network and write a run directory")
    p.add_argument("-c", "--config", help="YAML config file (defaults apply to missing keys)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set rule.name=bptt (repeatable)",
    )
    p.add_argument("--out", help="run directory to create (default: runs/RULE-DATASET-TIME)")
    p.add_argument("--force", action="store_true", help="replace --out (or an interrupted run of it)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run's checkpoint on its test set (and its backdoor, if any)")
    p.add_argument("run_dir", help="a run directory written by 'spikebench train'")
    p.add_argument("--device", choices=["cpu", "cuda"], help="device (default: the run's train.device)")
    p.add_argument("--precision", choices=PRECISIONS, help="products' precision (default: the run's)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="write a trained run's network as a NIR graph (model.reset=zero)")
    p.add_argument("run_dir", help="a run directory written by 'spikebench train'")
    p.add_argument("--format", choices=["nir"], default="nir", help="graph format (nir)")
    p.add_argument("--out", help="file to write (default: RUN_DIR.nir beside the run)")
    p.add_argument("--dt", type=float, help="time step of the discrete-to-continuous mapping (default 1e-4)")
    p.add_argument(
        "--no-readout", action="store_true", help="end the graph at the last hidden layer's spikes"
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "import", help="make a run directory from a NIR graph of LIF layers (attack/analyze it)"
    )
    p.add_argument("graph", help="a NIR file")
    p.add_argument("--out", required=True, help="run directory to create")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. data.timesteps=25",
    )
    p.add_argument("--force", action="store_true", help="replace --out")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser(
        "efficiency", help="a run's firing rates, synaptic operations and energy estimates on its test set"
    )
    p.add_argument("run_dir", help="a run directory written by 'spikebench train'")
    p.add_argument("--mac-pj", type=float, default=4.6, help="energy of a multiply-add in pJ (default 4.6)")
    p.add_argument("--add-pj", type=float, default=0.9, help="energy of an add in pJ (default 0.9)")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.set_defaults(func=cmd_efficiency)

    p = sub.add_parser("data", help="find (or download) a dataset, check it, and say where it is")
    p.add_argument("name", nargs="?", default="fashion-mnist", help="dataset name (see 'ls datasets')")
    p.add_argument("--root", help="folder to look in first")
    p.add_argument("--no-download", action="store_true", help="only look in local folders")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser(
        "study", help="run a study (a grid of runs, attacks and analyses) and write its report"
    )
    p.add_argument("name", help="tradeoff, similarity, recurrence, attacks or all (see 'ls studies')")
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_true", help="reduced grid: data subset, 1 epoch, 1 seed (minutes)"
    )
    size.add_argument(
        "--evidence",
        action="store_true",
        help="the size that decides the claims: 10 seeds, data subset, 3 epochs (about an hour on 2 cores)",
    )
    p.add_argument(
        "--plan", action="store_true", help="print the job counts and the estimated wall time; run nothing"
    )
    p.add_argument("--seeds", type=int, help="seeds per grid point (full mode: at least 3 by default)")
    p.add_argument("-c", "--config", help="base YAML config for every run of the grid")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a base config key"
    )
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="local process pool or Ray")
    p.add_argument("--address", help="Ray cluster address to join (with --engine ray)")
    p.add_argument("--workers", type=int, help="parallel jobs (default: the number of cores)")
    p.add_argument("--rules", help="comma-separated rules to run (default: every registered rule)")
    p.add_argument("--out", help="study directory (default: studies/NAME[-quick|-evidence]); rerun to resume")
    p.add_argument("--wait", action="store_true", help="wait for another study running in --out to finish")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("report", help="build a study's report from its records")
    p.add_argument("study_dir", help="a directory written by 'spikebench study'")
    p.add_argument("--format", choices=["md", "html", "both"], default="both", help="what to write")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "publish",
        help="copy a finished study's records without checkpoints and raw probes, and build its report there",
    )
    p.add_argument("study_dir", help="a finished study directory")
    p.add_argument("dest", help="a new directory for the published records (refused if it exists)")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("attack", help="attack a trained run at several eps; write RUN_DIR/attacks/NAME.json")
    p.add_argument("run_dir", help="a run directory written by 'spikebench train'")
    p.add_argument("--attack", required=True, help="attack name (see 'ls attacks')")
    p.add_argument("--eps", default="0.01,0.03,0.1", help="perturbation budgets, comma-separated")
    p.add_argument("--norm", default="linf", help="threat norm: linf or l2")
    p.add_argument(
        "--grad-source", default="exact", help="gradient attacks: exact, rule (the run's rule) or transfer"
    )
    p.add_argument("--source-run", help="run to craft transfer examples on (--grad-source transfer)")
    p.add_argument("--steps", type=int, default=20, help="PGD / APGD steps per restart")
    p.add_argument("--step-size", type=float, help="PGD / NES step (default 2.5 * eps / steps)")
    p.add_argument("--restarts", type=int, default=1, help="PGD / APGD runs (later ones from random starts)")
    p.add_argument("--no-random-start", action="store_true", help="start PGD at the clean input")
    p.add_argument("--queries", type=int, default=1000, help="query budget per sample (square, nes, spsa)")
    p.add_argument("--eot", type=int, default=1, help="encoder draws per gradient (stochastic encoders)")
    p.add_argument("--surrogate", metavar="NAME[/SCALE]", help="surrogate used in the attack's gradients")
    p.add_argument("--n", type=int, default=1000, help="number of test samples attacked (the first n)")
    p.add_argument("--seed", type=int, default=0, help="seed of the attack's random draws")
    p.add_argument("--batch-size", type=int, default=500, help="samples attacked at once")
    p.add_argument("--no-reference", action="store_true", help="gradient-free attacks: no exact-PGD check")
    p.add_argument(
        "--sanity-eps", type=float, help="also attack at this large eps, where no accuracy should remain"
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing result of the same request")
    p.add_argument("--device", choices=["cpu", "cuda"], help="device (default: the run's train.device)")
    p.add_argument("--precision", choices=PRECISIONS, help="products' precision (default: the run's)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_attack)

    p = sub.add_parser("analyze", help="compare runs: CKA, gradient alignment with BPTT, Fisher information")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories of 'spikebench train'")
    p.add_argument("--analysis", default="cka", help="cka (default), alignment or fisher ('ls analyses')")
    p.add_argument("--kernel", choices=("linear", "rbf"), default="linear", help="CKA kernel")
    p.add_argument("--bandwidth", type=float, default=1.0, help="RBF width in units of the median distance")
    p.add_argument("--debiased", action="store_true", help="CKA with the unbiased HSIC estimator")
    p.add_argument("--reference", help="run every run is compared with in the CKA plot (default: bptt)")
    p.add_argument("--samples", type=int, help="fisher: test samples (default: the run's train.fisher_size)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="fisher: where to compute (default: the run's)")
    p.add_argument("--out", help="folder for the record and plots (default: runs/analysis-NAME-TIME)")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser(
        "perf",
        help="measure training and attack speed and training memory, beside snnTorch, Norse and SpikingJelly",
    )
    p.add_argument("--quick", action="store_true", help="fewer repeats, feed-forward only, no n=16384")
    p.add_argument("--out", default="perf.json", help="JSON record to write (default: perf.json)")
    p.add_argument("--repeats", type=int, help="timed repeats per measurement (default 5; quick 3)")
    p.add_argument("--rules", help="comma-separated rules to measure (default: every registered rule)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="device (default cpu)")
    p.add_argument(
        "--precisions",
        default="fp32,bf16",
        help="rules, the snnTorch network and attacks timed in these, side by side (default fp32,bf16)",
    )
    p.add_argument("--json", action="store_true", help="print the record as JSON instead of tables")
    p.set_defaults(func=cmd_perf)

    p = sub.add_parser("ls", help="list registered components")
    p.add_argument("kind", help="rules, datasets, encoders, surrogates, attacks, analyses or studies")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_ls)

    plugin_help = (
        "import a plugin before anything else: a module name or a .py file (repeatable; installed "
        f"entry points of the group {GROUP!r} are always imported)"
    )
    # before the command or after it: a subcommand's default would overwrite a shared destination
    parser.add_argument(
        "--plugin",
        dest="plugins_first",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help=plugin_help,
    )
    for p in sub.choices.values():  # every command: its components may come from a plugin
        p.add_argument("--plugin", action="append", default=[], metavar="MODULE_OR_FILE", help=plugin_help)
    return parser


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops as cleanly as Ctrl-C: runs keep their last checkpoint


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main else None
    try:
        heap.keep_freed_memory()
        load_entry_points()
        for spec in [*args.plugins_first, *args.plugin]:
            load_plugin(spec)
        return args.func(args)
    except USAGE_ERRORS + (CLIError,) as exc:
        print(f"spikebench: error: {exc}", file=sys.stderr)
        return 2
    except SpikebenchError as exc:
        print(f"spikebench: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # disk full, permission denied, ... while writing results
        where = f": {exc.filename}" if exc.filename else ""
        print(f"spikebench: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("spikebench: interrupted", file=sys.stderr)
        return 130
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
