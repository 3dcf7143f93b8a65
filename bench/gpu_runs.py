"""Training runs a first user does on GPUs, each through the training CLI and compared with its
reference run: the loss of every step within a stated relative tolerance.

One GPU (bench/device_check.py runs each scenario as its own step):
  exit_resume     3 steps stopped at train.exit_interval=2 (exit 3), rerun: resumes to step 3
  megatron_dp1    the megatron engine forced at DP 1 (parallel.force_megatron_engine=true)
  compile         train.compile=true
  recompute_flex  train.recompute=layers with ponder.attention_backend=flex
  zero2, zero3    DeepSpeed ZeRO-2 / ZeRO-3 at world size 1
  te_load         a local-spec checkpoint (saved on CPU) resumed on Transformer Engine's spec
Several GPUs of one node (device_check.py --gpus N; each against the one-GPU run):
  tp2, pp2, tp2_sp, dp2_megatron (DP 2 on the megatron engine, stopped, saved and resumed)
The multi-GPU shape is PonderLM-3 at K 3, 4 micro-batches a step, hidden 1536 and sequence
1024 at micro-batch 4: one pipeline message is 4 x 1024 x 1536 fp32 = 25 MB (12.6 MB in bf16),
above NCCL's 4 MiB buffers, so a layout that relies on buffering deadlocks here instead of on a
cluster.

    python bench/gpu_runs.py exit_resume --out runs/gpu_runs      # on the GPU machine
    python bench/gpu_runs.py tp2 --out /tmp/g --dry-run          # CPU, gloo, tiny shapes

Last stdout line: JSON {"scenario", "ok", "runs": {name: {"exit", "seconds"}}, "compared":
{run: {"reference", "max_rel_loss_diff", "rtol"}}, "skipped": reason or null}. Exit code 0
when ok (or skipped with a reason), 1 otherwise, 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from megatron_ponder.run.exit_codes import ENV_DIR, read_exit_codes  # noqa: E402
RECIPE = ROOT / "recipes" / "demo_cpu.yaml"  # the demo's data and tokenizer; shapes overridden

# fp32 on GPU: TF32 is off for fp32 matmuls by default in torch, so differences come from
# reduction order (TP, PP, DP split sums differently); not measured on a GPU yet.
GPU_RTOL = 1e-3
# A resumed run repeats the same kernels on the same inputs; atomics (flex's bias gradient)
# may still reorder sums on GPU.
RESUME_RTOL = 1e-4
CPU_RTOL = 1e-4  # the dry run: float32 on CPU, gloo (bench/parallel.py's tolerance)


@dataclass
class Run:
    name: str
    overrides: list[str] = field(default_factory=list)
    nproc: int = 1
    exits: tuple[int, ...] = (0,)  # the exit code of each invocation on the same output folder
    env: dict = field(default_factory=dict)
    output: str = ""  # another run's output folder (continue it), else its own
    shared: bool = False  # the same run in several scenarios: reused when it has finished


@dataclass
class Scenario:
    runs: list[Run]
    compare: dict[str, str]  # run -> reference run
    rtol: float = GPU_RTOL
    gpus: int = 1
    needs: str = ""  # "te": skipped with the reason when Transformer Engine is absent
    cpu: bool = True  # runs in the dry run (CPU, gloo); False: skipped there with the reason


STOP = ["train.steps=3", "train.exit_interval=2", "train.save_interval=2"]
SCENARIOS = {
    "exit_resume": Scenario(
        [Run("whole", ["train.steps=3"]), Run("stopped", STOP, exits=(3, 0))],
        {"stopped": "whole"}, rtol=RESUME_RTOL),
    "megatron_dp1": Scenario(
        [Run("plain", shared=True), Run("megatron", ["parallel.force_megatron_engine=true"])], {"megatron": "plain"}),
    # On CPU the first compiled step takes minutes (docs/decisions.md): GPU only.
    "compile": Scenario([Run("plain", shared=True), Run("compiled", ["train.compile=true"])],
                        {"compiled": "plain"},
                        cpu=False),
    "recompute_flex": Scenario(
        [Run("flex", ["ponder.attention_backend=flex"]),
         Run("flex_recompute", ["ponder.attention_backend=flex", "train.recompute=layers"])],
        {"flex_recompute": "flex"}, cpu=False),  # flex has no CPU backward
    "zero2": Scenario([Run("plain", shared=True), Run("zero2", ["parallel.engine=deepspeed", "parallel.zero_stage=2"])],
                      {"zero2": "plain"}),
    "zero3": Scenario([Run("plain", shared=True), Run("zero3", ["parallel.engine=deepspeed", "parallel.zero_stage=3"])],
                      {"zero3": "plain"}),
    # Steps 1-2 on CPU (local spec, fp32), step 3 resumed on the GPU (TE spec): only that it
    # loads and trains is checked; the two devices' losses are not comparable.
    "te_load": Scenario(
        [Run("cpu_then_gpu", ["train.steps=2", "train.save_interval=2"], env={"CUDA_VISIBLE_DEVICES": ""}),
         Run("resumed_on_te", ["train.steps=3"], output="cpu_then_gpu")],
        {}, needs="te", cpu=False),
    # Several GPUs of one node, each against the one-GPU run of the same recipe.
    "tp2": Scenario([Run("single", shared=True), Run("tp2", ["parallel.tensor_model_parallel_size=2"], nproc=2)],
                    {"tp2": "single"}, gpus=2),
    "pp2": Scenario([Run("single", shared=True), Run("pp2", ["parallel.pipeline_model_parallel_size=2"], nproc=2)],
                    {"pp2": "single"}, gpus=2),
    "tp2_sp": Scenario(
        [Run("single", shared=True), Run("tp2_sp", ["parallel.tensor_model_parallel_size=2",
                                       "parallel.sequence_parallel=true"], nproc=2)],
        {"tp2_sp": "single"}, gpus=2, needs="te", cpu=False),
    "dp2_megatron": Scenario(
        [Run("single", shared=True),
         Run("dp2", ["train.steps=4", "train.exit_interval=2", "train.save_interval=2"], nproc=2,
             exits=(3, 0))],
        {"dp2": "single"}, gpus=2),
}
ONE_GPU = [name for name, s in SCENARIOS.items() if s.gpus == 1]
MULTI_GPU = [name for name, s in SCENARIOS.items() if s.gpus > 1]


def shape_overrides(scenario: Scenario, dry_run: bool, data_dir: Path, work: Path) -> list[str]:
    data = [f"data.tokenizer={data_dir / 'tokenizer.model'}",
            f"data.prefixes=[{data_dir / 'corpus_text_document'}]", f"data.cache_dir={work / 'cache'}"]
    common = ["train.steps=4", "train.log_interval=1", "train.eval_interval=1000",
              "train.eval_batches=0", "train.save_interval=1000", "train.precision=fp32",
              "logging.tensorboard=false", "logging.wandb=disabled", "ponder.method=ponderlm3"]
    if dry_run:
        shape = ["model.hidden_size=32", "model.num_layers=2", "model.num_attention_heads=4",
                 "data.seq_length=16", "model.max_position_embeddings=16", "ponder.k=2",
                 "train.micro_batch_size=2", "train.global_batch_size=8"]
    elif scenario.gpus > 1:
        shape = ["model.hidden_size=1536", "model.num_layers=4", "model.num_attention_heads=12",
                 "model.ffn_hidden_size=4096", "data.seq_length=1024",
                 "model.max_position_embeddings=1024", "ponder.k=3",
                 "train.micro_batch_size=4", "train.global_batch_size=16"]
    else:
        shape = ["model.hidden_size=256", "model.num_layers=2", "model.num_attention_heads=4",
                 "data.seq_length=256", "model.max_position_embeddings=256", "ponder.k=3",
                 "train.micro_batch_size=4", "train.global_batch_size=8"]
    return data + common + shape


def te_missing() -> str | None:
    try:
        # defer: torch and megatron, only probed here (device_check --print-plan imports this file)
        import torch

        from megatron_ponder.model.spec import fused_kernels_available
    except ImportError as err:
        return str(err)
    if not fused_kernels_available(torch.device("cuda")):
        return "Transformer Engine (>= 1.13) is not importable on this machine, or no CUDA"
    return None


def launch(run: Run, overrides: list[str], out: Path, port: int, timeout_s: float) -> list[int]:
    """Each of the run's invocations on its output folder; their exit codes."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(run.nproc),
                 "--master-port", str(port), "-m", "megatron_ponder.train"]
                if run.nproc > 1 else [sys.executable, "-m", "megatron_ponder.train"])
    env = {**os.environ, "PYTHONPATH": str(ROOT), **run.env}
    env.setdefault("OMP_NUM_THREADS", "1")
    codes = []
    for attempt in range(len(run.exits)):
        # torchrun reports a rank's exit 3 (stopped after saving) as its own 1: the ranks'
        # codes come from PONDER_EXIT_CODE_DIR, as in slurm/pretrain.sbatch.
        env[ENV_DIR] = str(out.parent / f"{out.name}_exit_codes" / f"attempt-{attempt}")
        proc = subprocess.run([*launcher, str(RECIPE), *overrides, *run.overrides,
                               f"train.output_dir={out}"], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout_s)
        print(proc.stdout[-3000:], flush=True)
        ranks = {r["exit_code"] for r in read_exit_codes(env[ENV_DIR]).values()}
        code = ranks.pop() if proc.returncode != 0 and len(ranks) == 1 else proc.returncode
        codes.append(code)
        if code not in run.exits:
            break
    return codes


