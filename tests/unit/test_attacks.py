"""Attacks: analytic FGSM, agreement with torchattacks, adapter statelessness, attack strength, backdoor."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spikebench import components
from spikebench.attacks import (
    ATTACKS,
    AttackError,
    AttackOptions,
    AttackRequest,
    Classifier,
    ExactGradient,
    RuleGradient,
    Target,
    ThreatModel,
    image_layout,
)
from spikebench.attacks.backdoor import apply_trigger, evaluate_backdoor, poison
from spikebench.attacks.runner import run_attack
from spikebench.config import BackdoorConfig, from_dict
from spikebench.data import DATASETS, Dataset, DatasetSpec, Encoding, InputDomain, Split
from spikebench.data.encoders import Direct
from spikebench.nn import Rollout
from spikebench.train.loop import evaluate, fit
from spikebench.train.run import Built
from spikebench.train.seeding import generator


def quadrant_split(n: int, seed: int) -> Split:
    """4 classes of 6x6 one-channel images: class c has a bright quadrant c over dim noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = 0.4 * torch.rand(n, 1, 6, 6, generator=g)
    for i, c in enumerate(y.tolist()):
        r, col = divmod(c, 2)
        x[i, 0, 3 * r : 3 * r + 3, 3 * col : 3 * col + 3] += 0.3
    return Split(x.clamp(0, 1), y)


def tiny_run(encoder: str = "direct", recurrent: bool = False, epochs: int = 4) -> Built:
    """A small spiking network trained in memory on :func:`quadrant_split` (well under a second)."""
    cfg = from_dict(
        {
            "data": {"timesteps": 4, "encoder": encoder},
            "model": {"hidden": [24], "recurrent": recurrent},
            "train": {"epochs": epochs, "batch_size": 32, "lr": 0.01, "device": "cpu"},
        }
    )
    torch.manual_seed(0)
    data = Dataset("quadrants", quadrant_split(256, 1), quadrant_split(64, 2), 4)
    net = components.build_network(cfg.model, data.input_shape, data.n_classes)
    rule = components.build_rule(cfg, net, generator(0, 2))
    enc = components.build_encoding(cfg, generator(0, 1))
    fit(cfg.train, net, rule, data.train, data.test, enc, enc, generator(0, 0))
    net.eval()
    return Built(cfg, data, net, rule, torch.device("cpu"))


