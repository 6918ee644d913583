"""Configuration as data: frozen dataclasses, loaded from YAML plus ``--set key=value`` overrides.

Every value is type-checked and range-checked when the dataclass is built; names of registered
components (rules, datasets, encoders, surrogates) are checked by the builder
(:func:`spikebench.components.validate`, :func:`spikebench.components.load_config`), so this module
imports no component. Unknown keys are errors with a "did you mean". A run saves its resolved config verbatim (:func:`to_yaml`).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from spikebench.registry import SpikebenchError


class ConfigError(SpikebenchError):
    """Invalid configuration: unknown key, wrong type, value out of range, malformed YAML."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True)
class BackdoorConfig:
    """Training-time backdoor poisoning (BadNets, Gu et al. 2017); ``fraction`` 0 = off.

    ``fraction`` of the training samples get a ``size`` x ``size`` trigger patch of value ``value`` and
    the label ``target`` (details: :mod:`spikebench.data.poison`).
    """

    fraction: float = 0.0
    target: int = 0
    size: int = 3
    value: float = 1.0

    def __post_init__(self) -> None:
        _check(0.0 <= self.fraction <= 1.0, f"data.backdoor.fraction must be in [0, 1], got {self.fraction}")
        _check(self.target >= 0, f"data.backdoor.target must be a class index >= 0, got {self.target}")
        _check(self.size > 0, f"data.backdoor.size must be positive, got {self.size}")


@dataclass(frozen=True)
class DataConfig:
    """What the network sees. ``timesteps`` is T; ``encoder`` turns analogue input into T steps.

    Event datasets: ``timesteps`` is the number of time bins, ``downsample`` an integer factor of
    spatial (or channel) downsampling, ``binarize`` clips the event counts of a frame to 1.

    ``validation``: training images held out as a validation split (an integer count, or a fraction in
    (0, 1) of the training split; null = none). They are drawn by a fixed permutation of the whole
    training split (the same for every seed), never trained on, and evaluated after training as
    ``validation_accuracy``; ``limit_train`` then takes the first N of the remaining images.
    """

    name: str = "fashion-mnist"
    root: str | None = None
    limit_train: int | None = None
    limit_test: int | None = None
    timesteps: int = 25
    encoder: str = "direct"
    downsample: int = 1
    binarize: bool = False
    backdoor: BackdoorConfig = field(default_factory=BackdoorConfig)
    validation: int | float | None = None

    def __post_init__(self) -> None:
        v = self.validation
        _check(
            v is None or (isinstance(v, int) and v > 0) or (isinstance(v, float) and 0.0 < v < 1.0),
            f"data.validation must be a positive count of images or a fraction in (0, 1), or null; got {v}",
        )
        _check(self.timesteps > 0, f"data.timesteps must be positive, got {self.timesteps}")
        _check(self.downsample > 0, f"data.downsample must be a positive integer, got {self.downsample}")
        for key in ("limit_train", "limit_test"):
            value = getattr(self, key)
            _check(value is None or value > 0, f"data.{key} must be positive or null, got {value}")


@dataclass(frozen=True)
class ModelConfig:
    """The spiking network: LIF hidden layers (optionally with explicit recurrent weights) + readout.

    ``arch: conv`` puts LIF convolution blocks (``channels``, ``kernel``, max ``pool`` after each) before
    the dense ``hidden`` layers.
    """

    arch: Literal["mlp", "conv"] = "mlp"
    hidden: tuple[int, ...] = (256, 256)
    channels: tuple[int, ...] = (32, 64)
    kernel: int = 3
    pool: int = 2
    recurrent: bool = False
    alpha: float = 0.9
    theta: float = 1.0
    reset: Literal["soft", "zero"] = "soft"
    detach_reset: bool = True
    surrogate: str = "fast_sigmoid"
    surrogate_scale: float = 2.0
    kappa: float = 0.9

    def __post_init__(self) -> None:
        _check(len(self.hidden) > 0, "model.hidden must list at least one layer size")
        _check(all(h > 0 for h in self.hidden), f"model.hidden sizes must be positive: {self.hidden}")
        _check(0.0 <= self.alpha <= 1.0, f"model.alpha must be in [0, 1], got {self.alpha}")
        _check(0.0 <= self.kappa <= 1.0, f"model.kappa must be in [0, 1], got {self.kappa}")
        _check(self.theta > 0, f"model.theta must be positive, got {self.theta}")
        _check(self.surrogate_scale > 0, "model.surrogate_scale must be positive")
        _check(len(self.channels) > 0, "model.channels must list at least one convolution block")
        _check(all(c > 0 for c in self.channels), f"model.channels must be positive: {self.channels}")
        _check(self.kernel > 0 and self.kernel % 2 == 1, f"model.kernel must be odd, got {self.kernel}")
        _check(self.pool > 0, f"model.pool must be positive (1 = no pooling), got {self.pool}")


