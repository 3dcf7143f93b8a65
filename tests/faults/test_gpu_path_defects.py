"""Issue 20's GPU-path defects that CPU can still catch: an unknown or mis-named GPU's peak
(training/throughput.py), flex attention's compile budget (attention/flex.py) and the srun line
of slurm/pretrain.sbatch. The checkpoint one (TE's `_extra_state`) is in
test_checkpoint_layer_specs.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


# ---- defect 8: the peak-FLOPs table -------------------------------------------------------------

# torch.cuda.get_device_name() as these boards report it -> dense BF16 TFLOP/s (None: unknown).
GPU_NAMES = {
    "NVIDIA H100 80GB HBM3": 989.5,  # SXM5
    "NVIDIA H100 PCIe": 756.5,
    "NVIDIA H100 NVL": 835.5,
    "NVIDIA H200": 989.5,
    "NVIDIA H200 NVL": 835.5,
    "NVIDIA GH200 480GB": 989.5,
    "NVIDIA A100-SXM4-80GB": 312.0,
    "NVIDIA A100-SXM4-40GB": 312.0,
    "NVIDIA A100-PCIE-40GB": 312.0,
    "NVIDIA A100 80GB PCIe": 312.0,
    "NVIDIA L4": 121.0,
    "NVIDIA L40S": 362.0,
    "NVIDIA L40": 181.0,
    "NVIDIA A10": 125.0,
    "NVIDIA A10G": None,  # not an A10 (AWS's variant, no NVIDIA datasheet)
    "NVIDIA GeForce RTX 4090": None,
    "Tesla V100-SXM2-32GB": None,  # no BF16 tensor cores
    "NVIDIA H100": None,  # SXM, NVL or PCIe: ambiguous, so no MFU rather than a wrong one
}


@pytest.mark.parametrize("name,tflops", GPU_NAMES.items())
def test_gpu_peak_is_matched_exactly_and_unknown_gpus_warn_without_failing(monkeypatch, name, tflops):
    from megatron_ponder.training import throughput

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
    throughput.peak_flops.cache_clear()
    try:
        if tflops is None:
            with pytest.warns(RuntimeWarning, match="train.peak_tflops"):
                assert throughput.peak_flops() is None
        else:
            assert throughput.peak_flops() == pytest.approx(tflops * 1e12, rel=1e-9)
        assert throughput.peak_flops(500.0) == 500e12  # the override always wins
    finally:
        throughput.peak_flops.cache_clear()


def test_unknown_peak_reports_no_mfu():
    from megatron_ponder.training.throughput import mfu

    assert mfu(1e12, 2.0, None) is None
    assert mfu(1e12, 2.0, 1e12, devices=2) == pytest.approx(0.25, rel=1e-12)


def test_a_run_on_an_unknown_gpu_trains_and_logs_no_mfu(tiny_run, tmp_path, monkeypatch, capsys):
    """The trainer with the peak an unknown GPU gets (None): it trains, metrics.jsonl says
    "mfu": null and the log line "MFU n/a" (before: the run ended at set-up)."""
    from megatron_ponder.run.exit_codes import EXIT_DONE
    from megatron_ponder.training import trainer as trainer_module
    from tiny_runs import read_metrics

    monkeypatch.setattr(trainer_module, "peak_flops", lambda override: None)
    trainer = trainer_module.Trainer(tiny_run(tmp_path / "run", steps=2, save_interval=100))
    assert trainer.train() == EXIT_DONE
    records = read_metrics(tmp_path / "run")
    assert sorted(records) == [1, 2] and all(r["mfu"] is None for r in records.values())
    assert "MFU n/a" in capsys.readouterr().out


# ---- defect 7: flex attention's compiled graphs -------------------------------------------------

class CountingBackend:
    """A torch.compile backend that counts the graphs it is given and runs them eagerly."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


def _flex_inputs(s: int):
    gen = torch.Generator().manual_seed(s)
    q = torch.randn(1, 2, s, 16, generator=gen)
    log_w = torch.randn(1, s, generator=gen)

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + log_w[b, kv_idx]
    from megatron_ponder.attention.flex import _causal_block_mask
    return q, dict(score_mod=score_mod, block_mask=_causal_block_mask(s, "cpu"), scale=0.25)


# Twelve shapes: more than dynamo's default limit of 8 that PonderLM-3 at K 3 reaches (about 4
# sequence lengths in training and 4 in evaluation).
FLEX_LENGTHS = [16 * i for i in range(1, 13)]


