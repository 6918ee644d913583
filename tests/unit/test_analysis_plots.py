"""Per-run analysis plots stay legible however many runs a study has: beyond ``LEGEND_RUNS`` runs are
coloured by rule with one legend entry per rule, and the legend sits outside the axes (an evidence study
has 70 runs per plot; a legend of 70 entries inside the axes collapsed the constrained layout)."""

import io
import warnings

import pytest

from spikebench.analysis import analyze

RULES = ("bptt", "fa", "tbptt", "ottt", "eprop", "decolle", "dfa")


def _runs(seeds: int, rules=RULES) -> list[dict]:
    return [
        {"label": f"{r} s{s}", "rule": r, "recurrent": False, "seed": s, "path": f"{r}-{s}"}
        for s in range(seeds)
        for r in rules
    ]


def _cka_record(runs: list[dict]) -> dict:
    pairs = [
        {"layer": "layers.0", "epoch": e, "a": 0, "b": j, "cka": 0.5 + 0.4 * j / len(runs)}
        for e in (1, 2, 3)
        for j in range(1, len(runs))
    ]
    return {"layers": ["layers.0"], "reference": 0, "runs": runs, "pairs": pairs}


def _legend_labels(fig) -> list[str]:
    assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes)
    return [t.get_text() for t in fig.legends[0].get_texts()]


def _render_without_warnings(fig) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig.savefig(io.BytesIO(), format="png", dpi=40)


def test_few_runs_each_have_their_own_entry():
    runs = _runs(1, RULES[:3])
    styles = analyze._run_styles(runs)
    assert [s["label"] for s in styles] == ["bptt s0", "fa s0", "tbptt s0"]
    fig = analyze._cka_vs_reference(_cka_record(runs), [r["label"] for r in runs])
    _render_without_warnings(fig)
    assert _legend_labels(fig) == ["fa s0", "tbptt s0"]  # the reference itself is not plotted


@pytest.mark.parametrize("recurrent_too", [False, True])
def test_many_runs_are_coloured_by_rule_with_one_entry_each(recurrent_too):
    runs = _runs(10)
    if recurrent_too:
        runs += [{**r, "recurrent": True, "label": r["label"] + " rec"} for r in runs]
    assert len(runs) > analyze.LEGEND_RUNS
    styles = analyze._run_styles(runs)
    groups = [r["rule"] + (" rec" if r["recurrent"] else "") for r in runs]
    assert [s["label"] for s in styles] == groups
    colour = {}
    for g, s in zip(groups, styles, strict=True):
        assert colour.setdefault(g, s["color"]) == s["color"]
    assert len(set(colour.values())) == len(colour)  # distinct rules, distinct colours

    fig = analyze._cka_vs_reference(_cka_record(runs), [r["label"] for r in runs])
    _render_without_warnings(fig)
    labels = _legend_labels(fig)
    assert sorted(labels) == sorted(set(groups))  # bptt too: its other seeds are plotted