class PlainNet(nn.Module):
    """A non-spiking torch model behind the network interface: readout[t] = model(x[t])."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x_seq: Tensor) -> Rollout:
        T, B = x_seq.shape[:2]
        out = self.model(x_seq.reshape(T * B, *x_seq.shape[2:])).reshape(T, B, -1)
        return Rollout([], out, None)  # type: ignore[arg-type]


def plain_classifier(model: nn.Module) -> Classifier:
    return Classifier(PlainNet(model), Encoding(Direct(), 1))


def accuracy(model: Classifier, x: Tensor, y: Tensor) -> float:
    return (model(x).argmax(1) == y).double().mean().item()


def attack(name: str, target: Target, x: Tensor, y: Tensor, threat: ThreatModel, **opts) -> Tensor:
    return (
        ATTACKS.get(name)(AttackOptions(**opts))
        .perturb(target, x, y, threat, torch.Generator().manual_seed(0))
        .x_adv
    )


def test_fgsm_on_linear_model_is_analytic():
    torch.manual_seed(0)
    lin = nn.Linear(12, 3).double()
    x = torch.rand(8, 12, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))
    model = plain_classifier(lin)
    eps = 0.05
    x_adv = attack("fgsm", Target(model, ExactGradient(model)), x, y, ThreatModel("linf", eps))
    # d CE / d x = W^T (softmax(W x + b) - onehot(y)) (per sample; the mean's 1/B does not change a sign)
    p = torch.softmax(x @ lin.weight.T + lin.bias, 1)
    grad = (p - F.one_hot(y, 3).double()) @ lin.weight
    expected = (x + eps * grad.sign()).clamp(0, 1)
    torch.testing.assert_close(x_adv, expected, rtol=0, atol=1e-12)
    x_l2 = attack("fgsm", Target(model, ExactGradient(model)), x, y, ThreatModel("l2", eps))
    direction = grad / grad.norm(dim=1, keepdim=True)
    torch.testing.assert_close(x_l2, (x + eps * direction).clamp(0, 1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fgsm_and_pgd_agree_with_torchattacks(norm):
    torchattacks = pytest.importorskip("torchattacks")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 3)).double()
    x = torch.rand(10, 1, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (10,))
    model = plain_classifier(net)
    target = Target(model, ExactGradient(model))
    eps, alpha, steps = (0.1, 0.02, 7) if norm == "linf" else (0.5, 0.1, 7)
    result = ATTACKS.get("pgd")(AttackOptions(steps=steps, step_size=alpha, random_start=False)).perturb(
        target, x, y, ThreatModel(norm, eps), torch.Generator().manual_seed(0)
    )
    cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    # best iterate: a sample broken after s steps keeps torchattacks' iterate after s steps, an
    # unbroken one the last iterate
    at = result.broken_at
    assert (at >= 0).any() and (at < 0).any()
    for s in range(steps + 1):
        rows = at == s if s < steps else (at == s) | (at < 0)
        theirs = cls(net, eps=eps, alpha=alpha, steps=s, random_start=False)(x, y) if s else x
        torch.testing.assert_close(result.x_adv[rows], theirs[rows], rtol=0, atol=1e-8)
        assert (net(result.x_adv[at == s]).argmax(1) != y[at == s]).all()
        assert s == 0 or (net(result.x_adv[at < 0]).argmax(1) == y[at < 0]).all()
    if norm == "linf":
        fgsm = attack("fgsm", target, x, y, ThreatModel(norm, eps))
        torch.testing.assert_close(fgsm, torchattacks.FGSM(net, eps=eps)(x, y), rtol=0, atol=1e-12)


def test_adapter_has_no_state_leak():
    run = tiny_run(recurrent=True, epochs=1)
    model = Classifier(run.net, components.build_encoding(run.cfg, None))
    x = run.data.test.x[:16]
    first = model(x)
    model(torch.rand_like(x))  # another input in between must not change anything
    assert torch.equal(model(x), first)


def test_rate_encoder_redraws_and_reseeds():
    run = tiny_run(encoder="rate", epochs=1)
    model = Classifier(run.net, components.build_encoding(run.cfg, generator(0, 5)))
    x = run.data.test.x[:32]
    model.reseed(torch.Generator().manual_seed(3))
    a = model(x)
    assert not torch.equal(model(x), a)  # a fresh Bernoulli draw per call
    model.reseed(torch.Generator().manual_seed(3))
    assert torch.equal(model(x), a)
    g = ExactGradient(model, eot=4)(x, run.data.test.y[:32])  # straight-through, averaged over 4 draws
    assert g.shape == x.shape and torch.isfinite(g).all() and g.abs().sum() > 0


def test_rule_gradient_of_bptt_is_exact_gradient():
    run = tiny_run(recurrent=True, epochs=1)
    run.net.double()
    model = Classifier(run.net, components.build_encoding(run.cfg, None))
    x, y = run.data.test.x[:8].double(), run.data.test.y[:8]
    exact = ExactGradient(model)(x, y)
    rule = RuleGradient(model, run.rule)(x, y)
    assert exact.abs().sum() > 0
    torch.testing.assert_close(rule, exact, rtol=1e-10, atol=1e-12)


def test_attack_surrogate_changes_gradients_not_logits():
    from spikebench.dynamics import make_surrogate

    run = tiny_run(epochs=1)
    enc = components.build_encoding(run.cfg, None)
    base, wide = Classifier(run.net, enc), Classifier(run.net, enc, make_surrogate("triangle", 0.2))
    x, y = run.data.test.x[:16], run.data.test.y[:16]
    assert torch.equal(base(x), wide(x))
    assert not torch.allclose(ExactGradient(base)(x, y), ExactGradient(wide)(x, y))
    assert run.net.layers[0].params.surrogate.scale == run.cfg.model.surrogate_scale  # original untouched


def test_pgd_at_least_as_strong_as_fgsm_on_trained_network():
    run = tiny_run()
    model = Classifier(run.net, components.build_encoding(run.cfg, None))
    x, y = run.data.test.x, run.data.test.y
    target, threat = Target(model, ExactGradient(model)), ThreatModel("linf", 0.1)
    clean = accuracy(model, x, y)
    fgsm = accuracy(model, attack("fgsm", target, x, y, threat), y)
    pgd = accuracy(model, attack("pgd", target, x, y, threat, steps=10), y)
    assert clean > 0.9
    assert pgd <= fgsm < clean


@pytest.mark.parametrize("name", ["square", "nes"])
def test_query_attacks_lower_accuracy(name):
    run = tiny_run()
    model = Classifier(run.net, components.build_encoding(run.cfg, None))
    x, y = run.data.test.x, run.data.test.y
    clean = accuracy(model, x, y)
    threat = ThreatModel("linf", 0.15)
    adv = accuracy(model, attack(name, Target(model), x, y, threat, queries=100, samples=5), y)
    assert adv < clean - 0.2


def test_run_attack_records_and_reproducibility():
    run = tiny_run()
    opts = AttackOptions(queries=60)
    a = run_attack(run, AttackRequest("square", (0.05, 0.2), options=opts, n=40, seed=1, batch_size=16))
    b = run_attack(run, AttackRequest("square", (0.05, 0.2), options=opts, n=40, seed=1, batch_size=16))
    c = run_attack(run, AttackRequest("square", (0.05, 0.2), options=opts, n=40, seed=2, batch_size=16))

    def strip(report):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in report["records"]]

    assert strip(a) == strip(b)
    assert strip(a) != strip(c)
    r = a["records"][1]
    assert a["n"] == 40 and a["grad_source"] is None and a["kind"] == "query"
    assert 0 <= r["accuracy"] <= a["clean_accuracy"]
    assert r["mean_perturbation_norm"] <= 0.2 + 1e-6 and 0 < r["queries"] <= 60
    assert r["reference"]["attack"] == "pgd"
    test = r["masking_test"]
    assert r["gradient_masking"] == (test["p"] < 0.05) == test["masked"]
    ref, free = r["reference"]["correct"], r["correct"]
    assert test["free_only"] == sum(g == "1" and f == "0" for g, f in zip(ref, free, strict=True))
    assert test["gradient_only"] == sum(g == "0" and f == "1" for g, f in zip(ref, free, strict=True))
    assert r["reference"]["accuracy"] == ref.count("1") / 40
    # accuracy counts samples right both clean and attacked; success rate is over the clean-correct ones
    n_clean = round(a["clean_accuracy"] * 40)
    assert r["attack_success_rate"] == pytest.approx(1 - round(r["accuracy"] * 40) / n_clean)


def test_backdoor_poisons_exactly_the_fraction():
    split = quadrant_split(203, 0)
    cfg = BackdoorConfig(fraction=0.1, target=2, size=2, value=1.0)
    poisoned, idx = poison(split, cfg, torch.Generator().manual_seed(0))
    assert idx.numel() == round(0.1 * 203) == len(set(idx.tolist()))
    changed = (poisoned.x != split.x).flatten(1).any(1) | (poisoned.y != split.y)
    assert set(changed.nonzero().squeeze(1).tolist()) <= set(idx.tolist())
    assert (poisoned.y[idx] == 2).all()
    assert (poisoned.x[idx][:, :, 4:, 4:] == 1.0).all()  # bottom-right 2x2 corner
    rest = torch.ones(203, dtype=torch.bool)
    rest[idx] = False
    assert torch.equal(poisoned.x[rest], split.x[rest]) and torch.equal(poisoned.y[rest], split.y[rest])
    again, idx2 = poison(split, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(idx, idx2) and torch.equal(again.x, poisoned.x)
    assert poison(split, BackdoorConfig(fraction=0.0), torch.Generator())[1].numel() == 0


def test_trigger_layouts():
    flat = torch.zeros(2, 10)  # no image layout: the last size^2 features
    assert image_layout((10,)) == (1, 1, 10) and image_layout((784,)) == (1, 28, 28)
    assert apply_trigger(flat, BackdoorConfig(size=2, value=0.5))[:, -4:].eq(0.5).all()
    assert apply_trigger(flat, BackdoorConfig(size=2, value=0.5))[:, :-4].eq(0).all()
    rows = torch.zeros(1, 5, 7)  # a sequence of 5 rows of 7 features: the last rows' last features
    out = apply_trigger(rows, BackdoorConfig(size=3))
    assert out.sum() == 9 and out[0, 2:, 4:].eq(1).all()


def test_backdoor_trained_network_learns_trigger():
    run = tiny_run(epochs=1)
    cfg = BackdoorConfig(fraction=0.3, target=0, size=2)
    poisoned, _ = poison(run.data.train, cfg, torch.Generator().manual_seed(0))
    enc = components.build_encoding(run.cfg, None)
    torch.manual_seed(0)
    net = components.build_network(run.cfg.model, run.data.input_shape, 4)
    rule = components.build_rule(run.cfg, net, generator(0, 2))
    train_cfg = run.cfg.train
    fit(train_cfg, net, rule, poisoned, run.data.test, enc, enc, generator(0, 0))
    net.eval()
    result = evaluate_backdoor(net, run.data.test, enc, cfg, 64)
    assert result["clean_accuracy"] == pytest.approx(evaluate(net, run.data.test, enc, 64))
    assert result["attack_success_rate"] > 0.8
    assert result["fraction"] == 0.3 and result["target"] == 0


def test_attacks_stay_in_the_input_domain_the_dataset_declares():
    """A dataset of inputs in [0, 4]: eps above 1 is allowed, perturbed inputs go above 1 and never leave
    [0, 4] (every input any model call sees), and perturbations stay in the eps-ball."""
    name = "quadrants-times-four"

    def four(split: Split) -> Split:
        x = 4 * split.x
        x[:, :, 0, :] = 4.0  # a row at the top of the domain: a step up must be clipped
        return Split(x, split.y)

    data = Dataset(name, four(quadrant_split(256, 1)), four(quadrant_split(64, 2)), 4)
    DATASETS.add(name, DatasetSpec(lambda cfg: data, domain=InputDomain(0.0, 4.0)))
    try:
        cfg = from_dict(
            {
                "data": {"name": name, "timesteps": 4},
                "model": {"hidden": [24]},
                "train": {"epochs": 2, "batch_size": 32, "lr": 0.01, "device": "cpu"},
            }
        )
        torch.manual_seed(0)
        net = components.build_network(cfg.model, data.input_shape, data.n_classes)
        rule = components.build_rule(cfg, net, generator(0, 2))
        enc = components.build_encoding(cfg, generator(0, 1))
        fit(cfg.train, net, rule, data.train, data.test, enc, enc, generator(0, 0))
        net.eval()
        run = Built(cfg, data, net, rule, torch.device("cpu"))
        seen: list[Tensor] = []
        net.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
        opts = AttackOptions(steps=5, queries=30)
        for attack, eps in (("pgd", 1.5), ("square", 1.5), ("uniform-noise", 2.0)):
            seen.clear()
            report = run_attack(run, AttackRequest(attack, (eps,), options=opts, n=32, reference=False))
            inputs = torch.cat([s.flatten() for s in seen])
            assert inputs.min() >= 0 and inputs.max() == 4.0, attack
            assert report["records"][0]["max_perturbation_norm"] <= eps + 1e-6, attack
            adversarial = inputs[(inputs > 1) & (inputs != inputs.round())]  # off the clean grid of quarters
            assert adversarial.numel() > 0, attack
        with pytest.raises(AttackError, match=r"in \(0, 4\] for inputs in \[0, 4\]"):
            run_attack(run, AttackRequest("pgd", (4.5,), n=4))
    finally:
        DATASETS._items.pop(name)
        DATASETS._descriptions.pop(name)


@pytest.mark.parametrize("name", ["nes", "spsa"])
def test_estimators_refuse_a_budget_below_one_estimate_and_keep_the_one_they_get(name):
    """NES / SPSA spend ``2 * samples + 1`` calls per iteration: a smaller budget is refused in one line
    (before any work, by the request too), and the smallest budget that fits is never exceeded."""
    with pytest.raises(
        AttackError, match=r"fewer than one gradient estimate costs \(2 \* samples \+ 1 = 41\)"
    ):
        ATTACKS.get(name)(AttackOptions(queries=40))
    with pytest.raises(AttackError, match="raise queries or lower samples"):
        AttackRequest(name, (0.1,), options=AttackOptions(queries=10, samples=5))
    run = tiny_run()
    model = Classifier(run.net, components.build_encoding(run.cfg, None))
    x, y = run.data.test.x[:16], run.data.test.y[:16]
    result = ATTACKS.get(name)(AttackOptions(queries=7, samples=3)).perturb(
        Target(model), x, y, ThreatModel("linf", 0.1), torch.Generator().manual_seed(0)
    )
    assert int(result.queries.max()) == 7
