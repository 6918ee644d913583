"""A run's summary carries its efficiency record; `spikebench efficiency` measures it again (the same
numbers, or scaled energies); the report's efficiency section and plot are built from such records."""

import json

import pytest

from spikebench.cli import main
from spikebench.report.efficiency import efficiency_section
from spikebench.report.records import RunRecord
from tests.smoke.test_cli import train


def test_summary_has_efficiency_and_the_command_agrees(fake_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, "--set", "model.recurrent=true", "--set", "rule.name=ottt") == 0
    summary = json.loads((out / "summary.json").read_text())
    eff = summary["efficiency"]
    assert eff["samples"] == summary["test_samples"] and eff["timesteps"] == 6
    assert [r["neurons"] for r in eff["layers"]] == [32]
    assert 0.0 <= eff["layers"][0]["firing_rate"] <= 1.0
    assert eff["parameters"] == summary["parameters"]
    assert eff["energy"]["estimate"] is True and "Horowitz" in eff["energy"]["source"]
    assert eff["energy"]["training_sample_pj"] > eff["energy"]["inference_pj"] > 0
    capsys.readouterr()
    assert main(["efficiency", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert {k: again[k] for k in eff} == eff
    assert main(["efficiency", str(out), "--json", "--mac-pj", "9.2", "--add-pj", "1.8"]) == 0
    doubled = json.loads(capsys.readouterr().out)["energy"]
    assert doubled["inference_pj"] == pytest.approx(2 * eff["energy"]["inference_pj"])
    assert doubled["source"] == "user-given"
    assert main(["efficiency", str(out), "--add-pj", "-1"]) == 2
    assert "must be >= 0" in capsys.readouterr().err


def test_report_section_from_records(tmp_path):
    def record(rule, rank, recurrent, acc, pj):
        eff = {
            "layers": [{"firing_rate": 0.1}, {"firing_rate": 0.05}],
            "synops": {"effective_acs": 1e5, "effective_macs": 2e5, "dense": 1e6},
            "energy": {
                "inference_pj": pj,
                "dense_inference_pj": 5 * pj,
                "training_sample_pj": 3 * pj,
                "source": "Horowitz",
            },
            "rule_cost": {"macs": 2e6, "state": 5e3},
        }
        summary = {
            "test_accuracy": acc,
            "peak_batch_tensor_bytes": 2**21,
            "locality": {"rank": rank},
            "efficiency": eff,
        }
        cfg = {"rule": {"name": rule}, "model": {"recurrent": recurrent}, "train": {"seed": 0}}
        return RunRecord(f"{rule}-{recurrent}", cfg, summary)

    runs = [record("bptt", 0, False, 0.8, 4e6), record("dfa", 5, True, 0.7, 2e6), RunRecord("old", {}, None)]
    blocks = efficiency_section(runs, tmp_path)
    table = next(b for b in blocks if hasattr(b, "rows"))
    assert [row[:3] for row in table.rows] == [["bptt", "ff", "0.800"], ["dfa", "rec", "0.700"]]
    assert table.rows[0][3] == "0.100 / 0.050"
    assert table.rows[0][7] == "4" and table.rows[1][11] == "6"  # µJ
    assert (tmp_path / "efficiency.png").stat().st_size > 0
