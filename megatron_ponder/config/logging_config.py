"""logging: where metrics go besides metrics.jsonl (tensorboard, wandb)."""

from __future__ import annotations

from dataclasses import dataclass

from megatron_ponder.config.checks import require
from megatron_ponder.config.choices import WandbMode


@dataclass
class LoggingConfig:
    tensorboard: bool = True
    # wandb mode: "offline" (default, sync later with `wandb sync`), "online" or "disabled".
    wandb: WandbMode = WandbMode.OFFLINE
    wandb_project: str = "megatron-ponder"
    run_name: str = ""

    def validate(self) -> None:
        require(self.wandb in WandbMode.values(), "logging.wandb", self.wandb,
                WandbMode.valid_values())
