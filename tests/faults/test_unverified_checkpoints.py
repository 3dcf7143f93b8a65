"""A checkpoint without manifest.json is never read unverified by accident (issue 21): the
trainer and every tool refuse it with exit 2 naming the file and the reason, unless the run
opts in (train.allow_unverified_checkpoint / --allow-unverified), which metrics.jsonl records;
`convert_checkpoint.py add-manifest` vouches for an old one. Resume falls back past any
checkpoint that cannot be read, manifest or not, and its messages carry no traceback
(PONDER_DEBUG=1 prints it)."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from damaged_runs import SHARD, copy_run, flip_byte, truncate
from filesystems import tree_digest
from threads import _one_thread  # noqa: F401 (autouse fixture)
from tiny_runs import ROOT, run_dict
from megatron_ponder.config import config_from_dict
from megatron_ponder.run.manifest import MANIFEST
from megatron_ponder.training.trainer import Trainer

sys.path.insert(0, str(ROOT / "tools"))
import convert_checkpoint as convert_tool  # noqa: E402
import eval_ppl as eval_tool  # noqa: E402
import generate as generate_tool  # noqa: E402

STEPS = ("step_0000003", "step_0000006")


def strip_manifests(run, *steps):
    for step in steps or STEPS:
        (run / "checkpoints" / step / MANIFEST).unlink()


def resume(tiny_data, run, capsys, **train):
    trainer = Trainer(config_from_dict(run_dict(tiny_data, run, steps=6, save_interval=3, **train)))
    return trainer, capsys.readouterr().err


def test_trainer_refuses_checkpoints_without_a_manifest(tiny_data, six_step_run, tmp_path,
                                                        train_cli):
    """The issue's case: flipped bytes in the shard and no manifest resumed silently."""
    run = copy_run(six_step_run, tmp_path)
    strip_manifests(run)
    flip_byte(run / "checkpoints" / "step_0000006" / SHARD)
    before = tree_digest(run / "checkpoints"), (run / "metrics.jsonl").read_bytes()
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(run_dict(tiny_data, run, steps=6, save_interval=3)))
    result = train_cli(recipe)
    assert result.returncode == 2, result.stderr
    for step in STEPS:
        assert (f"checkpoint {run / 'checkpoints' / step} has no manifest.json, so its files "
                "cannot be checked") in result.stderr
    assert "add-manifest" in result.stderr
    assert "train.allow_unverified_checkpoint=true" in result.stderr
    assert (tree_digest(run / "checkpoints"), (run / "metrics.jsonl").read_bytes()) == before


def test_the_opt_in_resumes_and_is_recorded_in_the_metrics(tiny_data, six_step_run, tmp_path,
                                                            capsys):
    run = copy_run(six_step_run, tmp_path)
    strip_manifests(run, "step_0000006")
    trainer, err = resume(tiny_data, run, capsys, allow_unverified_checkpoint=True)
    assert trainer.state.step == 6
    assert "step_0000006 has no manifest.json: reading it unverified, as allowed" in err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"kind": "resume", "step": 6,
            "unverified_checkpoint": str(run / "checkpoints" / "step_0000006")}.items() \
        <= records[-1].items()


def test_without_the_opt_in_resume_falls_back_to_the_newest_with_a_manifest(
        tiny_data, six_step_run, tmp_path, capsys):
    """The issue's second case: a damaged newest checkpoint without a manifest."""
    run = copy_run(six_step_run, tmp_path)
    strip_manifests(run, "step_0000006")
    truncate(run / "checkpoints" / "step_0000006" / SHARD)
    trainer, err = resume(tiny_data, run, capsys)
    assert trainer.state.step == 3
    assert "skipping a checkpoint: checkpoint" in err and "step_0000006 has no manifest.json" in err
    assert "resuming from the newest usable checkpoint" in err and "step_0000003" in err
    assert "unverified_checkpoint" not in (run / "metrics.jsonl").read_text()


@pytest.mark.parametrize("debug", ["", "1"])
def test_with_the_opt_in_a_checkpoint_that_does_not_load_is_skipped_in_one_line(
        tiny_data, six_step_run, tmp_path, capsys, monkeypatch, debug):
    """Read unverified, the truncated shard fails in the load itself: the resume skips it
    (it exited 2 with a traceback inside the message before); PONDER_DEBUG=1 adds the
    traceback on stderr, apart from the message."""
    monkeypatch.setenv("PONDER_DEBUG", debug)
    run = copy_run(six_step_run, tmp_path)
    strip_manifests(run, "step_0000006")
    truncate(run / "checkpoints" / "step_0000006" / SHARD)
    trainer, err = resume(tiny_data, run, capsys, allow_unverified_checkpoint=True)
    assert trainer.state.step == 3
    skipped = [line for line in err.splitlines() if line.startswith("skipping a checkpoint:")]
    assert len(skipped) == 1
    assert "step_0000006 does not fit this model or is incomplete" in skipped[0]
    assert "resuming from the newest usable checkpoint" in err and "step_0000003" in err
    assert ("Traceback" in err) == bool(debug)
    if not debug:
        assert len(err.strip().splitlines()) == 3  # the warning, the skip, the resume point


@pytest.mark.parametrize("tool", ["eval_ppl", "generate", "reshard"])
def test_a_tool_refuses_a_checkpoint_without_a_manifest_unless_allowed(
        six_step_run, tmp_path, capsys, tool):
    run = copy_run(six_step_run, tmp_path)
    strip_manifests(run, "step_0000006")
    flip_byte(run / "checkpoints" / "step_0000006" / SHARD)  # eval_ppl exited 0 on it
    module, args = {
        "eval_ppl": (eval_tool, [str(run), "--samples", "2", "--batch-size", "2"]),
        "generate": (generate_tool, [str(run), "--prompt", "The", "--max-new-tokens", "2"]),
        "reshard": (convert_tool, ["reshard", str(run), str(tmp_path / "tp1"),
                                   "--tensor-parallel", "1"])}[tool]
    assert module.main(args) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {run / 'checkpoints' / 'step_0000006'} has no manifest.json" in err
    assert "--allow-unverified" in err and not (tmp_path / "tp1" / "checkpoints").exists()
    if tool == "generate":  # the opt-in, for this run only
        assert module.main([*args, "--allow-unverified"]) == 0
        assert "reading it unverified, as allowed for this run" in capsys.readouterr().err


def test_add_manifest_vouches_for_an_old_checkpoint(tiny_data, six_step_run, tmp_path, capsys):
    run = copy_run(six_step_run, tmp_path)
    step = run / "checkpoints" / "step_0000006"
    original = json.loads((step / MANIFEST).read_text())
    strip_manifests(run, "step_0000006")
    (step / (MANIFEST + ".tmp")).write_text("{")  # left by a crash of an earlier try
    assert convert_tool.main(["add-manifest", str(step)]) == 0
    assert f"wrote {step / MANIFEST}" in capsys.readouterr().out
    assert json.loads((step / MANIFEST).read_text()) == original
    assert sorted(p.name for p in step.iterdir() if "manifest" in p.name) == [MANIFEST]
    trainer, err = resume(tiny_data, run, capsys)
    assert trainer.state.step == 6 and "skipping" not in err and "unverified" not in err
    # a checkpoint that has one is not re-vouched for (its damage would be hidden)
    assert convert_tool.main(["add-manifest", str(step)]) == 2
    assert f"{step} already has {MANIFEST}" in capsys.readouterr().err
    assert convert_tool.main(["add-manifest", str(run)]) == 2
    assert f"{run} is not a checkpoint" in capsys.readouterr().err