def test_flex_compiles_every_shape_past_dynamos_default_limit():
    from megatron_ponder.attention.flex import FLEX_RECOMPILE_LIMIT, run_compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    assert len(FLEX_LENGTHS) <= FLEX_RECOMPILE_LIMIT
    backend = CountingBackend()
    with torch.no_grad():
        for s in FLEX_LENGTHS:
            q, kwargs = _flex_inputs(s)
            out = run_compiled_flex(q, q, q, backend=backend, **kwargs)
            torch.testing.assert_close(out, flex_attention(q, q, q, **kwargs), rtol=1e-5, atol=1e-6)
    # One graph per shape; before the fix graphs 9-12 never compiled (they ran eager, silently).
    assert backend.graphs == len(FLEX_LENGTHS)


def test_flex_past_its_own_limit_fails_loudly_instead_of_running_eager(monkeypatch):
    from megatron_ponder.attention import flex

    monkeypatch.setattr(flex, "FLEX_RECOMPILE_LIMIT", 4)
    backend = CountingBackend()  # a new backend: a new compiled region with the lower limit
    with torch.no_grad(), pytest.raises(RuntimeError, match="FLEX_RECOMPILE_LIMIT=4"):
        for s in FLEX_LENGTHS:
            q, kwargs = _flex_inputs(s)
            flex.run_compiled_flex(q, q, q, backend=backend, **kwargs)
    assert backend.graphs == 4


# ---- found by device_check's dry run: ZeRO at world size 1 without torchrun -----------------------

def test_zero_runs_as_one_process_without_torchrun(tiny_recipe, train_cli, tmp_path, monkeypatch):
    """`python -m megatron_ponder.train RECIPE parallel.engine=deepspeed` (no launcher): before,
    DeepSpeed's "requires the LOCAL_RANK environment variable" assertion ended the run."""
    pytest.importorskip("deepspeed")
    from tiny_runs import read_metrics

    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.delenv("LOCAL_RANK")  # as a plain `python` start has it; restored afterwards
    for name in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(name, raising=False)
    recipe = tiny_recipe(tmp_path / "r.yaml", tmp_path / "run", steps=2, save_interval=2)
    result = train_cli(recipe, "parallel.engine=deepspeed", "parallel.zero_stage=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(read_metrics(tmp_path / "run")) == [1, 2]
    # ... and the default does not outlive DeepSpeed's set-up: a child process (lm-eval's
    # accelerate) that inherits LOCAL_RANK expects a launcher's RANK and fails.
    assert "LOCAL_RANK" not in os.environ


# ---- defect 9: srun's --cpus-per-task -----------------------------------------------------------

def _fake_slurm_bin(directory: Path, output_dir: Path) -> dict:
    """srun records its arguments; scontrol names one host; PONDER_PYTHON answers preflight with
    the output directory and outcome with 'completed'. The sbatch script itself runs for real."""
    directory.mkdir()
    (directory / "srun").write_text(f'#!/bin/sh\necho "$@" > {directory}/srun.args\n')
    (directory / "scontrol").write_text("#!/bin/sh\necho node1\n")
    (directory / "python").write_text(
        f'#!/bin/sh\ncase "$*" in *preflight*) echo {output_dir} ;; *outcome*) echo completed ;; esac\n')
    for tool in ("srun", "scontrol", "python"):
        (directory / tool).chmod(0o755)
    return {"PATH": f"{directory}{os.pathsep}{os.environ['PATH']}", "PONDER_PYTHON": str(directory / "python"),
            "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "node[1-2]",
            "SLURM_CPUS_ON_NODE": "16", "PONDER_NPROC_PER_NODE": "4"}


@pytest.mark.parametrize("cpus_per_task", ["16", None])
def test_srun_is_given_the_jobs_cpus_per_task(tmp_path, cpus_per_task):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(_fake_slurm_bin(tmp_path / "bin", tmp_path / "run"))
    if cpus_per_task:
        env["SLURM_CPUS_PER_TASK"] = cpus_per_task
    proc = subprocess.run(["bash", str(ROOT / "slurm" / "pretrain.sbatch"), "recipes/demo_cpu.yaml"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    srun_args = (tmp_path / "bin" / "srun.args").read_text().split()
    if cpus_per_task:
        # Slurm >= 22.05: srun does not inherit sbatch's --cpus-per-task; it must be on the line.
        assert f"--cpus-per-task={cpus_per_task}" in srun_args, srun_args
    else:
        assert not any(a.startswith("--cpus-per-task") for a in srun_args)
        assert "submit with --cpus-per-task" in proc.stdout
    assert srun_args[srun_args.index("-m") - 1].endswith("python")  # the launcher follows srun's own options
