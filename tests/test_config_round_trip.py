"""A config is written as it always was: for every shipped recipe, every run of every sweep
file and configs that set each enumerated choice to each of its values, config_to_dict is plain
data (str, not enum members) and its YAML text (config.yaml, checkpoints, sweep records) is
the one recorded in tests/golden/config_dicts.json.

The golden file was written by main before the choices became enums (issue 24). A change of
a recipe or a default changes it on purpose: rewrite it with
`PYTHONPATH=. python tests/test_config_round_trip.py` and review the diff.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "config_dicts.json"
# Every value of train.precision, train.recompute, parallel.engine and logging.wandb.
CHOICES = {
    "bf16-layers-deepspeed-disabled": ["train.precision=bf16", "train.recompute=layers",
                                       "parallel.engine=deepspeed", "parallel.zero_stage=2",
                                       "logging.wandb=disabled"],
    "fp32-passes-megatron-online": ["train.precision=fp32", "train.recompute=passes",
                                    "parallel.engine=megatron", "logging.wandb=online"],
    "auto-none-offline": ["train.precision=auto", "train.recompute=none",
                          "logging.wandb=offline"],
}
PLAIN = (str, int, float, bool, type(None))


def recipe_texts() -> dict[str, str]:
    """recipe path (relative) -> the YAML text of its config, as the trainer writes it."""
    from megatron_ponder.config import config_to_dict, load_config

    texts = {}
    for path in sorted((ROOT / "recipes").rglob("*.yaml")):
        if path.parent.name != "sweeps":
            texts[str(path.relative_to(ROOT))] = dump(config_to_dict(load_config(path)))
    for name, overrides in CHOICES.items():
        cfg = load_config(ROOT / "recipes" / "demo_cpu.yaml", overrides)
        texts[f"demo_cpu {name}"] = dump(config_to_dict(cfg))
    return texts


def sweep_run_hashes() -> dict[str, str]:
    """sweep file#run id -> sha256 of the YAML text sweeps/runner.py writes for the run."""
    from megatron_ponder.config import config_to_dict
    from megatron_ponder.sweeps.spec import load_sweep

    return {f"{path.name}#{run.run_id}": sha256(dump(config_to_dict(run.config)))
            for path in sorted((ROOT / "recipes" / "sweeps").glob("*.yaml"))
            for run in load_sweep(path).runs}


def dump(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def plain_leaves(node, where: str = "") -> list[str]:
    """Dotted names of values that are not plain YAML/JSON data (e.g. enum members)."""
    if isinstance(node, dict):
        return [bad for key, value in node.items() for bad in plain_leaves(value, f"{where}.{key}")]
    if isinstance(node, list):
        return [bad for i, value in enumerate(node) for bad in plain_leaves(value, f"{where}[{i}]")]
    return [] if type(node) in PLAIN else [f"{where}: {type(node).__name__}"]


def test_every_recipe_is_written_as_before():
    golden = json.loads(GOLDEN.read_text())["recipes"]
    texts = recipe_texts()
    assert texts.keys() == golden.keys()
    for name, text in texts.items():
        assert text == golden[name], name


def test_every_sweep_run_is_written_as_before():
    assert sweep_run_hashes() == json.loads(GOLDEN.read_text())["sweep_runs"]


def test_config_dicts_hold_plain_values_equal_to_the_loaded_yaml():
    from megatron_ponder.config import config_to_dict, load_config

    for overrides in CHOICES.values():
        data = config_to_dict(load_config(ROOT / "recipes" / "demo_cpu.yaml", overrides))
        assert plain_leaves(data) == [], overrides
        assert yaml.safe_load(dump(data)) == data
        assert json.loads(json.dumps(data)) == data


if __name__ == "__main__":  # rewrite the golden file from this checkout
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({"recipes": recipe_texts(), "sweep_runs": sweep_run_hashes()},
                                 indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}", file=sys.stderr)
