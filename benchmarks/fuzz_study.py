"""Hostile study-level inputs on a tiny digits study; counts what happened.

    python benchmarks/fuzz_study.py [--out DIR] [--seed N] [--kills N] [--corruptions N]

Every input runs ``spikebench`` as a user would (a subprocess) and is classified:

- a **clean error**: non-zero exit, no traceback, at most a few lines on stderr;
- a **traceback** (the goal is none);
- for inputs after which the study is rerun to completion (concurrent starts, kills at random points,
  corrupted or deleted records, a disk that fills up mid-study), whether the final records **differ**
  from those of an undisturbed run (the goal is none; timings, memory and tracking costs aside).

The disk-full case mounts a small tmpfs and needs root; without it, it is reported as skipped.
Prints a JSON summary (and writes it to ``OUT/fuzz.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

STUDY = [
    "study",
    "tradeoff",
    "--quick",
    "-q",
    "--workers",
    "2",
    "--rules",
    "bptt,fa",
    "--set",
    "data.name=digits",
    "--set",
    "data.limit_train=300",
    "--set",
    "data.limit_test=100",
    "--set",
    "train.epochs=2",
]
VOLATILE = {
    "train_seconds",
    "samples_per_second",
    "peak_memory_bytes",
    "peak_memory_total_bytes",
    "peak_memory_method",
    "resumed_from_epoch",
    "tracking",
    "git_revision",
}


def cli(*args: str, timeout: float = 600) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "spikebench.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        return -999, err + "\n(timed out)"
    return proc.returncode, err


def run(*args: str, timeout: float = 600) -> tuple[int, str]:
    return finish(cli(*args), timeout)


def records(study: Path) -> dict:
    """Per run key: the summary and metrics without timings; plus the key set of the manifest."""
    out = {}
    manifest = json.loads((study / "study.json").read_text())
    for key in sorted(manifest["runs"]):
        d = study / "runs" / key
        if not (d / "summary.json").exists():
            out[key] = None
            continue
        summary = {k: v for k, v in json.loads((d / "summary.json").read_text()).items() if k not in VOLATILE}
        metrics = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        for m in metrics:
            m.pop("seconds", None), m.pop("samples_per_second", None)
        out[key] = (summary, metrics)
    return out


class Tally:
    def __init__(self) -> None:
        self.inputs = 0
        self.clean_errors = 0
        self.tracebacks = 0
        self.successes = 0
        self.unexpected = 0
        self.compared = 0
        self.differ = 0
        self.log: list[dict] = []

    def error_case(self, name: str, code: int, err: str) -> None:
        """An input that should be refused with a short error."""
        self.inputs += 1
        lines = [line for line in err.splitlines() if line.strip()]
        tb = "Traceback" in err
        clean = code not in (0, -999) and not tb and 1 <= len(lines) <= 3
        self.tracebacks += tb
        self.clean_errors += clean
        self.unexpected += not clean and not tb
        self.log.append({"input": name, "rc": code, "clean": clean, "traceback": tb, "stderr": lines[-3:]})

    def rerun_case(self, name: str, study: Path, baseline: dict, code: int, err: str) -> None:
        """A disturbed study rerun to completion: same records as the undisturbed one?"""
        self.inputs += 1
        tb = "Traceback" in err
        self.tracebacks += tb
        same = False
        try:
            same = code == 0 and records(study) == baseline
        except (OSError, ValueError) as exc:
            err += f"\n(records unreadable: {exc})"
        self.compared += 1
        self.differ += not same
        self.successes += code == 0
        lines = [line for line in err.splitlines() if line.strip()]
        self.log.append(
            {"input": name, "rc": code, "same_records": same, "traceback": tb, "stderr": lines[-3:]}
        )


def corruptions(study: Path, rng: random.Random) -> list[tuple[str, callable]]:
    keys = sorted(p.name for p in (study / "runs").iterdir() if p.is_dir() and not p.name.startswith("."))

    def truncate(rel: str):
        def f(key: str) -> None:
            p = study / "runs" / key / rel
            p.write_bytes(p.read_bytes()[: max(0, p.stat().st_size // 2)])

        return f

    def delete(rel: str):
        def f(key: str) -> None:
            p = study / "runs" / key / rel
            shutil.rmtree(p) if p.is_dir() else p.unlink()

        return f

    def retype(key: str) -> None:
        p = study / "runs" / key / "summary.json"
        data = json.loads(p.read_text())
        data[rng.choice(["test_accuracy", "epochs", "seed", "locality"])] = "oops"
        p.write_text(json.dumps(data))

    def flip(key: str) -> None:
        p = study / "runs" / key / "checkpoint.pt"
        b = bytearray(p.read_bytes())
        b[len(b) // 2] ^= 0xFF
        p.write_bytes(bytes(b))

    def empty(rel: str):
        return lambda key: (study / "runs" / key / rel).write_text("")

    options = [
        ("truncate summary.json", truncate("summary.json")),
        ("wrong type in summary.json", retype),
        ("empty metrics.jsonl", empty("metrics.jsonl")),
        ("truncate alignment.jsonl", truncate("alignment.jsonl")),
        ("truncate fisher.jsonl", truncate("fisher.jsonl")),
        ("flip a checkpoint byte", flip),
        ("delete checkpoint.pt", delete("checkpoint.pt")),
        ("delete probes/", delete("probes")),
        ("delete checksums.json", delete("checksums.json")),
        ("delete the run directory", lambda key: shutil.rmtree(study / "runs" / key)),
        ("garbage study.json", lambda key: (study / "study.json").write_text("{not json")),
    ]
    return [
        (f"{name} ({key})", lambda f=f, key=key: f(key)) for name, f in options for key in [rng.choice(keys)]
    ]


BAD_LOADER = """
import sys, torch
from spikebench.data import datasets
from spikebench.cli import main
def loader(cfg):
    x = torch.rand(50, 1, 8, 8); y = torch.randint(0, 10, (50,))
    kind = {kind!r}
    if kind == "float64": x = x.double()
    if kind == "labels": y = y + 20
    if kind == "shape": x = x[:10]
    if kind == "nan": x[0, 0, 0, 0] = float("nan")
    if kind == "int32": y = y.int()
    if kind == "raise": raise RuntimeError("loader exploded")
    if kind == "none": return None
    s = datasets.Split(x, y)
    return datasets.Dataset("hostile", s, datasets.Split(x.clone(), y.clone()), 10)
