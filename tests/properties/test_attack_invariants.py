"""Invariants of every registered attack: inside the eps-ball and the domain, reproducible per seed."""

from __future__ import annotations

import pytest
import torch

from spikebench import components
from spikebench.attacks import ATTACKS, AttackOptions, Classifier, ExactGradient, Target, ThreatModel
from spikebench.attacks.threat import AttackError, per_sample_norm
from tests.unit.test_attacks import plain_classifier, tiny_run

TOL = 1e-5
SMALL = AttackOptions(steps=3, restarts=2, queries=25, samples=3)


def run_one(name: str, target: Target, x, y, threat: ThreatModel, seed: int = 0):
    return ATTACKS.get(name)(SMALL).perturb(target, x, y, threat, torch.Generator().manual_seed(seed))


@pytest.fixture
def rate_target() -> tuple[Target, torch.Tensor, torch.Tensor]:
    """An untrained-enough network under a stochastic (rate) encoder, so every path is exercised."""
    run = tiny_run(encoder="rate", recurrent=True, epochs=1)
    model = Classifier(run.net, components.build_encoding(run.cfg, torch.Generator().manual_seed(0)))
    return Target(model, ExactGradient(model, eot=2)), run.data.test.x[:12], run.data.test.y[:12]


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_stays_in_ball_and_domain(name, norm, rate_target):
    target, x, y = rate_target
    for eps in (0.03, 0.5):
        threat = ThreatModel(norm, eps)
        result = run_one(name, target, x, y, threat)
        assert result.x_adv.shape == x.shape
        assert (per_sample_norm(result.x_adv - x, norm) <= eps * (1 + TOL) + 1e-7).all()
        assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
        assert result.queries.shape == (x.shape[0],)
        assert (result.queries <= max(SMALL.queries, SMALL.steps * SMALL.restarts * 2 + SMALL.restarts)).all()


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_is_reproducible(name, rate_target):
    target, x, y = rate_target
    threat = ThreatModel("linf", 0.1)
    target.model.reseed(torch.Generator().manual_seed(1))
    a = run_one(name, target, x, y, threat, seed=4)
    target.model.reseed(torch.Generator().manual_seed(1))
    b = run_one(name, target, x, y, threat, seed=4)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection(norm):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 5, 5, generator=g, dtype=torch.float64)
    far = x + 3 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    threat = ThreatModel(norm, 0.2)
    p = threat.project(far, x)
    assert (threat.norms(p - x) <= 0.2 + 1e-12).all() and p.min() >= 0 and p.max() <= 1
    torch.testing.assert_close(threat.project(p, x), p, rtol=0, atol=1e-15)  # idempotent
    inside = threat.project(x + 0.01 * torch.randn(x.shape, generator=g, dtype=torch.float64), x)
    torch.testing.assert_close(threat.project(inside, x), inside, rtol=0, atol=1e-15)
    start = threat.random_start(x, g)
    assert (threat.norms(start - x) <= 0.2 + 1e-12).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", ["gaussian-noise", "uniform-noise"])
def test_noise_has_exactly_the_matched_norm(name, norm):
    x = torch.full((8, 1, 6, 6), 0.5, dtype=torch.float64)  # far from the domain edges: no clipping
    threat = ThreatModel(norm, 0.05)
    result = run_one(name, Target(None), x, torch.zeros(8, dtype=torch.long), threat)  # type: ignore[arg-type]
    torch.testing.assert_close(threat.norms(result.x_adv - x), torch.full((8,), 0.05, dtype=torch.float64))
    assert (result.queries == 0).all()


def test_bad_threat_models_are_refused():
    for eps in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(AttackError, match="eps"):
            ThreatModel("linf", eps)
    with pytest.raises(AttackError, match="norm"):
        ThreatModel("l1", 0.1)  # type: ignore[arg-type]
    with pytest.raises(AttackError, match="steps"):
        AttackOptions(steps=0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", ATTACKS.names())
def test_flat_inputs_without_image_layout(name, norm):
    torch.manual_seed(0)
    model = plain_classifier(torch.nn.Linear(10, 3))
    x, y = torch.rand(6, 10), torch.randint(0, 3, (6,))
    threat = ThreatModel(norm, 0.2)
    result = run_one(name, Target(model, ExactGradient(model)), x, y, threat)
    assert (threat.norms(result.x_adv - x) <= 0.2 * (1 + TOL)).all()
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
