"""Contract over the rule registry: every rule, feed-forward and recurrent, fills a finite gradient for
every trainable parameter, trains a tiny network on a learnable problem and lowers the loss, validates
its options (declared as data), declares its input-gradient path, and round-trips its state."""

import math

import pytest
import torch

from spikebench.config import ConfigError, RuleConfig, TrainConfig
from spikebench.data import Split
from spikebench.data.encoders import Direct, Encoding
from spikebench.dynamics import LIFParams
from spikebench.nn import Network
from spikebench.registry import SpikebenchError
from spikebench.rules import RULES, LearningRule
from spikebench.rules.base import Locality, Memory, Option, Spatial, Temporal
from spikebench.train.loop import fit

ALL = [(name, rec) for name in RULES.names() for rec in (False, True)]


def problem(n: int, seed: int, block: int = 4) -> Split:
    """4 classes in 4 * block inputs: the class decides which block of inputs is bright, on noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.rand(n, 4 * block, generator=g) * 0.3
    for c in range(4):
        x[y == c, block * c : block * c + block] += 0.7
    return Split(x, y)


def build(name: str, recurrent: bool) -> tuple[Network, LearningRule]:
    torch.manual_seed(0)
    net = Network.mlp(16, (24, 16), 4, recurrent=recurrent, params=LIFParams(alpha=0.8), kappa=0.8)
    rule = RULES.get(name)(RuleConfig(name=name), net, torch.Generator().manual_seed(0))
    return net, rule


@pytest.mark.parametrize("name,recurrent", ALL)
def test_every_parameter_gets_a_finite_gradient(name, recurrent):
    net, rule = build(name, recurrent)
    data = problem(32, 0)
    got = {}
    result = rule.train_batch(
        net,
        data.x,
        data.y,
        Encoding(Direct(), 8),
        lambda: got.update({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}),
    )
    assert math.isfinite(result.loss) and result.logits.shape == (32, 4)
    assert set(got) == {n for n, _ in net.named_parameters()}
    for n, g in got.items():
        assert torch.isfinite(g).all(), n
    assert any(g.abs().sum() > 0 for n, g in got.items() if n.startswith("layers.0"))


@pytest.mark.parametrize("name,recurrent", ALL)
def test_trains_and_lowers_the_loss(name, recurrent):
    net, rule = build(name, recurrent)
    train, test = problem(256, 1), problem(128, 2)
    cfg = TrainConfig(epochs=6, batch_size=32, lr=5e-3, schedule="constant")
    enc = Encoding(Direct(), 8)
    records = fit(cfg, net, rule, train, test, enc, enc, torch.Generator().manual_seed(0))
    assert records[-1].train_loss < 0.8 * records[0].train_loss
    assert records[-1].test_accuracy > 0.6


@pytest.mark.parametrize("name", RULES.names())
def test_metadata_and_state_round_trip(name):
    cls = RULES.get(name)
    loc = cls.locality
    assert isinstance(loc.spatial, Spatial) and isinstance(loc.temporal, Temporal)
    assert isinstance(loc.weight_transport, bool) and isinstance(loc.memory, Memory)
    assert cls.online == (loc.temporal == Temporal.ONLINE) == (loc.memory == Memory.ONE)
    assert cls.paper and all(isinstance(d, str) and d for d in cls.deviations)
    assert "mlp" in cls.archs
    net, rule = build(name, True)
    state = rule.state_dict()
    _, other = build(name, True)
    other.load_state_dict(state)
    for k, v in state.items():
        assert torch.equal(other.state_dict()[k], v)


@pytest.mark.parametrize("name", RULES.names())
def test_rejects_bad_options(name):
    cls = RULES.get(name)
    cls.check_config(RuleConfig(name=name))
    for key in (k for k in RuleConfig.NAMED if k != "k"):
        with pytest.raises(ConfigError, match=f"rule.{key}"):
            cls.check_config(RuleConfig(name=name, **{key: "no-such-option"}))


def test_locality_rank_is_derived_from_the_declared_properties():
    ranks = {n: RULES.get(n).locality.rank for n in RULES.names()}
    assert ranks == {"bptt": 0, "tbptt": 1, "fa": 1, "ottt": 2, "eprop": 3, "dfa": 4, "decolle": 4}
    eprop = RULES.get("eprop")
    assert eprop.locality_for(RuleConfig(name="eprop")) == eprop.locality
    random = eprop.locality_for(RuleConfig(name="eprop", feedback="random"))
    assert random.weight_transport is False and random.rank == 4
    loc = Locality(Spatial.EXACT, Temporal.ONLINE, weight_transport=True, memory=Memory.ONE)
    assert loc.as_dict() == {
        "spatial": "exact",
        "temporal": "online",
        "weight_transport": True,
        "memory": "O(1)",
        "rank": 2,
    }
    with pytest.raises(ValueError, match="memory O\\(T\\)"):
        Locality(Spatial.EXACT, Temporal.FULL, weight_transport=True, memory=Memory.ONE)


@pytest.mark.parametrize("name", RULES.names())
def test_options_are_declared_as_data(name):
    cls = RULES.get(name)
    names = [o.name for o in cls.options]
    assert all(isinstance(o, Option) and o.help for o in cls.options) and len(set(names)) == len(names)
    for o in cls.options:
        assert o.resolve(o.default, name) == o.default  # a default passes its own checks
    assert list(cls.option_values(RuleConfig(name=name))) == names


def input_gradient_problem(cls: type[LearningRule]) -> str | None:
    """Why ``cls``'s input gradient (the ``rule`` source of attacks) is not declared, or None."""
    own = cls.input_gradient is not LearningRule.input_gradient
    if cls.exact_input_gradient and own:
        return "declares exact_input_gradient and also overrides input_gradient"
    if not cls.exact_input_gradient and not own:
        return "neither declares exact_input_gradient nor overrides input_gradient"
    return None


@pytest.mark.parametrize("name", RULES.names())
def test_the_input_gradient_is_declared(name):
    assert input_gradient_problem(RULES.get(name)) is None


class Forgetful(LearningRule):
    """A rule that declares no input gradient (and is never registered)."""

    name = "forgetful"
    locality = Locality(Spatial.EXACT, Temporal.FULL, weight_transport=True, memory=Memory.T)
    paper = "none"

    def train_batch(self, net, x, labels, enc, apply):
        raise NotImplementedError


def test_a_rule_without_a_declared_input_gradient_is_caught():
    assert "neither" in input_gradient_problem(Forgetful)
    net, _ = build("bptt", False)
    rule = Forgetful(RuleConfig(name="forgetful"), net, torch.Generator())
    with pytest.raises(SpikebenchError, match="'forgetful' declares no input gradient"):
        rule.input_gradient(net, torch.rand(3, 2, 16), torch.tensor([0, 1]))
    exact = type("Exact", (Forgetful,), {"exact_input_gradient": True})
    assert input_gradient_problem(exact) is None
    both = type("Both", (Forgetful,), {"exact_input_gradient": True, "input_gradient": lambda *a: None})
    assert "also overrides" in input_gradient_problem(both)


def test_online_is_derived_from_the_memory_class():
    assert [n for n in RULES.names() if RULES.get(n).online] == ["decolle", "dfa", "eprop", "ottt"]
    online = Locality(Spatial.EXACT, Temporal.ONLINE, weight_transport=True, memory=Memory.ONE)
    assert type("Traced", (Forgetful,), {"locality": online}).online is True
    with pytest.raises(TypeError, match="derived from locality.memory"):
        type("Claims", (Forgetful,), {"online": True})
