"""The studies, one file each: plan builder, report section and the claims decided, declared together.

A new study is one more file here (or in a plugin) declaring its builder with
:func:`spikebench.studies.study.study`; the report holds its section and verdicts when its records are
there. This package is the provider of :data:`spikebench.studies.study.STUDIES`: the first lookup of a
study imports it. ``all`` composes the four claim studies, in the order of the modules below.
"""

from spikebench.studies.catalog import all_claims, attacks, recurrence, similarity, tradeoff

__all__ = ["all_claims", "attacks", "recurrence", "similarity", "tradeoff"]
