"""Build a study's report (Markdown and self-contained HTML) from its records alone.

What the report holds comes from the study declarations (:mod:`spikebench.studies.study`): the verdicts
of their claims and their sections, for the studies whose records are there. The sections of the four
claim studies are built here, from the helpers they share; :mod:`spikebench.studies.catalog` wires each
to its study.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from spikebench.analysis.stats import fmt_value
from spikebench.attacks.evidence import (
    CONVERGENCE_TOL,
    MASKING_ALPHA,
    SANITY_MAX_ACCURACY,
    MaskingTest,
    holm,
    masking_test,
    still_improving,
    worst_case,
)
from spikebench.io import atomic_write_text
from spikebench.records import (
    ANALYSIS_DIR,
    ATTACK_STEMS,
    REFERENCE_RULE,
    REPORT_DIR,
    STEM_PGD_EXACT,
    STEM_SQUARE,
)
from spikebench.report import plots
from spikebench.report.controls import controls_section
from spikebench.report.document import Block, Heading, Image, Para, Table, to_html, to_markdown
from spikebench.report.methods import header_blocks, methods_blocks
from spikebench.report.records import RunRecord, Stat, StudyRecords, group, load_study, stat
from spikebench.report.verdicts import DECIDING_COMMAND, INCONCLUSIVE, NOT_COMPUTED, Verdict
from spikebench.studies.study import Claim, report_studies


def _fmt(s: Stat | None, scale: float = 1.0) -> str:
    """Mean ± the half-width of its 95% CI over seeds (t interval), rounded to what that error supports."""
    if s is None:
        return "–"
    if s.n < 2:
        return fmt_value(s.mean * scale)
    half = _T975.get(s.n - 1, 1.96) * s.std * scale / math.sqrt(s.n)
    if half == 0:
        return fmt_value(s.mean * scale)
    return f"{fmt_value(s.mean * scale, half)} ± {fmt_value(half, half)}"


#: the t distribution's 97.5% quantile by degrees of freedom (1.96 beyond)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def _memory_mib(r: RunRecord) -> float | None:
    """Exact tensor memory of one training batch when recorded, else the process-level peak."""
    b = r.summary.get("peak_batch_tensor_bytes") or r.summary.get("peak_memory_bytes")
    return None if b is None else b / 2**20


def _by_rule(runs: list[RunRecord]) -> list[tuple[str, list[RunRecord]]]:
    g = group([r for r in runs if r.ok], lambda r: r.rule)
    return sorted(g.items(), key=lambda kv: kv[1][0].summary["locality"]["rank"])


def tuning_blocks(tuning: dict[str, Any] | None) -> list[Block]:
    """The C2 section's statement of how learning rates were chosen, with the choice per rule."""
    from spikebench.report.verdicts import equal_tuning_text

    text = equal_tuning_text(tuning)
    if not tuning or not tuning.get("chosen"):
        return [Para(text[0].upper() + text[1:] + ".")]
    mult = ", ".join(f"{m:g}" for m in tuning.get("multipliers") or [])
    blocks: list[Block] = [
        Para(
            f"{text[0].upper() + text[1:]} (the validation split, never the test set): train.lr "
            f"{tuning.get('default_lr'):g} x {{{mult}}} at seed {tuning.get('seed')}, the highest validation "
            "accuracy chosen (ties: the default); every seed of the table trains at the chosen lr on the "
            "same reduced training set."
        )
    ]
    rows = []
    for c in tuning["chosen"]:
        tried = ", ".join(
            f"{x['lr']:g}: "
            + ("–" if x["validation_accuracy"] is None else f"{x['validation_accuracy']:.3f}")
            for x in c["candidates"]
        )
        rows.append(["rec" if c["recurrent"] else "ff", c["rule"], f"{c['lr']:g}", tried])
    blocks.append(Table(["network", "rule", "chosen lr", "validation accuracy per lr"], rows))
    return blocks


