"""The sizes of a study (:class:`Mode`) and the pieces its plan builders share; planning a study.

Each study (declared in :mod:`spikebench.studies.catalog`, one file each, registry "study": see
:mod:`spikebench.studies.study`) turns a base config (defaults + the user's ``--set`` overrides) and a
:class:`Mode` into a :class:`~spikebench.studies.runner.Plan`: the grid of runs plus the jobs that attack
or analyse them. ``all`` is the union of the four claim studies; runs with equal resolved configs are
shared (same key).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from spikebench.attacks.base import AttackOptions
from spikebench.attacks.request import AttackRequest
from spikebench.config import Config, ModelConfig, to_dict
from spikebench.rules import RULES
from spikebench.studies.grid import expand
from spikebench.studies.jobs import AttackJob
from spikebench.studies.runner import Plan, StudyError
from spikebench.studies.study import STUDIES, declared_parts


@dataclass(frozen=True)
class Mode:
    """How big a study is. ``quick``: a data subset, one epoch, small attack budgets (minutes on 2 cores);
    full: the whole dataset, ``epochs`` epochs, ``seeds`` seeds (at least 3), full attack budgets (PGD and
    APGD 100 steps x 3 restarts keeping the best iterate, Square 1,000 queries, 1,000 test samples);
    ``evidence``: the sizes of :func:`evidence_mode`, between the two.

    ``apgd_steps``: APGD-CE steps per restart; ``restarts``: PGD and APGD runs; ``surrogate_sweep``:
    (surrogate, scale) pairs, each giving one more exact-gradient PGD attack whose backward pass uses that
    surrogate (the per-sample worst case is taken over all of them); ``sanity_eps``: the large eps of the
    sanity record of exact-gradient PGD, where no accuracy should remain; ``timesteps``: the time steps of
    the static datasets (None: the config's); ``backdoor_seeds``: seeds of the backdoor runs (None:
    ``seeds``).

    ``tune_lrs``: multipliers of ``train.lr`` tried per rule and architecture on ``tune_validation``
    training images held out, the C2 runs using the best (:mod:`spikebench.studies.tuning`); empty: no
    tuning (quick mode), and a ``--set train.lr`` pins the learning rate instead."""

    quick: bool
    seeds: int
    epochs: int
    limit_train: int | None
    limit_test: int | None
    attack_n: int
    eps: tuple[float, ...]
    pgd_steps: int
    queries: int
    seq_rules: tuple[str, ...] | None  # rules run on the sequential dataset (None: all)
    blackbox: tuple[str, ...]  # gradient-free attacks of the C4 study
    track_every: int  # batches between gradient-alignment measurements
    user_keys: tuple[str, ...] = ()  # config keys the user set (--set): the mode leaves them alone
    apgd_steps: int = 10
    restarts: int = 1
    surrogate_sweep: tuple[tuple[str, float], ...] = ()
    sanity_eps: float | None = 0.5
    matched_rules: tuple[str, ...] | None = (
        None  # rules with a parameter-matched feed-forward twin (None: all)
    )
    evidence: bool = False
    timesteps: int | None = None
    backdoor_seeds: int | None = None
    tune_lrs: tuple[float, ...] = ()
    tune_validation: int = 5000

    @staticmethod
    def make(quick: bool, seeds: int | None, user_keys: tuple[str, ...] = (), evidence: bool = False) -> Mode:
        """The quick, evidence or full mode (``quick`` and ``evidence`` exclude each other); ``seeds``
        replaces the mode's seed count."""
        if quick and evidence:
            raise StudyError("quick and evidence modes exclude each other")
        if evidence:
            return evidence_mode(seeds, user_keys)
        if quick:
            return Mode(
                quick=True,
                seeds=seeds or 1,
                epochs=1,
                limit_train=4000,
                limit_test=1000,
                attack_n=100,
                eps=(0.03, 0.1),
                pgd_steps=20,
                queries=200,
                seq_rules=("bptt", "ottt"),
                blackbox=("square", "gaussian-noise"),
                track_every=10,
                user_keys=user_keys,
                apgd_steps=10,
                restarts=1,
                surrogate_sweep=QUICK_SWEEP,
                sanity_eps=0.5,
                matched_rules=("bptt", "ottt"),
            )
        return Mode(
            quick=False,
            seeds=max(seeds or 3, 1),
            epochs=10,
            limit_train=None,
            limit_test=None,
            attack_n=1000,
            eps=(0.01, 0.03, 0.1),
            pgd_steps=100,
            queries=1000,
            seq_rules=None,
            blackbox=("square", "nes", "spsa", "gaussian-noise", "uniform-noise"),
            track_every=100,
            user_keys=user_keys,
            apgd_steps=100,
            restarts=3,
            surrogate_sweep=FULL_SWEEP,
            sanity_eps=0.5,
            tune_lrs=FULL_TUNE_LRS,
            tune_validation=5000,
        )

    def settings(self) -> dict:
        return {k: _plain(v) for k, v in vars(self).items()}


