"""Builds the objects a config names (network, rule, encoding, device) and validates the names."""

from __future__ import annotations

from pathlib import Path

import torch

from spikebench import config
from spikebench.config import Config, ConfigError, ModelConfig
from spikebench.data import DATASETS, ENCODERS, Encoding, check_data_config, dataset_spec
from spikebench.dynamics import SURROGATES, LIFParams, make_surrogate
from spikebench.nn import Network
from spikebench.registry import UnknownNameError
from spikebench.rules import RULES, LearningRule


def validate(cfg: Config) -> None:
    """Every registered name exists and the rule accepts its options and the architecture."""
    try:
        DATASETS.get(cfg.data.name)
        ENCODERS.get(cfg.data.encoder)
        SURROGATES.get(cfg.model.surrogate)
        rule = RULES.get(cfg.rule.name)
    except UnknownNameError as exc:
        raise ConfigError(str(exc)) from exc
    rule.check_config(cfg.rule)
    if cfg.model.arch not in rule.archs:
        raise ConfigError(
            f"rule {rule.name!r} does not support model.arch={cfg.model.arch!r} "
            f"(supports: {', '.join(rule.archs)})"
        )
    check_data_config(cfg.data)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """:func:`spikebench.config.load_config`, then every name checked against the registries
    (:func:`validate`)."""
    cfg = config.load_config(path, overrides)
    validate(cfg)
    return cfg


def lif_params(model: ModelConfig) -> LIFParams:
    return LIFParams(
        alpha=model.alpha,
        theta=model.theta,
        reset=model.reset,
        detach_reset=model.detach_reset,
        surrogate=make_surrogate(model.surrogate, model.surrogate_scale),
    )


def build_network(model: ModelConfig, input_shape: tuple[int, ...], n_classes: int) -> Network:
    """The network of ``model`` for inputs of ``input_shape`` per step ([C, H, W] for ``arch: conv``)."""
    if model.arch == "conv":
        if len(input_shape) != 3:
            raise ConfigError(f"model.arch=conv needs images [C, H, W] per step, got {list(input_shape)}")
        if min(input_shape[1:]) // model.pool ** len(model.channels) < 1:
            raise ConfigError(
                f"model.pool={model.pool} over {len(model.channels)} blocks shrinks "
                f"{input_shape[1]}x{input_shape[2]} images to nothing"
            )
        return Network.conv(
            input_shape,  # type: ignore[arg-type]
            model.channels,
            model.kernel,
            model.pool,
            model.hidden,
            n_classes,
            recurrent=model.recurrent,
            params=lif_params(model),
            kappa=model.kappa,
        )
    n_in = 1
    for d in input_shape:
        n_in *= d
    return Network.mlp(
        n_in,
        model.hidden,
        n_classes,
        recurrent=model.recurrent,
        params=lif_params(model),
        kappa=model.kappa,
    )


def build_rule(cfg: Config, net: Network, gen: torch.Generator) -> LearningRule:
    return RULES.get(cfg.rule.name)(cfg.rule, net, gen)


def build_encoding(cfg: Config, gen: torch.Generator | None) -> Encoding:
    return Encoding(
        ENCODERS.get(cfg.data.encoder)(),
        cfg.data.timesteps,
        gen,
        sequential=dataset_spec(cfg.data.name).sequential,
    )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available")
    return torch.device(name)