def tradeoff_section(runs: list[RunRecord], out: Path, tuning: dict[str, Any] | None = None) -> list[Block]:
    blocks: list[Block] = [Heading("C2: locality versus performance and cost")]
    rows = []
    for name, rs in _by_rule(runs):
        loc = rs[0].summary["locality"]
        ff = stat(r.summary["test_accuracy"] for r in rs if not r.recurrent)
        rc = stat(r.summary["test_accuracy"] for r in rs if r.recurrent)
        sps = stat(r.summary["samples_per_second"] for r in rs)
        mem = stat(_memory_mib(r) for r in rs)
        secs = stat(r.summary["train_seconds"] for r in rs)
        rows.append(
            [
                name,
                loc["spatial"],
                loc["temporal"],
                loc["memory"],
                _fmt(ff),
                _fmt(rc),
                _fmt(sps),
                _fmt(mem),
                _fmt(secs),
            ]
        )
    blocks.append(
        Table(
            [
                "rule",
                "spatial credit",
                "temporal credit",
                "memory in T",
                "accuracy (ff)",
                "accuracy (rec)",
                "samples/s",
                "batch memory (MiB)",
                "train time (s)",
            ],
            rows,
        )
    )
    blocks.append(
        Para(
            "Accuracy is on the test set, mean ± the half-width of its 95% confidence interval over seeds "
            "(t interval; a single number where there is one seed), rounded to what that interval supports. "
            "Samples/s, memory and time pool feed-forward and recurrent runs; batch memory is the "
            "exact tensor memory one training batch needs (beyond parameters and optimiser state)."
        )
    )
    blocks += tuning_blocks(tuning)
    if rows:
        blocks.append(Image(plots.accuracy_vs_locality(runs, out / "tradeoff.png"), "accuracy vs locality"))
    return blocks


def similarity_section(records: StudyRecords, out: Path) -> list[Block]:
    blocks: list[Block] = [Heading("C1: similarity of training")]
    cka = records.analyses.get("cka_reference") or {}
    align = records.analyses.get("alignment_summary") or {}
    rules = sorted(set(cka.get("final_last_layer") or {}) | set(align.get("mean_cosine") or {}))
    if not rules:
        return [*blocks, Para("No CKA or gradient-alignment records in this study.")]
    rows = []
    for rule in rules:
        c = (cka.get("final_last_layer") or {}).get(rule)
        a = (align.get("mean_cosine") or {}).get(rule)
        rows.append([rule, "–" if c is None else f"{c:.3f}", "–" if a is None else f"{a:.3f}"])
    blocks.append(
        Table(
            ["rule", "CKA with bptt (last hidden layer, final epoch)", "mean gradient cosine with bptt"], rows
        )
    )
    for png in sorted((records.path / ANALYSIS_DIR).glob("*.png")):
        blocks.append(Image(png, png.stem))
    return blocks + controls_section(records.path)


def recurrence_section(runs: list[RunRecord], out: Path) -> list[Block]:
    blocks: list[Block] = [Heading("C3: explicit recurrence and robustness")]
    rows = []
    for (dataset, rule), rs in sorted(
        group([r for r in runs if r.ok], lambda r: (r.dataset, r.rule)).items()
    ):
        cells = [rule, dataset]
        for recurrent in (False, True):
            sub = [r for r in rs if r.recurrent == recurrent]
            cells.append(_fmt(stat(r.summary["test_accuracy"] for r in sub)))
            cells.append(_fmt(stat(_mean_curve(r, STEM_PGD_EXACT) for r in sub)))
            cells.append(_fmt(stat(_mean_curve(r, STEM_SQUARE) for r in sub)))
        rows.append(cells)
    blocks.append(
        Table(
            [
                "rule",
                "dataset",
                "clean (ff)",
                "PGD (ff)",
                "Square (ff)",
                "clean (rec)",
                "PGD (rec)",
                "Square (rec)",
            ],
            rows,
        )
    )
    blocks.append(
        Para(
            "Attack columns are accuracies averaged over the eps sweep; PGD keeps the best iterate over its "
            "restarts."
        )
    )
    blocks += attack_checks(runs)
    for attack in (STEM_PGD_EXACT, STEM_SQUARE):
        png = plots.robustness_curves(runs, attack, out / f"recurrence-{attack}.png")
        if png:
            blocks.append(Image(png, f"robustness under {attack}"))
    return blocks


