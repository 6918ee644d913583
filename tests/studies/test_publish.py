"""Publishing a study: records without checkpoints and raw probes, a report that rebuilds byte for byte
from them, and the published results committed under ``results/``."""

import json
import shutil
from pathlib import Path

import pytest

from spikebench.cli import main
from spikebench.io import sha256
from spikebench.report.records import load_study
from spikebench.studies.publish import PublishError, publish_study
from spikebench.studies.validate import check_run, run_omissions
from tests.studies.test_controls import tiny_study

RESULTS = Path(__file__).resolve().parents[2] / "results"
REPORT_FILES = ("report.md", "report.html", "verdicts.json")


def _files(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _rebuilt(published: Path, tmp_path: Path) -> Path:
    """A copy of ``published`` without its report, rebuilt by ``spikebench report``."""
    copy = tmp_path / "rebuilt"
    shutil.copytree(published, copy)
    shutil.rmtree(copy / "report")
    assert main(["report", str(copy)]) == 0
    return copy


@pytest.fixture
def published(fake_data, tmp_path):
    study, keys = tiny_study(tmp_path)
    assert main(["report", str(study)]) == 0
    dest = tmp_path / "published"
    assert publish_study(study, dest, argv=["publish", "study", "published"]) == dest / "report/report.html"
    return study, dest, keys


def test_publish_leaves_out_checkpoints_and_probes_and_lists_them_with_their_hashes(published):
    study, dest, keys = published
    source, copy = _files(study), _files(dest)
    left = json.loads((dest / "published.json").read_text())["omitted"]
    assert left and all(p.endswith("checkpoint.pt") or "/probes/epoch_" in p for p in left)
    assert {p for p in source if p.endswith(".pt")} == set(left)  # every tensor file, nothing else
    assert all(left[p]["sha256"] == source[p] for p in left)
    assert not any(p.endswith(".pt") for p in copy)
    # every other record of the runs and the analyses is copied unchanged (the analyses' provenance
    # gains the lines saying that their raw inputs are left out)
    kept = {p for p in source if p.startswith(("runs/", "analysis/")) and p not in left}
    kept.discard("analysis/provenance.json")
    assert kept and kept <= set(copy) and all(copy[p] == source[p] for p in kept)
    # and still validates against its run's checksums
    for key in keys.values():
        run = dest / "runs" / key
        assert check_run(run) == "checkpoint.pt is missing"
        assert check_run(run, omitted=run_omissions(dest, run)) is None
    assert not load_study(dest).problems


def test_attack_plots_are_left_out_and_attack_records_kept(published, tmp_path):
    study, _, keys = published
    attacks = study / "runs" / keys[("ottt", 0)] / "attacks"
    attacks.mkdir()
    record = {"attack": "pgd", "records": [{"eps": 0.03, "accuracy": 0.5, "correct": "10"}]}
    (attacks / "pgd-exact.json").write_text(json.dumps(record))
    (attacks / "pgd-exact.png").write_bytes(b"a plot")
    dest = tmp_path / "again"
    publish_study(study, dest)
    rel = f"runs/{keys[('ottt', 0)]}/attacks"
    assert (dest / rel / "pgd-exact.json").read_bytes() == (attacks / "pgd-exact.json").read_bytes()
    assert not (dest / rel / "pgd-exact.png").exists()
    left = json.loads((dest / "published.json").read_text())["omitted"]
    assert left[f"{rel}/pgd-exact.png"] == {"sha256": sha256(attacks / "pgd-exact.png"), "bytes": 6}
    assert load_study(dest).runs[keys[("ottt", 0)]].attacks["pgd-exact"] == record


def test_published_report_uses_the_recorded_analyses_and_says_so(published):
    study, dest, _ = published
    for name in ("similarity_controls.json", "cka.json"):
        assert (dest / "analysis" / name).read_bytes() == (study / "analysis" / name).read_bytes()
    md = (dest / "report" / "report.md").read_text()
    assert "**Published records.**" in md and "computed before the study was published" in md
    # the verdicts are the ones of the full study
    assert (dest / "report/verdicts.json").read_bytes() == (study / "report/verdicts.json").read_bytes()


def test_published_report_rebuilds_byte_for_byte(published, tmp_path):
    _, dest, _ = published
    copy = _rebuilt(dest, tmp_path)
    assert _files(copy / "report") == _files(dest / "report")


def test_a_tampered_omission_is_caught(published):
    _, dest, keys = published
    info = json.loads((dest / "published.json").read_text())
    victim = next(p for p in info["omitted"] if p.endswith("checkpoint.pt"))
    info["omitted"][victim]["sha256"] = "0" * 64
    (dest / "published.json").write_text(json.dumps(info))
    run = dest / Path(victim).parent
    assert "differs from checksums.json" in check_run(run, omitted=run_omissions(dest, run))
    assert any("differs from checksums.json" in p for p in load_study(dest).problems)


def test_publish_refuses_an_existing_destination_and_an_incomplete_study(published, tmp_path, capsys):
    study, dest, keys = published
    with pytest.raises(PublishError, match="exists"):
        publish_study(study, dest)
    (study / "runs" / keys[("ottt", 0)] / "summary.json").unlink()
    assert main(["publish", str(study), str(tmp_path / "other")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not complete" in err[0] and "ottt" in err[0]
    assert not (tmp_path / "other").exists() and not list(tmp_path.glob(".other*"))


def test_a_study_does_not_run_into_a_published_directory(published, capsys):
    _, dest, _ = published
    before = _files(dest)
    assert main(["study", "similarity", "--quick", "--rules", "bptt", "--out", str(dest)]) != 0
    assert "is a published study" in capsys.readouterr().err
    assert _files(dest) == before


@pytest.mark.skipif(not RESULTS.is_dir(), reason="no published results in this checkout")
@pytest.mark.parametrize(
    "name", sorted(p.name for p in RESULTS.iterdir() if p.is_dir()) if RESULTS.is_dir() else []
)
def test_committed_results_rebuild_byte_for_byte(name, tmp_path):
    """The report under results/NAME is what `spikebench report` builds from the records beside it."""
    published = RESULTS / name
    assert (published / "published.json").is_file()
    copy = _rebuilt(published, tmp_path)
    for f in REPORT_FILES:
        assert (copy / "report" / f).read_bytes() == (published / "report" / f).read_bytes(), f
    assert _files(copy / "report") == _files(published / "report")  # the figures too
    assert not load_study(copy).problems
