"""Grids of runs: expansion of axes over a base config, and the run key (a hash of the resolved config,
the spikebench version and the source of any plugin component).

Equal resolved configs share a key and therefore a run directory; any differing field changes it. Studies
that share trained networks do so through these keys.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import spikebench
from spikebench.components import validate
from spikebench.config import Config, from_dict, to_dict


def plugin_sources(cfg: Config) -> dict[str, str]:
    """``"kind:name" -> sha256`` of the source file of every component of ``cfg`` (rule, dataset,
    encoder, surrogate) that is defined outside the spikebench package: a plugin whose code changes
    changes the run key, so its old results are not reused."""
    from spikebench.data import DATASETS, ENCODERS
    from spikebench.dynamics import SURROGATES
    from spikebench.io import sha256
    from spikebench.rules import RULES

    package = Path(spikebench.__file__).resolve().parent
    out = {}
    for kind, registry, name in (
        ("rule", RULES, cfg.rule.name),
        ("dataset", DATASETS, cfg.data.name),
        ("encoder", ENCODERS, cfg.data.encoder),
        ("surrogate", SURROGATES, cfg.model.surrogate),
    ):
        if name not in registry:
            continue
        obj = registry.get(name)
        obj = getattr(obj, "load", obj)  # a DatasetSpec: its loader's module
        try:
            file = inspect.getfile(obj)
        except (TypeError, OSError):  # built-in or defined interactively: no source file to hash
            continue
        path = Path(file).resolve()
        if package not in path.parents:
            out[f"{kind}:{name}"] = sha256(path)
    return out


def config_key(cfg: Config) -> str:
    """A stable 16-hex-digit key of a run: SHA-256 of the canonical JSON of its resolved config, the
    spikebench version and the source hashes of its plugin components (:func:`plugin_sources`)."""
    what: dict[str, Any] = {"config": to_dict(cfg), "spikebench": spikebench.__version__}
    plugins = plugin_sources(cfg)
    if plugins:
        what["plugins"] = plugins
    text = json.dumps(what, sort_keys=True, separators=(",", ":"))
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
