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


@pytest.mark.parametrize(("overrides", "keys"), [
    (["loss.intra_weight=0.5"], ["loss.intra_weight=0.5", "cluster.enabled"]),
    (["loss.cross_weight=0.5"], ["loss.cross_weight=0.5", "cluster.enabled"]),
    (["loss.many_to_many=true"], ["loss.many_to_many", "cluster.enabled"]),
    (["oplm.enabled=true"], ["oplm.enabled", "cluster.enabled"]),
    (["train.sampler_instances=4"], ["train.sampler_instances=4", "cluster.enabled"]),
    (["cluster.enabled=true", "oplm.threshold=0.5"], ["oplm.threshold", "oplm.enabled"]),
    (["train.supervised=true", "cluster.enabled=true", "oplm.enabled=true"], ["oplm.enabled", "train.supervised"]),
    (["cluster.fuse_modalities=true"], ["cluster.fuse_modalities", "cluster.enabled"]),
    (["cluster.enabled=true", "loss.intra_weight=0.5", "memory.hard=true", "loss.intra_weight=0"],
     ["memory.hard", "loss.intra_weight", "loss.cross_weight"]),
    (["cluster.enabled=true", "cluster.start_epoch=9", "train.epochs=5"], ["cluster.start_epoch=9", "train.epochs=5"]),
    (["cluster.enabled=true", "train.sampler_instances=32", "train.batch_size=16"],
     ["train.sampler_instances=32", "train.batch_size=16"]),
    (["train.batch_size=30", "train.accumulate=4"], ["train.batch_size=30", "train.accumulate=4"]),
    (["train.accumulate=0"], ["train.accumulate"]),
    (["memory.momentum=1.5"], ["memory.momentum"]),
    (["loss.temperature=0"], ["loss.temperature"]),
])
def test_settings_that_cannot_do_what_they_say_are_refused(overrides, keys):
    """e.g. prototype terms on the ITC baseline would silently train plain ITC: an error naming both keys."""
    with pytest.raises(ConfigError) as info:
        config_from_dict({}, overrides)
    for key in keys:
        assert key in str(info.value), (key, str(info.value))


def test_a_consistent_cpcl_config_and_the_supervised_bound_are_accepted():
    config_from_dict({}, ["cluster.enabled=true", "loss.intra_weight=0.5", "loss.many_to_many=true",
                          "oplm.enabled=true", "oplm.threshold=0.3", "train.sampler_instances=4"])
    # the upper bound's labels are the true identities: prototype terms need no clustering there
    config_from_dict({}, ["train.supervised=true", "loss.intra_weight=0.5"])


def test_packaged_configs_resolve_by_name(tmp_path):
    from cpcl.config import packaged_configs, resolve_config_path

    assert resolve_config_path("synthpedes_cpcl") == packaged_configs()["synthpedes_cpcl"]
    assert resolve_config_path("synthpedes_cpcl.yaml") == packaged_configs()["synthpedes_cpcl"]
    own = tmp_path / "mine.yaml"
    own.write_text("train:\n  epochs: 2\n")
    assert resolve_config_path(own) == own
    with pytest.raises(ConfigError, match="neither a file nor a packaged config.*synthpedes_itc"):
        resolve_config_path("synthpedes_typo")
