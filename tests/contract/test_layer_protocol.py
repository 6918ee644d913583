"""Rules reach layers only through the layer protocol, and the neuron dynamics name no learning rule.

The online rules, the rule costs and the efficiency counts ask a layer for what they need
(:mod:`spikebench.nn.layers`) instead of switching on its class; feedback alignment's backward weights
live on the layers (``nn/``), so ``dynamics/`` knows nothing of it.
"""

import re
from pathlib import Path

import pytest

import spikebench
from spikebench.rules import RULES

PACKAGE = Path(spikebench.__file__).resolve().parent
LAYER_CLASSES = re.compile(r"\b(SpikingConv|SpikingLinear)\b")
CALLERS = sorted((PACKAGE / "rules").glob("*.py")) + [PACKAGE / "train" / "efficiency.py"]


@pytest.mark.parametrize("path", CALLERS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_rules_and_counts_name_no_layer_class(path):
    assert LAYER_CLASSES.findall(path.read_text()) == []


def test_dynamics_name_no_rule():
    rule_words = {"feedback", "alignment", *(n for n in RULES.names() if n != "bptt")}
    pattern = re.compile(r"\b(" + "|".join(sorted(rule_words)) + r")\b", re.IGNORECASE)
    found = [
        f"{path.name}:{i}: {line.strip()}"
        for path in sorted((PACKAGE / "dynamics").glob("*.py"))
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []
