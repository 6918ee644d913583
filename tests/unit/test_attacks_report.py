"""The report's attack checks on constructed records: the masking sign test (not a one-sample flag),
the convergence flag and the sanity row."""

from __future__ import annotations

from spikebench.report.build import attack_checks, attacks_section, masking_tests
from spikebench.report.document import Para, Table
from spikebench.report.records import RunRecord


def report(kind, correct_by_eps, *, grad_source=None, convergence=None, sanity=None):
    rows = []
    for eps, bits in correct_by_eps.items():
        row = {"eps": eps, "accuracy": bits.count("1") / len(bits), "correct": bits}
        if convergence is not None:
            row["convergence"] = convergence
        rows.append(row)
    if sanity is not None:
        rows.append({"eps": 0.5, "accuracy": sanity, "correct": "0" * 9 + "1", "sanity": True})
    return {"kind": kind, "grad_source": grad_source, "norm": "linf", "records": rows}


def run(rule, attacks, seed=0):
    summary = {"test_accuracy": 0.9, "locality": {"rank": 0}}
    config = {
        "rule": {"name": rule},
        "model": {"recurrent": False},
        "train": {"seed": seed},
        "data": {"name": "d"},
    }
    return RunRecord(f"{rule}-{seed}", config, summary, attacks=attacks)


def text(blocks) -> str:
    return " ".join(b.text for b in blocks if isinstance(b, Para))


def test_masking_needs_more_than_one_sample():
    grad = "1" * 20
    one = run(
        "bptt",
        {
            "pgd-exact": report("gradient", {0.1: grad}, grad_source="exact"),
            "square": report("query", {0.1: "0" + "1" * 19}),
        },
    )
    [(rule, free, t)] = masking_tests([one])
    assert (rule, free, t.free_only, t.gradient_only, t.masked) == ("bptt", "square", 1, 0, False)


def test_masking_uses_the_worst_case_over_gradient_attacks_pooled_over_seeds(tmp_path):
    def seed_run(seed):
        return run(
            "dfa",
            {
                # PGD misses samples 0-3, APGD breaks 0-1: the worst case misses only 2-3
                "pgd-exact": report("gradient", {0.1: "1111" + "0" * 6}, grad_source="exact"),
                "apgd-exact": report("gradient", {0.1: "0011" + "0" * 6}, grad_source="exact"),
                "pgd-transfer": report("gradient", {0.1: "1" * 10}, grad_source="transfer"),  # not exact
                "square": report("query", {0.1: "0000" + "1" + "0" * 5}),
            },
            seed,
        )

    [(_, _, t)] = masking_tests([seed_run(s) for s in range(3)])
    assert (t.free_only, t.gradient_only) == (6, 3)  # 2 per seed broken only by Square, 1 only by gradients
    [(_, _, t)] = masking_tests([seed_run(s) for s in range(8)])
    assert (t.free_only, t.gradient_only) == (16, 8) and not t.masked  # p = 0.076
    strong = run(
        "dfa",
        {
            "pgd-exact": report("gradient", {0.03: "1" * 10, 0.1: "1" * 10}, grad_source="exact"),
            "square": report("query", {0.03: "0" * 10, 0.1: "0" * 10}),
        },
    )
    [(_, _, t)] = masking_tests([strong])
    assert (t.free_only, t.gradient_only) == (20, 0) and t.masked
    blocks = attacks_section([strong], [], tmp_path)
    table = next(b for b in blocks if isinstance(b, Table) and "p (Holm)" in b.header)
    assert table.rows[0][-1] == "**yes**" and "Possible gradient masking: dfa (square)" in text(blocks)


def test_convergence_and_sanity_flags():
    converged = {"10": 0.40, "20": 0.33, "50": 0.30, "100": 0.298}
    improving = {"10": 0.40, "20": 0.33, "50": 0.30, "100": 0.28}
    good = run(
        "bptt",
        {
            "pgd-exact": report(
                "gradient", {0.1: "1" * 3 + "0" * 7}, grad_source="exact", convergence=converged, sanity=0.0
            )
        },
    )
    blocks = attack_checks([good])
    assert "Every iterative gradient attack converged" in text(blocks)
    assert "Sanity check passed on all 1" in text(blocks)
    bad = run(
        "ottt",
        {
            "apgd-exact": report(
                "gradient", {0.1: "1" * 3 + "0" * 7}, grad_source="exact", convergence=improving, sanity=0.1
            )
        },
    )
    out = text(attack_checks([good, bad]))
    assert (
        "Still improving" in out
        and "ottt seed 0 (apgd-exact, eps 0.1: 0.300 after 50 steps, 0.280 after 100)" in out
    )
    assert "Sanity check failed" in out and "ottt seed 0 (apgd-exact: 0.100 at eps 0.5)" in out
    assert "bptt" not in out.split("Still improving")[1].split("Sanity")[0]
