"""Sweep files: expansion order, run ids, configs, and errors that name file and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sweep_files import LAMBDA, sweep_dict, write_sweep

from megatron_ponder.sweeps.runner import run_one, status, submit_command
from megatron_ponder.sweeps.spec import SweepError, load_sweep

REPO = Path(__file__).resolve().parents[2]


def _sweep(tmp_path, **changes):
    data = sweep_dict(tmp_path / "out", tmp_path / "text.txt", tmp_path / "data")
    data.update(changes)
    return write_sweep(tmp_path / "sweep.yaml", data)


def test_grid_expands_in_file_order_with_seeds_innermost(tmp_path):
    path = _sweep(tmp_path, seeds=[3, 4], grid=[
        {"size": "h32", "method": "ponderlm2", "k": [1, 2]},
        {"size": "h32", "method": "ponderlm3", "k": 2, "lambda": [0, 0.01]}])
    sweep = load_sweep(path)
    assert [r.run_id for r in sweep.runs] == [
        "h32-ponderlm2-k1-lam0-seed3", "h32-ponderlm2-k1-lam0-seed4",
        "h32-ponderlm2-k2-lam0-seed3", "h32-ponderlm2-k2-lam0-seed4",
        "h32-ponderlm3-k2-lam0-seed3", "h32-ponderlm3-k2-lam0-seed4",
        "h32-ponderlm3-k2-lam0.01-seed3", "h32-ponderlm3-k2-lam0.01-seed4"]
    last = sweep.runs[-1].config
    assert (last.ponder.method, last.ponder.k, last.ponder.compute_penalty, last.seed) == (
        "ponderlm3", 2, 0.01, 4)
    assert last.model.hidden_size == 32 and last.model.vocab_size == 512
    assert last.train.output_dir == str(tmp_path / "out" / "runs" / sweep.runs[-1].run_id)
    assert sweep.record_path(sweep.runs[0]) == (
        tmp_path / "out" / "records" / "h32-ponderlm2-k1-lam0-seed3.json")
    assert sweep.eval.taus == (1e-4, 0.5, 0.9)


def test_variants_overlay_the_config_and_name_the_run(tmp_path):
    path = _sweep(tmp_path, variants={
        "gp2": {"ponder": {"grad_passes": 2}},
        "decisive": {"ponder": {"decisive_weight": 0.01, "decisive_threshold": 0.1}}},
        grid=[{"size": "h32", "method": "ponderlm3", "k": 2, "lambda": 0.01,
               "variant": [None, "gp2", "decisive"]}])
    sweep = load_sweep(path)
    assert [r.run_id for r in sweep.runs] == [
        "h32-ponderlm3-k2-lam0.01-seed3", "h32-ponderlm3-k2-lam0.01-gp2-seed3",
        "h32-ponderlm3-k2-lam0.01-decisive-seed3"]
    plain, gp2, decisive = (r.config.ponder for r in sweep.runs)
    assert (plain.grad_passes, plain.decisive_weight) == (0, 0.0)
    assert (gp2.grad_passes, gp2.compute_penalty) == (2, 0.01)
    assert (decisive.decisive_weight, decisive.decisive_threshold, decisive.grad_passes) == (
        0.01, 0.1, 0)
    assert sweep.runs[1].point["variant"] == "gp2" and sweep.runs[0].point["variant"] is None
    assert sweep.eval.budgets == (0.01, 0.9) and sweep.eval.calibration_batches == 2


@pytest.mark.parametrize("changes, field", [
    ({"grid": [{"size": "h99", "method": "vanilla", "k": 0}]}, "grid[0].size"),
    ({"grid": [{"size": "h32", "method": "vanilla", "k": -1}]}, "grid[0].k"),
    ({"grid": [{"size": "h32", "method": "vanilla", "k": 0, "lr": 1}]}, "grid[0].lr"),
    ({"grid": [{"size": "h32", "method": "vanilla", "k": 0, "lambda": 0.1}]}, "grid[0].lambda"),
    ({"grid": [{"size": "h32", "method": "vanilla", "k": [0, 0]}]}, "grid[0]"),
    ({"grid": [{"size": "h32", "method": "nope", "k": 1}]}, "ponder.method"),
    ({"seeds": []}, "seeds"),
    ({"eval": {"taus": [0.0], "batches": 1, "micro_batch_size": 1}}, "eval.taus"),
    ({"eval": {"taus": [0.1], "batches": 0, "micro_batch_size": 1}}, "eval.batches"),
    ({"prepare": {"input": "x.txt"}}, "prepare"),
    ({"eval": {"taus": [0.1], "batches": 1, "micro_batch_size": 1, "budgets": [0]}},
     "eval.budgets"),
    ({"eval": {"taus": [0.1], "batches": 1, "micro_batch_size": 1, "calibration_batches": 0}},
     "eval.calibration_batches"),
    ({"grid": [{"size": "h32", "method": "ponderlm3", "k": 2, "variant": "gp2"}]}, "grid[0].variant"),
    ({"variants": {"two words": {"ponder": {"grad_passes": 2}}}}, "variants"),
    ({"variants": {"gp": {"ponder": {"grad_passes": -2}}},
      "grid": [{"size": "h32", "method": "ponderlm3", "k": 2, "variant": "gp"}]}, "ponder.grad_passes"),
    ({"extra": 1}, "extra"),
])
def test_malformed_sweep_names_file_and_field(tmp_path, changes, field):
    path = _sweep(tmp_path, **changes)
    with pytest.raises(SweepError) as err:
        load_sweep(path)
    assert str(path) in str(err.value) and field in str(err.value)


@pytest.mark.parametrize("path", sorted((REPO / "recipes" / "sweeps").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_sweep_files_load(path):
    sweep = load_sweep(path)  # every run's training config is built and validated
    assert len({run.run_id for run in sweep.runs}) == len(sweep.runs) > 0


def test_cli_list_and_submit_command(tmp_path):
    path = _sweep(tmp_path)
    listing = subprocess.run([sys.executable, str(REPO / "tools" / "sweep.py"), "list",
                              str(path)], capture_output=True, text=True, check=True).stdout
    assert listing.split() == ["0", "h32-vanilla-k0-lam0-seed3", "pending",
                               "1", f"h32-ponderlm3-k2-lam{LAMBDA:g}-seed3", "pending"]
    dry = subprocess.run([sys.executable, str(REPO / "tools" / "sweep.py"), "run", str(path),
                          "--submit", "--dry-run"], capture_output=True, text=True, check=True)
    assert dry.stdout.strip() == f"sbatch --array=0-1 slurm/sweep.sbatch {path}"
    assert submit_command("s.yaml", 28) == ["sbatch", "--array=0-27", "slurm/sweep.sbatch",
                                            "s.yaml"]


def test_cli_reports_bad_file_with_exit_code_2(tmp_path):
    path = _sweep(tmp_path, seeds="one")
    result = subprocess.run([sys.executable, str(REPO / "tools" / "sweep.py"), "run", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert f"error: {path}: seeds" in result.stderr


def test_a_run_held_by_another_worker_is_skipped_not_trained(tmp_path):
    sweep = load_sweep(_sweep(tmp_path))
    run = sweep.runs[0]
    lock = sweep.run_dir(run) / ".sweep.lock"
    lock.parent.mkdir(parents=True)
    # Another process holds the run: flock is per open file, so a child holds it for real.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('locked', flush=True); time.sleep(60)"), str(lock)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert status(sweep, run) == "running"
        assert run_one(sweep, run) == "skipped (another process is working on it)"
        assert not (sweep.run_dir(run) / "recipe.yaml").exists()  # nothing was started
    finally:
        holder.kill()
        holder.wait()
    assert status(sweep, run) == "pending"


def test_base_may_be_a_recipe_file_composed_like_recipes(tmp_path):
    data = sweep_dict(tmp_path / "out", tmp_path / "text.txt", tmp_path / "data")
    inline = load_sweep(write_sweep(tmp_path / "inline.yaml", data))
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "tiny.yaml").write_text(yaml.safe_dump(data["base"]))
    data["base"] = "recipes/tiny.yaml"  # relative to the sweep file
    from_file = load_sweep(write_sweep(tmp_path / "sweep.yaml", data))
    assert [r.config for r in from_file.runs] == [r.config for r in inline.runs]
    data["base"] = "recipes/missing.yaml"
    with pytest.raises(SweepError, match=r"sweep.yaml: base ='recipes/missing.yaml': recipe file .* does not exist"):
        load_sweep(write_sweep(tmp_path / "sweep.yaml", data))