def _mean_curve(r: RunRecord, attack: str) -> float | None:
    c = r.attack_curve(attack)
    return sum(c.values()) / len(c) if c else None


GRADIENT_FREE = ("square", "nes", "spsa")


def exact_gradient_stems(r: RunRecord) -> list[str]:
    """The run's records of gradient attacks on its own exact gradients (PGD, APGD, FGSM, and the
    surrogate sweep): what the per-sample gradient worst case is taken over."""
    return sorted(
        stem
        for stem, rep in r.attacks.items()
        if rep.get("kind") == "gradient" and rep.get("grad_source") == "exact" and rep.get("norm") == "linf"
    )


def masking_tests(runs: list[RunRecord]) -> list[tuple[str, str, MaskingTest]]:
    """Per rule and gradient-free attack: the sign test of :func:`spikebench.attacks.evidence.masking_test`
    of that attack against the per-sample worst case of the exact-gradient attacks, pooled over the
    rule's runs and the eps both cover (same samples in the same order)."""
    tests = []
    for rule, rs in _by_rule(runs):
        for free in GRADIENT_FREE:
            grad_bits, free_bits = [], []
            for r in sorted(rs, key=lambda r: r.key):
                report = r.attacks.get(free)
                stems = exact_gradient_stems(r)
                if not report or not stems:
                    continue
                for row in report.get("records", []):
                    if row.get("sanity") or not isinstance(row.get("correct"), str):
                        continue
                    try:
                        g = worst_case({s: r.attacks[s] for s in stems}, float(row["eps"]))
                    except ValueError:  # no per-sample gradient records at this eps, or other samples
                        continue
                    if len(g) == len(row["correct"]):
                        grad_bits.append(g)
                        free_bits.append(row["correct"])
            if grad_bits:
                tests.append((rule, free, masking_test("".join(grad_bits), "".join(free_bits))))
    return tests


def attack_checks(runs: list[RunRecord]) -> list[Block]:
    """Whether the attacks did their job: convergence of the iterative gradient attacks and the sanity
    records (a large eps where no accuracy should remain)."""
    still, failed, sane = [], [], 0
    for r in sorted((r for r in runs if r.ok), key=lambda r: (r.rule, r.recurrent, r.seed)):
        for stem, report in sorted(r.attacks.items()):
            for row in report.get("records", []):
                if row.get("sanity"):
                    if float(row["accuracy"]) > SANITY_MAX_ACCURACY:
                        failed.append(
                            f"{r.label} seed {r.seed} ({stem}: {float(row['accuracy']):.3f} at eps {row['eps']:g})"
                        )
                    else:
                        sane += 1
                elif still_improving(row.get("convergence")):
                    conv = row["convergence"]
                    last = sorted(conv, key=int)[-2:]
                    still.append(
                        f"{r.label} seed {r.seed} ({stem}, eps {row['eps']:g}: "
                        f"{float(conv[last[0]]):.3f} after {last[0]} steps, {float(conv[last[1]]):.3f} after {last[1]})"
                    )
    blocks: list[Block] = []
    if still:
        blocks.append(
            Para(
                f"Still improving (accuracy fell by more than {CONVERGENCE_TOL} between the last two "
                "checkpoints, so a larger budget would likely lower it): " + "; ".join(still) + "."
            )
        )
    elif any(
        row.get("convergence") for r in runs for rep in r.attacks.values() for row in rep.get("records", [])
    ):
        blocks.append(
            Para(
                f"Every iterative gradient attack converged: accuracy changed by at most {CONVERGENCE_TOL} "
                "between its last two checkpoints."
            )
        )
    if failed:
        blocks.append(
            Para(
                f"Sanity check failed (accuracy above {SANITY_MAX_ACCURACY} at the large sanity eps, where an "
                "attack that works leaves about none): " + "; ".join(failed) + "."
            )
        )
    elif sane:
        blocks.append(
            Para(
                f"Sanity check passed on all {sane} sanity records (accuracy at most {SANITY_MAX_ACCURACY})."
            )
        )
    return blocks


