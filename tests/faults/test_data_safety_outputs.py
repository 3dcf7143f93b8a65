"""No tool can delete or overwrite a training run: a tool's output directory or file is
refused (exit 2, nothing written) when it holds a run or a checkpoint, lies inside a
checkpoint, or would replace a run's own file; `export_hf --force` replaces only a previous
export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from threads import _one_thread  # noqa: F401 (autouse fixture)
from tiny_runs import ROOT, run_dict
from megatron_ponder.config import ConfigError, config_from_dict
from megatron_ponder.run.layout import check_export_output, check_output_dir, check_output_file

sys.path.insert(0, str(ROOT / "tools"))
import convert_checkpoint as convert_tool  # noqa: E402
import eval_ppl as eval_tool  # noqa: E402
import export_hf as export_tool  # noqa: E402
import plot_pareto as plot_tool  # noqa: E402
import show_ponder as show_tool  # noqa: E402
import sweep as sweep_tool  # noqa: E402


@pytest.fixture
def run(tiny_data, tmp_path) -> Path:
    """A run directory as the trainer leaves it: config, metrics and a step-2 checkpoint."""
    from megatron_ponder.model import build_model
    from megatron_ponder.parallel import initialize_parallel
    from megatron_ponder.training.initial_checkpoint import save_training_checkpoint

    out = tmp_path / "run"
    data = run_dict(tiny_data, out, steps=2)
    cfg = config_from_dict(data)
    initialize_parallel(cfg)
    save_training_checkpoint(build_model(cfg), cfg, out / "checkpoints", 2)
    (out / "config.yaml").write_text(yaml.safe_dump(data))
    (out / "metrics.jsonl").write_text('{"kind": "train", "step": 1, "loss": 6.0}\n')
    return out


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_export_hf_run_onto_itself_with_force_keeps_the_run(run, capsys):
    """The issue's reproduction: `export_hf.py RUN RUN --force` deleted the checkpoints."""
    before = snapshot(run)
    assert export_tool.main([str(run), str(run), "--force"]) == 2
    assert "holds a training run or checkpoint" in capsys.readouterr().err
    assert snapshot(run) == before


@pytest.mark.parametrize("where", ["checkpoints", "checkpoints/step_0000002",
                                   "checkpoints/step_0000002/export", "parent"])
def test_export_hf_force_refuses_everything_but_a_previous_export(run, capsys, where):
    target = run.parent if where == "parent" else run / where
    before = snapshot(run)
    assert export_tool.main([str(run), str(target), "--force"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint" in err or "not a previous export" in err
    assert snapshot(run) == before


def test_export_hf_force_replaces_a_previous_export_and_not_a_plain_folder(run, tmp_path, capsys):
    export = tmp_path / "hf"
    assert export_tool.main([str(run), str(export)]) == 0
    (export / "stale.txt").write_text("from the previous export")
    assert export_tool.main([str(run), str(export), "--force"]) == 0
    assert not (export / "stale.txt").exists()  # replaced as a whole
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"mine": True}))
    assert export_tool.main([str(run), str(folder), "--force"]) == 2
    assert "not a previous export" in capsys.readouterr().err
    assert (folder / "config.json").exists()


@pytest.mark.parametrize("command", ["reshard", "import-hf"])
def test_convert_checkpoint_refuses_a_run_directory_without_checkpoints(run, tmp_path, capsys, command):
    """A run that died before its first save holds config and metrics but no checkpoints/."""
    target = tmp_path / "early"
    target.mkdir()
    (target / "config.yaml").write_text("seed: 1\n")
    (target / "metrics.jsonl").write_text("")
    source = run
    if command == "import-hf":
        source = tmp_path / "hf"
        assert export_tool.main([str(run), str(source)]) == 0
    args = [command, str(source), str(target)] + (["--tensor-parallel", "1"] if command == "reshard" else [])
    assert convert_tool.main(args) == 2
    assert "holds a training run or checkpoint (config.yaml)" in capsys.readouterr().err
    assert not (target / "checkpoints").exists()


@pytest.mark.parametrize("output", ["metrics.jsonl", "config.yaml",
                                    "checkpoints/step_0000002/ppl.json"])
def test_eval_ppl_output_never_replaces_a_run_file(run, capsys, output):
    before = snapshot(run)
    assert eval_tool.main([str(run), "--samples", "4", "--output", str(run / output)]) == 2
    assert "--output" in capsys.readouterr().err
    assert snapshot(run) == before


@pytest.mark.parametrize("tool", ["eval_ppl", "show_ponder"])
def test_an_output_file_in_a_missing_folder_is_refused_before_the_work(run, tmp_path, capsys, tool):
    """The folder of --output is checked before the checkpoint is read: a typo costs no
    scoring run and ends with exit 2, not a FileNotFoundError after the work."""
    output = tmp_path / "missing" / "out.json"
    if tool == "eval_ppl":
        code = eval_tool.main([str(run), "--samples", "4", "--output", str(output)])
    else:
        code = show_tool.main([str(run), "--text", "The river", "--output", str(output)])
    err = capsys.readouterr().err
    assert code == 2 and "--output" in err and "does not exist" in err, err
    assert not (tmp_path / "missing").exists()


def test_show_ponder_output_never_lands_in_a_checkpoint(run, capsys):
    before = snapshot(run)
    step = run / "checkpoints" / "step_0000002"
    assert show_tool.main([str(run), "--text", "The river", "--output", str(step / "view")]) == 2
    assert "inside the checkpoint directory" in capsys.readouterr().err
    assert snapshot(run) == before


def test_plot_pareto_refuses_a_run_as_its_out_directory(run, tmp_path, capsys):
    records = tmp_path / "records"
    records.mkdir()
    before = snapshot(run)
    assert plot_tool.main([str(records), "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "holds a training run" in err
    assert snapshot(run) == before


def test_sweep_refuses_a_run_as_its_output_dir(tiny_data, run, tmp_path, capsys):
    base = run_dict(tiny_data, run)
    del base["model"], base["ponder"], base["train"]["output_dir"]
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "name": "onto-a-run", "output_dir": str(run), "base": base,
        "sizes": {"h32": {"hidden_size": 32, "num_layers": 2, "num_attention_heads": 4}},
        "seeds": [1], "grid": [{"size": "h32", "method": "vanilla", "k": 0}],
        "eval": {"taus": [0.1], "batches": 1, "micro_batch_size": 1}}))
    before = snapshot(run)
    code = sweep_tool.main(["run", str(sweep_file), "--train-only"])
    err = capsys.readouterr().err
    assert code == 2 and "output_dir" in err and "holds a training run or checkpoint" in err
    assert snapshot(run) == before


def test_the_layout_checks_accept_ordinary_places(run, tmp_path):
    """What stays allowed: a new folder, an empty one, a file next to a run's own files."""
    assert check_output_dir(tmp_path / "new", "out") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty", "out")
    check_output_dir(run / "exports", "out")  # a subfolder of the run, outside checkpoints/
    check_output_file(run / "ppl_vs_tau.json", "--output")
    check_export_output(tmp_path / "hf", force=False)
    with pytest.raises(ConfigError, match="already exists; pass --force"):
        check_export_output(tmp_path / "empty", force=False)


def test_the_cli_reports_an_unsafe_output_without_a_traceback(run, tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "export_hf.py"), str(run),
                             str(run), "--force"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (run / "checkpoints" / "step_0000002" / "metadata.json").exists()
