"""The C3 study's parameter-matched control: a feed-forward twin with about the recurrent network's
parameter count, trained and attacked like the static feed-forward/recurrent pairs."""

from spikebench.config import Config, ModelConfig
from spikebench.studies.definitions import Mode, matched_hidden, parameter_count, plan_study


def test_matched_widths_give_the_recurrent_parameter_count():
    model = ModelConfig()
    rec = parameter_count(ModelConfig(recurrent=True), 784)
    # 784-256-256-10 with recurrent weights: the feed-forward counts plus 2 * 256^2
    assert rec == parameter_count(model, 784) + 2 * 256 * 256
    hidden = matched_hidden(model, 784)
    assert hidden == (350, 350)  # h^2 + 796 h + 10 closest to the recurrent count
    assert abs(parameter_count(ModelConfig(hidden=hidden), 784) - rec) / rec < 0.005
    # one layer: 75 h + 10 feed-forward parameters against 75 * 64 + 10 + 64^2 recurrent ones -> h = 119
    assert matched_hidden(ModelConfig(hidden=(64,)), 64) == (119,)


def test_recurrence_study_trains_and_attacks_the_matched_twin():
    plan = plan_study("recurrence", Config(), Mode.make(False, 2))
    matched = plan.parts["recurrence-matched"]
    static = plan.parts["recurrence"]
    assert len(matched) == len(static) // 2  # one twin per rule and seed, static data only
    assert {plan.runs[k].model.hidden for k in matched} == {(350, 350)}
    quick = plan_study("recurrence", Config(), Mode.make(True, None))
    assert sorted(quick.runs[k].rule.name for k in quick.parts["recurrence-matched"]) == ["bptt", "ottt"]
    attacked = {}
    for job in plan.jobs:
        attacked.setdefault(job.key, set()).add((job.request.attack, job.request.grad_source))
    assert all(attacked[k] == attacked[static[0]] for k in matched)
