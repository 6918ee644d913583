"""The C1 controls: the random-direction baseline, the rule's own objective, seed partners, the
similarity study's bptt seeds, and similarity_controls.json with its plots, provenance and report section
end to end on a tiny study."""

import json
import math
import os
import stat

import pytest
import torch
import torch.nn.functional as F

from spikebench.analysis.alignment import (
    exact_gradient,
    layer_sizes,
    measure_alignments,
    random_cosine_quantile,
    step_loss,
)
from spikebench.analysis.cka import linear_cka
from spikebench.analysis.controls import partner_of, partners
from spikebench.analysis.errors import AnalysisError
from spikebench.config import Config, RuleConfig, load_config
from spikebench.data.encoders import Direct, Encoding
from spikebench.report import build_report
from spikebench.rules import RULES
from spikebench.studies import Mode, plan_study
from spikebench.studies.analysis_step import analyze_study
from spikebench.studies.runner import Plan, execute_plan
from tests.equivalence.test_eprop import batch, make


def test_random_cosine_quantile_is_exact_in_two_and_three_dimensions_and_matches_sampling():
    # d = 2: |cos| of a uniform angle is <= c with probability 1 - (2/pi) arccos(c)
    assert random_cosine_quantile(2) == pytest.approx(math.cos(0.025 * math.pi / 2), rel=1e-9)
    # d = 3: cos is uniform on [-1, 1] (Archimedes), so |cos| is uniform on [0, 1]
    assert random_cosine_quantile(3) == pytest.approx(0.975, rel=1e-9)
    assert random_cosine_quantile(1) == 1.0
    g = torch.Generator().manual_seed(0)
    d, n = 200, 40000
    u = torch.randn(n, d, generator=g, dtype=torch.float64)
    cos = (u[:, 0] / u.norm(dim=1)).abs()
    sampled = float(torch.quantile(cos, 0.975))
    assert sampled == pytest.approx(random_cosine_quantile(d), rel=0.02)
    assert random_cosine_quantile(10_000) < 0.03
    with pytest.raises(ValueError):
        random_cosine_quantile(0)


def test_step_loss_is_the_time_average_of_per_step_cross_entropies():
    g = torch.Generator().manual_seed(1)
    readout = torch.randn(5, 4, 3, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 2])
    expected = torch.stack([F.cross_entropy(y, labels) for y in readout]).mean()
    torch.testing.assert_close(step_loss(readout, labels), expected)


@pytest.mark.parametrize("name", ["bptt", "fa", "ottt", "dfa"])
def test_alignment_against_the_rules_own_objective(name):
    net = make((5, 4), False)
    x, labels = batch()
    rule = RULES.get(name)(RuleConfig(name=name), net, torch.Generator().manual_seed(1))
    enc = Encoding(Direct(), 6)
    m = measure_alignments(net, rule, x, labels, enc)
    assert set(m["bptt"]) == {"layers.0", "layers.1", "readout", "all"}
    if rule.online:
        assert m["objective"] == "per-step"
        own = exact_gradient(net, enc.sequence(x), labels, step_loss)
        norm = torch.cat([g.flatten() for n, g in own.items() if n.startswith("readout.")]).norm()
        assert m["own"]["readout"]["bptt_norm"] == pytest.approx(float(norm), rel=1e-10)
        # the readout's update is the exact gradient of the per-step loss
        assert m["own"]["readout"]["cosine"] == pytest.approx(1.0, abs=1e-9)
        assert m["bptt"]["readout"]["cosine"] < 1.0 - 1e-6
    else:
        assert m["objective"] == "sequence" and m["own"] == m["bptt"]
    if name == "bptt":
        assert all(v["cosine"] == pytest.approx(1.0, abs=1e-9) for v in m["bptt"].values())
    sizes = layer_sizes(net)
    assert sizes["layers.0"] == sum(p.numel() for p in net.layers[0].parameters())


