"""Each study declares its report section and its claims beside its builder: a study declared outside
the package gets its section and verdict in the report without any change to the report; ``all`` reports
its components' sections in order; declarations that would lose records are refused."""

import json
import sys
import types

import pytest

from spikebench.config import Config
from spikebench.records import PARTS
from spikebench.registry import Registry
from spikebench.report import build_report
from spikebench.report.document import Heading, Para
from spikebench.report.verdicts import SUPPORTED, Verdict
from spikebench.studies import STUDIES, Mode, plan_study
from spikebench.studies.definitions import grid
from spikebench.studies.runner import StudyError
from spikebench.studies.study import Claim, Study, declare, declared_parts, leaves, report_studies, study
from tests.studies.test_report import run, write_study

CLAIM_STUDIES = ["tradeoff", "similarity", "recurrence", "attacks"]


@pytest.fixture
def scratch_studies(monkeypatch):
    """Studies declared by the test are gone after it (the built-in ones loaded first)."""
    STUDIES.names()
    monkeypatch.setattr(STUDIES, "_items", dict(STUDIES._items))
    monkeypatch.setattr(STUDIES, "_descriptions", dict(STUDIES._descriptions))


def toy_section(records, out):
    runs = [r for r in records.part("toy") if r.ok]
    return [
        Heading("Toy: accuracy"),
        Para(f"{len(runs)} toy runs, best accuracy {max(r.summary['test_accuracy'] for r in runs)}."),
    ]


def toy_verdict(records):
    return Verdict("C9", "Toys are accurate.", SUPPORTED, "the toy test", effect=0.5, ci95=[0.4, 0.6])


TOY_CLAIM = Claim(
    "C9", toy_verdict, compared_parts=("toy",), short_test="toy test", effect_label="toy effect"
)


def test_a_study_declared_outside_the_package_gets_its_section_and_verdict(scratch_studies, tmp_path):
    @study("toy", parts=("toy",), section=toy_section, claims=(TOY_CLAIM,))
    def toy(plan, base, mode):
        """A toy study: bptt and fa, feed-forward."""
        plan.add_runs("toy", grid(base, mode, rule__name=["bptt", "fa"], model__recurrent=[False]))

    assert STUDIES.describe("toy") == "A toy study: bptt and fa, feed-forward."
    plan = plan_study("toy", Config(), Mode.make(True, None))
    assert list(plan.parts) == ["toy"] and {c.rule.name for c in plan.runs.values()} == {"bptt", "fa"}

    runs = [run("bptt", acc=0.7), run("fa", acc=0.6)]
    study_dir = write_study(tmp_path, runs, {"toy": [r.key for r in runs]})
    manifest = json.loads((study_dir / "study.json").read_text())
    (study_dir / "study.json").write_text(json.dumps({**manifest, "study": "toy"}))
    md = build_report(study_dir)["md"].read_text()
    assert "## Toy: accuracy" in md and "2 toy runs, best accuracy 0.7." in md
    assert "| C9 | **supported** |" in md and "| toy test |" in md
    assert "## C2" not in md  # no other study's section
    (c9,) = json.loads((study_dir / "report" / "verdicts.json").read_text())
    assert c9["claim"] == "C9" and c9["status"] == SUPPORTED


def test_the_reference_gate_reads_the_claims_declared_parts(scratch_studies, tmp_path):
    declare(Study("toy", lambda plan, base, mode: None, ("toy",), toy_section, (TOY_CLAIM,)), "a toy")
    runs = [run("bptt", acc=0.7), run("fa", acc=0.6)]
    study_dir = write_study(tmp_path, runs, {"toy": [r.key for r in runs]})
    (study_dir / "runs" / runs[0].key / "summary.json").unlink()  # the bptt run of the part: not run
    build_report(study_dir)
    (c9,) = json.loads((study_dir / "report" / "verdicts.json").read_text())
    assert c9["status"] == "not computed" and "the bptt reference is not usable" in c9["reason"]


def test_all_reports_its_components_sections_in_order():
    assert [s.name for s in leaves(STUDIES.get("all"))] == CLAIM_STUDIES
    assert [s.name for s in report_studies("all", PARTS)] == CLAIM_STUDIES
    assert [c.name for s in leaves(STUDIES.get("all")) for c in s.claims] == [
        "C2",
        "C1",
        "C3",
        "C4.i",
        "C4.ii",
    ]
    assert declared_parts(STUDIES.get("all")) == set(PARTS)  # every part of the schema has its study
    # a section is reported when the first part its study declares has records
    assert [s.name for s in report_studies("all", ["tuning", "recurrence-sequential", "backdoor"])] == []
    assert [s.name for s in report_studies("all", ["attacks", "tradeoff"])] == ["tradeoff", "attacks"]
    # the study's own sections first, then any other declared study's with records
    assert [s.name for s in report_studies("tradeoff", ["tradeoff", "similarity"])] == [
        "tradeoff",
        "similarity",
    ]
    assert [s.name for s in report_studies("t", ["attacks", "tradeoff"])] == ["tradeoff", "attacks"]


def test_every_builtin_builder_writes_only_declared_parts():
    for name in CLAIM_STUDIES:
        plan = plan_study(name, Config(), Mode.make(True, None))
        assert plan.parts and set(plan.parts) <= set(STUDIES.get(name).parts), name


def test_declarations_that_would_lose_records_are_refused(scratch_studies):
    def builder(plan, base, mode):
        plan.add_runs("toy", grid(base, mode, rule__name=["bptt"], model__recurrent=[False]))

    with pytest.raises(ValueError, match="part 'tradeoff' is already written by study 'tradeoff'"):
        declare(Study("mine", builder, ("tradeoff",)))
    with pytest.raises(ValueError, match="declares no part"):
        declare(Study("mine", builder))
    with pytest.raises(ValueError, match="composed study has no parts"):
        declare(Study("mine", builder, ("mine",), components=("tradeoff",)))
    declare(Study("typo", builder, ("toys",)))
    with pytest.raises(StudyError, match="the typo study writes the undeclared part\\(s\\) toy"):
        plan_study("typo", Config(), Mode.make(True, None))


def test_a_registry_imports_its_provider_on_the_first_lookup(tmp_path, monkeypatch):
    holder = types.ModuleType("toy_registry_holder")
    holder.REG = Registry("toy", provider="toy_provider")
    monkeypatch.setitem(sys.modules, "toy_registry_holder", holder)
    monkeypatch.syspath_prepend(str(tmp_path))
    provider = tmp_path / "toy_provider.py"
    provider.write_text("raise RuntimeError('broken provider')\n")
    with pytest.raises(RuntimeError, match="broken provider"):
        holder.REG.names()
    with pytest.raises(RuntimeError, match="broken provider"):  # still unloaded: it fails again, never empty
        assert "a" not in holder.REG
    provider.write_text("import toy_registry_holder\ntoy_registry_holder.REG.add('a', 1, 'the toy a')\n")
    monkeypatch.delitem(sys.modules, "toy_provider", raising=False)
    assert holder.REG.get("a") == 1 and holder.REG.names() == ["a"] and len(holder.REG) == 1
