"""APGD against torchattacks, PGD's best iterate over restarts, per-sample records and the evidence
helpers (worst case, convergence flag, masking sign test) on constructed data."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikebench.attacks import (
    ATTACKS,
    AttackError,
    AttackOptions,
    AttackRequest,
    ExactGradient,
    Target,
    ThreatModel,
)
from spikebench.attacks.apgd import APGD
from spikebench.attacks.evidence import (
    binomial_tail,
    holm,
    masking_test,
    still_improving,
    worst_case,
)
from spikebench.attacks.runner import checkpoints, report_stem, run_attack
from spikebench.report.records import RunRecord
from tests.unit.test_attacks import plain_classifier, tiny_run


def trained_mlp(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small float32 classifier fitted to random 4x4 images (so that attacks have work to do)."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 3))
    x, y = torch.rand(64, 1, 4, 4), torch.randint(0, 3, (64,))
    opt = torch.optim.Adam(net.parameters(), 0.05)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval().requires_grad_(False), x, y


@pytest.mark.parametrize("norm, eps, steps", [("linf", 0.06, 10), ("linf", 0.06, 50), ("l2", 0.2, 20)])
def test_apgd_agrees_with_torchattacks(norm, eps, steps):
    torchattacks = pytest.importorskip("torchattacks", reason="torchattacks is not installed")
    net, x, y = trained_mlp()
    model = plain_classifier(net)
    target = Target(model, ExactGradient(model))
    reference = torchattacks.APGD(net, norm="Linf" if norm == "linf" else "L2", eps=eps, steps=steps, seed=0)
    torch.manual_seed(0)  # torchattacks draws its start from the global generator
    x_best, robust, loss_best, _ = reference.attack_single_run(x, y)
    ours, broken_at, _ = APGD(AttackOptions(steps=steps)).single_run(
        target, x, y, ThreatModel(norm, eps), torch.Generator().manual_seed(0)
    )
    # same robust samples; on them the same best point and loss (float32 rounding of two projections)
    assert 0.2 < robust.float().mean() < 0.9
    assert torch.equal(broken_at < 0, robust)
    torch.testing.assert_close(ours[robust], x_best[robust], rtol=0, atol=1e-4)
    loss = F.cross_entropy(net(ours), y, reduction="none")
    torch.testing.assert_close(loss[robust], loss_best[robust], rtol=1e-5, atol=1e-5)
    assert (net(ours[~robust]).argmax(1) != y[~robust]).all()


def test_apgd_restarts_agree_with_torchattacks():
    torchattacks = pytest.importorskip("torchattacks", reason="torchattacks is not installed")
    net, x, y = trained_mlp(1)
    model = plain_classifier(net)
    eps = 0.08
    theirs = torchattacks.APGD(net, eps=eps, steps=20, n_restarts=3, seed=0)(x, y)
    result = APGD(AttackOptions(steps=20, restarts=3)).perturb(
        Target(model, ExactGradient(model)), x, y, ThreatModel("linf", eps), torch.Generator().manual_seed(0)
    )
    robust_theirs = net(theirs).argmax(1) == y
    robust_ours = net(result.x_adv).argmax(1) == y
    assert torch.equal(robust_ours, robust_theirs) and torch.equal(robust_ours, result.broken_at < 0)


def test_pgd_restarts_keep_any_breaking_iterate():
    net, x, y = trained_mlp()
    model = plain_classifier(net)
    target, threat = Target(model, ExactGradient(model)), ThreatModel("linf", 0.08)

    def pgd(steps: int, restarts: int):
        opts = AttackOptions(steps=steps, restarts=restarts)
        return ATTACKS.get("pgd")(opts).perturb(target, x, y, threat, torch.Generator().manual_seed(0))

    one, three = pgd(20, 1), pgd(20, 3)
    # the first restart draws the same start: restarts only ever break more samples
    assert ((one.broken_at >= 0) <= (three.broken_at >= 0)).all()
    assert (three.broken_at >= 0).sum() > (one.broken_at >= 0).sum()
    for r in (one, three):
        assert torch.equal(net(r.x_adv).argmax(1) != y, r.broken_at >= 0)
        assert (threat.norms(r.x_adv - x) <= 0.08 + 1e-6).all()
    # a broken sample stops costing gradients (the gradient at an iterate also tells whether it breaks)
    assert three.queries.max() == 60
    broken = one.broken_at >= 0
    assert torch.equal(one.queries[broken], one.broken_at[broken] + 1) and (one.queries[~broken] == 20).all()


def test_run_attack_per_sample_convergence_and_sanity():
    run = tiny_run()
    opts = AttackOptions(steps=25, restarts=2)
    request = AttackRequest("pgd", (0.05, 0.1), options=opts, n=48, sanity_eps=0.5, batch_size=20)
    report = run_attack(run, request)
    small, large, sanity = report["records"]
    assert [r.get("sanity", False) for r in report["records"]] == [False, False, True]
    assert sanity["accuracy"] <= 0.05 and not any("sanity" in note for note in report["notes"])
    for r in report["records"]:
        assert len(r["correct"]) == 48 and r["accuracy"] == r["correct"].count("1") / 48
        conv = r["convergence"]
        assert list(conv) == ["10", "20", "25"] and conv["25"] == r["accuracy"]
        assert conv["10"] >= conv["20"] >= conv["25"]
    assert large["accuracy"] <= small["accuracy"] < report["clean_accuracy"]
    # the same samples in the same order: an AND of the strings is the per-sample worst case
    assert all(a >= b for a, b in zip(small["correct"], large["correct"], strict=True))
    curve = RunRecord("k", {}, attacks={"pgd-exact": report}).attack_curve("pgd-exact")
    assert curve == {0.05: small["accuracy"], 0.1: large["accuracy"]}


def test_run_attack_rejects_eps_outside_the_domain():
    run = tiny_run(epochs=1)
    with pytest.raises(AttackError, match="linf eps must be in"):
        run_attack(run, AttackRequest("pgd", (1.5,), n=4))
    with pytest.raises(AttackError, match="larger than any L2 distance"):
        run_attack(run, AttackRequest("pgd", (0.5,), norm="l2", n=4, sanity_eps=7.0))  # 6x6: at most 6


def test_report_stems():
    assert report_stem("pgd", "exact", "linf") == "pgd-exact"
    assert report_stem("apgd", "exact", "linf") == "apgd-exact"
    assert report_stem("pgd", "exact", "linf", ("fast_sigmoid", 8.0)) == "pgd-exact@fast_sigmoid-8"
    assert report_stem("pgd", "rule", "l2", ("triangle", 0.5)) == "pgd-rule-l2@triangle-0.5"
    assert report_stem("pgd", "exact", "linf", ("triangle", None)) == "pgd-exact@triangle"
    assert report_stem("square", "exact", "linf", ("triangle", 1.0)) == "square"
    assert checkpoints(100) == [10, 20, 50, 100] and checkpoints(20) == [10, 20] and checkpoints(7) == [7]
    assert checkpoints(300) == [10, 20, 50, 100, 300]


def test_worst_case_is_the_per_sample_and():
    reports = {
        "pgd-exact": {
            "records": [{"eps": 0.1, "correct": "1101"}, {"eps": 0.5, "sanity": True, "correct": "0000"}]
        },
        "apgd-exact": [{"eps": 0.1, "correct": "1011"}, {"eps": 0.03, "correct": "1111"}],
        "square": {"records": [{"eps": 0.03, "correct": "0111"}]},
    }
    assert worst_case(reports, 0.1) == "1001"
    assert worst_case(reports, 0.03) == "0111"
    with pytest.raises(ValueError, match="no attack record"):
        worst_case(reports, 0.5)  # the sanity row is not an eps of the sweep
    with pytest.raises(ValueError, match="different numbers of samples"):
        worst_case({**reports, "fgsm-exact": [{"eps": 0.1, "correct": "11"}]}, 0.1)


def test_convergence_flag_on_constructed_curves():
    assert still_improving({"10": 0.5, "20": 0.4, "50": 0.3, "100": 0.29})  # 0.01 > 0.005
    assert not still_improving({"10": 0.5, "20": 0.4, "50": 0.3, "100": 0.296})  # 0.004: converged
    assert not still_improving({"100": 0.3, "10": 0.5, "50": 0.3})  # checkpoints sorted by steps
    assert still_improving({"20": 0.31, "10": 0.5, "100": 0.3, "50": 0.32})
    assert not still_improving({"20": 0.3}) and not still_improving(None)
    assert still_improving({"10": 0.5, "20": 0.45}, tol=0.04) and not still_improving(
        {"10": 0.5, "20": 0.45}, tol=0.06
    )


def test_masking_sign_test_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    for k, n in [(0, 0), (1, 1), (3, 4), (9, 12), (30, 45), (5, 40)]:
        expected = 1.0 if n == 0 else stats.binomtest(k, n, 0.5, alternative="greater").pvalue
        assert binomial_tail(k, n) == pytest.approx(expected, rel=1e-12)
    # one sample of disagreement is no evidence (the old flag fired on it)
    one = masking_test("1111", "1110")
    assert (one.free_only, one.gradient_only, one.p, one.masked) == (1, 0, 0.5, False)
    # 9 samples only Square broke, 1 only PGD broke: p = P(X >= 9 | n = 10) = 11 / 1024
    grad, free = "1" * 9 + "0" + "1" * 20, "0" * 9 + "1" + "1" * 20
    t = masking_test(grad, free)
    assert (t.free_only, t.gradient_only) == (9, 1) and t.p == pytest.approx(11 / 1024) and t.masked
    assert not masking_test(free, grad).masked  # the gradient attack being stronger is not masking
    with pytest.raises(ValueError, match="same samples"):
        masking_test("11", "1")


def test_holm_against_statsmodels_formula():
    p = [0.01, 0.04, 0.03, 0.5]
    # Holm: sorted 0.01, 0.03, 0.04, 0.5 -> 0.04, 0.09, 0.09 (monotone), 0.5
    assert holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.5, 0.6]) == [1.0, 1.0] and holm([]) == []
    assert all(math.isclose(a, b) for a, b in zip(holm([0.001]), [0.001], strict=True))
