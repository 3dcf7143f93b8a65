"""Sweep files: a YAML grid of training runs, validated early and expanded in a fixed order.

    name: pareto-cpu
    output_dir: runs/sweeps/pareto-cpu     # runs/<run_id>/ (checkpoints) and records/<run_id>.json
    prepare:                               # optional: build the tokenizer + indexed dataset that
      input: data/tinyshakespeare.txt      #   base.data names, if they are missing ("embedded" =
      vocab_size: 512                      #   the package's own corpus)
    base: {model: ..., data: ..., train: ...}   # a training config every run starts from, or
                                           #   the path of a recipe file (relative to this file)
    sizes: {h64: {hidden_size: 64, ...}}   # named model.* overrides
    seeds: [1, 2]
    variants:                              # optional: named config overlays a grid entry
      gp2: {ponder: {grad_passes: 2}}      #   may add (its name joins the run id)
    grid:                                  # each entry: the product of its listed values
      - {size: h64, method: ponderlm2, k: [1, 2, 3]}
      - {size: h64, method: ponderlm3, k: 3, lambda: [0.0, 0.01]}
      - {size: h64, method: ponderlm3, k: 3, lambda: 0.01, variant: gp2}
    eval: {taus: [1.0e-4, 0.1], batches: 16, micro_batch_size: 16,
           budgets: [0.6, 0.8], calibration_batches: 8}   # optional: FLOPs budgets (routers
                                           #   only; tau calibrated on the calibration_batches
                                           #   of validation data after the scored ones)

Runs are ordered grid entry by grid entry, values in the order written, seeds innermost; the
index of a run is its position in that order (a Slurm array task id).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from megatron_ponder.config import (
    Config, ConfigError, config_from_dict, merge_recipes, read_recipe, read_yaml_mapping,
)
from megatron_ponder.ponder.registry import METHODS, method_class, names_where

TOP_KEYS = ("name", "output_dir", "prepare", "base", "sizes", "variants", "seeds", "grid",
            "eval")
GRID_KEYS = ("size", "method", "k", "lambda", "variant")


class SweepError(ValueError):
    """A sweep file is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class EvalSpec:
    taus: tuple[float, ...]
    batches: int
    micro_batch_size: int
    # Seed of the validation sample order: one for every run, so all score the same tokens.
    data_seed: int = 0
    # Inference FLOPs budgets (inference/budget.py), each calibrated on calibration_batches
    # micro-batches of validation data that follow the scored ones.
    budgets: tuple[float, ...] = ()
    calibration_batches: int = 8


@dataclass(frozen=True)
class PrepareSpec:
    input: str  # a text/JSONL file, or "embedded"
    vocab_size: int


@dataclass
class RunSpec:
    index: int
    run_id: str
    point: dict[str, Any]  # the grid values: size, method, k, lambda, variant, seed
    config: Config = field(repr=False)


@dataclass
class Sweep:
    path: Path
    name: str
    output_dir: Path
    runs: list[RunSpec]
    eval: EvalSpec
    prepare: PrepareSpec | None

    def run_dir(self, run: RunSpec) -> Path:
        return self.output_dir / "runs" / run.run_id

    def record_path(self, run: RunSpec) -> Path:
        return self.output_dir / "records" / f"{run.run_id}.json"


def _fail(path: Path, where: str, problem: str) -> None:
    raise SweepError(f"{path}: {where} {problem}")


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _number_text(value: float) -> str:
    return f"{value:g}"


def run_id(point: dict[str, Any]) -> str:
    variant = f"-{point['variant']}" if point.get("variant") else ""
    return (f"{point['size']}-{point['method']}-k{point['k']}-lam{_number_text(point['lambda'])}"
            f"{variant}-seed{point['seed']}")


