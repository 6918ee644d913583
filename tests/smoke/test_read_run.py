"""Reading a finished run back (:func:`spikebench.rundir.load_run`) rebuilds nothing of its training and
gives the same attack results as rebuilding it did, on small runs trained on generated IDX files."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from spikebench.attacks import AttackOptions, AttackRequest
from spikebench.attacks.runner import attack_run, run_attack
from spikebench.cli import main
from spikebench.records import CHECKPOINT, SUMMARY
from spikebench.rundir import Built, build, load_checkpoint, load_run, read_config
from spikebench.train.run import eval_run
from tests.conftest import make_fashion_like

QUICK = ["--set", "train.epochs=1", "--set", "model.hidden=[16]", "--set", "data.timesteps=4"]
QUICK += ["--set", "data.limit_test=40", "-q"]


def load_run_rebuilding(run_dir: Path) -> Built:
    """How a run was read back before: the whole training set-up rebuilt (every random generator
    seeded, every split loaded, the training split poisoned), then the checkpoint loaded."""
    built = build(read_config(run_dir))
    state = load_checkpoint(run_dir / CHECKPOINT)
    built.net.load_state_dict(state["model"])
    built.rule.load_state_dict(state.get("rule", {}))
    return built


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three runs: ``clean``, ``other`` (another seed) and ``backdoor`` (a quarter of the training
    images triggered)."""
    root = tmp_path_factory.mktemp("read")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPIKEBENCH_DATA", str(make_fashion_like(root / "data")))
        mp.setenv("SPIKEBENCH_NO_DOWNLOAD", "1")
        mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
        extra = {
            "clean": [],
            "other": ["--set", "train.seed=1"],
            "backdoor": ["--set", "data.backdoor.fraction=0.25", "--set", "data.backdoor.target=3"],
        }
        for name, args in extra.items():
            assert main(["train", *QUICK, *args, "--out", str(root / name)]) == 0
        yield {name: root / name for name in extra}


def global_state() -> tuple:
    return torch.get_rng_state(), random.getstate(), np.random.get_state()


def same_state(a: tuple, b: tuple) -> bool:
    (ta, pa, na), (tb, pb, nb) = a, b
    return (
        torch.equal(ta, tb)
        and pa == pb
        and all(
            np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y for x, y in zip(na, nb, strict=True)
        )
    )


def test_reading_a_run_changes_no_global_random_state(runs):
    torch.manual_seed(1234)
    random.seed(5)
    np.random.seed(6)
    before = global_state()
    load_run(runs["clean"], n_test=8)
    load_run(runs["backdoor"])
    assert same_state(before, global_state())
    load_run_rebuilding(runs["clean"])  # the old way reseeded everything: the check above can fail
    assert not same_state(before, global_state())


def test_attacking_a_run_leaves_the_numerics_settings_alone(runs):
    saved = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = True, False
    try:
        attack_run(runs["clean"], AttackRequest("fgsm", (0.1,), n=4), force=True)
        assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) == (True, False)
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved


def test_a_read_run_is_the_trained_network_and_its_first_test_samples(runs):
    old = load_run_rebuilding(runs["backdoor"])
    new = load_run(runs["backdoor"], n_test=24)
    assert new.cfg == old.cfg and new.n_classes == old.n_classes == 10
    assert torch.equal(new.test.x, old.data.test.x[:24]) and torch.equal(new.test.y, old.data.test.y[:24])
    old_state, new_state = old.net.state_dict(), new.net.state_dict()
    assert list(old_state) == list(new_state)
    assert all(torch.equal(old_state[k], new_state[k]) for k in old_state)
    assert len(load_run(runs["clean"]).test) == 40  # all of them (data.limit_test)


REQUESTS = {
    "pgd-exact": ("clean", AttackRequest("pgd", (0.05, 0.2), options=AttackOptions(steps=3), sanity_eps=0.5)),
    "square-l2": (
        "clean",
        AttackRequest("square", (0.5,), norm="l2", options=AttackOptions(steps=2, queries=20)),
    ),
    "pgd-rule-backdoor": (
        "backdoor",
        AttackRequest("pgd", (0.1,), grad_source="rule", options=AttackOptions(steps=2)),
    ),
    "fgsm-transfer": ("clean", AttackRequest("fgsm", (0.1,), grad_source="transfer")),
    "noise": ("backdoor", AttackRequest("gaussian-noise", (0.3,), seed=3)),
}


@pytest.mark.parametrize("case", list(REQUESTS))
def test_attack_results_are_those_of_the_rebuilding_path(runs, case):
    name, request = REQUESTS[case]
    request = dataclasses.replace(request, n=24, batch_size=16)
    source = runs["other"] if request.grad_source == "transfer" else None
    old = run_attack(
        load_run_rebuilding(runs[name]),
        request,
        source=None if source is None else load_run_rebuilding(source),
    )
    new, path = attack_run(runs[name], dataclasses.replace(request, source_run=source), force=True)
    assert path == runs[name] / "attacks" / f"{request.stem}.json" and json.loads(path.read_text()) == new
    assert [r["correct"] for r in new["records"]] == [r["correct"] for r in old["records"]]
    assert [r["accuracy"] for r in new["records"]] == [r["accuracy"] for r in old["records"]]

    def timeless(report):
        return {
            **{k: v for k, v in report.items() if k not in ("run", "source_run", "precision")},
            "records": [{k: v for k, v in r.items() if k != "seconds"} for r in report["records"]],
        }

    assert timeless(new) == timeless(old)


def test_eval_of_a_backdoor_run_gives_its_summary_record_again(runs):
    summary = json.loads((runs["backdoor"] / SUMMARY).read_text())
    result = eval_run(runs["backdoor"])
    assert result["backdoor"] == summary["backdoor"] and result["test_accuracy"] == summary["test_accuracy"]
    assert eval_run(runs["clean"])["backdoor"] is None
