"""One logger for every sink: console line, JSONL file, tensorboard, wandb (offline default).

Only global rank 0 writes. wandb and tensorboard are optional sinks; the JSONL file is the
run's permanent record (one object per logged step or evaluation), strict JSON: a value
that is not finite is written as null and named in the record's "nonfinite" field
({"loss": null, "nonfinite": {"loss": "nan"}}); `read_records` gives it back as a float.
A resumed run first drops the records of the steps it will run again, so every step is
in the file once.
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

from megatron_ponder.config import Config, WandbMode, config_to_dict
from megatron_ponder.run.layout import METRICS_FILE

NONFINITE = "nonfinite"


def _is_rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


class MetricsLogger:
    def __init__(self, cfg: Config, output_dir: Path, resumed_step: int = 0):
        self.enabled = _is_rank0()
        self.jsonl = output_dir / METRICS_FILE
        self.tensorboard = self.wandb = None
        if not self.enabled:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        # Records a start at resumed_step writes again: its resume record, and when the run
        # has nothing left to train, its final evaluation (a "valid" and a "final" record).
        again = ("resume",) + (("valid", "final") if resumed_step >= cfg.train.steps else ())
        drop_records_after(self.jsonl, resumed_step, again)
        if cfg.logging.tensorboard:
            # defer: tensorboard, only when logging to it
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(output_dir / "tensorboard"), purge_step=resumed_step or None)
        if cfg.logging.wandb != WandbMode.DISABLED:
            os.environ.setdefault("WANDB_SILENT", "true")
            import wandb  # defer: wandb, only when logging to it

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
            f.write(json_line(record))
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


def json_line(record: dict) -> str:
    """One strict-JSON line: non-finite floats become null, named under "nonfinite"."""
    nonfinite = {}

    def clean(value, path):
        if isinstance(value, float) and not math.isfinite(value):
            nonfinite[path] = str(value)  # "nan", "inf", "-inf"
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{path}.{k}" if path else k) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{path}.{i}") for i, v in enumerate(value)]
        return value

    record = clean(record, "")
    if nonfinite:
        record[NONFINITE] = nonfinite
    return json.dumps(record, allow_nan=False) + "\n"


def read_records(path: Path) -> list[dict]:
    """The records of a metrics.jsonl, non-finite values restored as floats (top level)."""
    records = []
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        for key, text in record.pop(NONFINITE, {}).items():
            if key in record:
                record[key] = float(text)
        records.append(record)
    return records


def drop_records_after(path: Path, step: int, rewritten_kinds: tuple[str, ...] = ()) -> None:
    """Atomically keep only the records a run resumed at `step` will not write again: those
    of earlier steps, and those of `step` itself but of `rewritten_kinds`. A line cut short
    by a crash is dropped too."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record["step"] < step or (record["step"] == step
                                     and record["kind"] not in rewritten_kinds):
            kept.append(line + "\n")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.writelines(kept)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
