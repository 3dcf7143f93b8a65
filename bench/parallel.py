"""Scale-out on CPU: each parallel layout (2 gloo processes under torchrun) against one process.

For every layout and method the training CLI runs the same recipe (the demo's data, a small
model) for a few steps; the layout "matches single" when every step's loss agrees with the
single-process run within --rtol. Also reported: median step time per layout, and the
pipeline's bubble fraction, measured (1 - compute time / wall time on each stage, from the
trainer's metrics) against the analytic value of the same schedule (parallel/bubble.py, unit
costs from the FLOPs of each pass, backward 2x forward, no communication time).

The single process gets both cores (2 threads); each of the two ranks gets one. Last stdout
line: one JSON object with `<layout>_matches_single` booleans (null when the layout cannot run
here, with the reason), step times and `bubble_fraction_measured` / `_analytic`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from megatron_ponder.config import ParallelConfig, load_config  # noqa: E402
from megatron_ponder.demo import RECIPE, prepare_data  # noqa: E402
from megatron_ponder.parallel.bubble import simulate_bubble  # noqa: E402
from megatron_ponder.ponder import get_method  # noqa: E402
from megatron_ponder.ponder.flops import DecoderShape  # noqa: E402

LAYOUTS = {
    "tp2": ["parallel.tensor_model_parallel_size=2"],
    "pp2": ["parallel.pipeline_model_parallel_size=2"],
    "dp2": [],
    "zero1": ["parallel.engine=deepspeed", "parallel.zero_stage=1"],
    "zero2": ["parallel.engine=deepspeed", "parallel.zero_stage=2"],
    "zero3": ["parallel.engine=deepspeed", "parallel.zero_stage=3"],
}


def unavailable(layout: str) -> str | None:
    if layout.startswith("zero") and "engine" not in ParallelConfig.__dataclass_fields__:
        return "this checkout has no parallel.engine (DeepSpeed engine not built in)"
    if layout.startswith("zero"):
        try:
            # defer: deepspeed, only probing for it when a ZeRO layout is asked
            import deepspeed  # noqa: F401
        except ImportError:
            return "deepspeed is not installed"
    return None


def run(overrides: list[str], out: Path, nproc: int) -> dict[int, dict]:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                 "--master-port", str(29400 + os.getpid() % 1000), "-m", "megatron_ponder.train"]
                if nproc > 1 else [sys.executable, "-m", "megatron_ponder.train"])
    env = {**os.environ, "OMP_NUM_THREADS": str(2 // nproc)}
    proc = subprocess.run([*launcher, str(RECIPE), *overrides, f"train.output_dir={out}"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(overrides)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in records if r["kind"] == "train"}


def max_relative_diff(single: dict, other: dict) -> float:
    return max(abs(other[s]["loss"] - r["loss"]) / abs(r["loss"]) for s, r in single.items())


def median_step_s(metrics: dict) -> float:
    return statistics.median(r["step_s"] for s, r in metrics.items() if s > 1)


def analytic_bubble(cfg, metrics: dict, stages: int) -> float:
    shape = DecoderShape.of(cfg.model)
    micro = cfg.train.global_batch_size // cfg.train.micro_batch_size
    tokens = torch.zeros(1, cfg.data.seq_length, dtype=torch.long)
    values = []
    for step, record in metrics.items():
        if step > 1:
            program = get_method(cfg.ponder).program(None, tokens, jacobi=record["jacobi"])
            costs = [shape.pass_flops(cfg.data.seq_length, n) / stages for n in program.passes]
            values.append(simulate_bubble(costs, micro, stages))
    return statistics.mean(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "runs" / "demo" / "data",
                        help="where the demo's corpus, tokenizer and index live (built if absent)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=64, help="model.hidden_size")
    parser.add_argument("--seq-length", type=int, default=64, help="data.seq_length")
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    parser.add_argument("--methods", default="ponderlm3,vanilla")
    parser.add_argument("--bubble-method", default="ponderlm3",
                        help="the method whose pipeline bubble (pp2) is measured and simulated")
    parser.add_argument("--rtol", type=float, default=1e-4,
                        help="largest relative loss difference to a single process (float32)")
    args = parser.parse_args()

    data = [f"data.tokenizer={args.data_dir / 'tokenizer.model'}",
            f"data.prefixes=[{args.data_dir / 'corpus_text_document'}]"]
    base = [*data, f"model.hidden_size={args.hidden}", "model.num_layers=2",
            f"data.seq_length={args.seq_length}",
            f"model.max_position_embeddings={args.seq_length}", f"train.steps={args.steps}",
            "train.micro_batch_size=2", "train.global_batch_size=8", "train.log_interval=1",
            "train.eval_interval=1000", "train.eval_batches=0", f"train.save_interval={args.steps}",
            "logging.tensorboard=false", "logging.wandb=disabled"]
    prepare_data(load_config(RECIPE, data))
    result: dict = {"rtol": args.rtol, "steps": args.steps, "step_s": {}, "max_rel_loss_diff": {}}
    work = Path(tempfile.mkdtemp(prefix="bench_parallel_"))
    try:
        singles = {}
        parallel_runs = {}  # (layout, method) -> metrics of the runs that finished
        for method in args.methods.split(","):
            overrides = [*base, f"ponder.method={method}", f"data.cache_dir={work / 'cache'}"]
            print(f"single process, {method} ...", flush=True)
            singles[method] = (overrides, run(overrides, work / f"single_{method}", 1))
            result["step_s"][f"single_{method}"] = median_step_s(singles[method][1])
        for layout in args.layouts.split(","):
            reason = unavailable(layout)
            if reason:
                print(f"{layout}: skipped ({reason})", flush=True)
                result[f"{layout}_matches_single"] = None
                result[f"{layout}_skipped"] = reason
                continue
            matches = True
            for method, (overrides, single) in singles.items():
                print(f"{layout}, {method} ...", flush=True)
                try:
                    metrics = run([*overrides, *LAYOUTS[layout]], work / f"{layout}_{method}", 2)
                except RuntimeError as err:  # reported, and the other layouts still run
                    print(err, flush=True)
                    result[f"{layout}_error"] = str(err).splitlines()[-1][-500:]
                    matches = False
                    break
                diff = max_relative_diff(single, metrics)
                result["max_rel_loss_diff"][f"{layout}_{method}"] = diff
                result["step_s"][f"{layout}_{method}"] = median_step_s(metrics)
                matches &= diff <= args.rtol
                print(f"  max relative loss difference {diff:.2e}, median step "
                      f"{median_step_s(metrics):.3f} s (single {median_step_s(single):.3f} s)", flush=True)
                parallel_runs[layout, method] = metrics
            result[f"{layout}_matches_single"] = matches
        bubble_run = parallel_runs.get(("pp2", args.bubble_method))
        if bubble_run is not None:
            cfg = load_config(RECIPE, [*singles[args.bubble_method][0], *LAYOUTS["pp2"]])
            result["bubble_fraction_measured"] = statistics.mean(
                r["pipeline_bubble"] for s, r in bubble_run.items() if s > 1)
            result["bubble_fraction_analytic"] = analytic_bubble(cfg, bubble_run, 2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
