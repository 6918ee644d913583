"""Plugins: modules that register components (rules, datasets, encoders, attacks, ...) from outside the
package, so that they work in every command and every study worker exactly like built-in ones.

Two ways in, both loaded by the command line before it reads a config:

- an installed distribution declaring an entry point in the group ``spikebench.plugins``
  (``[project.entry-points."spikebench.plugins"] my_rule = "my_package.rule"``): imported at start-up;
- ``--plugin MODULE_OR_FILE`` (repeatable): a module name (``my_package.rule``) or a path to a ``.py``
  file, imported as a module named after the file.

What was loaded is recorded (:func:`loaded`) in each run's summary and each study's manifest, and study
workers, spawned fresh, load the same list (:func:`load_all`) before they read a job.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path

from spikebench.registry import SpikebenchError

GROUP = "spikebench.plugins"

_loaded: dict[str, str] = {}  # spec -> module name, in load order


class PluginError(SpikebenchError):
    """A plugin that cannot be found or fails to import."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


def spec_of(text: str) -> str:
    """The canonical form of a ``--plugin`` value: a ``.py`` file as its absolute path, a module name
    as given."""
    return str(Path(text).expanduser().resolve()) if text.endswith(".py") or "/" in text else text


def load(text: str) -> str:
    """Import the plugin ``text`` (a module name, a path to a ``.py`` file, or ``entry-point:NAME``
    for an entry point of :data:`GROUP`) once; returns its spec. Raises :class:`PluginError` with one
    line when it cannot be imported."""
    if text.startswith("entry-point:"):
        return _load_entry_point(text.removeprefix("entry-point:"))
    spec = spec_of(text)
    if spec in _loaded:
        return spec
    if spec.endswith(".py") or "/" in spec:
        path = Path(spec)
        if not path.is_file():
            raise PluginError(f"plugin {text}: no such file")
        name = f"spikebench_plugin_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise PluginError(f"plugin {text}: not an importable Python file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # so that pickling and dataclasses can find the module by name
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise PluginError(f"plugin {text} failed to import: {_first_line(exc)}") from exc
    else:
        name = spec
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise PluginError(f"plugin {text} failed to import: {_first_line(exc)}") from exc
    _loaded[spec] = name
    return spec


def _load_entry_point(name: str) -> str:
    spec = f"entry-point:{name}"
    if spec in _loaded:
        return spec
    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not found:
        raise PluginError(f"plugin {spec}: no entry point {name!r} in group {GROUP!r} is installed")
    try:
        found[0].load()
    except Exception as exc:
        raise PluginError(f"plugin {spec} ({found[0].value}) failed to import: {_first_line(exc)}") from exc
    _loaded[spec] = found[0].value
    return spec


def load_entry_points() -> list[str]:
    """Import every installed entry point of :data:`GROUP` (sorted by name); returns their specs."""
    return [_load_entry_point(name) for name in sorted({ep.name for ep in entry_points(group=GROUP)})]


def load_all(specs: list[str] | tuple[str, ...]) -> None:
    """Load plugins by the specs :func:`loaded` gave (what a study worker runs before its first job)."""
    for spec in specs:
        load(spec)


def loaded() -> list[str]:
    """The specs of the plugins loaded in this process, in load order (what runs and studies record)."""
    return list(_loaded)


def missing(recorded: object) -> list[str]:
    """Those of the ``recorded`` plugin specs (from a record; anything else counts as none) that are not
    loaded in this process."""
    if not isinstance(recorded, list):
        return []
    return [spec for spec in recorded if isinstance(spec, str) and spec not in _loaded]


def hint(specs: list[str]) -> str:
    """How to load ``specs`` again on the command line."""
    return " ".join(
        f"--plugin {s}" if not s.startswith("entry-point:") else f"(install the distribution of {s})"
        for s in specs
    )
