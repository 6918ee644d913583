"""Plugins end to end on generated data: the example plugin rule (examples/plugin_rule) trains, is attacked
with its own input gradient and runs in a two-worker study and in Ray tasks; an installed entry point is
discovered; a plugin that fails, or a run or study resumed without its plugin, is one clear line."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from spikebench import plugins
from spikebench.cli import main
from spikebench.rules import RULES

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plugin_rule" / "weight_perturbation.py"
RULE = "weight-perturbation"
TINY = [
    "--set",
    "model.hidden=[12]",
    "--set",
    "data.timesteps=4",
    "--set",
    "data.limit_train=64",
    "--set",
    "data.limit_test=32",
    "-q",
]


@pytest.fixture
def plugin_scope(monkeypatch):
    """What a test's plugins register is forgotten after it (the registries and the loaded list)."""
    monkeypatch.setattr(RULES, "_items", dict(RULES._items))
    monkeypatch.setattr(RULES, "_descriptions", dict(RULES._descriptions))
    monkeypatch.setattr(plugins, "_loaded", {})
    modules = set(sys.modules)
    yield
    for name in set(sys.modules) - modules:
        if name.startswith("spikebench_plugin_") or name == "weight_perturbation":
            del sys.modules[name]


def forget_plugin() -> None:
    """As in a new process started without the plugin."""
    plugins._loaded.clear()
    RULES._items.pop(RULE)
    RULES._descriptions.pop(RULE)


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spikebench: error: "), lines
    return lines[0]


def test_the_example_plugin_trains_and_is_attacked_with_its_own_gradient(
    fake_data, tmp_path, plugin_scope, capsys
):
    run = tmp_path / "run"
    args = ["train", "--plugin", str(EXAMPLE), "--set", f"rule.name={RULE}", *TINY, "--out", str(run)]
    assert main(args) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rule"] == RULE and summary["plugins"] == [str(EXAMPLE)]
    assert summary["locality"]["rank"] == 2 and summary["locality"]["temporal"] == "full"
    attack = [
        "attack",
        str(run),
        "-q",
        "--attack",
        "fgsm",
        "--eps",
        "0.1",
        "--n",
        "8",
        "--grad-source",
        "rule",
    ]
    assert main([*attack, "--plugin", str(EXAMPLE)]) == 0
    record = json.loads((run / "attacks" / "fgsm-rule.json").read_text())
    assert record["grad_source"] == "rule" and record["rule"] == RULE
    forget_plugin()
    capsys.readouterr()
    assert main([*attack, "--force"]) == 1
    line = one_error_line(capsys)
    assert "was trained with plugin(s)" in line and f"--plugin {EXAMPLE}" in line


def test_the_example_plugin_runs_in_a_two_worker_study(fake_data, tmp_path, plugin_scope, capsys):
    out = tmp_path / "study"
    study = ["study", "tradeoff", "--quick", "--workers", "2", "--rules", RULE, *TINY, "--out", str(out)]
    study += ["--set", "train.probe_size=16", "--set", "train.fisher_size=4"]
    assert main([*study, "--plugin", str(EXAMPLE)]) == 0
    manifest = json.loads((out / "study.json").read_text())
    assert manifest["plugins"] == [str(EXAMPLE)]
    rules = {c["rule"]["name"] for c in manifest["runs"].values()}
    assert RULE in rules
    summaries = [json.loads(p.read_text()) for p in (out / "runs").glob("*/summary.json")]
    assert {s["rule"] for s in summaries} == rules and all(s["plugins"] == [str(EXAMPLE)] for s in summaries)
    forget_plugin()
    capsys.readouterr()
    assert main(study) != 0
    line = one_error_line(capsys)
    assert "was run with plugin(s)" in line and f"--plugin {EXAMPLE}" in line


def test_the_example_plugin_runs_in_ray_tasks(fake_data, tmp_path, plugin_scope):
    """Ray tasks import the study's plugins before they read a job (a file at the same path)."""
    pytest.importorskip("ray")
    out = tmp_path / "study"
    study = ["study", "tradeoff", "--quick", "--engine", "ray", "--workers", "2", "--rules", RULE, *TINY]
    study += ["--set", "train.probe_size=16", "--set", "train.fisher_size=4", "--out", str(out)]
    assert main([*study, "--plugin", str(EXAMPLE)]) == 0
    summaries = [json.loads(p.read_text()) for p in (out / "runs").glob("*/summary.json")]
    assert RULE in {s["rule"] for s in summaries}
    assert all(s["plugins"] == [str(EXAMPLE)] for s in summaries)


def test_an_installed_entry_point_is_discovered(tmp_path, monkeypatch, plugin_scope, capsys):
    site = tmp_path / "site"
    dist = site / "spikebench_weight_perturbation-0.1.0.dist-info"
    dist.mkdir(parents=True)
    shutil.copy(EXAMPLE, site / "weight_perturbation.py")
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: spikebench-weight-perturbation\nVersion: 0.1.0\n"
    )
    (dist / "entry_points.txt").write_text(f"[{plugins.GROUP}]\n{RULE} = weight_perturbation\n")
    monkeypatch.syspath_prepend(str(site))
    assert RULE not in RULES
    assert main(["ls", "rules", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert plugins.loaded() == [f"entry-point:{RULE}"]
    assert [o["key"] for o in rows[RULE]["options"]] == ["rule.options.directions", "rule.options.sigma"]
    assert rows[RULE]["input_gradient"] == "own" and rows["bptt"]["input_gradient"] == "exact"
    assert rows["eprop"]["options"][-1] == {
        "key": "rule.options.block",
        "choices": [],
        "type": "int",
        "default": None,
        "help": "steps per trace update with rule.update=sequence (the same gradient; null: rule.k)",
    }


def test_a_plugin_that_fails_to_import_is_one_line(tmp_path, plugin_scope, capsys):
    bad = tmp_path / "bad_plugin.py"
    bad.write_text("raise RuntimeError('no GPU here')\n")
    assert main(["ls", "rules", "--plugin", str(bad)]) == 1
    assert one_error_line(capsys).endswith(f"plugin {bad} failed to import: RuntimeError: no GPU here")
    assert main(["ls", "rules", "--plugin", "no_such_plugin_module"]) == 1
    assert "No module named 'no_such_plugin_module'" in one_error_line(capsys)
    assert main(["ls", "rules", "--plugin", str(tmp_path / "missing.py")]) == 1
    assert one_error_line(capsys).endswith("missing.py: no such file")
    assert plugins.loaded() == []


def test_plugin_before_the_command(plugin_scope, capsys, tmp_path):
    """``spikebench --plugin X COMMAND`` loads X as ``COMMAND --plugin X`` does (both may be given)."""
    assert main(["--plugin", str(EXAMPLE), "ls", "rules", "--json"]) == 0
    assert RULE in {r["name"] for r in json.loads(capsys.readouterr().out)}
    assert plugins.loaded() == [str(EXAMPLE)]
    bad = tmp_path / "bad_plugin.py"
    bad.write_text("raise RuntimeError('no GPU here')\n")
    assert main(["--plugin", str(bad), "ls", "rules"]) == 1
    assert one_error_line(capsys).endswith(f"plugin {bad} failed to import: RuntimeError: no GPU here")