def masking_blocks(runs: list[RunRecord]) -> list[Block]:
    tests = masking_tests(runs)
    if not tests:
        return []
    adjusted = holm([t.p for _, _, t in tests])
    rows = [
        [
            rule,
            free,
            str(t.free_only),
            str(t.gradient_only),
            f"{t.p:.3g}",
            f"{p_holm:.3g}",
            "**yes**" if p_holm < MASKING_ALPHA else "no",
        ]
        for (rule, free, t), p_holm in zip(tests, adjusted, strict=True)
    ]
    flagged = [
        f"{rule} ({free})" for (rule, free, _), p in zip(tests, adjusted, strict=True) if p < MASKING_ALPHA
    ]
    return [
        Heading("Gradient masking test", 3),
        Table(
            [
                "rule",
                "gradient-free attack",
                "broken only by it",
                "broken only by gradients",
                "p",
                "p (Holm)",
                "masking",
            ],
            rows,
        ),
        Para(
            "Exact one-sided sign test on the samples where the gradient-free attack and the per-sample worst "
            "case of the exact-gradient attacks (PGD, APGD, FGSM, surrogate sweep) disagree, pooled over seeds "
            f"and eps; masking when the gradient-free attack is stronger at level {MASKING_ALPHA} after Holm's "
            "correction over the rows. "
            + (
                "Possible gradient masking: " + ", ".join(flagged) + "."
                if flagged
                else "No masking detected."
            )
        ),
    ]


def attacks_section(runs: list[RunRecord], backdoor: list[RunRecord], out: Path) -> list[Block]:
    blocks: list[Block] = [Heading("C4: gradient-based and gradient-free attacks")]
    sweep = sorted({s for r in runs for s in r.attacks if "@" in s})
    present = [a for a in [*ATTACK_STEMS, *sweep] if any(r.attack_curve(a) for r in runs)]
    rows = []
    for name, rs in _by_rule(runs):
        rows.append(
            [
                name,
                _fmt(stat(r.summary["test_accuracy"] for r in rs)),
                *[_fmt(stat(_mean_curve(r, a) for r in rs)) for a in present],
            ]
        )
    blocks.append(Table(["rule", "clean", *present], rows))
    blocks.append(
        Para(
            "Accuracies averaged over the eps sweep; `-rule` uses the rule's own credit-assignment path "
            "as the gradient, `-transfer` examples crafted on the bptt run of the same seed."
        )
    )
    blocks += attack_checks(runs)
    blocks += masking_blocks(runs)
    png = plots.attack_bars(runs, present, out / "attacks.png")
    if png:
        blocks.append(Image(png, "accuracy under attack"))
    bd_rows = []
    for name, rs in _by_rule(backdoor):
        bd = [r.summary.get("backdoor") or {} for r in rs]
        bd_rows.append(
            [
                name,
                _fmt(stat(b.get("clean_accuracy") for b in bd)),
                _fmt(stat(b.get("attack_success_rate") for b in bd)),
            ]
        )
    if bd_rows:
        blocks.append(Heading("Backdoor poisoning", 3))
        blocks.append(Table(["rule", "clean accuracy", "attack success rate"], bd_rows))
    return blocks


def _n_text(v: Verdict) -> str:
    return ", ".join(f"{val} {k}" for k, val in v.n.items() if val is not None) or "–"


def _with_ci(effect: float, lo: float, hi: float, seeds: int | None = None) -> str:
    """``effect [lo, hi]`` rounded to the CI's standard error; one seed has no spread, so no interval."""
    if seeds is not None and seeds < 2:
        return f"{effect:.3f} (1 seed: no CI)"
    se = (hi - lo) / 3.92
    return f"{fmt_value(effect, se)} [{fmt_value(lo, se)}, {fmt_value(hi, se)}]"


def _effect_text(v: Verdict) -> str:
    if v.effect is None or v.ci95 is None:
        return "–"
    seeds = v.n.get("seeds")
    return _with_ci(v.effect, v.ci95[0], v.ci95[1], seeds if isinstance(seeds, int) else None)