#: field metadata: leave the field out of the config's plain data (:func:`to_dict`) while it is empty, so
#: that configs written before the field existed keep their serialised form (and their run keys)
OMIT_EMPTY = "omit_empty"


@dataclass(frozen=True)
class RuleConfig:
    """The learning rule and its options. Each rule declares the options it reads, with their choices,
    defaults and meaning (``options`` on the rule class; ``spikebench ls rules`` lists them); the rule
    validates them when the config is checked (:func:`spikebench.components.validate`).

    The options that predate those declarations keep a key of their own: ``k`` (``tbptt``'s window
    length; also ``eprop``'s block length when ``rule.options.block`` is null, as configs written before
    that option meant), ``update``, ``feedback``, ``trace`` and ``local_loss`` (null = the rule's
    default). Every other option, a plugin rule's included, is a key of ``options``
    (``--set rule.options.block=8``); an empty ``options`` is left out of the saved config.
    """

    #: the options with a key of their own, read through :meth:`value` like those in ``options``
    NAMED: ClassVar[tuple[str, ...]] = ("k", "update", "feedback", "trace", "local_loss")

    name: str = "bptt"
    k: int = 5
    update: str | None = None
    feedback: str | None = None
    trace: str | None = None
    local_loss: str | None = None
    options: dict[str, str | int | float | bool | None] = field(
        default_factory=dict, hash=False, metadata={OMIT_EMPTY: True}
    )

    def __post_init__(self) -> None:
        _check(self.k > 0, f"rule.k must be positive, got {self.k}")
        for key in self.options:
            _check(key not in self.NAMED, f"rule.options.{key}: this option is set as rule.{key}")
        object.__setattr__(self, "options", dict(sorted(self.options.items())))  # one canonical order

    def value(self, name: str) -> Any:
        """The value given for option ``name`` (None when not given: the rule's default applies)."""
        return getattr(self, name) if name in self.NAMED else self.options.get(name)


Trackable = Literal["cka", "grad_alignment", "fisher"]
"""Analyses that can be recorded during training (``train.track``; :mod:`spikebench.analysis.tracking`)."""


@dataclass(frozen=True)
class TrainConfig:
    """The training loop: optimiser, schedule, batch size, epochs, seed and device.

    ``track``: analyses recorded during training -- ``cka`` (hidden-layer spike counts on the first
    ``probe_size`` test samples, before training and after every epoch), ``grad_alignment`` (the
    rule's update against the BPTT gradient every ``track_every`` batches), ``fisher`` (Fisher
    information on the first ``fisher_size`` test samples, before training and after every epoch).
    ``checkpoint_every``: epochs between checkpoints of the full training state (0: only at the end);
    an interrupted run continues from its last one (``spikebench train --resume``).
    ``precision``: ``fp32`` | ``bf16`` (dense and convolution products with bf16 operands and float32
    accumulation; state, gradients and optimiser in float32; refused where the device has no bf16) |
    ``auto`` (bf16 where supported, else fp32 with a one-line notice); :mod:`spikebench.precision`.
    """

    epochs: int = 1
    batch_size: int = 64
    lr: float = 2e-3
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine"] = "cosine"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_batch_size: int = 1000
    checkpoint_every: int = 1
    track: tuple[Trackable, ...] = ()
    track_every: int = 50
    probe_size: int = 1000
    fisher_size: int = 32
    precision: Literal["fp32", "bf16", "auto"] = "fp32"

    def __post_init__(self) -> None:
        _check(self.epochs > 0, f"train.epochs must be positive, got {self.epochs}")
        _check(self.batch_size > 0, f"train.batch_size must be positive, got {self.batch_size}")
        _check(self.eval_batch_size > 0, "train.eval_batch_size must be positive")
        _check(self.checkpoint_every >= 0, "train.checkpoint_every must be >= 0 (0: only at the end)")
        _check(self.lr > 0, f"train.lr must be positive, got {self.lr}")
        _check(self.weight_decay >= 0, "train.weight_decay must be >= 0")
        valid = typing.get_args(Trackable)
        _check(
            all(name in valid for name in self.track),
            f"train.track must list names from {', '.join(valid)}; got {list(self.track)}",
        )
        for key in ("track_every", "probe_size", "fisher_size"):
            _check(getattr(self, key) > 0, f"train.{key} must be positive, got {getattr(self, key)}")


