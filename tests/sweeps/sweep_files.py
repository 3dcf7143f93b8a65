"""Tiny sweep files and synthetic records shared by the sweep tests."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import yaml

from megatron_ponder.sweeps.records import SCHEMA

VOCAB = 512
# The PonderLM-3 run's compute penalty: large, so that a record mixing it into the
# validation loss is off by far more than any tolerance (test_sweep_resume).
LAMBDA = 0.5


def sweep_dict(output_dir: Path, text: Path, data_dir: Path) -> dict:
    """Hidden 32, 2 layers, 16-token sequences, 4 steps: one vanilla and one PonderLM-3 run."""
    return {
        "name": "tiny",
        "output_dir": str(output_dir),
        "prepare": {"input": str(text), "vocab_size": VOCAB},
        "base": {
            "model": {"vocab_size": VOCAB, "max_position_embeddings": 16},
            "data": {"tokenizer": str(data_dir / "tokenizer.model"),
                     "prefixes": [str(data_dir / "text_document")], "split": "90,10,0",
                     "seq_length": 16},
            # A small lr keeps the zero-initialised router near uniform after 4 steps, so the
            # hard rule's kept steps at each tau are known in advance (test_sweep_resume).
            "train": {"steps": 4, "micro_batch_size": 2, "global_batch_size": 4, "lr": 1e-5,
                      "log_interval": 1, "eval_interval": 1000, "eval_batches": 0,
                      "save_interval": 2, "keep_checkpoints": 1},
            "logging": {"tensorboard": False, "wandb": "disabled"},
        },
        "sizes": {"h32": {"hidden_size": 32, "num_layers": 2, "num_attention_heads": 4}},
        "seeds": [3],
        "grid": [{"size": "h32", "method": "vanilla", "k": 0},
                 {"size": "h32", "method": "ponderlm3", "k": 2, "lambda": LAMBDA}],
        "eval": {"taus": [1e-4, 0.5, 0.9], "batches": 2, "micro_batch_size": 2,
                 "budgets": [0.9, 0.01], "calibration_batches": 2},
    }


def write_sweep(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def fake_record(size: str, method: str, k: int, lam: float, seed: int, loss: float,
                flops: float, params: int, taus=(None,), sweep: str = "fixture") -> dict:
    """A schema-valid record with chosen numbers (for the plotting tool, not a measurement):
    loss rises by 0.05 per tau step as executed steps fall."""
    vanilla = flops / (k + 1)
    entries = []
    for i, tau in enumerate(taus):
        steps = k if tau is None else max(k - i, 0)
        entry_flops = vanilla * (steps + 1)
        entry_loss = loss + 0.05 * (k - steps)
        entries.append({"tau": tau, "loss": entry_loss, "ppl": math.exp(entry_loss),
                        "flops_per_token": entry_flops, "flops_vs_vanilla": entry_flops / vanilla,
                        "expected_steps": float(steps), "executed_steps": float(steps)})
    return {
        "schema": SCHEMA, "sweep": sweep, "run_id": f"{size}-{method}-k{k}-lam{lam:g}-seed{seed}",
        "point": {"size": size, "method": method, "k": k, "lambda": lam, "seed": seed},
        "config": {}, "parameters": params, "non_embedding_parameters": params // 2,
        "training": {"steps": 10, "tokens": 1000, "flops": 6.0 * params * 1000},
        "validation": {"loss": loss, "ppl": math.exp(loss), "penalty": 0.0, "tokens": 100},
        "vanilla_flops_per_token": vanilla, "inference": entries,
    }


def fixture_records() -> list[dict]:
    """Vanilla at 4 sizes (loss = 2 + 3 (N / 1e4)^-0.5 exactly, N = parameters = 2 x
    non-embedding), ponderlm2 K1-2 and ponderlm3 at 3 taus at s2; 2 seeds each, 0.02 nats
    apart."""
    records = []
    for seed, offset in ((1, -0.01), (2, 0.01)):
        for size, params in (("s1", 10_000), ("s2", 40_000), ("s3", 160_000), ("s4", 640_000)):
            loss = 2 + 3 * (params / 1e4) ** -0.5 + offset
            records.append(fake_record(size, "vanilla", 0, 0.0, seed, loss, 2.0 * params, params))
        for k in (1, 2):
            records.append(fake_record("s2", "ponderlm2", k, 0.0, seed, 3.3 - 0.1 * k + offset,
                                       (k + 1) * 80_000.0, 40_000))
        records.append(fake_record("s2", "ponderlm3", 2, 0.0, seed, 3.05 + offset, 240_000.0,
                                   40_100, taus=(1e-4, 0.1, 0.5)))
    return records


def modified(record: dict, **changes) -> dict:
    record = copy.deepcopy(record)
    for dotted, value in changes.items():
        node = record
        keys = dotted.split("__")
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[keys[-1]] = value
    return record
