"""Typed experiment configuration.

A YAML file maps onto the frozen dataclasses below; ``--set key=value`` overrides dotted keys.
Unknown keys are errors that name the key, so a typo never silently falls back to a default, and a
combination of settings that cannot do what it says (prototype terms without pseudo labels, say) is an
error that names every key involved. The configs shipped with the package are listed by
:func:`packaged_configs` and found by name with :func:`resolve_config_path`.
"""

from cpcl.config.files import (
    PACKAGED_CONFIG_DIR,
    config_description,
    config_from_dict,
    config_yaml,
    load_config,
    packaged_configs,
    parse_override,
    resolve_config_path,
    save_config,
)
from cpcl.config.schema import (
    AugmentConfig,
    ClusterConfig,
    Config,
    ConfigError,
    DataConfig,
    InconsistentConfig,
    LossConfig,
    MemoryConfig,
    ModelConfig,
    OplmConfig,
    OptimConfig,
    SynthConfig,
    TrainConfig,
    inconsistencies,
    trained_as_requested,
)

__all__ = [
    "PACKAGED_CONFIG_DIR", "AugmentConfig", "ClusterConfig", "Config", "ConfigError", "DataConfig",
    "InconsistentConfig", "LossConfig", "MemoryConfig", "ModelConfig", "OplmConfig", "OptimConfig", "SynthConfig",
    "TrainConfig", "config_description", "config_from_dict", "config_yaml", "inconsistencies", "load_config",
    "packaged_configs", "parse_override", "resolve_config_path", "save_config", "trained_as_requested",
]
