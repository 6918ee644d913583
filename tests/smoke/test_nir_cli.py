"""`spikebench export --format nir` and `spikebench import` end to end: a zero-reset run exported and
imported again evaluates to the same accuracy; a soft-reset run is refused with one line and no file."""

import json

import pytest

from spikebench.cli import main
from tests.smoke.test_cli import train

pytest.importorskip("nir")


def test_export_import_eval_agree(fake_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(run, "--set", "model.reset=zero", "--set", "model.recurrent=true") == 0
    graph = tmp_path / "net.nir"
    assert main(["export", str(run), "--format", "nir", "--out", str(graph)]) == 0
    assert "forward Euler" in capsys.readouterr().out and graph.stat().st_size > 0
    imported = tmp_path / "imported"
    assert main(["import", str(graph), "--out", str(imported), "--set", "data.timesteps=6", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "imported" and summary["recurrent"] is True
    original = json.loads((run / "summary.json").read_text())
    assert summary["test_accuracy"] == pytest.approx(original["test_accuracy"])
    assert main(["eval", str(imported), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == pytest.approx(original["test_accuracy"])


def test_soft_reset_export_is_refused(fake_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(run) == 0
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(tmp_path / "x.nir")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.reset=soft" in err[0]
    assert not list(tmp_path.glob("*.nir")) and not list(tmp_path.glob(".*.tmp"))
