"""Grids of runs: expansion of axes over a base config, and the run key (a hash of the resolved config).

Equal resolved configs share a key and therefore a run directory; any differing field changes it. Studies
that share trained networks do so through these keys.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from spikebench.config import Config, from_dict, to_dict, validate


def config_key(cfg: Config) -> str:
    """A stable 16-hex-digit key of a resolved config (SHA-256 of its canonical JSON)."""
    text = json.dumps(to_dict(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def with_values(data: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of nested config data with dotted keys set (``{"rule.name": "fa"}``)."""
    out = json.loads(json.dumps(data))
    for dotted, value in values.items():
        node = out
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = list(value) if isinstance(value, tuple) else value
    return out


def expand(base: Config, axes: Mapping[str, Sequence[Any]]) -> list[Config]:
    """The cartesian product of ``axes`` (dotted key -> values) applied to ``base``, validated.

    Order: the first axis varies slowest. Duplicates (same resolved config) are kept once.
    """
    keys = list(axes)
    seen: dict[str, Config] = {}
    for combo in itertools.product(*(axes[k] for k in keys)):
        cfg = from_dict(with_values(to_dict(base), dict(zip(keys, combo, strict=True))))
        validate(cfg)
        seen.setdefault(config_key(cfg), cfg)
    return list(seen.values())
