"""Build a study's report (Markdown and self-contained HTML) from its records alone."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from spikebench.report import plots
from spikebench.report.document import Block, Heading, Image, Para, Table, to_html, to_markdown
from spikebench.report.efficiency import efficiency_section
from spikebench.report.records import RunRecord, Stat, StudyRecords, group, load_study, stat
from spikebench.report.verdicts import Verdict, c1_similarity, c2_tradeoff, c3_recurrence, c4_attacks

ATTACK_COLUMNS = [
    "pgd-exact",
    "pgd-rule",
    "pgd-transfer",
    "fgsm-exact",
    "square",
    "nes",
    "spsa",
    "gaussian-noise",
    "uniform-noise",
]


def _fmt(s: Stat | None, best: bool = False, scale: float = 1.0, digits: int = 3) -> str:
    if s is None:
        return "–"
    text = f"{s.mean * scale:.{digits}f}" + (f" ± {s.std * scale:.{digits}f}" if s.n > 1 else "")
    return f"**{text}**" if best else text


def _memory_mib(r: RunRecord) -> float | None:
    """Exact tensor memory of one training batch when recorded, else the process-level peak."""
    b = r.summary.get("peak_batch_tensor_bytes") or r.summary.get("peak_memory_bytes")
    return None if b is None else b / 2**20


def _by_rule(runs: list[RunRecord]) -> list[tuple[str, list[RunRecord]]]:
    g = group([r for r in runs if r.ok], lambda r: r.rule)
    return sorted(g.items(), key=lambda kv: kv[1][0].summary["locality"]["rank"])


def _numbers(v: Verdict) -> str:
    def short(x):
        if isinstance(x, float):
            return f"{x:.3f}"
        if isinstance(x, dict):
            return "{" + ", ".join(f"{k}: {short(y)}" for k, y in x.items()) + "}"
        return str(x)

    return "; ".join(f"{k} = {short(x)}" for k, x in v.numbers.items())


def tradeoff_section(runs: list[RunRecord], out: Path) -> list[Block]:
    blocks: list[Block] = [Heading("C2: locality versus performance and cost")]
    rows, stats = [], []
    for name, rs in _by_rule(runs):
        loc = rs[0].summary["locality"]
        ff = stat(r.summary["test_accuracy"] for r in rs if not r.recurrent)
        rc = stat(r.summary["test_accuracy"] for r in rs if r.recurrent)
        sps = stat(r.summary["samples_per_second"] for r in rs)
        mem = stat(_memory_mib(r) for r in rs)
        secs = stat(r.summary["train_seconds"] for r in rs)
        stats.append((ff, rc))
        rows.append(
            [
                name,
                loc["spatial"],
                loc["temporal"],
                loc["memory"],
                ff,
                rc,
                _fmt(sps, digits=0),
                _fmt(mem, digits=0),
                _fmt(secs, digits=1),
            ]
        )
    best_ff = max((s[0].mean for s in stats if s[0]), default=None)
    best_rc = max((s[1].mean for s in stats if s[1]), default=None)
    for row in rows:
        row[4] = _fmt(row[4], row[4] is not None and row[4].mean == best_ff)
        row[5] = _fmt(row[5], row[5] is not None and row[5].mean == best_rc)
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
            "Accuracy is on the test set, mean ± std over seeds; the best entry is in bold. "
            "Samples/s, memory and time are means over feed-forward and recurrent runs; batch memory is the "
            "exact tensor memory one training batch needs (beyond parameters and optimiser state)."
        )
    )
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
    for png in sorted((records.path / "analysis").glob("*.png")):
        blocks.append(Image(png, png.stem))
    return blocks


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
            cells.append(_fmt(stat(_mean_curve(r, "pgd-exact") for r in sub)))
            cells.append(_fmt(stat(_mean_curve(r, "square") for r in sub)))
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
    blocks.append(Para("Attack columns are accuracies averaged over the eps sweep."))
    for attack in ("pgd-exact", "square"):
        png = plots.robustness_curves(runs, attack, out / f"recurrence-{attack}.png")
        if png:
            blocks.append(Image(png, f"robustness under {attack}"))
    return blocks


def _mean_curve(r: RunRecord, attack: str) -> float | None:
    c = r.attack_curve(attack)
    return sum(c.values()) / len(c) if c else None


def attacks_section(runs: list[RunRecord], backdoor: list[RunRecord], out: Path) -> list[Block]:
    blocks: list[Block] = [Heading("C4: gradient-based and gradient-free attacks")]
    present = [a for a in ATTACK_COLUMNS if any(r.attack_curve(a) for r in runs)]
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
    masked = [f"{n}" for n, rs in _by_rule(runs) if _gradient_masking(rs)]
    if masked:
        blocks.append(
            Para(
                "Possible gradient masking (a gradient-free attack beat exact-gradient PGD): "
                + ", ".join(masked)
                + "."
            )
        )
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


def _gradient_masking(rs: list[RunRecord]) -> bool:
    for r in rs:
        pgd = r.attack_curve("pgd-exact")
        for free in ("square", "nes", "spsa"):
            curve = r.attack_curve(free)
            if any(e in pgd and acc < pgd[e] - 1e-9 for e, acc in curve.items()):
                return True
    return False


def build_blocks(records: StudyRecords, out: Path) -> tuple[list[Block], list[Verdict]]:
    m = records.manifest
    verdicts = [
        c1_similarity(records),
        c2_tradeoff(records.part("tradeoff")),
        c3_recurrence(records.part("recurrence") + records.part("recurrence-sequential")),
        c4_attacks(records.part("attacks")),
    ]
    parts = m.get("parts", {})
    ok = sum(r.ok for r in records.runs.values())
    blocks: list[Block] = [
        Heading(f"spikebench study: {m['study']}", 1),
        Para(
            f"{ok} of {len(records.runs)} runs completed; {len(records.failed)} failed; "
            f"{len(records.missing)} not run. Mode: "
            + ", ".join(f"{k} = {v}" for k, v in m["settings"]["mode"].items())
            + "."
        ),
        Heading("Verdicts"),
        Table(
            ["claim", "statement", "verdict", "rule", "numbers"],
            [
                [v.claim, v.statement, f"**{v.status}**", v.rule, _numbers(v)]
                for v in verdicts
                if _claim_part(v.claim) & set(parts)
            ],
        ),
    ]
    if "tradeoff" in parts:
        blocks += tradeoff_section(records.part("tradeoff"), out)
        blocks += efficiency_section(records.part("tradeoff"), out)
    if "similarity" in parts:
        blocks += similarity_section(records, out)
    if "recurrence" in parts:
        blocks += recurrence_section(records.part("recurrence") + records.part("recurrence-sequential"), out)
    if "attacks" in parts:
        blocks += attacks_section(records.part("attacks"), records.part("backdoor"), out)
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
    return blocks, verdicts


def _claim_part(claim: str) -> set[str]:
    return {"C1": {"similarity"}, "C2": {"tradeoff"}, "C3": {"recurrence"}, "C4": {"attacks"}}[claim]


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def build_report(study_dir: Path, formats: tuple[str, ...] = ("md", "html")) -> dict[str, Path]:
    """Write ``report/report.md`` and/or ``report/report.html`` (plots inlined) and ``report/verdicts.json``."""
    records = load_study(study_dir)
    out = study_dir / "report"
    out.mkdir(exist_ok=True)
    blocks, verdicts = build_blocks(records, out)
    paths: dict[str, Path] = {}
    if "md" in formats:
        paths["md"] = out / "report.md"
        _write(paths["md"], to_markdown(blocks, out))
    if "html" in formats:
        paths["html"] = out / "report.html"
        _write(paths["html"], to_html(blocks, f"spikebench: {records.manifest['study']}"))
    _write(out / "verdicts.json", json.dumps([vars(v) for v in verdicts], indent=2) + "\n")
    return paths
