"""The names of the records spikebench writes and reads back, in one place.

Writers (training, the study runner, the analysis step) and readers (the report and its verdicts)
import these names instead of spelling the strings, so a misspelt name is an import error rather than
an empty table. This module imports nothing.
"""

from __future__ import annotations

# a run directory (spikebench.rundir)
SUMMARY_SCHEMA = 1
"""Version of ``summary.json`` (:func:`spikebench.train.run.summary_record`)."""
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
SUMMARY = "summary.json"
CHECKSUMS = "checksums.json"
"""SHA-256 of every other file of a finished run, written last (:mod:`spikebench.studies.validate`)."""
ATTACKS_DIR = "attacks"
"""Attack records ``<run>/attacks/<stem>.json`` (stems: :attr:`spikebench.attacks.request.AttackRequest.stem`)."""

# the attack records a study writes and its report reads, by stem (each is the ``stem`` of a request the
# studies make; tests/studies/test_evidence.py checks them against the planned jobs)
STEM_PGD_EXACT = "pgd-exact"
STEM_APGD_EXACT = "apgd-exact"
STEM_PGD_RULE = "pgd-rule"
STEM_PGD_TRANSFER = "pgd-transfer"
STEM_FGSM_EXACT = "fgsm-exact"
STEM_SQUARE = "square"
STEM_NES = "nes"
STEM_SPSA = "spsa"
STEM_GAUSSIAN_NOISE = "gaussian-noise"
STEM_UNIFORM_NOISE = "uniform-noise"
ATTACK_STEMS = (
    STEM_PGD_EXACT,
    STEM_APGD_EXACT,
    STEM_PGD_RULE,
    STEM_PGD_TRANSFER,
    STEM_FGSM_EXACT,
    STEM_SQUARE,
    STEM_NES,
    STEM_SPSA,
    STEM_GAUSSIAN_NOISE,
    STEM_UNIFORM_NOISE,
)
"""The report's attack columns, in order."""
ALIGNMENT_LOG = "alignment.jsonl"
FISHER_LOG = "fisher.jsonl"
PROBES_DIR = "probes"

# a study directory (spikebench.studies.runner)
MANIFEST = "study.json"
RUNS_DIR = "runs"
ANALYSIS_DIR = "analysis"
REPORT_DIR = "report"
PUBLISHED = "published.json"
"""In a published study (:mod:`spikebench.studies.publish`): the files left out, with their hashes."""
SIMILARITY_CONTROLS = "similarity_controls"
"""Stem of the C1 controls record ``analysis/similarity_controls.json``."""
TUNING = "tuning"
"""Stem of the learning-rate choice ``analysis/tuning.json`` (:mod:`spikebench.studies.tuning`)."""

# the parts of a study's manifest
PART_TRADEOFF = "tradeoff"
PART_SIMILARITY = "similarity"
PART_RECURRENCE = "recurrence"
PART_RECURRENCE_SEQUENTIAL = "recurrence-sequential"
PART_RECURRENCE_MATCHED = "recurrence-matched"
PART_ATTACKS = "attacks"
PART_BACKDOOR = "backdoor"
PART_TUNING = "tuning"
PARTS = (
    PART_TRADEOFF,
    PART_SIMILARITY,
    PART_RECURRENCE,
    PART_RECURRENCE_SEQUENTIAL,
    PART_RECURRENCE_MATCHED,
    PART_ATTACKS,
    PART_BACKDOOR,
    PART_TUNING,
)

REFERENCE_RULE = "bptt"
"""The exact-gradient rule every other rule is compared with (CKA ceiling, alignment, gaps)."""
