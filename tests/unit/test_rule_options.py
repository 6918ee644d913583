"""Rule options as data: old configs keep their serialised form and run key, new options live under
``rule.options``, and every rule's declared options are validated by the base class."""

import hashlib
import json

import pytest
import torch
import yaml

import spikebench
from spikebench.components import build_network, load_config, validate
from spikebench.config import ConfigError, ModelConfig, RuleConfig, from_dict, to_dict, to_yaml
from spikebench.rules import RULES
from spikebench.rules.base import Option
from spikebench.studies.grid import config_key

# written by spikebench before rule options were declared on the rules (an e-prop run of a study)
OLD_CONFIG = """\
data:
  name: fashion-mnist
  root: null
  limit_train: null
  limit_test: null
  timesteps: 4
  encoder: direct
  downsample: 1
  binarize: false
  backdoor:
    fraction: 0.0
    target: 0
    size: 3
    value: 1.0
  validation: null
model:
  arch: mlp
  hidden:
  - 12
  channels:
  - 32
  - 64
  kernel: 3
  pool: 2
  recurrent: false
  alpha: 0.9
  theta: 1.0
  reset: soft
  detach_reset: true
  surrogate: fast_sigmoid
  surrogate_scale: 2.0
  kappa: 0.9
rule:
  name: eprop
  k: 8
  update: null
  feedback: random
  trace: null
  local_loss: null
train:
  epochs: 1
  batch_size: 64
  lr: 0.002
  optimizer: adam
  weight_decay: 0.0
  schedule: cosine
  seed: 0
  device: auto
  eval_batch_size: 1000
  checkpoint_every: 1
  track: []
  track_every: 50
  probe_size: 1000
  fisher_size: 32
  precision: fp32
"""


def test_an_old_config_keeps_its_bytes_and_its_run_key():
    data = yaml.safe_load(OLD_CONFIG)
    cfg = from_dict(data)
    validate(cfg)
    assert to_yaml(cfg) == OLD_CONFIG
    what = {"config": data, "spikebench": spikebench.__version__}
    text = json.dumps(what, sort_keys=True, separators=(",", ":"))
    assert config_key(cfg) == hashlib.sha256(text.encode()).hexdigest()[:16]


def test_new_options_are_saved_only_when_given_and_change_the_key():
    old = from_dict(yaml.safe_load(OLD_CONFIG))
    new = load_config(None, ["rule.name=eprop", "rule.k=8", "rule.feedback=random", "rule.options.block=4"])
    assert "options" not in to_dict(old)["rule"]
    assert to_dict(new)["rule"]["options"] == {"block": 4}
    assert from_dict(to_dict(new)) == new and hash(new) == hash(from_dict(to_dict(new)))
    assert config_key(new) != config_key(from_dict({**to_dict(new), "rule": to_dict(old)["rule"]}))


def test_eprop_block_is_its_own_option_and_old_configs_keep_rule_k():
    net = build_network(ModelConfig(hidden=(5,)), (6,), 3)
    eprop = RULES.get("eprop")

    def block(**kwargs):
        return eprop(RuleConfig(name="eprop", **kwargs), net, torch.Generator().manual_seed(0)).block

    assert block(k=8) == 8  # what a config written before the option meant
    assert block(k=8, options={"block": 3}) == 3
    with pytest.raises(ConfigError, match="rule.options.block is for rule.update=sequence"):
        load_config(None, ["rule.name=eprop", "rule.update=step", "rule.options.block=3"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["rule.name=eprop", "rule.options.blok=3"], "rule 'eprop' takes no rule.options.blok option"),
        (["rule.name=eprop", "rule.options.block=0"], "rule.options.block must be >= 1, got 0"),
        (["rule.name=eprop", "rule.options.block=two"], "rule.options.block must be an integer, got 'two'"),
        (["rule.name=bptt", "rule.options.block=3"], "rule 'bptt' takes no rule.options.block option"),
        (["rule.name=tbptt", "rule.options.update=window"], "this option is set as rule.update"),
        (["rule.name=fa", "rule.trace=none"], "rule 'fa' takes no rule.trace option"),
        (["rule.name=dfa", "rule.trace=both"], "rule 'dfa': rule.trace must be one of none, presynaptic"),
        (["rule.name=fa", "rule.options=[1]"], "rule.options must be a mapping"),
    ],
)
def test_bad_options_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_option_values_fill_in_the_declared_defaults():
    dfa = RULES.get("dfa")
    assert dfa.option_values(RuleConfig(name="dfa")) == {"update": "sequence", "trace": "presynaptic"}
    assert dfa.option_values(RuleConfig(name="dfa", trace="none"))["trace"] == "none"
    tbptt = RULES.get("tbptt")
    assert tbptt.option_values(RuleConfig(name="tbptt", k=3)) == {"k": 3, "update": "sequence"}
    assert Option("rate", 0.5, "a rate", type=float).resolve(1, "r") == 1.0
    with pytest.raises(ConfigError, match="must be a number, got True"):
        Option("rate", 0.5, "a rate", type=float).resolve(True, "r")