datasets.DATASETS.add("hostile", datasets.DatasetSpec(loader))
sys.exit(main(sys.argv[1:]))
"""


def bad_loader(kind: str, out: Path) -> tuple[int, str]:
    args = [a for a in STUDY if a != "data.name=digits"]
    i = args.index("--set", args.index("bptt,fa"))
    args = args[:i] + args[i + 1 :]  # drop the --set of data.name=digits
    args += ["--set", "data.name=hostile", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-c", BAD_LOADER.format(kind=kind), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return proc.returncode, proc.stderr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="fuzz-study")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--corruptions", type=int, default=11)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    root = Path(args.out).resolve()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    tally = Tally()
    t0 = time.time()

    base = root / "baseline"
    code, err = run(*STUDY, "--out", str(base))
    if code != 0:
        print(f"the undisturbed study failed ({code}):\n{err}", file=sys.stderr)
        return 1
    baseline = records(base)
    study_seconds = time.time() - t0

    # concurrent starts: one runs, the others refuse in one line; the records are those of a lone run
    d = root / "concurrent"
    procs = [cli(*STUDY, "--out", str(d)) for _ in range(3)]
    results = [finish(p) for p in procs]
    winners = [r for r in results if r[0] == 0]
    for code, err in results:
        if code != 0:
            tally.error_case("concurrent start", code, err)
    tally.rerun_case(
        "concurrent start (the one that ran)", d, baseline, *(winners[0] if winners else (1, ""))
    )
    code, err = run(*STUDY, "--wait", "--out", str(d))
    tally.rerun_case("rerun after concurrent starts", d, baseline, code, err)

    # kills at random points, SIGKILL and SIGTERM, then the same command again
    for i in range(args.kills):
        for sig in (signal.SIGKILL, signal.SIGTERM):
            d = root / f"kill-{sig.name}-{i}"
            proc = cli(*STUDY, "--out", str(d))
            time.sleep(rng.uniform(1.0, max(2.0, study_seconds * 0.9)))
            os.killpg(proc.pid, sig) if proc.poll() is None else None
            finish(proc)
            code, err = run(*STUDY, "--out", str(d))
            tally.rerun_case(f"{sig.name} at a random point ({i}), rerun", d, baseline, code, err)

    # corrupted and deleted records of a finished study: the report names them, a rerun repairs them
    for i in range(args.corruptions):
        d = root / "corrupt"
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(base, d)
        options = corruptions(d, rng)
        name, corrupt = options[i % len(options)]
        corrupt()
        code, err = run("report", str(d))
        if code != 0:
            tally.error_case(f"report after: {name}", code, err)
        else:
            tally.inputs += 1
            tally.successes += 1
            tally.tracebacks += "Traceback" in err
            tally.log.append({"input": f"report after: {name}", "rc": 0, "stderr": err.splitlines()[-3:]})
        code, err = run(*STUDY, "--out", str(d))
        if "study.json" in name and code != 0:  # a manifest that cannot be read is refused, not guessed
            tally.error_case(f"study after: {name}", code, err)
        else:
            tally.rerun_case(f"study after: {name}", d, baseline, code, err)

    # a disk that fills up in the middle of the study, then room again
    mnt = root / "tmpfs"
    mnt.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=72M", "tmpfs", str(mnt)], capture_output=True
    )
    if mounted.returncode == 0:
        try:
            d = mnt / "study"
            proc = cli(*STUDY, "--out", str(d))
            time.sleep(rng.uniform(3.0, max(4.0, study_seconds * 0.6)))
            with open(mnt / "filler", "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 2**20)
                        f.flush()
                except OSError:
                    pass
            code, err = finish(proc)
            if code == 0:  # finished before the disk filled up
                tally.rerun_case("disk full (too late to matter)", d, baseline, code, err)
            else:
                tally.error_case("disk full mid-study", code, "\n".join(err.splitlines()[-3:]))
                tally.log[-1]["stderr_all"] = err.splitlines()[-6:]
            (mnt / "filler").unlink()
            code, err = run(*STUDY, "--out", str(d))
            tally.rerun_case("rerun after the disk was freed", d, baseline, code, err)
        finally:
            subprocess.run(["umount", str(mnt)], capture_output=True)
    else:
        tally.log.append({"input": "disk full", "skipped": mounted.stderr.decode().strip()})

    # dataset loaders returning bad data
    for kind in ("float64", "labels", "shape", "nan", "int32", "raise", "none"):
        code, err = bad_loader(kind, root / f"loader-{kind}")
        tally.error_case(f"loader: {kind}", code, err)

    # out-of-range and hostile arguments
    unsafe = root / "unsafe.yaml"
    unsafe.write_text('model: !!python/object/apply:os.system ["true"]\n')
    afile = root / "a-file"
    afile.write_text("x")
    nostudy = root / "not-a-study"
    nostudy.mkdir()
    (nostudy / "junk").write_text("x")
    bad_args = [
        ["--seeds", "0"],
        ["--seeds", "-3"],
        ["--seeds", "abc"],
        ["--workers", "0"],
        ["--workers", "-2"],
        ["--rules", ","],
        ["--rules", "nope"],
        ["--set", "rule.name=dfa"],
        ["--set", "model.recurrent=true"],
        ["--set", "data.timesteps=100000000"],
        ["--set", "model.hidden=[100000000]"],
        ["--set", "train.batch_size=0"],
        ["--set", "train.device=cuda"],
        ["--set", "nonsense"],
        ["--set", "train.lr=-1"],
        ["-c", str(unsafe)],
        ["-c", str(root / "missing.yaml")],
    ]
    for extra in bad_args:
        code, err = run(*STUDY, *extra, "--out", str(root / "bad-args"))
        tally.error_case("study " + " ".join(extra), code, err)
    for name, argv in (
        ("--out is a file", [*STUDY, "--out", str(afile)]),
        ("--out holds something else", [*STUDY, "--out", str(nostudy)]),
        ("--out holds another study", [*STUDY, "--set", "train.lr=0.002", "--out", str(base)]),
        ("report of a missing directory", ["report", str(root / "nope")]),
        ("report of a non-study directory", ["report", str(nostudy)]),
    ):
        code, err = run(*argv)
        tally.error_case(name, code, err)

    summary = {
        "inputs": tally.inputs,
        "clean_one_line_errors": tally.clean_errors,
        "tracebacks": tally.tracebacks,
        "other_errors": tally.unexpected,
        "reruns_compared": tally.compared,
        "records_differ": tally.differ,
        "seconds": round(time.time() - t0, 1),
        "undisturbed_study_seconds": round(study_seconds, 1),
    }
    (root / "fuzz.json").write_text(json.dumps({"summary": summary, "log": tally.log}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0 if tally.tracebacks == 0 and tally.differ == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
