import pytest

from spikebench.components import load_config
from spikebench.config import Config, ConfigError, from_dict, to_dict, to_yaml


def test_defaults_round_trip_through_yaml(tmp_path):
    cfg = load_config(None, ["model.hidden=[32, 16]", "model.recurrent=true", "train.lr=5e-3"])
    path = tmp_path / "c.yaml"
    path.write_text(to_yaml(cfg))
    again = load_config(path)
    assert again == cfg
    assert again.model.hidden == (32, 16) and again.model.recurrent is True
    assert again.train.lr == 0.005
    assert from_dict(to_dict(cfg)) == cfg


def test_overrides_apply_over_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rule:\n  name: bptt\ntrain:\n  epochs: 3\n")
    cfg = load_config(path, ["train.epochs=2", "data.limit_train=10000"])
    assert cfg.train.epochs == 2 and cfg.data.limit_train == 10000
    assert cfg.model == Config().model


@pytest.mark.parametrize(
    "override,message",
    [
        ("rule.nam=bptt", "did you mean 'rule.name'"),
        ("trainn.epochs=1", "unknown config key 'trainn'"),
        ("rule.name=bpt", "did you mean 'bptt'"),
        ("data.encoder=rat", "did you mean 'rate'"),
        ("model.surrogate=triangl", "did you mean 'triangle'"),
        ("data.name=fashion", "unknown dataset"),
        ("train.epochs=0", "train.epochs must be positive"),
        ("train.epochs=-3", "train.epochs must be positive"),
        ("data.timesteps=0", "data.timesteps must be positive"),
        ("model.hidden=[]", "at least one layer"),
        ("model.hidden=[0]", "must be positive"),
        ("train.epochs=two", "must be an integer"),
        ("model.recurrent=maybe", "must be true or false"),
        ("model.reset=hard", "must be one of soft, zero"),
        ("train.lr=-1", "train.lr must be positive"),
        ("rule.update=window", "takes no rule.update"),
        ("epochs=3", "section.key"),
        ("train.epochs", "key=value"),
    ],
)
def test_invalid_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_malformed_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: [epochs: 1\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config(path)


def test_top_level_must_be_mapping(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_missing_file():
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config("/nonexistent/c.yaml")


def test_config_checks_values_and_the_builder_checks_names():
    from spikebench import config

    cfg = config.load_config(None, ["rule.name=nope"])  # a leaf: it knows no registry
    assert cfg.rule.name == "nope"
    with pytest.raises(ConfigError, match="nope"):
        load_config(None, ["rule.name=nope"])
