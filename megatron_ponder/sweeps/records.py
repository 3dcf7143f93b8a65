"""One JSON record per finished run: what was trained, what it cost, how well it scores.

    {"schema": 2, "sweep": str, "run_id": str,
     "point": {"size", "method", "k", "lambda", "seed"},
     "config": {...the full training config...},
     "parameters": int, "non_embedding_parameters": int,
     "training": {"steps": int, "tokens": int, "flops": float,
                  "cpu_s": float, "peak_rss_mib": float, "pieces": int},  # when the sweep
                                           # trained it: the trainer process(es), os.wait4
     "validation": {"loss": float, "ppl": float,   # LM loss of the training-style forward
                    "penalty": float,              # lambda * E[steps] over the same tokens
                    "tokens": int},
     "vanilla_flops_per_token": float,     # a vanilla model of the same size and length
     "inference": [                        # one entry per tau (a method with a router)
        {"tau", "loss", "ppl", "flops_per_token", "flops_vs_vanilla",   # or one with tau null
         "expected_steps", "executed_steps", "tokens"}],  # (inference/ppl_sweep.py's keys)
     "budgets": [                          # optional: one per eval.budgets value (routers)
        {"flops_budget", "flops_vs_all_kept", "calibration": {...}, + the inference keys}
        or {"flops_budget", "unreachable": why}],
     "evaluation_cpu_s": float}            # optional

Steps are latent steps per token (pondering steps beyond the token's own slot or pass):
expected = sum_{k>=1} w_k of the router, executed = what the hard rule kept; K for the
fixed-step methods (PonderLM-1 and Loop included: K extra passes). Entries written before
they carried `tokens` read the same (it is not required).

Schema 1 differed in one field: its validation.loss was the training objective, LM loss +
lambda * E[steps]; `upgrade_schema_1` converts such a record exactly.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

from megatron_ponder.ponder.registry import method_class
from megatron_ponder.run.layout import write_atomically

SCHEMA = 2
POINT_KEYS = ("size", "method", "k", "lambda", "seed")
TRAINING_KEYS = ("steps", "tokens", "flops")
VALIDATION_KEYS = ("loss", "ppl", "penalty", "tokens")
INFERENCE_KEYS = ("tau", "loss", "ppl", "flops_per_token", "flops_vs_vanilla",
                  "expected_steps", "executed_steps")


class RecordError(ValueError):
    """A record is malformed or inconsistent; the message names the file and the field."""


def write_record(path: Path, record: dict) -> None:
    """Validate, then write atomically (tmp + os.replace): a reader never sees half a file."""
    check_record(record, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(record, indent=1, sort_keys=False) + "\n")


def _number(source: str, field: str, value: Any, *, positive: bool = False,
            nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecordError(f"{source}: {field}={value!r} must be a finite number")
    if positive and value <= 0:
        raise RecordError(f"{source}: {field}={value!r} must be > 0")


def _section(source: str, record: dict, name: str, keys: tuple[str, ...]) -> dict:
    section = record.get(name)
    if not isinstance(section, dict):
        raise RecordError(f"{source}: {name} is missing or not a mapping")
    missing = [k for k in keys if k not in section]
    if missing:
        raise RecordError(f"{source}: {name}.{missing[0]} is missing")
    return section


def check_record(record: Any, source: str) -> dict:
    """Raise RecordError naming `source` and the field unless `record` follows the schema
    and is consistent with itself (ppl = exp(loss), FLOPs ratio, steps within 0..K)."""
    if not isinstance(record, dict):
        raise RecordError(f"{source}: a record must be a JSON object")
    if record.get("schema") == 1:
        raise RecordError(f"{source}: schema=1, expected {SCHEMA}: its validation.loss includes "
                          "the compute penalty; convert it with megatron_ponder.sweeps.records."
                          "upgrade_schema_1")
    if record.get("schema") != SCHEMA:
        raise RecordError(f"{source}: schema={record.get('schema')!r}, expected {SCHEMA}")
    for key in ("sweep", "run_id"):
        if not isinstance(record.get(key), str):
            raise RecordError(f"{source}: {key} is missing or not a string")
    point = _section(source, record, "point", POINT_KEYS)
    k = point["k"]
    if not isinstance(k, int) or k < 0:
        raise RecordError(f"{source}: point.k={k!r} must be an integer >= 0")
    if not isinstance(record.get("config"), dict):
        raise RecordError(f"{source}: config is missing or not a mapping")
    for key in ("parameters", "non_embedding_parameters"):
        _number(source, key, record.get(key), positive=True)
    for key in TRAINING_KEYS:
        _number(source, f"training.{key}", _section(source, record, "training", TRAINING_KEYS)[key],
                positive=True)
    validation = _section(source, record, "validation", VALIDATION_KEYS)
    _check_loss_ppl(source, "validation", validation)
    _number(source, "validation.penalty", validation["penalty"])
    if validation["penalty"] < 0:
        raise RecordError(f"{source}: validation.penalty={validation['penalty']!r} must be >= 0")
    _number(source, "vanilla_flops_per_token", record.get("vanilla_flops_per_token"), positive=True)
    entries = record.get("inference")
    if not isinstance(entries, list) or not entries:
        raise RecordError(f"{source}: inference must be a non-empty list (one entry per tau)")
    for i, entry in enumerate(entries):
        where = f"inference[{i}]"
        if not isinstance(entry, dict):
            raise RecordError(f"{source}: {where} must be a mapping")
        missing = [key for key in INFERENCE_KEYS if key not in entry]
        if missing:
            raise RecordError(f"{source}: {where}.{missing[0]} is missing")
        _number(source, f"{where}.tau", entry["tau"], positive=True, nullable=True)
        _check_loss_ppl(source, where, entry)
        _number(source, f"{where}.flops_per_token", entry["flops_per_token"], positive=True)
        ratio = entry["flops_per_token"] / record["vanilla_flops_per_token"]
        if not math.isclose(entry["flops_vs_vanilla"], ratio, rel_tol=1e-6):
            raise RecordError(f"{source}: {where}.flops_vs_vanilla={entry['flops_vs_vanilla']!r} "
                              f"!= flops_per_token / vanilla_flops_per_token = {ratio!r}")
        for key in ("expected_steps", "executed_steps"):
            _number(source, f"{where}.{key}", entry[key])
            if not -1e-6 <= entry[key] <= k + 1e-6:
                raise RecordError(f"{source}: {where}.{key}={entry[key]!r} must lie in "
                                  f"[0, point.k={k}]")
    _check_budgets(source, record, k)
    return record


def _check_budgets(source: str, record: dict, k: int) -> None:
    budgets = record.get("budgets", [])
    if not isinstance(budgets, list):
        raise RecordError(f"{source}: budgets must be a list")
    for i, entry in enumerate(budgets):
        where = f"budgets[{i}]"
        if not isinstance(entry, dict):
            raise RecordError(f"{source}: {where} must be a mapping")
        _number(source, f"{where}.flops_budget", entry.get("flops_budget"), positive=True)
        if "unreachable" in entry:
            continue
        missing = [key for key in INFERENCE_KEYS + ("flops_vs_all_kept", "calibration")
                   if key not in entry]
        if missing:
            raise RecordError(f"{source}: {where}.{missing[0]} is missing")
        _check_loss_ppl(source, where, entry)
        _number(source, f"{where}.flops_vs_all_kept", entry["flops_vs_all_kept"], positive=True)
        if not -1e-6 <= entry["executed_steps"] <= k + 1e-6:
            raise RecordError(f"{source}: {where}.executed_steps={entry['executed_steps']!r} "
                              f"must lie in [0, point.k={k}]")


def _check_loss_ppl(source: str, where: str, section: dict) -> None:
    _number(source, f"{where}.loss", section["loss"])
    _number(source, f"{where}.ppl", section["ppl"], positive=True)
    if not math.isclose(section["ppl"], math.exp(section["loss"]), rel_tol=1e-6):
        raise RecordError(f"{source}: {where}.ppl={section['ppl']!r} != exp({where}.loss) = "
                          f"{math.exp(section['loss'])!r}")


def upgrade_schema_1(record: dict) -> dict:
    """A schema-1 record as schema 2: validation.loss minus the penalty, ppl from it.

    Exact for records written by this project: schema 1's validation.loss was the token-
    weighted mean of LM loss + lambda * E[steps] over equal-sized validation micro-batches
    whose loss masks count every position, and its inference[].expected_steps is the mean
    E[steps] of those same micro-batches over the same positions; so the penalty is lambda
    times it (up to float32 rounding of each micro-batch's sum, ~1e-7 nats). Without a
    router (or at lambda 0) the penalty is 0 and nothing changes.
    """
    if record.get("schema") != 1:
        raise RecordError(f"{record.get('run_id')}: schema={record.get('schema')!r}, not 1")
    upgraded = copy.deepcopy(record)
    expected = [e["expected_steps"] for e in record["inference"]]
    if len(set(expected)) != 1:
        raise RecordError(f"{record['run_id']}: inference[].expected_steps differ; schema 1 "
                          "wrote one soft-forward value into every entry")
    ponder = record["config"]["ponder"]
    routed = method_class(ponder["method"]).uses_router
    penalty = ponder["compute_penalty"] * expected[0] if routed else 0.0
    loss = record["validation"]["loss"] - penalty
    upgraded["validation"] = {"loss": loss, "ppl": math.exp(loss), "penalty": penalty,
                              "tokens": record["validation"]["tokens"]}
    upgraded["schema"] = SCHEMA
    return upgraded


def load_records(directory: Path) -> list[dict]:
    """Every *.json record under `directory`, checked; RecordError names the bad file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RecordError(f"{directory}: no such records directory")
    records = []
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise RecordError(f"{path}: not valid JSON ({err})") from None
        records.append(check_record(data, str(path)))
        records[-1]["_source"] = str(path)
    if not records:
        raise RecordError(f"{directory}: holds no *.json records")
    return records