def summary_blocks(verdicts: list[Verdict], claims: dict[str, Claim], quick: bool) -> list[Block]:
    """The report's first section: one line per claim (verdict, effect [95% CI], n, test) and, for a
    quick study, the warning that it decides nothing; ``claims``: the declarations by name."""
    blocks: list[Block] = [Heading("Summary")]
    if quick:
        blocks.append(
            Para(
                "**This is a quick study: a demonstration that decides nothing.** It shows what the report "
                "of a study looks like, from one epoch on a data subset with small attack budgets; with "
                "fewer than 2 seeds no claim is decided, whatever the table below says. The study sized to "
                f"decide the claims (about an hour on 2 cores): `{DECIDING_COMMAND}`."
            )
        )
    blocks.append(
        Table(
            ["claim", "verdict", "effect [95% CI]", "n", "test"],
            [
                [
                    v.claim,
                    f"**{v.status}**" + (f" ({v.reason})" if v.status == NOT_COMPUTED else ""),
                    _effect_text(v),
                    _n_text(v),
                    claims[v.claim].short_test,
                ]
                for v in verdicts
            ],
        )
    )
    return blocks


def verdict_blocks(verdicts: list[Verdict], claims: dict[str, Claim], out: Path) -> list[Block]:
    """Per claim: the statement, the stated test, the sentence, what would decide it, a forest plot of
    the per-rule effects and their table (or the claim's own table of per-rule results without an
    interval); ``claims``: the declarations by name."""
    blocks: list[Block] = [Heading("Verdicts")]
    for v in verdicts:
        claim = claims[v.claim]
        blocks.append(Heading(f"{v.claim}: {v.status}", 3))
        blocks.append(Para(f"**Claim.** {v.statement}"))
        blocks.append(
            Para(f"**Test.** {v.test}" + (f" Margin: {v.margin:g}." if v.margin is not None else ""))
        )
        blocks.append(Para(f"**Result.** {v.sentence}." if v.sentence else "**Result.** –"))
        if v.status == INCONCLUSIVE and v.decide:
            blocks.append(Para(f"**What would decide it.** {v.decide}."))
        rows = [
            (name, d["effect"], d["ci95"][0], d["ci95"][1])
            for name, d in v.per_rule.items()
            if isinstance(d, dict) and "ci95" in d
        ]
        if rows:
            table = []
            for name, d in v.per_rule.items():
                if "ci95" not in d:
                    continue
                table.append(
                    [
                        name,
                        _with_ci(d["effect"], d["ci95"][0], d["ci95"][1], d.get("seeds")),
                        str(d["seeds"]),
                        "–" if d.get("p_holm") is None else f"{d['p_holm']:.2g}",
                    ]
                )
            blocks.append(Table(["rule", "effect [95% CI over seeds]", "seeds", "p (Holm)"], table))
            pooled = (v.effect, v.ci95[0], v.ci95[1]) if v.effect is not None and v.ci95 else None
            png = plots.forest(
                f"{v.claim}: {v.status}",
                rows,
                pooled,
                out / f"forest-{v.claim.replace('.', '-')}.png",
                null=claim.null,
                margin=v.margin if claim.draw_margin else None,
                xlabel=claim.effect_label,
            )
            if png:
                blocks.append(Image(png, f"{v.claim} per-rule effects"))
        elif claim.per_rule_table is not None and v.per_rule:
            blocks.append(claim.per_rule_table(v))
    return blocks


