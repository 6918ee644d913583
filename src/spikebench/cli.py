"""The ``spikebench`` command line. The CLI owns the terminal: progress bars, tables, error lines."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from spikebench import __version__
from spikebench.config import ConfigError, load_config
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
    from spikebench.train.run import train_run

    cfg = load_config(args.config, args.set)
    out = (
        Path(args.out)
        if args.out
        else Path("runs") / (f"{cfg.rule.name}-{cfg.data.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    )
    summary = train_run(
        cfg, out, force=args.force, hooks=Progress(cfg.rule.name, False if args.quiet else None)
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

    result = eval_run(Path(args.run_dir))
    if args.json:
        _print_json(result)
    else:
        print(
            f"{result['rule']} on {result['dataset']}: test accuracy "
            f"{result['test_accuracy']:.4f} ({result['test_samples']} samples)"
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
        "classes": ds.n_classes,
    }
    if args.json:
        _print_json(info)
    else:
        print(
            f"{ds.name}: {len(ds.train)} train / {len(ds.test)} test samples, input "
            f"{tuple(ds.input_shape)}, {ds.n_classes} classes, from {ds.source}"
        )
    return 0


def _registries() -> dict[str, Any]:
    from spikebench.data import DATASETS, ENCODERS
    from spikebench.dynamics import SURROGATES
    from spikebench.rules import RULES

    return {"rules": RULES, "datasets": DATASETS, "encoders": ENCODERS, "surrogates": SURROGATES}


def cmd_ls(args: argparse.Namespace) -> int:
    regs = _registries()
    if args.kind not in regs:
        import difflib

        close = difflib.get_close_matches(args.kind, list(regs), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CLIError(f"unknown kind {args.kind!r}{hint}; valid: {', '.join(regs)}")
    reg = regs[args.kind]
    if args.kind == "rules":
        rows = [(n, reg.get(n).locality) for n in reg]
        rows.sort(key=lambda r: r[1].rank)
        if args.json:
            _print_json([{"name": n, "description": reg.describe(n), **vars(loc)} for n, loc in rows])
            return 0
        header = ("rule", "spatial credit", "temporal credit", "weight transport", "memory")
        table = [header] + [
            (n, loc.spatial, loc.temporal, loc.weight_transport, loc.memory) for n, loc in rows
        ]
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        for row in table:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
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
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run's checkpoint on its test set")
    p.add_argument("run_dir", help="a run directory written by 'spikebench train'")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("data", help="find (or download) a dataset, check it, and say where it is")
    p.add_argument("name", nargs="?", default="fashion-mnist", help="dataset name (see 'ls datasets')")
    p.add_argument("--root", help="folder to look in first")
    p.add_argument("--no-download", action="store_true", help="only look in local folders")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("ls", help="list registered components")
    p.add_argument("kind", help="rules, datasets, encoders or surrogates")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_ls)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except USAGE_ERRORS + (CLIError,) as exc:
        print(f"spikebench: error: {exc}", file=sys.stderr)
        return 2
    except SpikebenchError as exc:
        print(f"spikebench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("spikebench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