@dataclass(frozen=True)
class Config:
    """A whole experiment: data, model, rule and training loop."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    rule: RuleConfig = field(default_factory=RuleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ---------------------------------------------------------------------------------------------
# building dataclasses from plain data, with type checks


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (lists -> tuples)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        _check(isinstance(value, dict), f"{key} must be a mapping, got {value!r}")
        return _build(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key} must not be null")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{key} must be one of {', '.join(map(str, choices))}; got {value!r}{hint}")
        return value
    if origin is dict:
        _check(isinstance(value, dict), f"{key} must be a mapping, got {value!r}")
        (key_tp, item_tp) = typing.get_args(tp)
        for k in value:
            _check(isinstance(k, key_tp), f"{key} must have {_type_name(key_tp)} keys, got {k!r}")
        return {k: _coerce(v, item_tp, f"{key}.{k}") for k, v in value.items()}
    if origin is tuple:
        _check(isinstance(value, list | tuple), f"{key} must be a list, got {value!r}")
        (item_tp, _ellipsis) = typing.get_args(tp)
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        _check(isinstance(value, bool), f"{key} must be true or false, got {value!r}")
        return value
    if tp is int:
        _check(
            isinstance(value, int) and not isinstance(value, bool),
            f"{key} must be an integer, got {value!r}",
        )
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "5e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        _check(
            isinstance(value, int | float) and not isinstance(value, bool),
            f"{key} must be a number, got {value!r}",
        )
        return float(value)
    if tp is str:
        _check(isinstance(value, str), f"{key} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {_type_name(tp)} for {key}")


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}; valid: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid {prefix.rstrip('.') or 'config'}: {exc}") from exc


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as nested plain data (tuples become lists), suitable for YAML and JSON."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {
                f.name: plain(getattr(v, f.name))
                for f in fields(v)
                if not (f.metadata.get(OMIT_EMPTY) and not getattr(v, f.name))
            }
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def from_dict(data: dict[str, Any]) -> Config:
    """Build and type-check a :class:`Config` from nested plain data."""
    _check(isinstance(data, dict), "a config must be a mapping at the top level")
    return _build(Config, data)


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        _check(isinstance(child, dict), f"--set {dotted}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"a.b=value"`` -> ``("a.b", value)``, the value parsed as YAML (``true``, ``3``, ``[1, 2]``)."""
    _check("=" in text, f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    _check(bool(key) and "." in key, f"--set key must look like section.key, got {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: cannot parse value {raw!r}") from exc
    return key, value


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with one-line errors for missing, unreadable or malformed files."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {p} is not UTF-8 text") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = str(getattr(exc, "problem", "") or "")
        if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in problem:
            tag = problem.split("'")[1] if problem.count("'") >= 2 else "?"
            tag = tag.replace("tag:yaml.org,2002:", "!!")
            raise ConfigError(f"unsafe YAML tag {tag} in {p}{where}: a config holds plain data only") from exc
        raise ConfigError(f"malformed YAML in {p}{where}") from exc
    if data is None:
        return {}
    _check(isinstance(data, dict), f"config {p} must be a mapping at the top level")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults <- YAML file (optional) <- ``--set`` overrides; every value type- and range-checked
    (registered names: :func:`spikebench.components.load_config`)."""
    data = load_yaml(path) if path is not None else {}
    for text in overrides:
        key, value = parse_override(text)
        _set_path(data, key, value)
    return from_dict(data)


def replace(cfg: Config, **sections: dict[str, Any]) -> Config:
    """A copy of ``cfg`` with some keys of some sections changed, e.g. ``replace(c, rule={"k": 3})``."""
    data = to_dict(cfg)
    for section, values in sections.items():
        data[section].update(values)
    return from_dict(data)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