def build_blocks(records: StudyRecords, out: Path) -> tuple[list[Block], list[Verdict]]:
    """The report: the summary and verdicts of the claims of the studies whose records are there (by
    claim), then those studies' sections (in the order the study runs them), failures and methods."""
    m = records.manifest
    studies = report_studies(m["study"], m.get("parts", {}))
    claims = {c.name: c for s in studies for c in s.claims}
    verdicts = [
        reference_gate(claims[name].decide(records), records, claims[name].compared_parts)
        for name in sorted(claims)
    ]
    ok = sum(r.ok for r in records.runs.values())
    quick = bool(m.get("settings", {}).get("mode", {}).get("quick"))
    blocks: list[Block] = [
        Heading(f"spikebench study: {m['study']}", 1),
        *summary_blocks(verdicts, claims, quick),
        *header_blocks(records, [(v.claim, v.decide or "") for v in verdicts]),
        Para(
            f"{ok} of {len(records.runs)} runs completed; {len(records.failed)} failed; "
            f"{len(records.missing)} not run."
        ),
        *verdict_blocks(verdicts, claims, out),
    ]
    for study in studies:
        if study.section is not None:
            blocks += study.section(records, out)
    if records.failed:
        blocks.append(Heading("Failed runs"))
        blocks.append(Para("Failed runs are left out of every table and verdict above."))
        blocks.append(
            Table(
                ["run", "rule", "recurrent", "seed", "epoch", "reason"],
                [
                    [
                        r.key,
                        r.rule,
                        str(r.recurrent),
                        str(r.seed),
                        str(r.failure.get("epoch") or "–"),
                        r.failure.get("reason", ""),
                    ]
                    for r in records.failed
                ],
            )
        )
    lost = [r for r in records.runs.values() if r.status in ("missing", "corrupt")]
    bad_attacks = [(r, stem, why) for r in records.runs.values() for stem, why in r.bad_attacks.items()]
    if lost or bad_attacks:
        blocks.append(Heading("Missing and corrupt records"))
        blocks.append(
            Para(
                "These records are left out of every table and verdict above; rerunning the study redoes "
                "them (a corrupt record is moved to corrupt/ first)."
            )
        )
        rows = [[r.key, r.rule, str(r.recurrent), str(r.seed), r.status, r.reason] for r in lost]
        rows += [
            [r.key, r.rule, str(r.recurrent), str(r.seed), f"corrupt {stem}", why]
            for r, stem, why in bad_attacks
        ]
        blocks.append(Table(["run", "rule", "recurrent", "seed", "record", "reason"], rows))
    blocks += methods_blocks(records)
    return blocks, verdicts


def reference_gate(verdict: Verdict, records: StudyRecords, parts: tuple[str, ...]) -> Verdict:
    """A claim compared with bptt cannot be stated when a bptt run of its ``parts`` (the claim's
    ``compared_parts``) is missing or corrupt, or when none of them completed: its verdict becomes "not
    computed", with the runs named. (A failed run is a result, listed as such; the others still decide.)"""
    keys = {k for p in parts for k in records.manifest.get("parts", {}).get(p, [])}
    bptt = [records.runs[k] for k in keys if k in records.runs and records.runs[k].rule == REFERENCE_RULE]
    missing = [r for r in bptt if r.status in ("missing", "corrupt")]
    if bptt and not any(r.ok for r in bptt):
        missing = [r for r in bptt if not r.ok]
    if not missing:
        return verdict
    names = ", ".join(f"{r.label} seed {r.seed} ({r.status}: {r.reason})" for r in missing)
    reason = f"the bptt reference is not usable: {names}"
    return Verdict(
        verdict.claim,
        verdict.statement,
        NOT_COMPUTED,
        verdict.test,
        margin=verdict.margin,
        reason=reason,
        sentence=f"not computed: {reason}",
    )


def _finite(x):
    """``x`` with every non-finite float replaced by None (JSON has no nan or infinity)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def _write(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def build_report(study_dir: Path, formats: tuple[str, ...] = ("md", "html")) -> dict[str, Path]:
    """Write ``report/report.md`` and/or ``report/report.html`` (plots inlined) and ``report/verdicts.json``."""
    records = load_study(study_dir)
    out = study_dir / REPORT_DIR
    out.mkdir(exist_ok=True)
    blocks, verdicts = build_blocks(records, out)
    paths: dict[str, Path] = {}
    if "md" in formats:
        paths["md"] = out / "report.md"
        _write(paths["md"], to_markdown(blocks, out))
    if "html" in formats:
        paths["html"] = out / "report.html"
        _write(paths["html"], to_html(blocks, f"spikebench: {records.manifest['study']}"))
    _write(out / "verdicts.json", json.dumps([_finite(vars(v)) for v in verdicts], indent=2) + "\n")
    return paths