def evidence_mode(seeds: int | None = None, user_keys: tuple[str, ...] = ()) -> Mode:
    """A study sized to decide C1-C4, about an hour on 2 cores (README "Evidence mode" gives
    the minimum detectable effect of each size and why): 10 seeds, 3 epochs on 8,000 training images at
    10 time steps, 2,000 test images; 400 attacked samples at eps 0.03 under PGD-20, APGD-20, PGD through
    a second surrogate, FGSM and Square (200 queries); bptt and ottt on the sequential dataset;
    parameter-matched twins of bptt, ottt and dfa; the backdoor table on 2 seeds. ``seeds`` replaces
    the 10."""
    return Mode(
        quick=False,
        seeds=seeds or EVIDENCE_SEEDS,
        epochs=3,
        limit_train=8000,
        limit_test=2000,
        attack_n=400,
        eps=(0.03,),
        pgd_steps=20,
        queries=200,
        seq_rules=("bptt", "ottt"),
        blackbox=("square", "gaussian-noise"),
        track_every=50,
        user_keys=user_keys,
        apgd_steps=20,
        restarts=1,
        surrogate_sweep=QUICK_SWEEP,
        sanity_eps=0.5,
        matched_rules=("bptt", "ottt", "dfa"),
        evidence=True,
        timesteps=10,
        backdoor_seeds=2,
    )


#: seeds of the evidence mode's grid (the unit of replication of every verdict)
EVIDENCE_SEEDS = 10


def _plain(v):
    return [_plain(x) for x in v] if isinstance(v, tuple) else v


#: the attack surrogates of the sweep (the networks train with fast_sigmoid, scale 2): wider and
#: narrower than the training surrogate, and another shape
FULL_SWEEP: tuple[tuple[str, float], ...] = (("fast_sigmoid", 0.5), ("fast_sigmoid", 8.0), ("triangle", 1.0))
QUICK_SWEEP: tuple[tuple[str, float], ...] = (("fast_sigmoid", 8.0),)
#: learning-rate multipliers of the full mode's tuning (around the default ``train.lr``)
FULL_TUNE_LRS: tuple[float, ...] = (0.5, 1.0, 2.0)


def rules() -> list[str]:
    """Every registered rule, from least to most local."""
    return sorted(RULES.names(), key=lambda n: RULES.get(n).locality.rank)


def sized(base: Config, mode: Mode) -> dict:
    axes = {
        "train.epochs": [mode.epochs],
        "train.seed": list(range(mode.seeds)),
        # every run records what C1 needs, so that all studies can share the same trained networks
        "train.track": [["cka", "grad_alignment", "fisher"]],
        "train.track_every": [mode.track_every],
    }
    if mode.limit_train is not None:
        axes["data.limit_train"] = [mode.limit_train]
    if mode.limit_test is not None:
        axes["data.limit_test"] = [mode.limit_test]
    if mode.timesteps is not None:
        axes["data.timesteps"] = [mode.timesteps]
    return {k: v for k, v in axes.items() if k not in mode.user_keys}


def grid(base: Config, mode: Mode, **axes: list) -> list[Config]:
    return expand(base, {**sized(base, mode), **{k.replace("__", "."): v for k, v in axes.items()}})


def attack_job(
    key: str,
    attack: str,
    mode: Mode,
    *,
    source: str = "exact",
    source_key: str | None = None,
    surrogate: tuple[str, float] | None = None,
    sanity_eps: float | None = None,
    **options: int,
) -> AttackJob:
    """The study's attack ``attack`` of run ``key``: at the mode's eps on its first ``attack_n`` test
    samples, seed 0, with ``options`` (:class:`~spikebench.attacks.base.AttackOptions`). Gradient-free
    attacks are compared with the study's own gradient attack records (the report's masking test), so
    no reference PGD runs beside them."""
    request = AttackRequest(
        attack,
        mode.eps,
        grad_source=source,
        options=AttackOptions(**options),
        n=mode.attack_n,
        surrogate=surrogate,
        sanity_eps=sanity_eps,
        reference=False,
    )
    return AttackJob(key, request, source_key)


