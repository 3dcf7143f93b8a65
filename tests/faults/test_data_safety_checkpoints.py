"""Damaged checkpoints are never loaded silently: every checkpoint carries a manifest of
checksums; resume skips a damaged one (naming the file) for the newest that verifies; every
tool given a damaged checkpoint exits 2 naming the file. A full disk during a save says so."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from damaged_runs import SHARD, copy_run, flip_byte
from threads import _one_thread  # noqa: F401 (autouse fixture)
from tiny_runs import ROOT, run_dict
from megatron_ponder.config import config_from_dict
from megatron_ponder.run.checkpoint_read import CheckpointError
from megatron_ponder.run.manifest import MANIFEST, file_digest
from megatron_ponder.training.trainer import Trainer

sys.path.insert(0, str(ROOT / "tools"))
import convert_checkpoint as convert_tool  # noqa: E402
import eval_ppl as eval_tool  # noqa: E402
import export_hf as export_tool  # noqa: E402
import generate as generate_tool  # noqa: E402

@pytest.fixture
def trained(six_step_run) -> Path:
    """A finished 6-step run with checkpoints at steps 3 and 6 (copy it before damaging)."""
    return six_step_run


def resume(tiny_data, run: Path, capsys, **train) -> tuple[Trainer, str]:
    trainer = Trainer(config_from_dict(run_dict(tiny_data, run, steps=6, save_interval=3, **train)))
    return trainer, capsys.readouterr().err


def test_every_file_of_a_checkpoint_is_in_its_manifest(trained):
    step = trained / "checkpoints" / "step_0000006"
    manifest = json.loads((step / MANIFEST).read_text())
    files = sorted(p.name for p in step.iterdir() if p.name != MANIFEST)
    assert sorted(manifest["files"]) == files and SHARD in files and "common.pt" in files
    for name, entry in manifest["files"].items():
        assert entry["bytes"] == (step / name).stat().st_size
        assert entry[manifest["algorithm"]] == file_digest(step / name)


@pytest.mark.parametrize("damage", ["flip a byte of the shard", "truncate common.pt"])
def test_resume_skips_a_damaged_checkpoint_for_the_newest_that_verifies(
        tiny_data, trained, tmp_path, capsys, damage):
    run = copy_run(trained, tmp_path)
    newest = run / "checkpoints" / "step_0000006"
    if damage.startswith("flip"):
        flip_byte(newest / SHARD)
        bad, why = SHARD, "checksum mismatch"
    else:
        common = newest / "common.pt"
        common.write_bytes(common.read_bytes()[:100])
        bad, why = "common.pt", "truncated"
    trainer, err = resume(tiny_data, run, capsys)
    assert trainer.state.step == 3
    assert f"step_0000006 is damaged: {bad}: " in err and why in err
    assert "resuming from the newest usable checkpoint" in err and "step_0000003" in err
    assert trainer.train() == 0  # trains steps 3..6 again and replaces the damaged save
    trainer_again, err = resume(tiny_data, run, capsys)
    assert trainer_again.state.step == 6 and "skipping" not in err


def test_unpicklable_common_pt_without_a_manifest_is_skipped_not_a_traceback(
        tiny_data, trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path)
    for step in ("step_0000003", "step_0000006"):  # checkpoints from before manifests existed
        (run / "checkpoints" / step / MANIFEST).unlink()
    (run / "checkpoints" / "step_0000006" / "common.pt").write_bytes(b"not a pickle")
    trainer, err = resume(tiny_data, run, capsys, allow_unverified_checkpoint=True)
    assert trainer.state.step == 3
    assert "step_0000006: its common state (common.pt) cannot be read" in err
    assert "has no manifest.json: reading it unverified, as allowed for this run" in err


def test_resume_refuses_when_no_checkpoint_verifies(tiny_data, trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path)
    for step in ("step_0000003", "step_0000006"):
        flip_byte(run / "checkpoints" / step / SHARD)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(run_dict(tiny_data, run, steps=6, save_interval=3)))
    result = subprocess.run([sys.executable, "-m", "megatron_ponder.train", str(recipe)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr
    assert "no checkpoint in" in result.stderr and "is usable" in result.stderr
    assert result.stderr.count(f"{SHARD}: checksum mismatch") == 2
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("tool", ["eval_ppl", "export_hf", "generate", "reshard"])
def test_a_tool_given_a_damaged_checkpoint_exits_2_naming_the_file(
        trained, tmp_path, capsys, tool):
    run = copy_run(trained, tmp_path)
    flip_byte(run / "checkpoints" / "step_0000006" / SHARD)
    argv = {"eval_ppl": (eval_tool, [str(run), "--samples", "4"]),
            "export_hf": (export_tool, [str(run), str(tmp_path / "hf")]),
            "generate": (generate_tool, [str(run), "--prompt", "The", "--max-new-tokens", "2"]),
            "reshard": (convert_tool, ["reshard", str(run), str(tmp_path / "tp1"),
                                       "--tensor-parallel", "1"])}
    module, args = argv[tool]
    assert module.main(args) == 2
    err = capsys.readouterr().err
    assert "step_0000006 is damaged" in err and f"{SHARD}: checksum mismatch" in err
    assert not (tmp_path / "hf").exists() and not (tmp_path / "tp1" / "checkpoints").exists()


def test_reshard_of_a_truncated_checkpoint_gets_a_reshard_hint(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path)
    step = run / "checkpoints" / "step_0000006"
    (step / MANIFEST).unlink()  # an old checkpoint: only the load itself can notice
    (step / SHARD).write_bytes((step / SHARD).read_bytes()[:1000])
    assert convert_tool.main(["reshard", str(step), str(tmp_path / "tp1"),
                              "--tensor-parallel", "1", "--allow-unverified"]) == 2
    err = capsys.readouterr().err
    assert "reshard another step" in err and "train.output_dir" not in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2  # the warning, the error


def test_a_checkpoint_damaged_by_load_time_is_caught_once_per_process(trained, tmp_path):
    """The verification is memoised per manifest: a tool's several reads hash once, but a
    checkpoint re-saved under the same name is verified again."""
    from megatron_ponder.run.checkpoint_read import verify_checkpoint

    run = copy_run(trained, tmp_path)
    step = run / "checkpoints" / "step_0000003"
    verify_checkpoint(step)
    flip_byte(step / SHARD)
    manifest = json.loads((step / MANIFEST).read_text())
    (step / MANIFEST).unlink()
    (step / MANIFEST).write_text(json.dumps(manifest))  # a new manifest file: new inode
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        verify_checkpoint(step)


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs unshare and a user namespace that "
                    "may mount a tmpfs (a small file system to fill)")
def test_a_save_onto_a_full_disk_says_the_disk_is_full(tiny_data, tmp_path):
    """The run's output directory is a 160 KiB tmpfs: set-up fits, the first checkpoint
    (about 800 KB with AdamW state) does not."""
    out = tmp_path / "small_fs"
    out.mkdir()
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(run_dict(tiny_data, out, steps=3, save_interval=3)))
    script = (f"mount -t tmpfs -o size=160k tmpfs {out} && exec {sys.executable} "
              f"-m megatron_ponder.train {recipe}")
    result = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr
    # The first line is ours (megatron's writer logged torch's "[enforce fail at
    # inline_container.cc:672] . unexpected pos ..." before it).
    assert result.stderr.startswith("error (rank 0): saving checkpoint step_0000003 failed: the "
                                    "file system of"), result.stderr[:500]
    assert "is full" in result.stderr and "Traceback" not in result.stderr
    assert "no checkpoint was complete yet" in result.stderr  # not "(step None) is intact"
