"""``all``: the four claim studies together, sharing trained networks; its report holds their sections
in this order."""

from __future__ import annotations

from spikebench.studies.study import compose

ALL = compose(
    "all", ("tradeoff", "similarity", "recurrence", "attacks"), "C1-C4 together, sharing trained networks."
)
