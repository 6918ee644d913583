"""Analyses of what a learning rule changes: representational similarity (CKA), alignment of a rule's
update with the exact BPTT gradient, and Fisher information of the trained network.

The functions here are pure computations on tensors; :mod:`spikebench.analysis.tracking` records them
during training and :mod:`spikebench.analysis.analyze` turns recorded runs into JSON records and plots.
"""

from spikebench.analysis.cka import cka, gram_linear, gram_rbf, hsic, linear_cka, rbf_cka
from spikebench.analysis.errors import AnalysisError

__all__ = ["AnalysisError", "cka", "gram_linear", "gram_rbf", "hsic", "linear_cka", "rbf_cka"]