def test_partners_pair_every_seed_with_another():
    assert partners([0, 1]) == {0: 1, 1: 0}
    assert partners([2, 0, 1]) == {0: 1, 1: 2, 2: 0}
    assert partner_of(5, partners([0, 1])) == 0
    with pytest.raises(AnalysisError, match="at least two seeds"):
        partners([0])


def test_similarity_study_trains_two_bptt_seeds_even_in_quick_mode():
    for seeds, user in ((None, ()), (3, ())):
        plan = plan_study("similarity", Config(), Mode.make(True, seeds, user))
        by_rule: dict[str, set[int]] = {}
        for cfg in plan.runs.values():
            by_rule.setdefault(cfg.rule.name, set()).add(cfg.train.seed)
        n = seeds or 1
        assert by_rule["bptt"] == set(range(max(n, 2)))
        assert all(s == set(range(n)) for r, s in by_rule.items() if r != "bptt")
    base = load_config(None, ["train.seed=7"])
    plan = plan_study("similarity", base, Mode.make(True, None, ("train.seed",)))
    assert {c.train.seed for c in plan.runs.values()} == {7}  # a pinned seed is not overridden


TINY = [
    "model.hidden=[16,12]",
    "data.timesteps=4",
    "train.batch_size=64",
    "data.limit_test=64",
    "train.epochs=1",
    "train.probe_size=40",
    "train.fisher_size=4",
    "train.track_every=2",
    "train.track=[cka,grad_alignment]",
]


def tiny_study(tmp_path):
    plan = Plan("similarity", {"mode": {"quick": True}, "base": {}})
    cfgs = [
        load_config(None, [*TINY, f"rule.name={r}", f"train.seed={s}"])
        for r, s in (("bptt", 0), ("bptt", 1), ("ottt", 0), ("dfa", 0))
    ]
    plan.add_runs("similarity", cfgs)
    study = tmp_path / "study"
    outcomes = execute_plan(plan, study, workers=1)
    assert all(o.status == "done" for o in outcomes)
    keys = {(c.rule.name, c.train.seed): k for k, c in plan.runs.items()}
    return study, keys


