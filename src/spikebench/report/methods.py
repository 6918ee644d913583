"""The report's header and methods section, generated from the records: what the runs actually used
(their configs and summaries, never the mode's nominal sizes), the attack budgets their attack records
state, and where the study came from (``study.json``'s invocations: command, times, versions, git
revision, hardware)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from spikebench.records import PUBLISHED
from spikebench.report.document import Block, Heading, Para, Table
from spikebench.report.records import RunRecord, StudyRecords


def _distinct(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    try:
        return sorted(out)
    except TypeError:
        return out


def _count(n: int | None) -> str:
    return "–" if n is None else f"{n:,}"


def _join(values: Iterable[Any], fmt: Callable[[Any], str] = str) -> str:
    vals = _distinct(values)
    return ", ".join(fmt(v) for v in vals) if vals else "–"


def _seeds(values: Iterable[int]) -> str:
    seeds = _distinct(values)
    if not seeds:
        return "no seeds"
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        text = f"{seeds[0]}-{seeds[-1]}"
    else:
        text = ", ".join(map(str, seeds))
    return f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({text})"


def _train_images(r: RunRecord) -> int | None:
    """Training images the run used: from its summary when it completed, else its config's limit."""
    if r.ok and isinstance(r.summary.get("train_samples"), int):
        return int(r.summary["train_samples"])
    return r.config.get("data", {}).get("limit_train")


def _test_images(r: RunRecord) -> int | None:
    if r.ok and isinstance(r.summary.get("test_samples"), int):
        return int(r.summary["test_samples"])
    return r.config.get("data", {}).get("limit_test")


def _get(r: RunRecord, dotted: str) -> Any:
    node: Any = r.config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _by_dataset(records: StudyRecords) -> dict[str, list[RunRecord]]:
    out: dict[str, list[RunRecord]] = {}
    for r in records.runs.values():
        out.setdefault(r.dataset, []).append(r)
    return dict(sorted(out.items()))


def _attacked(records: StudyRecords) -> list[int]:
    return _distinct(
        int(rep["n"])
        for r in records.runs.values()
        for rep in r.attacks.values()
        if isinstance(rep.get("n"), int)
    )


def header_text(records: StudyRecords) -> str:
    """One paragraph: what the runs used (data sizes, epochs, time steps, seeds), from their records."""
    runs = list(records.runs.values())
    ok = sum(r.ok for r in runs)
    data = []
    for name, rs in _by_dataset(records).items():
        train = _join((_train_images(r) for r in rs), _count)
        test = _join((_test_images(r) for r in rs), _count)
        steps = _join(_get(r, "data.timesteps") for r in rs)
        data.append(f"{name}: {train} training and {test} test images, T = {steps} time steps")
    epochs = _join(_get(r, "train.epochs") for r in runs)
    attacked = _attacked(records)
    text = (
        f"**What the runs used.** {len(runs)} runs ({ok} completed); " + "; ".join(data) + f"; {epochs} "
        f"epoch{'s' if epochs != '1' else ''}; {_seeds(r.seed for r in runs)}"
    )
    if attacked:
        text += f"; attacks on the first {_join(attacked, _count)} test images"
    return text + "."


def _mode_name(records: StudyRecords) -> str:
    mode = records.manifest.get("settings", {}).get("mode", {})
    return "quick" if mode.get("quick") else "evidence" if mode.get("evidence") else "full"


