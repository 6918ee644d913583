"""The library study runner finishes a study: jobs, analyses and report, with nothing from the CLI."""

from spikebench.components import load_config
from spikebench.studies import Mode
from spikebench.studies.run import run_study

TINY = ["model.hidden=[12]", "data.timesteps=4", "data.limit_train=64", "data.limit_test=32"]


def test_run_study_returns_the_report_it_built(fake_data, tmp_path):
    out = tmp_path / "study"
    result = run_study(
        "tradeoff", load_config(None, TINY), Mode.make(True, 1), out, rules=("bptt",), workers=1
    )
    assert result.count("done") == 2 and result.count("failed") == 0
    assert result.report == out / "report" / "report.html" and result.report.is_file()
    assert (out / "report" / "report.md").is_file()
    assert "bptt" in result.report.read_text()
