"""The whole configuration: one section per concern plus the seed. Validation asks each
section to check itself, in the order the checks have always run (a bad config's first
error names the same field as before)."""

from __future__ import annotations

from dataclasses import dataclass, field

from megatron_ponder.config.checks import MAX_SEED, non_finite_floats, require
from megatron_ponder.config.data import DataConfig
from megatron_ponder.config.logging_config import LoggingConfig
from megatron_ponder.config.model import ModelConfig
from megatron_ponder.config.parallel import ParallelConfig
from megatron_ponder.config.ponder import PonderConfig
from megatron_ponder.config.train import TrainConfig


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    ponder: PonderConfig = field(default_factory=PonderConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    seed: int = 1234

    def validate(self) -> "Config":
        validate(self)
        return self


def validate(cfg: Config) -> None:
    """Check every field that can be checked without tensors; raise ConfigError."""
    for name, value in non_finite_floats(cfg):
        require(False, name, value, "must be a finite number")
    require(0 <= cfg.seed <= MAX_SEED, "seed", cfg.seed, f"must be in [0, {MAX_SEED}]")
    cfg.model.validate()
    cfg.ponder.validate()
    cfg.parallel.validate(cfg.model, cfg.data.seq_length)
    cfg.data.validate(cfg.model.max_position_embeddings)
    cfg.train.validate(cfg.parallel.zero_stage)
    cfg.logging.validate()