def header_blocks(records: StudyRecords, power: Iterable[tuple[str, str]] = ()) -> list[Block]:
    """The lines under the summary: the runs' actual sizes and the mode they were planned in, then what
    the study can and cannot say: its mode, its power (``power``: claim -> what would decide it, from
    the verdicts), and how it departs from the paper."""
    mode = _mode_name(records)
    article = "an" if mode[0] in "aeiou" else "a"
    runs = [r for r in records.runs.values() if r.ok]
    image_epochs = _join(
        (
            (_train_images(r) or 0) * int(_get(r, "train.epochs") or 0)
            for r in runs
            if _get(r, "data.limit_train")
        ),
        _count,
    )
    power_text = " ".join(f"{claim}: {text.rstrip('.')}." for claim, text in power if text)
    departs = (
        f"networks trained for {image_epochs} image-epochs on a data subset, not to convergence as in the "
        "paper, so each verdict is about networks trained this much"
        if image_epochs
        else "the paper's training budget (whole dataset)"
    )
    return [
        Para(
            header_text(records)
            + f" Planned as {article} {mode} study; the methods section at the end lists every setting."
        ),
        Para(
            f"**What this study can and cannot say.** Mode: {mode}. Power: "
            + (power_text or "no claim is left inconclusive at these sizes.")
            + f" Departures from the paper: {departs}; the time steps and network above; each rule's own "
            "deviations are listed under Methods, Rules. It cannot say how the rules compare on other data, "
            "at other network sizes or with tuned hyperparameters beyond those stated; robust accuracies are "
            "upper bounds, the strongest of the stated attacks at their stated budgets; energy figures are "
            "estimates from operation counts, not measurements on hardware."
        ),
    ]


def _declared_options(rule: str) -> tuple[str, ...]:
    """The config keys (below ``rule.``) of the options the rule declares, ``k`` left out (a row of its
    own), or every non-null named one for an unknown rule."""
    from spikebench.rules import RULES

    if rule not in RULES:
        return ("update", "feedback", "trace", "local_loss")
    return tuple(o.key.removeprefix("rule.") for o in RULES.get(rule).options if o.name != "k")


def _rules_table(records: StudyRecords) -> Table:
    rows = []
    by_rule: dict[str, list[RunRecord]] = {}
    for r in records.runs.values():
        by_rule.setdefault(r.rule, []).append(r)
    for rule, rs in sorted(by_rule.items(), key=lambda kv: _rank(kv[1])):
        opts = "; ".join(
            f"{k} = {_join(_get(r, 'rule.' + k) or 'default' for r in rs)}" for k in _declared_options(rule)
        )
        done = [r.summary for r in rs if r.ok]
        loc = next((s.get("locality") for s in done if s.get("locality")), {}) or {}
        locality = ", ".join(
            f"{k.replace('_', ' ')} {loc[k]}"
            for k in ("spatial", "temporal", "memory", "weight_transport")
            if k in loc
        )
        deviations = _distinct(d for s in done for d in s.get("deviations") or [])
        paper = next((s.get("paper") for s in done if s.get("paper")), None)
        rows.append(
            [
                rule,
                opts or "none",
                locality or "–",
                paper or "–",
                "; ".join(deviations) or "none",
                str(len(rs)),
            ]
        )
    return Table(["rule", "options", "locality", "paper", "deviations", "runs"], rows)


def _rank(rs: list[RunRecord]) -> float:
    for r in rs:
        if r.ok and isinstance((r.summary.get("locality") or {}).get("rank"), int | float):
            return float(r.summary["locality"]["rank"])
    return float("inf")


ATTACK_OPTIONS = ("steps", "restarts", "queries")


def _attacks_table(records: StudyRecords) -> Table | None:
    seen: dict[str, dict[str, list[Any]]] = {}
    for r in records.runs.values():
        for stem, rep in r.attacks.items():
            d = seen.setdefault(stem, {"eps": [], "sanity": [], "n": [], **{k: [] for k in ATTACK_OPTIONS}})
            d["eps"] += [e for e in rep.get("eps") or [] if e not in d["eps"]]
            if rep.get("sanity_eps") is not None and rep["sanity_eps"] not in d["sanity"]:
                d["sanity"].append(rep["sanity_eps"])
            if rep.get("n") is not None and rep["n"] not in d["n"]:
                d["n"].append(rep["n"])
            opts = rep.get("options") or {}
            for k in ATTACK_OPTIONS:
                if opts.get(k) is not None and opts[k] not in d[k]:
                    d[k].append(opts[k])
    if not seen:
        return None
    rows = []
    for stem, d in sorted(seen.items()):
        gradient_free = any(s in stem for s in ("square", "nes", "spsa"))
        budget = f"{_join(d['queries'])} queries" if gradient_free else _budget(stem, d)
        rows.append(
            [
                stem,
                _join(d["eps"], lambda e: f"{e:g}")
                + (f" (sanity {_join(d['sanity'], lambda e: f'{e:g}')})" if d["sanity"] else ""),
                _join(d["n"], _count),
                budget,
            ]
        )
    return Table(["attack record", "eps (L-inf)", "samples", "budget"], rows)