def add_gradient_attacks(
    plan: Plan,
    keys: list[str],
    mode: Mode,
    sources: tuple[str, ...],
    transfer_from: dict[str, str] | None = None,
) -> None:
    """PGD (with restarts, best iterate) from every gradient source; for exact gradients also the sanity
    record, APGD-CE and one PGD per surrogate of the sweep."""
    pgd = {"steps": mode.pgd_steps, "restarts": mode.restarts}
    for key in keys:
        for source in sources:
            src = None if source != "transfer" else (transfer_from or {}).get(key)
            if source == "transfer" and (src is None or src == key):
                continue
            sanity = mode.sanity_eps if source == "exact" else None
            plan.jobs.append(
                attack_job(key, "pgd", mode, source=source, source_key=src, sanity_eps=sanity, **pgd)
            )
            if source != "exact":
                continue
            plan.jobs.append(attack_job(key, "apgd", mode, steps=mode.apgd_steps, restarts=mode.restarts))
            for surrogate in mode.surrogate_sweep:
                plan.jobs.append(attack_job(key, "pgd", mode, surrogate=tuple(surrogate), **pgd))


def add_blackbox_attacks(plan: Plan, keys: list[str], mode: Mode, attacks: tuple[str, ...]) -> None:
    for key in keys:
        for name in attacks:
            plan.jobs.append(attack_job(key, name, mode, queries=mode.queries))


#: input features per step of the static datasets (the parameter-matched twin is sized from them)
STATIC_FEATURES = {"fashion-mnist": 28 * 28, "mnist": 28 * 28, "digits": 8 * 8}


def parameter_count(model: ModelConfig, n_in: int, n_classes: int = 10) -> int:
    """Parameters of the dense network ``model`` builds for ``n_in`` input features (no weights drawn)."""
    from spikebench.components import build_network

    with torch.device("meta"):
        net = build_network(model, (n_in,), n_classes)
    return sum(p.numel() for p in net.parameters())


def matched_hidden(model: ModelConfig, n_in: int, n_classes: int = 10) -> tuple[int, ...]:
    """Hidden widths of a feed-forward twin with about the recurrent network's parameter count: every
    hidden layer of ``model`` widened by one common factor, the closest integer widths."""
    target = parameter_count(dataclasses.replace(model, recurrent=True), n_in, n_classes)

    def widths(f: float) -> tuple[int, ...]:
        return tuple(max(1, round(h * f)) for h in model.hidden)

    def miss(w: tuple[int, ...]) -> int:
        return (
            parameter_count(dataclasses.replace(model, recurrent=False, hidden=w), n_in, n_classes) - target
        )

    lo, hi = 1.0, 4.0  # the count grows with the factor: bisect for the target
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if miss(widths(mid)) < 0 else (lo, mid)
    return min((widths(lo), widths(hi)), key=lambda w: abs(miss(w)))


def add_recurrence_attacks(plan: Plan, keys: list[str], mode: Mode) -> None:
    """The attacks every network of the C3 study faces."""
    add_gradient_attacks(plan, keys, mode, ("exact",))
    for key in keys:
        plan.jobs.append(attack_job(key, "fgsm", mode))
    add_blackbox_attacks(plan, keys, mode, ("square", "gaussian-noise"))


def _value(data: dict, dotted: str) -> object:
    node: object = data
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def check_user_keys(plan: Plan, base: Config, keys: tuple[str, ...]) -> None:
    """Refuse a ``--set`` of a key that the study's grid sets itself (it would be silently replaced)."""
    base_data = to_dict(base)
    for key in keys:
        want = _value(base_data, key)
        if any(_value(to_dict(cfg), key) != want for cfg in plan.runs.values()):
            hint = "; choose rules with --rules" if key == "rule.name" else ""
            raise StudyError(f"--set {key}: the {plan.study} study sets {key} in its grid itself{hint}")


def select_rules(plan: Plan, names: tuple[str, ...]) -> None:
    """Keep only the runs of the rules ``names`` (and the jobs whose runs are all kept)."""
    for name in names:
        RULES.get(name)  # an unknown name is a usage error
    keep = {k for k, cfg in plan.runs.items() if cfg.rule.name in names}
    plan.runs = {k: c for k, c in plan.runs.items() if k in keep}
    plan.parts = {part: [k for k in keys if k in keep] for part, keys in plan.parts.items()}
    plan.jobs = [j for j in plan.jobs if all(k in keep for k in j.needs)]
    if not plan.runs:
        raise StudyError(f"the {plan.study} study has no runs of the rules {', '.join(names)}")


def plan_study(name: str, base: Config, mode: Mode, rules: tuple[str, ...] | None = None) -> Plan:
    """The plan of study ``name``; ``rules``: only those rules' runs (default: every registered rule)."""
    study = STUDIES.get(name)
    plan = Plan(name, {"mode": mode.settings(), "base": to_dict(base)})
    study(plan, base, mode)
    undeclared = sorted(set(plan.parts) - declared_parts(study))
    if undeclared:  # its records would be in no report section
        raise StudyError(f"the {name} study writes the undeclared part(s) {', '.join(undeclared)}")
    check_user_keys(plan, base, mode.user_keys)
    if rules:
        select_rules(plan, rules)
    return plan
