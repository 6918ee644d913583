"""`spikebench attack`, `ls attacks` and backdoor training end to end on generated IDX files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spikebench.cli import main

QUICK = [
    "--set",
    "train.epochs=1",
    "--set",
    "model.hidden=[16]",
    "--set",
    "data.timesteps=4",
    "--set",
    "data.limit_test=40",
    "-q",
]


def train(out: Path, *extra: str) -> Path:
    assert main(["train", *QUICK, *extra, "--out", str(out)]) == 0
    return out


@pytest.fixture
def run(fake_data, tmp_path) -> Path:
    return train(tmp_path / "run")


def attack(run_dir: Path, *args: str) -> int:
    return main(["attack", str(run_dir), "-q", "--n", "24", "--batch-size", "16", *args])


def test_attack_writes_report_and_plot(run, capsys):
    capsys.readouterr()
    assert attack(run, "--attack", "pgd", "--eps", "0.05,0.2", "--steps", "3", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in (run / "attacks").iterdir()) == ["pgd-exact.json", "pgd-exact.png"]
    assert json.loads((run / "attacks" / "pgd-exact.json").read_text()) == report
    assert report["attack"] == "pgd" and report["grad_source"] == "exact" and report["n"] == 24
    assert report["options"]["steps"] == 3 and report["run"] == str(run)
    assert [r["eps"] for r in report["records"]] == [0.05, 0.2]
    for r in report["records"]:
        assert {"accuracy", "attack_success_rate", "mean_perturbation_norm", "queries", "seconds"} <= set(r)
        # early stop: a sample broken after s < 3 steps costs s gradient evaluations
        assert r["mean_perturbation_norm"] <= r["eps"] * (1 + 1e-5) and 0 < r["queries"] <= 3
        assert len(r["correct"]) == 24 and r["accuracy"] == r["correct"].count("1") / 24
        assert r["convergence"] == {"3": r["accuracy"]}
    assert report["records"][1]["accuracy"] <= report["clean_accuracy"]
    assert (run / "attacks" / "pgd-exact.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gradient_free_attack_reports_reference(run, capsys):
    assert (
        attack(run, "--attack", "square", "--eps", "0.1", "--queries", "20", "--norm", "l2", "--steps", "2")
        == 0
    )
    out = capsys.readouterr().out
    report = json.loads((run / "attacks" / "square-l2.json").read_text())
    record = report["records"][0]
    assert report["grad_source"] is None and report["norm"] == "l2"
    assert record["reference"]["attack"] == "pgd" and isinstance(record["gradient_masking"], bool)
    assert ("possible gradient masking" in out) == record["gradient_masking"]


def test_rule_and_transfer_sources(run, tmp_path, capsys):
    assert attack(run, "--attack", "fgsm", "--eps", "0.1", "--grad-source", "rule") == 0
    other = train(tmp_path / "other", "--set", "train.seed=1")
    assert (
        attack(
            run, "--attack", "fgsm", "--eps", "0.1", "--grad-source", "transfer", "--source-run", str(other)
        )
        == 0
    )
    report = json.loads((run / "attacks" / "fgsm-transfer.json").read_text())
    assert report["source_run"] == str(other) and "source_accuracy" in report["records"][0]
    assert (run / "attacks" / "fgsm-rule.json").is_file()


def test_existing_result_is_kept_unless_forced(run, capsys):
    args = ["--attack", "fgsm", "--eps", "0.1"]
    assert attack(run, *args) == 0
    path = run / "attacks" / "fgsm-exact.json"
    before = path.read_bytes()
    capsys.readouterr()
    assert attack(run, *args, "--seed", "3") == 2
    err = capsys.readouterr().err.strip()
    assert "exists already; use --force" in err and len(err.splitlines()) == 1
    assert path.read_bytes() == before
    assert attack(run, *args, "--seed", "3", "--force", "--json") == 0
    assert json.loads(path.read_text())["seed"] == 3


def test_apgd_surrogate_stem_and_sanity_row(run, capsys):
    args = ["--attack", "apgd", "--eps", "0.05", "--steps", "12", "--surrogate", "fast_sigmoid/8"]
    assert attack(run, *args, "--restarts", "2", "--sanity-eps", "0.5") == 0
    out = capsys.readouterr().out
    report = json.loads((run / "attacks" / "apgd-exact@fast_sigmoid-8.json").read_text())
    assert (run / "attacks" / "apgd-exact@fast_sigmoid-8.png").is_file()
    assert report["surrogate"] == {"name": "fast_sigmoid", "scale": 8.0} and report["sanity_eps"] == 0.5
    first, sanity = report["records"]
    assert "sanity" not in first and sanity["sanity"] is True and sanity["eps"] == 0.5
    assert sorted(first["convergence"], key=int) == ["10", "12"]
    assert first["convergence"]["12"] == first["accuracy"] <= first["convergence"]["10"]
    assert sanity["accuracy"] <= 0.05 and "sanity check" in out


def test_ls_attacks(capsys):
    assert main(["ls", "attacks"]) == 0
    out = capsys.readouterr().out
    for name in ("fgsm", "pgd", "apgd", "square", "nes", "spsa", "gaussian-noise", "uniform-noise"):
        assert name in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--attack", "pgdd"], "did you mean 'pgd'"),
        (["--attack", "pgd", "--eps", "0.1,0"], "eps must be a positive number"),
        (["--attack", "pgd", "--eps", "a"], "--eps expects numbers"),
        (["--attack", "pgd", "--grad-source", "transfer"], "needs --source-run"),
        (["--attack", "square", "--grad-source", "rule"], "uses no gradients"),
        (["--attack", "pgd", "--norm", "l1"], "norm must be one of"),
        (["--attack", "pgd", "--steps", "0"], "steps must be a positive"),
        (["--attack", "pgd", "--surrogate", "nope"], "unknown surrogate"),
        (["--attack", "pgd", "--eps", "1e9"], "linf eps must be in (0, 1] for inputs in [0, 1]"),
        (["--attack", "pgd", "--eps", "nan"], "eps must be a positive number"),
        (["--attack", "pgd", "--norm", "l2", "--eps", "100"], "larger than any L2 distance"),
        (["--attack", "pgd", "--sanity-eps", "2"], "linf eps must be in (0, 1]"),
        (["--attack", "apgd", "--restarts", "0"], "--restarts must be a positive integer"),
        (["--attack", "pgd", "--n", "0"], "--n must be a positive integer"),
        (["--attack", "pgd", "--batch-size", "-1"], "--batch-size must be a positive integer"),
        (["--attack", "square", "--queries", "0"], "--queries must be a positive integer"),
    ],
)
def test_bad_requests_write_nothing(run, capsys, args, message):
    capsys.readouterr()
    assert attack(run, *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (run / "attacks").exists()


def test_incompatible_source_run_is_refused(run, tmp_path, capsys):
    rows = train(
        tmp_path / "rows", "--set", "data.name=sequential-fashion-mnist", "--set", "data.timesteps=28"
    )
    capsys.readouterr()
    args = ["--attack", "pgd", "--grad-source", "transfer", "--source-run", str(rows)]
    assert attack(run, *args) == 2
    err = capsys.readouterr().err.strip()
    assert "shape" in err and len(err.splitlines()) == 1
    assert not (run / "attacks").exists()


def test_backdoor_training_reports_clean_accuracy_and_asr(fake_data, tmp_path):
    out = train(tmp_path / "bd", "--set", "data.backdoor.fraction=0.25", "--set", "data.backdoor.target=3")
    backdoor = json.loads((out / "summary.json").read_text())["backdoor"]
    assert backdoor["fraction"] == 0.25 and backdoor["target"] == 3
    assert 0 <= backdoor["clean_accuracy"] <= 1 and 0 <= backdoor["attack_success_rate"] <= 1
    clean = train(tmp_path / "clean")
    assert json.loads((clean / "summary.json").read_text())["backdoor"] is None
    assert (
        main(
            [
                "train",
                *QUICK,
                "--set",
                "data.backdoor.target=10",
                "--set",
                "data.backdoor.fraction=0.1",
                "--out",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )
    assert not (tmp_path / "bad").exists()
