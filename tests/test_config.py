import pytest

from cpcl.config import Config, ConfigError, config_from_dict, load_config, save_config


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  epochs: 3\noptim:\n  lr: 1e-5\nmodel:\n  image_size: [384, 128]\n")
    cfg = load_config(path, ["train.batch_size=8", "model.pretrained=null", "augment.erasing_scale=[0.1, 0.2]"])
    assert cfg.train.epochs == 3 and cfg.train.batch_size == 8
    assert cfg.optim.lr == pytest.approx(1e-5)  # YAML 1.1 reads 1e-5 as a string
    assert cfg.model.image_size == (384, 128)
    assert cfg.model.pretrained is None
    assert cfg.augment.erasing_scale == (0.1, 0.2)


def test_unknown_key_names_the_key(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"exp.yaml.*train\.epoch"):
        load_config(path)
    with pytest.raises(ConfigError, match="optim.lrr"):
        config_from_dict({}, ["optim.lrr=1"])


@pytest.mark.parametrize("override, key", [("train.epochs=three", "train.epochs"),
                                           ("augment.hflip=3", "augment.hflip"),
                                           ("model.image_size=[1]", "model.image_size")])
def test_wrong_type_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict({}, [override])


def test_round_trip(tmp_path):
    cfg = config_from_dict({}, ["train.seed=7", "data.synth.num_ids=50"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert config_from_dict(cfg.to_dict()) == cfg
    assert isinstance(cfg, Config)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key=value"):
        config_from_dict({}, ["train.epochs"])


def test_base_inheritance(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  epochs: 3\n  batch_size: 16\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\ntrain:\n  epochs: 5\ncluster:\n  enabled: true\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.cluster.enabled) == (5, 16, True)
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "loop.yaml")