def _eval_spec(path: Path, data: Any) -> EvalSpec:
    if not isinstance(data, dict):
        _fail(path, "eval", "must be a mapping with taus, batches, micro_batch_size")
    unknown = set(data) - {"taus", "batches", "micro_batch_size", "data_seed", "budgets",
                           "calibration_batches"}
    if unknown:
        _fail(path, f"eval.{sorted(unknown)[0]}", "is unknown: valid keys taus, batches, "
              "micro_batch_size, data_seed, budgets, calibration_batches")
    taus = data.get("taus")
    if (not isinstance(taus, list) or not taus
            or not all(isinstance(t, (int, float)) and 0 < t < 1 for t in taus)):
        _fail(path, "eval.taus", f"={taus!r} must be a non-empty list of numbers in (0, 1)")
    budgets = data.get("budgets", [])
    if (not isinstance(budgets, list)
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and b > 0
                       for b in budgets)):
        _fail(path, "eval.budgets", f"={budgets!r} must be a list of numbers > 0 (inference "
              "FLOPs relative to the same model with every latent step kept)")
    for key in ("batches", "micro_batch_size", "calibration_batches"):
        value = data.get(key, 8 if key == "calibration_batches" else None)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            _fail(path, f"eval.{key}", f"={value!r} must be an integer >= 1")
    seed = data.get("data_seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        _fail(path, "eval.data_seed", f"={seed!r} must be an integer >= 0")
    return EvalSpec(tuple(float(t) for t in sorted(taus)), data["batches"],
                    data["micro_batch_size"], seed, tuple(float(b) for b in sorted(budgets)),
                    data.get("calibration_batches", 8))


def _prepare_spec(path: Path, data: Any) -> PrepareSpec | None:
    if data is None:
        return None
    if not isinstance(data, dict) or set(data) != {"input", "vocab_size"}:
        _fail(path, "prepare", f"={data!r} must be a mapping with exactly input (a text/JSONL "
              "file or 'embedded') and vocab_size")
    if not isinstance(data["vocab_size"], int) or data["vocab_size"] < 259:
        _fail(path, "prepare.vocab_size", f"={data['vocab_size']!r} must be an integer >= 259 "
              "(byte fallback needs 256 byte pieces + specials)")
    if not isinstance(data["input"], str) or not data["input"]:
        _fail(path, "prepare.input", "must be a file path or 'embedded'")
    return PrepareSpec(data["input"], data["vocab_size"])


def _variants(path: Path, data: Any) -> dict[str, dict]:
    if data is None:
        return {}
    if (not isinstance(data, dict)
            or not all(isinstance(name, str) and name and name.replace("_", "").isalnum()
                       and isinstance(overlay, dict) for name, overlay in data.items())):
        _fail(path, "variants", "must map names (letters, digits, _) to config overlays, "
              "e.g. {gp2: {ponder: {grad_passes: 2}}}")
    return data


def _grid_points(path: Path, grid: Any, sizes: dict, seeds: list[int],
                 variants: dict[str, dict]) -> list[dict[str, Any]]:
    if not isinstance(grid, list) or not grid:
        _fail(path, "grid", "must be a non-empty list of mappings (size, method, k, lambda)")
    points = []
    for i, entry in enumerate(grid):
        where = f"grid[{i}]"
        if not isinstance(entry, dict):
            _fail(path, where, f"={entry!r} must be a mapping of {', '.join(GRID_KEYS)}")
        unknown = set(entry) - set(GRID_KEYS)
        if unknown:
            _fail(path, f"{where}.{sorted(unknown)[0]}", f"is unknown: valid keys "
                  f"{', '.join(GRID_KEYS)}")
        missing = {"size", "method", "k"} - set(entry)
        if missing:
            _fail(path, f"{where}.{sorted(missing)[0]}", "is missing")
        defaults = {"lambda": 0.0, "variant": None}
        values = {key: _as_list(entry.get(key, defaults.get(key))) for key in GRID_KEYS}
        for variant in values["variant"]:
            if variant is not None and variant not in variants:
                _fail(path, f"{where}.variant", f"={variant!r} is not one of variants: "
                      f"{', '.join(variants) or '(none defined)'}")
        for method in values["method"]:
            if method not in METHODS:
                _fail(path, f"{where}.method", f"={method!r} is not a ponder.method: valid "
                      f"values {', '.join(METHODS)}")
        for size in values["size"]:
            if size not in sizes:
                _fail(path, f"{where}.size", f"={size!r} is not one of sizes: {', '.join(sizes)}")
        for k in values["k"]:
            if not isinstance(k, int) or isinstance(k, bool) or k < 0:
                _fail(path, f"{where}.k", f"={k!r} must be an integer >= 0")
        for lam in values["lambda"]:
            if not isinstance(lam, (int, float)) or lam < 0:
                _fail(path, f"{where}.lambda", f"={lam!r} must be a number >= 0")
        for combo in itertools.product(*(values[key] for key in GRID_KEYS), seeds):
            point = dict(zip(GRID_KEYS + ("seed",), combo))
            point["lambda"] = float(point["lambda"])
            if point["lambda"] and not method_class(point["method"]).uses_router:
                routed = ", ".join(names_where(lambda m: m.uses_router))
                _fail(path, f"{where}.lambda", f"={point['lambda']!r} applies to methods with a "
                      f"router only ({routed}; method {point['method']!r} has none)")
            points.append((where, point))
    return points


def _config_for(path: Path, where: str, base: dict, size: dict, point: dict,
                variants: dict[str, dict]) -> Config:
    data = merge_recipes(base, variants.get(point["variant"]) or {})
    data = merge_recipes(data, {
        "model": size, "seed": point["seed"],
        "ponder": {"method": point["method"], "k": point["k"], "compute_penalty": point["lambda"]},
    })
    try:
        return config_from_dict(data)
    except (ConfigError, TypeError) as err:
        raise SweepError(f"{path}: {where} (size {point['size']!r}, method "
                         f"{point['method']!r}, k {point['k']}): {err}") from None


def load_sweep(path: str | Path) -> Sweep:
    """Parse and validate a sweep file; every run's training config is built and checked."""
    path = Path(path)
    try:
        data = read_yaml_mapping(path, "sweep file", ", ".join(TOP_KEYS))
    except ConfigError as err:
        raise SweepError(str(err)) from None
    unknown = set(data) - set(TOP_KEYS)
    if unknown:
        _fail(path, sorted(unknown)[0], f"is unknown: valid top-level keys {', '.join(TOP_KEYS)}")
    for key in ("name", "output_dir", "base", "sizes", "seeds", "grid", "eval"):
        if key not in data:
            _fail(path, key, "is missing")
    for key in ("name", "output_dir"):
        if not isinstance(data[key], str) or not data[key]:
            _fail(path, key, f"={data[key]!r} must be a non-empty string")
    base = data["base"]
    if isinstance(base, str):  # a recipe file, relative to the sweep file
        try:
            base = read_recipe(path.parent / base)
        except ConfigError as err:
            _fail(path, "base", f"={data['base']!r}: {err}")
    if not isinstance(base, dict):
        _fail(path, "base", "must be a mapping (a training config: model, data, train, ...) or "
              "the path of a recipe file")
    sizes = data["sizes"]
    if (not isinstance(sizes, dict) or not sizes
            or not all(isinstance(v, dict) for v in sizes.values())):
        _fail(path, "sizes", "must map size names to mappings of model.* fields")
    seeds = data["seeds"]
    if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        _fail(path, "seeds", f"={seeds!r} must be a non-empty list of distinct integers")
    variants = _variants(path, data.get("variants"))
    runs, seen = [], {}
    for where, point in _grid_points(path, data["grid"], sizes, seeds, variants):
        rid = run_id(point)
        if rid in seen:
            _fail(path, where, f"repeats run {rid} (already from {seen[rid]})")
        seen[rid] = where
        config = _config_for(path, where, base, sizes[point["size"]], point, variants)
        runs.append(RunSpec(len(runs), rid, point, config))
    output_dir = Path(data["output_dir"])
    for run in runs:
        run.config.train.output_dir = str(output_dir / "runs" / run.run_id)
        run.config.logging.run_name = f"{data['name']}/{run.run_id}"
    return Sweep(path, data["name"], output_dir, runs, _eval_spec(path, data["eval"]),
                 _prepare_spec(path, data.get("prepare")))
