"""What a study is: the declaration of a study (registry "study"), beside its plan builder.

A :class:`Study` names its plan builder, the parts of the manifest it writes, its report section and the
claims it decides (:class:`Claim`: the verdict function and what the report says of it). The studies
themselves are declared in :mod:`spikebench.studies.catalog`, one file each, with :func:`study`; that
layer is above the report (a section is made of report blocks), so :data:`STUDIES` imports the catalog
on its first lookup and the layers below look a study up by name. The report iterates over the
declarations (:func:`report_studies`) instead of naming parts.

The callables are typed loosely on purpose: this layer is below the report, whose records, verdicts and
blocks they take and return.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spikebench.config import Config
from spikebench.registry import Registry
from spikebench.studies.runner import Plan

#: ``build(plan, base, mode)`` adds a study's runs and jobs to ``plan`` (``mode``: a
#: :class:`~spikebench.studies.definitions.Mode`)
Builder = Callable[[Plan, Config, Any], None]
#: ``section(records, out)``: the report blocks of a study from its records
#: (:class:`~spikebench.report.records.StudyRecords`); plots are written under ``out``
Section = Callable[[Any, Path], list]


@dataclass(frozen=True)
class Claim:
    """A claim a study decides.

    ``decide(records)``: its :class:`~spikebench.report.verdicts.Verdict` from the study's records;
    ``compared_parts``: the parts whose bptt runs it is compared with (when none of them is usable, the
    verdict is "not computed"); ``short_test`` and ``effect_label``: the summary's name of its test and
    its forest plot's axis; ``null``: the effect of no claim, drawn on that plot, and ``draw_margin``
    whether the margin is drawn too; ``per_rule_table(verdict)``: a table of the per-rule results when they
    carry no interval (no forest plot)."""

    name: str
    decide: Callable[[Any], Any]
    compared_parts: tuple[str, ...]
    short_test: str
    effect_label: str
    null: float = 0.0
    draw_margin: bool = True
    per_rule_table: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class Study:
    """A study: ``build`` its plan builder; ``parts`` the parts of the manifest it writes, the first the
    one whose presence means it ran (its section and claims are reported then); ``section`` its report
    section; ``claims`` the claims it decides. A composed study (``components``: the studies it runs, in
    order) has none of these of its own: its report holds its components' sections in that order."""

    name: str
    build: Builder
    parts: tuple[str, ...] = ()
    section: Section | None = None
    claims: tuple[Claim, ...] = ()
    components: tuple[str, ...] = ()

    def __call__(self, plan: Plan, base: Config, mode: Any) -> None:
        self.build(plan, base, mode)


STUDIES: Registry[Study] = Registry("study", provider="spikebench.studies.catalog")


def declare(decl: Study, description: str | None = None) -> Study:
    """Register ``decl``; a study writes at least one part and no part another study writes (each part
    belongs to one section), unless it is composed."""
    if decl.components and (decl.parts or decl.section or decl.claims):
        raise ValueError(f"study {decl.name!r}: a composed study has no parts, section or claims of its own")
    if not decl.components and not decl.parts:
        raise ValueError(f"study {decl.name!r} declares no part")
    owners = {p: s.name for n in STUDIES.names() for s in [STUDIES.get(n)] for p in s.parts}
    for part in decl.parts:
        if part in owners:
            raise ValueError(
                f"study {decl.name!r}: part {part!r} is already written by study {owners[part]!r}"
            )
    doc = (decl.build.__doc__ or "").strip().splitlines()
    STUDIES.add(decl.name, decl, description or (doc[0] if doc else ""))
    return decl


def study(
    name: str,
    parts: tuple[str, ...],
    section: Section | None = None,
    claims: tuple[Claim, ...] = (),
) -> Callable[[Builder], Builder]:
    """Decorator: ``@study("name", parts, section, claims)`` on a plan builder declares the study."""

    def decorator(build: Builder) -> Builder:
        declare(Study(name, build, tuple(parts), section, tuple(claims)))
        return build

    return decorator


def compose(name: str, components: tuple[str, ...], description: str) -> Study:
    """Declare the study ``name`` that runs ``components`` in order (equal runs shared)."""

    def build(plan: Plan, base: Config, mode: Any) -> None:
        for component in components:
            STUDIES.get(component)(plan, base, mode)

    return declare(Study(name, build, components=tuple(components)), description)


def leaves(decl: Study) -> list[Study]:
    """The studies ``decl`` runs: itself, or its components' in order."""
    if not decl.components:
        return [decl]
    return [leaf for c in decl.components for leaf in leaves(STUDIES.get(c))]


def report_studies(name: str, parts: Iterable[str]) -> list[Study]:
    """The studies whose section and claims a report holds, from its manifest's study ``name`` and
    ``parts``: those study ``name`` runs, in order, then those of every other declared study (the records
    of a plan built by hand, or of a study no longer declared; studies by name, a composed one's in its
    order); each where its first part is in ``parts``."""
    present = set(parts)
    order = leaves(STUDIES.get(name)) if name in STUDIES else []
    for other in STUDIES.names():
        order += [s for s in leaves(STUDIES.get(other)) if s.name not in {o.name for o in order}]
    return [s for s in order if s.parts[0] in present]


def declared_parts(decl: Study) -> set[str]:
    """Every part the studies ``decl`` runs write."""
    return {p for leaf in leaves(decl) for p in leaf.parts}
