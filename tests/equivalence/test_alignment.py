"""Gradient alignment: exact where the rule is BPTT, and measuring never changes training."""

import json

import pytest
import torch

from spikebench import components
from spikebench.analysis.alignment import measure_alignment
from spikebench.analysis.tracking import Tracker
from spikebench.config import load_config
from spikebench.data import Split
from spikebench.rules import RULES
from spikebench.train.loop import fit
from spikebench.train.seeding import generator


def setup(rule: str, *extra: str, dtype=torch.float64):
    cfg = load_config(
        None,
        [
            f"rule.name={rule}",
            "model.hidden=[10,8]",
            "model.recurrent=true",
            "data.timesteps=5",
            "data.encoder=rate",
            *extra,
        ],
    )
    torch.manual_seed(0)
    net = components.build_network(cfg.model, (16,), 4).to(dtype)
    with torch.no_grad():  # enough drive that every layer spikes
        for layer in net.layers:
            layer.weight.mul_(3.0)
            layer.bias.fill_(0.2)
    rule_obj = components.build_rule(cfg, net, generator(0, 2))
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 16, generator=g, dtype=dtype)
    labels = torch.randint(0, 4, (6,), generator=g)
    return cfg, net, rule_obj, x, labels


def assert_exactly_aligned(record):
    assert set(record) == {"layers.0", "layers.1", "readout", "all"}
    for layer, r in record.items():
        assert r["bptt_norm"] > 0, layer
        assert r["cosine"] == pytest.approx(1.0, abs=1e-12), layer
        assert r["norm_ratio"] == pytest.approx(1.0, abs=1e-12), layer


def test_bptt_against_itself_is_exactly_aligned():
    cfg, net, rule, x, labels = setup("bptt")
    enc = components.build_encoding(cfg, torch.Generator().manual_seed(5))
    assert_exactly_aligned(measure_alignment(net, rule, x, labels, enc))


def test_fa_with_symmetric_feedback_is_exactly_aligned():
    if "fa" not in RULES:
        pytest.skip("rule fa is not registered")
    cfg, net, rule, x, labels = setup("fa", "rule.feedback=symmetric")
    enc = components.build_encoding(cfg, torch.Generator().manual_seed(5))
    assert_exactly_aligned(measure_alignment(net, rule, x, labels, enc))


@pytest.mark.parametrize("name", RULES.names())
def test_measuring_leaves_weights_grads_rule_and_random_streams_alone(name):
    cfg, net, rule, x, labels = setup(name)
    for p in net.parameters():
        p.grad = torch.full_like(p, 0.5)
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    rule_state = {k: v.clone() for k, v in rule.state_dict().items()}
    global_rng = torch.random.get_rng_state()
    train_gen = torch.Generator().manual_seed(9)
    train_state = train_gen.get_state()
    enc = components.build_encoding(cfg, torch.Generator().manual_seed(5))
    record = measure_alignment(net, rule, x, labels, enc)
    assert all(torch.equal(v, weights[k]) for k, v in net.state_dict().items())
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in net.parameters())
    assert rule.state_dict().keys() == rule_state.keys()
    assert all(torch.equal(v, rule_state[k]) for k, v in rule.state_dict().items())
    assert torch.equal(torch.random.get_rng_state(), global_rng)
    assert torch.equal(train_gen.get_state(), train_state)
    assert record["all"]["bptt_norm"] > 0
    for r in record.values():
        assert r["cosine"] is None or -1.0 <= r["cosine"] <= 1.0


def train(name: str, run_dir, track: bool) -> dict[str, torch.Tensor]:
    extra = ["train.track=[cka,grad_alignment,fisher]", "train.track_every=1"] if track else []
    cfg, net, rule, _, _ = setup(name, "train.epochs=2", "train.batch_size=16", *extra, dtype=torch.float32)
    g = torch.Generator().manual_seed(3)
    train_split = Split(torch.rand(40, 16, generator=g), torch.randint(0, 4, (40,), generator=g))
    test_split = Split(torch.rand(12, 16, generator=g), torch.randint(0, 4, (12,), generator=g))
    tracker = Tracker(cfg, run_dir, test_split, torch.device("cpu")) if track else None
    fit(
        cfg.train,
        net,
        rule,
        train_split,
        test_split,
        components.build_encoding(cfg, generator(0, 1)),
        components.build_encoding(cfg, generator(0, 3)),
        generator(0, 0),
        tracker=tracker,
    )
    return net.state_dict()


@pytest.mark.parametrize("name", RULES.names())
def test_tracking_does_not_change_the_training_trajectory(name, tmp_path):
    tracked = train(name, tmp_path, track=True)
    plain = train(name, tmp_path / "unused", track=False)
    assert tracked.keys() == plain.keys()
    assert all(torch.equal(tracked[k], plain[k]) for k in plain)
    lines = [json.loads(x) for x in (tmp_path / "alignment.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(6))  # 3 batches per epoch, 2 epochs
    assert [r["epoch"] for r in lines] == [1, 1, 1, 2, 2, 2]
    fisher = [json.loads(x) for x in (tmp_path / "fisher.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in fisher] == [0, 1, 2] and all(r["total"] > 0 for r in fisher)
    probes = sorted(p.name for p in (tmp_path / "probes").iterdir())
    assert probes == ["epoch_000.pt", "epoch_001.pt", "epoch_002.pt", "meta.json"]