def _budget(stem: str, d: dict[str, list[Any]]) -> str:
    if "noise" in stem:
        return "random draws"
    if stem.startswith("fgsm"):
        return "1 step"
    return f"{_join(d['steps'])} steps x {_join(d['restarts'])} restart(s)"


def _seconds_text(seconds: float) -> str:
    m = round(seconds / 60)
    return f"{seconds:.0f} s" if seconds < 120 else f"{m // 60} h {m % 60:02d} min" if m >= 60 else f"{m} min"


def provenance_blocks(records: StudyRecords) -> list[Block]:
    """Versions, git revision, hardware, start and end time, wall time and the command of the study."""
    calls = [c for c in records.manifest.get("invocations") or [] if isinstance(c, dict)]
    if not calls:
        return [Para("**Provenance.** Not recorded (the study was written by an older spikebench).")]
    first, last = calls[0], calls[-1]
    hw = last.get("hardware") or {}
    mem = hw.get("memory_bytes")
    machine = ", ".join(
        x
        for x in (
            str(hw.get("cpu") or ""),
            f"{hw['cores']} cores" if hw.get("cores") else "",
            f"{mem / 2**30:.0f} GiB memory" if isinstance(mem, int | float) else "",
            str(hw.get("os") or ""),
            ", ".join(hw.get("gpus") or []),
        )
        if x
    )
    versions = ", ".join(f"{k} {v}" for k, v in (last.get("versions") or {}).items())
    revisions = _distinct(c.get("git") or "not a git checkout" for c in calls)
    seconds = [c["seconds"] for c in calls if isinstance(c.get("seconds"), int | float)]
    wall = (
        f"{_seconds_text(sum(seconds))} of jobs over {len(calls)} command{'s' if len(calls) != 1 else ''}"
        if seconds
        else "not finished"
    )
    rows = [
        ["command", f"`{first.get('command') or '–'}`"],
        ["git revision", ", ".join(revisions)],
        ["versions", versions or "–"],
        ["hardware", machine or "–"],
        ["started", str(first.get("started") or "–")],
        ["finished", str(last.get("finished") or "–")],
        ["wall time", wall],
    ]
    blocks: list[Block] = [Heading("Provenance", 3), Table(["", ""], rows)]
    if len(revisions) > 1:
        blocks.append(Para("The study was run by more than one revision of the code (listed above)."))
    if records.published is not None:
        blocks.append(published_para(records.published))
    blocks.append(
        Para(
            "To reproduce: check out the git revision above and run the command from the repository root; "
            "records that exist and validate are reused, so rerunning in the same directory only completes it."
        )
    )
    return blocks


def published_para(published: dict[str, Any]) -> Para:
    """What a published study left out, and what its report therefore rests on."""
    omitted = published.get("omitted") or {}
    size = sum(m.get("bytes", 0) for m in omitted.values() if isinstance(m, dict))
    stamp = published.get("published") or {}
    return Para(
        f"**Published records.** This copy of the study (`{PUBLISHED}`) leaves out {len(omitted):,} file(s) "
        f"of {size / 2**20:,.0f} MB (each run's checkpoint, raw probe tensors and attack plots), listed there "
        "with their "
        "SHA-256; every other record is checked against its run's checksums. The CKA, alignment, Fisher "
        "and control analyses are the results computed before publishing from the full records, used "
        "because the inputs that remain hash as they did then. Published "
        f"{stamp.get('finished') or '–'} by git revision {stamp.get('git') or '–'}."
    )