def test_controls_end_to_end_with_provenance_and_report(fake_data, tmp_path):
    old = os.umask(0o022)
    try:
        study, keys = tiny_study(tmp_path)
        assert analyze_study(study) == []
    finally:
        os.umask(old)
    analysis = study / "analysis"
    rec = json.loads((analysis / "similarity_controls.json").read_text())
    assert rec["schema"] == 1 and rec["layers"] == ["layers.0", "layers.1"]
    assert rec["partners"] == {"0": 1, "1": 0} and rec["chance"] == pytest.approx(0.1)
    kinds = {(r["rule"], r["kind"]) for r in rec["cka"]}
    assert kinds == {
        ("bptt", "ceiling"),
        ("bptt", "floor"),
        ("ottt", "rule"),
        ("ottt", "floor"),
        ("dfa", "rule"),
        ("dfa", "floor"),
    }
    assert {r["epoch"] for r in rec["cka"]} == {0, 1}
    assert all(0.0 <= r["value"] <= 1.0 + 1e-9 for r in rec["cka"])

    def probes(rule, seed, epoch):
        return torch.load(
            study / "runs" / keys[(rule, seed)] / "probes" / f"epoch_{epoch:03d}.pt", weights_only=True
        )

    def value(rule, seed, layer, epoch, kind):
        (v,) = [
            r["value"]
            for r in rec["cka"]
            if (r["rule"], r["seed"], r["layer"], r["epoch"], r["kind"]) == (rule, seed, layer, epoch, kind)
        ]
        return v

    for layer in rec["layers"]:
        assert value("bptt", 0, layer, 1, "ceiling") == pytest.approx(
            linear_cka(probes("bptt", 0, 1)[layer], probes("bptt", 1, 1)[layer]), rel=1e-9
        )
        # a rule is compared with bptt of the other seed, never with its own initialisation's twin
        assert value("dfa", 0, layer, 1, "rule") == pytest.approx(
            linear_cka(probes("dfa", 0, 1)[layer], probes("bptt", 1, 1)[layer]), rel=1e-9
        )
        assert value("ottt", 0, layer, 1, "floor") == pytest.approx(
            linear_cka(probes("ottt", 0, 0)[layer], probes("bptt", 1, 1)[layer]), rel=1e-9
        )
        # before training a rule is its untrained network: rule and floor coincide at epoch 0
        assert value("dfa", 0, layer, 0, "rule") == pytest.approx(value("dfa", 0, layer, 0, "floor"))
    refs = {(a["rule"], a["reference"]) for a in rec["alignment"]}
    assert refs == {(r, ref) for r in ("bptt", "ottt", "dfa") for ref in ("bptt", "own")}
    for a in rec["alignment"]:
        assert a["layer"] != "all" and 0.0 < a["random_baseline"] < 1.0 and -1.0 <= a["cosine"] <= 1.0
        if a["rule"] == "bptt":
            assert a["cosine"] == pytest.approx(1.0, abs=1e-6)
    (ottt_readout,) = [
        a
        for a in rec["alignment"]
        if a[("rule")] == "ottt" and a["layer"] == "readout" and a["reference"] == "own"
    ]
    assert ottt_readout["cosine"] == pytest.approx(1.0, abs=1e-6)  # exact gradient of its own objective
    dims = 12 * 10 + 10
    (base,) = {a["random_baseline"] for a in rec["alignment"] if a["layer"] == "readout"}
    assert base == pytest.approx(random_cosine_quantile(dims))
    assert set(rec["accuracy"]) == {"bptt", "ottt", "dfa"} and set(rec["accuracy"]["bptt"]) == {"0", "1"}
    for stem in ("cka_controls", "alignment_controls"):
        for fmt in ("png", "svg"):
            path = analysis / "controls" / f"{stem}.{fmt}"
            assert path.stat().st_size > 1000
            assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE((analysis / "alignment.png").stat().st_mode) == 0o644

    prov = json.loads((analysis / "provenance.json").read_text())
    assert {"cka", "alignment", "controls"} <= set(prov["analyses"])
    inputs = prov["analyses"]["alignment"]["inputs"]
    align_file = f"runs/{keys[('dfa', 0)]}/alignment.jsonl"
    assert align_file in inputs and len(inputs[align_file]) == 64

    # unchanged inputs: reused, nothing rewritten
    stamp = (analysis / "similarity_controls.json").stat().st_mtime_ns
    analyze_study(study)
    assert (analysis / "similarity_controls.json").stat().st_mtime_ns == stamp

    # an input deleted: the recorded analysis is kept and the report says so
    saved = (study / align_file).read_bytes()
    bptt1 = (study / "runs" / keys[("bptt", 1)] / "alignment.jsonl").read_bytes()
    (study / align_file).unlink()
    problems = analyze_study(study)
    assert any(p.startswith("alignment:") and "absent" in p for p in problems)
    assert (analysis / "similarity_controls.json").stat().st_mtime_ns == stamp
    build_report(study)
    report = (study / "report" / "report.md").read_text()
    assert "C1 controls" in report and "absent" in report and "ceiling" in report

    # an input changed: computed again, from the runs whose records still validate
    (study / align_file).write_bytes(saved[:-40] + b"{not json\n")
    assert analyze_study(study) == []
    changed = json.loads((analysis / "similarity_controls.json").read_text())
    assert {r["rule"] for r in changed["cka"]} == {"bptt", "ottt"}
    assert "dfa" not in changed["accuracy"]

    # an analysis that cannot be computed again: its stale results are removed
    (study / "runs" / keys[("bptt", 1)] / "alignment.jsonl").write_bytes(b"{not json\n")
    problems = analyze_study(study)
    assert any(p.startswith("controls:") and "two seeds" in p for p in problems)
    assert not (analysis / "similarity_controls.json").exists()

    # repaired: computed again
    (study / align_file).write_bytes(saved)
    (study / "runs" / keys[("bptt", 1)] / "alignment.jsonl").write_bytes(bptt1)
    assert analyze_study(study) == []
    assert json.loads((analysis / "similarity_controls.json").read_text())["cka"] == rec["cka"]