def train_losses(out: Path) -> dict[int, float]:
    # defer: the package, only when a scenario ran (device_check --print-plan imports this file)
    from megatron_ponder.training.metrics import read_records

    return {r["step"]: r["loss"] for r in read_records(out / "metrics.jsonl") if r["kind"] == "train"}


def max_rel_diff(reference: dict[int, float], other: dict[int, float]) -> float:
    if set(other) != set(reference):
        return float("inf")  # a step missing or extra: never within tolerance
    return max(abs(other[s] - v) / abs(v) for s, v in reference.items())


def _link(name: Path, target: Path) -> None:
    if not name.exists():
        name.symlink_to(target, target_is_directory=True)


def run_scenario(name: str, dry_run: bool, data_dir: Path, work: Path, timeout_s: float) -> dict:
    scenario = SCENARIOS[name]
    result = {"scenario": name, "ok": False, "runs": {}, "compared": {}, "skipped": None}
    reason = (("needs CUDA: not part of the CPU dry run" if not scenario.cpu else None) if dry_run
              else te_missing() if scenario.needs == "te" else None)
    if reason:  # device_check.py decides whether this skip is expected on this machine
        result.update(ok=True, skipped=reason)
        return result
    # defer: torch and megatron, only when a scenario runs (device_check --print-plan imports this file)
    from megatron_ponder.config import load_config
    from megatron_ponder.demo import prepare_data

    overrides = shape_overrides(scenario, dry_run, data_dir, work)
    prepare_data(load_config(RECIPE, overrides))
    port = 29400 + os.getpid() % 1000
    steps = int(next(o for o in reversed(overrides) if o.startswith("train.steps=")).split("=")[1])
    for run in scenario.runs:
        out = work / (run.output or run.name)
        if run.shared:
            out = work.parent / "shared" / run.name
            (work / run.name).parent.mkdir(parents=True, exist_ok=True)
            if (out / "metrics.jsonl").exists() and max(train_losses(out), default=0) == steps:
                result["runs"][run.name] = {"exit": [0], "seconds": 0.0, "reused": str(out)}
                _link(work / run.name, out)
                continue
        tic = time.perf_counter()
        codes = launch(run, overrides, out, port, timeout_s)
        result["runs"][run.name] = {"exit": codes, "seconds": round(time.perf_counter() - tic, 1)}
        if codes != list(run.exits):
            print(f"{name}/{run.name}: exit codes {codes}, expected {list(run.exits)}", flush=True)
            return result
        if run.shared:
            _link(work / run.name, out)
    rtol = CPU_RTOL if dry_run else scenario.rtol
    ok = True
    for run, reference in scenario.compare.items():
        diff = max_rel_diff(train_losses(work / reference), train_losses(work / run))
        result["compared"][run] = {"reference": reference, "max_rel_loss_diff": diff, "rtol": rtol}
        ok &= diff <= rtol
    if not scenario.compare:  # te_load: the resumed run reached its last step with a finite loss
        last = scenario.runs[-1]
        losses = train_losses(work / (last.output or last.name))
        ok = max(losses, default=0) == 3 and all(math.isfinite(v) for v in losses.values())
    result["ok"] = ok
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", help=f"one of {', '.join(SCENARIOS)}")
    parser.add_argument("--out", type=Path, required=True, help="work folder (created)")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "runs" / "demo" / "data",
                        help="the demo's corpus, tokenizer and index (built if absent)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, gloo, tiny shapes")
    parser.add_argument("--timeout-s", type=float, default=600, help="per CLI invocation")
    args = parser.parse_args(argv)
    if args.scenario not in SCENARIOS:
        print(f"error: scenario {args.scenario!r}: valid are {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    result = run_scenario(args.scenario, args.dry_run, args.data_dir, args.out / args.scenario,
                          args.timeout_s)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
