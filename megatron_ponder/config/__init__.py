"""Typed configuration: small dataclasses, YAML in, dotted overrides, early validation.

Every check runs before a single tensor is allocated, and every error names the field (as a
dotted path) and what would be valid. Each section lives in its own module with its checks
(model.py, ponder.py, parallel.py, data.py, train.py, logging_config.py); the enumerated
settings are the enums of choices.py; root.py holds the whole Config, loading.py reads it.
"""

from megatron_ponder.config.checks import MAX_SEED, MAX_TIMEOUT_S, ConfigError
from megatron_ponder.config.choices import Choice, Engine, Precision, Recompute, WandbMode
from megatron_ponder.config.data import DataConfig
from megatron_ponder.config.loading import (
    config_from_dict, config_to_dict, load_config, merge_recipes, parse_override, read_recipe,
    read_yaml_mapping,
)
from megatron_ponder.config.logging_config import LoggingConfig
from megatron_ponder.config.model import (
    ROPE_SCALINGS, ModelConfig, RopeScaling, check_sequence_length,
)
from megatron_ponder.config.parallel import ParallelConfig
from megatron_ponder.config.ponder import PonderConfig
from megatron_ponder.config.root import Config, validate
from megatron_ponder.config.train import TrainConfig

__all__ = [
    "Choice", "Config", "ConfigError", "DataConfig", "Engine", "LoggingConfig",
    "MAX_SEED", "MAX_TIMEOUT_S", "ModelConfig", "ParallelConfig", "PonderConfig", "Precision",
    "ROPE_SCALINGS", "Recompute", "RopeScaling", "TrainConfig", "WandbMode",
    "check_sequence_length", "config_from_dict", "config_to_dict", "load_config",
    "merge_recipes", "parse_override", "read_recipe", "read_yaml_mapping", "validate",
]
