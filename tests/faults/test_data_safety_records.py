"""The run's records say what ran: metrics.jsonl holds each step once after a resume and is
strict JSON (a non-finite value is null plus a field naming it); a resume with a changed
optimizer setting the checkpoint would silently override exits 2 naming the field, and a
change that does take effect is recorded."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import yaml

from threads import _one_thread  # noqa: F401 (autouse fixture)
from tiny_runs import read_metrics, run_dict
from megatron_ponder.config import ConfigError, config_from_dict
from megatron_ponder.train import main
from megatron_ponder.training.metrics import MetricsLogger, read_records
from megatron_ponder.training.trainer import Trainer


def strict_records(path) -> list[dict]:
    """Parse as strict JSON: NaN / Infinity literals are errors, as in most JSON readers."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def back_to_step(run, step: int) -> None:
    """The run as a crash after its step-`step` checkpoint leaves it: newer saves gone,
    the records of the steps after it still there, the last one cut short."""
    for later in (run / "checkpoints").glob("step_*"):
        if int(later.name.split("_")[1]) > step:
            shutil.rmtree(later)
    (run / "checkpoints" / "latest_checkpointed_iteration.txt").write_text(f"{step}\n")
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"kind": "train", "step": 7, "lo')


def test_a_resumed_run_records_each_step_once(tiny_run, tmp_path):
    run = tmp_path / "run"
    assert Trainer(tiny_run(run, steps=6, save_interval=3, eval_interval=2)).train() == 0
    first = read_metrics(run)
    back_to_step(run, 3)
    assert Trainer(tiny_run(run, steps=6, save_interval=3, eval_interval=2)).train() == 0
    # and once more: a finished run only evaluates again, replacing its final records
    assert Trainer(tiny_run(run, steps=6, save_interval=3, eval_interval=2)).train() == 0
    records = strict_records(run / "metrics.jsonl")
    keys = [(r["kind"], r["step"]) for r in records]
    assert sorted(keys) == sorted(set(keys))  # nothing twice
    assert [s for k, s in keys if k == "train"] == [1, 2, 3, 4, 5, 6]
    assert [s for k, s in keys if k == "valid"] == [2, 4, 6] and keys[-1] == ("final", 6)
    again = read_metrics(run)  # the resume is exact: the rewritten steps have the same loss
    assert all(again[s]["loss"] == first[s]["loss"] for s in range(1, 7))


def test_non_finite_values_are_null_plus_a_field_naming_them(tiny_run, tmp_path):
    logger = MetricsLogger(tiny_run(tmp_path / "run"), tmp_path / "run")
    logger.log(4, {"loss": float("nan"), "grad_norm": float("inf"), "lr": 1e-3,
                   "skipped": True})
    logger.log(5, {"loss": 6.5, "grad_norm": float("-inf")}, kind="valid")
    first, second = strict_records(tmp_path / "run" / "metrics.jsonl")
    assert first["loss"] is None and first["grad_norm"] is None and first["lr"] == 1e-3
    assert first["nonfinite"] == {"loss": "nan", "grad_norm": "inf"}
    assert second["nonfinite"] == {"grad_norm": "-inf"} and second["loss"] == 6.5
    restored = read_records(tmp_path / "run" / "metrics.jsonl")  # the repo's reader
    assert math.isnan(restored[0]["loss"]) and restored[0]["grad_norm"] == math.inf
    assert restored[1]["grad_norm"] == -math.inf and "nonfinite" not in restored[0]


@pytest.mark.parametrize("field, value", [("lr", 1e-4), ("adam_beta2", 0.99),
                                          ("weight_decay", 0.0)])
def test_a_resume_that_changes_an_optimizer_setting_exits_2_naming_it(
        tiny_data, tiny_run, tmp_path, capsys, field, value):
    run = tmp_path / "run"
    assert Trainer(tiny_run(run, steps=3, save_interval=3)).train() == 0
    config = (run / "config.yaml").read_bytes()
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(run_dict(tiny_data, run, steps=6, save_interval=3)))
    saved = getattr(config_from_dict(run_dict(tiny_data, run)).train, field)
    assert main([str(recipe), f"train.{field}={value}"]) == 2
    err = capsys.readouterr().err
    assert f"train.{field}: checkpoint {saved!r}, recipe {value!r}" in err
    assert (run / "config.yaml").read_bytes() == config  # still what ran
    assert max(read_metrics(run)) == 3  # nothing trained


def test_a_change_that_takes_effect_is_recorded(tiny_run, tmp_path):
    run = tmp_path / "run"
    assert Trainer(tiny_run(run, steps=3, save_interval=3)).train() == 0
    assert Trainer(tiny_run(run, steps=5, save_interval=3, grad_clip=0.5)).train() == 0
    resume = [r for r in strict_records(run / "metrics.jsonl") if r["kind"] == "resume"]
    assert resume == [{"kind": "resume", "step": 3, "time": resume[0]["time"],
                       "changed": {"train.steps": [3, 5], "train.grad_clip": [1.0, 0.5]}}]
    saved = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert saved["steps"] == 5 and saved["grad_clip"] == 0.5
    with pytest.raises(ConfigError, match="train.lr: checkpoint 0.003, recipe 0.001"):
        Trainer(tiny_run(run, steps=7, lr=1e-3))
