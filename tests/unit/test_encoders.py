"""Encoders: output ranges, rates, spike counts, and step-by-step == whole sequence, static and sequential."""

import pytest
import torch

from spikebench.data import ENCODERS, Encoding
from spikebench.data.encoders import Delta, Direct, Latency, Rate
from spikebench.registry import SpikebenchError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_all_encoders_registered_with_descriptions():
    assert set(ENCODERS.names()) >= {"direct", "rate", "latency", "delta"}
    for name in ENCODERS:
        assert ENCODERS.describe(name)


def test_direct_repeats_static_input_as_broadcast():
    x = torch.rand(3, 1, 4, 4)
    seq = Encoding(Direct(), 5).sequence(x)
    assert seq.shape == (5, 3, 1, 4, 4) and seq.stride(0) == 0
    assert torch.equal(seq[4], x)


def test_rate_fires_with_probability_equal_to_intensity():
    p = torch.linspace(0.0, 1.0, 11)
    T = 4000
    seq = Encoding(Rate(), T, gen()).sequence(p.expand(2, 11))
    assert set(seq.unique().tolist()) <= {0.0, 1.0}
    rate = seq.mean(dim=(0, 1))
    # 8000 Bernoulli draws per intensity: 5 standard deviations is at most 0.028
    assert torch.allclose(rate, p, atol=0.028)
    assert rate[0] == 0 and rate[-1] == 1


@pytest.mark.parametrize("encoder", [Rate(), Latency(), Direct()])
def test_static_steps_equal_sequence(encoder):
    x = torch.rand(4, 7)
    whole = Encoding(encoder, 6, gen(3)).sequence(x)
    step_enc = Encoding(encoder, 6, gen(3))
    steps = torch.stack([step_enc.step(x, t) for t in range(6)])
    assert torch.equal(whole, steps)


def test_latency_one_spike_at_most_at_the_documented_time():
    T = 10
    x = torch.tensor([[0.0, 0.05, 0.3, 0.5, 1.0, 1.7]])
    seq = Latency(threshold=0.1).sequence(x, T, None)
    assert set(seq.unique().tolist()) <= {0.0, 1.0}
    counts = seq.sum(0)[0]
    assert counts.tolist() == [0, 0, 1, 1, 1, 1]  # none at or below the threshold
    times = seq[:, 0].argmax(0)
    expected = torch.round((1 - x.clamp(0, 1)) * (T - 1)).long()[0]
    assert times[2:].tolist() == expected[2:].tolist() == [6, 4, 0, 0]


def test_latency_random_inputs_at_most_one_spike():
    x = torch.rand(8, 50)
    seq = Latency().sequence(x, 7, None)
    assert seq.sum(0).max() <= 1
    assert torch.equal(seq.sum(0), (x > 0).float())


def test_delta_signed_changes_of_a_sequence():
    xs = torch.tensor([[[0.0, 0.5], [0.5, 0.5], [0.3, 0.52], [0.0, 0.0]]])  # [B=1, T=4, D=2]
    enc = Encoding(Delta(threshold=0.1), 4, sequential=True)
    seq = enc.sequence(xs)
    assert seq.shape == (4, 1, 2)
    assert seq[:, 0].tolist() == [[0, 1], [1, 0], [-1, 0], [-1, -1]]
    steps = torch.stack([enc.step(xs, t) for t in range(4)])
    assert torch.equal(seq, steps)


def test_delta_rejects_static_input():
    with pytest.raises(SpikebenchError, match="sequences only"):
        Encoding(Delta(), 3).step(torch.rand(2, 4), 0)


@pytest.mark.parametrize("encoder", [Direct(), Rate(), Delta()])
def test_sequence_inputs_time_axis_first(encoder):
    xs = torch.rand(3, 5, 8)  # [B, T, D]
    enc = Encoding(encoder, 5, gen(1), sequential=True)
    seq = enc.sequence(xs)
    assert seq.shape == (5, 3, 8)
    enc2 = Encoding(encoder, 5, gen(1), sequential=True)
    assert torch.equal(seq, torch.stack([enc2.step(xs, t) for t in range(5)]))
    if isinstance(encoder, Direct):
        assert torch.equal(seq[2], xs[:, 2])


def test_sequence_of_wrong_length_is_an_error():
    with pytest.raises(SpikebenchError, match="T=6"):
        Encoding(Direct(), 6, sequential=True).sequence(torch.rand(2, 5, 3))
