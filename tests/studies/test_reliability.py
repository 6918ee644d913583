"""Studies that cannot silently lose or corrupt results: the directory lock, records checked on reuse
and on report, exit codes, workers that die with the study, resource and input checks, progress lines."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from spikebench import io as sbio
from spikebench.cli import failure_summary, main
from spikebench.config import Config, ConfigError, from_dict, load_config, load_yaml, to_dict, to_yaml
from spikebench.data import datasets
from spikebench.data.idx import DataError
from spikebench.io import DiskFullError, atomic_write_json
from spikebench.registry import SpikebenchError
from spikebench.report import build_report
from spikebench.report.records import load_study
from spikebench.rules import RULES
from spikebench.studies.grid import config_key
from spikebench.studies.jobs import Outcome
from spikebench.studies.lock import StudyLock, StudyLockedError
from spikebench.studies.runner import Plan, execute_plan
from spikebench.studies.validate import check_run
from spikebench.train.resources import ResourceError, check_memory
from spikebench.train.run import save_checkpoint

TINY = ["model.hidden=[12]", "data.timesteps=4", "train.batch_size=64", "data.limit_test=64"]
STUDY = [
    "study",
    "tradeoff",
    "--quick",
    "--workers",
    "1",
    "--set",
    "model.hidden=[12]",
    "--set",
    "data.timesteps=4",
    "--set",
    "data.limit_train=64",
    "--set",
    "data.limit_test=32",
    "--set",
    "train.probe_size=16",
    "--set",
    "train.fisher_size=4",
]


def tiny(*extra: str):
    return load_config(None, [*TINY, *extra])


def two_run_plan(*extra: str) -> Plan:
    plan = Plan("t", {})
    plan.add_runs("grid", [tiny("rule.name=bptt", *extra), tiny("rule.name=fa", *extra)])
    return plan


# --- the lock ----------------------------------------------------------------------------------------


def test_second_lock_refuses_naming_the_holder_and_wait_waits(tmp_path):
    with StudyLock(tmp_path / "s"):
        with pytest.raises(StudyLockedError, match=f"in use by process {os.getpid()}"):
            StudyLock(tmp_path / "s").acquire()
    waiter = StudyLock(tmp_path / "s", wait=True, poll=0.05)
    first = StudyLock(tmp_path / "s")
    first.acquire()
    got = threading.Event()
    t = threading.Thread(target=lambda: (waiter.acquire(), got.set()))
    t.start()
    assert not got.wait(0.3)  # still held
    first.release()
    t.join(10)
    assert got.is_set()
    waiter.release()


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    study = tmp_path / "s"
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    study.mkdir()
    (study / ".lock").write_text(proc.stdout)  # the file of a process that is gone (its flock went with it)
    with StudyLock(study):
        assert (study / ".lock").read_text().strip() == str(os.getpid())


def test_a_second_study_on_the_same_directory_refuses_and_leaves_the_records(fake_data, tmp_path, capsys):
    study = tmp_path / "s"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from spikebench.studies.lock import StudyLock\n"
            f"l = StudyLock({str(study)!r}); l.acquire(); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main([*STUDY, "-q", "--rules", "bptt", "--out", str(study)]) == 1
        err = capsys.readouterr().err.strip()
        assert err == (
            f"spikebench: error: {study} is in use by process {holder.pid} (a study running there); "
            "wait for it to finish, or pass --wait"
        )
        assert sorted(p.name for p in study.iterdir()) == [".lock"]
    finally:
        holder.kill()
        holder.wait()
    assert main([*STUDY, "-q", "--rules", "bptt", "--out", str(study)]) == 0  # the lock died with its holder


# --- records checked on reuse and on report ----------------------------------------------------------


def test_truncated_and_wrongly_typed_summaries_are_named_and_redone(fake_data, tmp_path, caplog):
    plan = two_run_plan()
    study = tmp_path / "s"
    assert sorted(o.status for o in execute_plan(plan, study)) == ["done", "done"]
    bptt, fa = (next(k for k, c in plan.runs.items() if c.rule.name == r) for r in ("bptt", "fa"))
    good = {k: json.loads((study / "runs" / k / "summary.json").read_text()) for k in plan.runs}
    text = (study / "runs" / bptt / "summary.json").read_text()
    (study / "runs" / bptt / "summary.json").write_text(text[: len(text) // 2])
    (study / "runs" / fa / "summary.json").write_text(json.dumps({**good[fa], "test_accuracy": "0.9"}))

    records = load_study(study)
    assert {r.rule: r.status for r in records.runs.values()} == {"bptt": "corrupt", "fa": "corrupt"}
    assert "summary.json is not valid JSON" in records.runs[bptt].reason
    assert records.runs[fa].reason == "summary.json field 'test_accuracy' is str, expected int or number"
    lines = records.problems
    assert any(line.startswith("corrupt run: bptt seed 0 (fashion-mnist, run " + bptt) for line in lines)

    with caplog.at_level("WARNING", logger="spikebench.study"):
        again = execute_plan(plan, study)
    assert sorted(o.status for o in again) == ["done", "done"]
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "train bptt seed 0" in warned and "train fa seed 0" in warned and "corrupt record" in warned
    assert len(list((study / "corrupt").iterdir())) == 2
    for k in plan.runs:  # redone: the same results as the first time
        redone = json.loads((study / "runs" / k / "summary.json").read_text())
        assert redone["test_accuracy"] == good[k]["test_accuracy"] and check_run(study / "runs" / k) is None
    assert [o.status for o in execute_plan(plan, study)] == ["cached", "cached"]


def test_report_flags_a_changed_tracking_record_and_refuses_the_verdict(fake_data, tmp_path):
    plan = Plan("t", {"mode": {"quick": True}})
    cfgs = [
        tiny(f"rule.name={r}", "train.track=[grad_alignment]", "train.track_every=1") for r in ("bptt", "fa")
    ]
    keys = plan.add_runs("tradeoff", cfgs)
    study = tmp_path / "s"
    execute_plan(plan, study)
    build_report(study)
    verdict = {v["claim"]: v for v in json.loads((study / "report" / "verdicts.json").read_text())}["C2"]
    assert verdict["status"] != "not computed"
    align = study / "runs" / keys[0] / "alignment.jsonl"
    align.write_text(align.read_text().replace('"cosine": ', '"cosine": 0.5e0 * ', 1).splitlines()[0] + "\n")
    records = load_study(study)
    assert records.runs[keys[0]].status == "corrupt"
    assert "alignment.jsonl does not match its checksum" in records.runs[keys[0]].reason
    build_report(study)
    md = (study / "report" / "report.md").read_text()
    assert "Missing and corrupt records" in md and keys[0] in md and "alignment.jsonl" in md
    verdict = {v["claim"]: v for v in json.loads((study / "report" / "verdicts.json").read_text())}["C2"]
    assert verdict["status"] == "not computed" and "bptt reference" in verdict["reason"]


def test_corrupt_attack_record_is_left_out_and_named(tmp_path):
    from tests.studies.test_report import run, write_study

    good = run("bptt", attacks={"pgd-exact": {0.1: 0.2}})
    study = write_study(tmp_path, [good], {"tradeoff": [good.key]})
    (study / "runs" / good.key / "attacks" / "square.json").write_text(
        '{"records": [{"eps": 0.1, "accuracy": 7}]}'
    )
    records = load_study(study)
    rec = records.runs[good.key]
    assert rec.ok and "pgd-exact" in rec.attacks and "square" not in rec.attacks
    assert rec.bad_attacks == {"square": "the row at eps 0.1 has accuracy 7, not a number in [0, 1]"}
    assert any(line.startswith("corrupt attack record square of bptt seed 0") for line in records.problems)


# --- exit codes and failure lines --------------------------------------------------------------------


def test_a_study_with_failed_jobs_exits_non_zero_after_its_report(fake_data, tmp_path, capsys):
    out = tmp_path / "s"
    diverge = ["--set", "train.lr=1e38", "--set", "train.optimizer=sgd", "--set", "train.schedule=constant"]
    diverge += ["--set", "train.epochs=3"]
    code = main([*STUDY, "-q", "--rules", "bptt,fa", *diverge, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and (out / "report" / "report.html").exists()
    lines = [line for line in err.splitlines() if "failed:" in line]
    assert len(lines) == 1 and lines[0].startswith("  4 jobs failed: training diverged")


def test_failure_summary_counts_each_reason_once():
    outs = [
        Outcome("a", "failed", error="x"),
        Outcome("b", "failed", error="x"),
        Outcome("c", "failed", error="y"),
    ]
    outs.append(Outcome("d", "done"))
    assert failure_summary(outs) == ["  2 jobs failed: x", "  1 job failed: y"]


# --- workers die with the study ----------------------------------------------------------------------


def _children(pid: int) -> set[int]:
    out = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
def test_workers_do_not_outlive_a_sigkilled_study(fake_data, tmp_path):
    out = tmp_path / "s"
    args = [*STUDY, "-q", "--rules", "bptt", "--set", "train.epochs=500", "--workers", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "spikebench.cli", *args, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    workers: set[int] = set()
    while time.monotonic() < deadline and len(workers) < 2:
        workers = {c for c in _children(proc.pid) if "spawn" in Path(f"/proc/{c}/cmdline").read_text()}
        time.sleep(0.1)
    assert len(workers) >= 2
    while time.monotonic() < deadline and not list(out.glob("runs/.*.partial/checkpoint.pt")):
        time.sleep(0.1)  # the workers are busy training
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    gone_by = time.monotonic() + 5
    while time.monotonic() < gone_by and any(_alive(w) for w in workers):
        time.sleep(0.05)
    survivors = [w for w in workers if _alive(w)]
    for w in survivors:
        os.kill(w, signal.SIGKILL)
    assert not survivors


# --- resources ---------------------------------------------------------------------------------------


def test_memory_estimate_refuses_a_huge_t_and_width_in_one_line(fake_data, tmp_path, capsys):
    cfg = tiny("data.timesteps=100000000")
    with pytest.raises(ResourceError, match="needs about .* TiB of memory, more than the"):
        check_memory(cfg, (1, 28, 28), 10, "O(T)")
    check_memory(tiny(), (1, 28, 28), 10, "O(T)")  # an ordinary run fits
    for bad in ("data.timesteps=100000000", "model.hidden=[100000000]"):
        assert main(["train", "-q", "--set", bad, "--out", str(tmp_path / "r")]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("spikebench: error: a bptt run with") and "\n" not in err
    assert not (tmp_path / "r").exists()


def test_disk_full_during_torch_save_is_one_line_naming_the_file(fake_data, tmp_path, monkeypatch, capsys):
    def full(fd, mode):
        f = os.fdopen(fd, mode)

        class Full:
            def __enter__(self):
                return self

            def __exit__(self, *a):
                f.close()

            def write(self, data):
                raise OSError(errno.ENOSPC, "No space left on device")

            def flush(self):
                pass

        return Full()

    monkeypatch.setattr(sbio, "_fdopen", full)
    (tmp_path / "ck").mkdir()
    path = tmp_path / "ck" / "checkpoint.pt"
    with pytest.raises(DiskFullError, match=f"^no space left on device writing {path}$"):
        save_checkpoint({"w": torch.zeros(3)}, path)
    assert list(path.parent.iterdir()) == []  # nothing half-written left behind
    assert main(["train", "-q", *sum((["--set", t] for t in TINY), []), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("spikebench: error: no space left on device writing ") and err.endswith(
        "checkpoint.pt"
    )


def test_ray_that_cannot_start_is_one_line(monkeypatch):
    ray = pytest.importorskip("ray")
    from spikebench.studies.executors import RayExecutor

    def refuse(*a, **k):
        raise ConnectionError("Could not find any running Ray instance.\nPlease specify the address")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(
        SpikebenchError, match="^cannot start Ray at x:1: Could not find any running Ray instance.$"
    ):
        RayExecutor(1, "x:1")


# --- run keys ----------------------------------------------------------------------------------------


def test_a_changed_plugin_rule_changes_the_run_key(tmp_path, monkeypatch):
    import importlib.util

    src = tmp_path / "myplugin.py"
    src.write_text(
        "from spikebench.rules.bptt import BPTT\n"
        "class Mine(BPTT):\n    '''A plugin rule.'''\n    name = 'plugin-rule'\n"
    )
    spec = importlib.util.spec_from_file_location("myplugin", src)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "myplugin", module)
    spec.loader.exec_module(module)
    RULES.add("plugin-rule", module.Mine)
    try:
        cfg = tiny("rule.name=plugin-rule")
        before = config_key(cfg)
        assert config_key(cfg) == before
        src.write_text(src.read_text() + "# a changed update\n")
        assert config_key(cfg) != before
        assert config_key(tiny()) == config_key(tiny())  # built-in components: the config decides
    finally:
        RULES._items.pop("plugin-rule")
        RULES._descriptions.pop("plugin-rule")


def test_the_run_key_includes_the_version(monkeypatch):
    import spikebench

    before = config_key(tiny())
    monkeypatch.setattr(spikebench, "__version__", "999.0")
    assert config_key(tiny()) != before


# --- inputs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,message",
    [
        (["--seeds", "0"], "--seeds must be a positive integer, got 0"),
        (["--seeds", "-3"], "--seeds must be a positive integer, got -3"),
        (["--workers", "0"], "--workers must be a positive integer, got 0"),
        (["--rules", ","], "--rules expects rule names separated by commas"),
        (["--rules", "bpt"], "unknown rule 'bpt' (did you mean 'bptt'?)"),
        (["--set", "rule.name=fa"], "--set rule.name: the tradeoff study sets rule.name in its grid itself"),
        (["--set", "model.recurrent=true"], "--set model.recurrent: the tradeoff study sets model.recurrent"),
        (["--set", "train.device=cuda"] if not torch.cuda.is_available() else ["--seeds", "0"], None),
    ],
)
def test_study_arguments_are_checked_before_anything_runs(fake_data, tmp_path, capsys, args, message):
    code = main([*STUDY, "-q", *args, "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip()
    assert code in (1, 2) and err.startswith("spikebench: error: ") and "\n" not in err
    if message:
        assert message in err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--n", "0"], "--n must be a positive integer, got 0"),
        (["--steps", "-1"], "--steps must be a positive integer"),
        (["--eps", "1e9"], "linf eps must be in (0, 1]"),
        (["--eps", "-0.1"], "eps must be"),
        (["--eps", "nan"], "eps must be"),
    ],
)
def test_attack_numeric_arguments(tmp_path, capsys, args, message):
    # eps is checked against the input domain of the run's dataset: its config is all that is read first
    (tmp_path / "config.yaml").write_text(to_yaml(Config()))
    assert main(["attack", str(tmp_path), "--attack", "pgd", *args]) == 2
    assert message in capsys.readouterr().err


def test_rules_selects_the_grid(fake_data, tmp_path):
    from spikebench.studies import Mode, plan_study

    plan = plan_study("tradeoff", tiny(), Mode.make(True, 1), rules=("bptt", "dfa"))
    assert sorted((c.rule.name, c.model.recurrent) for c in plan.runs.values()) == [
        ("bptt", False),
        ("bptt", True),
        ("dfa", False),
        ("dfa", True),
    ]


def _register(name, loader):
    datasets.DATASETS.add(name, datasets.DatasetSpec(loader))


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda x, y: (x.double(), y), "train inputs of dtype torch.float64 (expected torch.float32)"),
        (lambda x, y: (x, y + 5), "train labels in [5, 7], outside [0, 2]"),
        (lambda x, y: (x, y.int()), "train labels of dtype torch.int32 (expected torch.int64)"),
        (lambda x, y: (x[:3], y), "train shapes x (3, 1, 2, 2), y (4,) (one label per sample)"),
    ],
)
def test_dataset_loader_output_is_checked(change, message):
    name = "bad-loader-test"

    def loader(cfg):
        x, y = change(torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 2, 0]))
        ok = datasets.Split(torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 2, 0]))
        return datasets.Dataset(name, datasets.Split(x, y), ok, 3)

    _register(name, loader)
    try:
        with pytest.raises(DataError, match=f"^dataset '{name}': the loader returned "):
            datasets.load_dataset(from_dict({**to_dict(tiny()), "data": {"name": name}}).data)
        with pytest.raises(DataError) as info:
            datasets.load_dataset(from_dict({**to_dict(tiny()), "data": {"name": name}}).data)
        assert message in str(info.value)
    finally:
        datasets.DATASETS._items.pop(name)
        datasets.DATASETS._descriptions.pop(name)


def test_unsafe_yaml_tag_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text('model: !!python/object/apply:os.system ["true"]\n')
    with pytest.raises(
        ConfigError, match=r"^unsafe YAML tag !!python/object/apply:os.system in .* at line 1"
    ):
        load_yaml(path)


# --- progress ----------------------------------------------------------------------------------------


def test_progress_when_not_a_terminal_is_one_line_per_finished_job(fake_data, tmp_path, capsys):
    out = tmp_path / "s"
    assert main([*STUDY, "--rules", "bptt", "--out", str(out)]) == 0  # stderr is captured: not a terminal
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("study: ")]
    assert lines[0] == "study: 2 jobs, 0 cached"
    import re

    pattern = r"study: \[(\d)/2\] train bptt( rec)? seed 0 \(fashion-mnist\): done \(\d+\.\d s\)"
    assert [re.fullmatch(pattern, line) is not None for line in lines[1:]] == [True, True]


def test_atomic_json_honours_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_json(tmp_path / "a.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": 1}