def methods_blocks(records: StudyRecords) -> list[Block]:
    """The methods section: data, encoder, time steps, network, rules and their options, training,
    seeds, attack budgets, surrogates, what was held out for tuning, and the provenance."""
    runs = list(records.runs.values())
    blocks: list[Block] = [Heading("Methods")]
    if not runs:
        return [*blocks, Para("The study has no runs.")]
    data_rows = []
    for name, rs in _by_dataset(records).items():
        data_rows.append(
            [
                name,
                _join((_train_images(r) for r in rs), _count),
                _join((_test_images(r) for r in rs), _count),
                _join(_get(r, "data.encoder") for r in rs),
                _join(_get(r, "data.timesteps") for r in rs),
                _join(_get(r, "data.downsample") for r in rs),
                _join(_get(r, "data.backdoor.fraction") for r in rs),
            ]
        )
    blocks += [
        Heading("Data", 3),
        Table(
            [
                "dataset",
                "training images",
                "test images",
                "encoder",
                "time steps",
                "downsample",
                "poisoned share",
            ],
            data_rows,
        ),
    ]
    net = [
        ("architecture", "model.arch"),
        ("hidden widths", "model.hidden"),
        ("recurrent", "model.recurrent"),
        ("membrane decay alpha", "model.alpha"),
        ("threshold", "model.theta"),
        ("reset", "model.reset"),
        ("reset detached", "model.detach_reset"),
        ("training surrogate", "model.surrogate"),
        ("surrogate scale", "model.surrogate_scale"),
    ]
    params = _distinct(int(r.summary["parameters"]) for r in runs if r.ok and "parameters" in r.summary)
    net_rows = [[label, _join(_fmt_value(_get(r, key)) for r in runs)] for label, key in net]
    if params:
        net_rows.append(["parameters", _join(params, _count)])
    blocks += [Heading("Network", 3), Table(["setting", "values"], net_rows)]
    blocks += [Heading("Rules", 3), _rules_table(records)]
    train = [
        ("epochs", "train.epochs"),
        ("batch size", "train.batch_size"),
        ("optimiser", "train.optimizer"),
        ("learning rate", "train.lr"),
        ("schedule", "train.schedule"),
        ("weight decay", "train.weight_decay"),
        ("window k (tbptt; e-prop blocks unless rule.options.block)", "rule.k"),
        ("tracked during training", "train.track"),
        ("tracking interval (batches)", "train.track_every"),
    ]
    train_rows = [[label, _join(_fmt_value(_get(r, key)) for r in runs)] for label, key in train]
    train_rows.append(["seeds", _seeds(r.seed for r in runs)])
    blocks += [Heading("Training", 3), Table(["setting", "values"], train_rows)]
    blocks.append(Para(_tuning_text(runs)))
    table = _attacks_table(records)
    if table is not None:
        surrogates = _distinct(s.split("@", 1)[1] for s in table_stems(table) if "@" in s)
        blocks += [
            Heading("Attacks", 3),
            table,
            Para(
                "Attacks use the first test images, the same for every network of the study. Gradient attacks "
                "through each network's training surrogate"
                + (f"; the surrogate sweep adds {', '.join(surrogates)} (name-scale)" if surrogates else "")
                + "."
            ),
        ]
    return blocks + provenance_blocks(records)


def table_stems(table: Table) -> list[str]:
    return [row[0] for row in table.rows]


def _fmt_value(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(map(str, v)) + "]" if v else "none"
    if isinstance(v, float):
        return f"{v:g}"
    return "–" if v is None else str(v)


def _tuning_text(runs: list[RunRecord]) -> str:
    held = _distinct(_get(r, "data.validation") for r in runs if _get(r, "data.validation"))
    if held:
        return (
            f"**Tuning.** {_join(held)} training images held out for validation (never the test set); "
            "the learning rate was chosen on them."
        )
    return (
        "**Tuning.** No hyper-parameter was tuned on these data and nothing was held out: every run uses the "
        "settings above."
    )
