"""One logger for every sink: console line, JSONL file, tensorboard, wandb (offline default).

Only global rank 0 writes. wandb and tensorboard are optional sinks; the JSONL file is the
run's permanent record (one object per logged step or evaluation).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import torch.distributed as dist

from megatron_ponder.config import Config, config_to_dict


def _is_rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


class MetricsLogger:
    def __init__(self, cfg: Config, output_dir: Path, resumed_step: int = 0):
        self.enabled = _is_rank0()
        self.jsonl = output_dir / "metrics.jsonl"
        self.tensorboard = self.wandb = None
        if not self.enabled:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        if cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(output_dir / "tensorboard"), purge_step=resumed_step or None)
        if cfg.logging.wandb != "disabled":
            os.environ.setdefault("WANDB_SILENT", "true")
            import wandb

            self.wandb = wandb.init(
                project=cfg.logging.wandb_project, name=cfg.logging.run_name or output_dir.name,
                dir=str(output_dir), mode=cfg.logging.wandb, config=config_to_dict(cfg),
                id=_stable_run_id(output_dir), resume="allow",
            )

    def log(self, step: int, metrics: dict, kind: str = "train") -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, "time": time.time(), **metrics}
        with self.jsonl.open("a") as f:
            f.write(json.dumps(record) + "\n")
        scalars = {f"{kind}/{k}": v for k, v in metrics.items()
                   if isinstance(v, (int, float)) and math.isfinite(v)}
        if self.tensorboard is not None:
            for key, value in scalars.items():
                self.tensorboard.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def print(self, text: str) -> None:
        if self.enabled:
            print(text, file=sys.stdout, flush=True)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


def _stable_run_id(output_dir: Path) -> str:
    """The same output directory continues the same wandb run after a restart."""
    return hashlib.sha1(str(output_dir.resolve()).encode()).hexdigest()[:16]
