"""Everything that needs a GPU, in one call (about 8 minutes on one H200):

1. the CUDA-only tests (flex forward and backward against the reference, the megatron engine's
   distributed optimizer, Transformer Engine's fused layer spec; with 2+ GPUs TP 2 + sequence
   parallelism against TP 2);
2. ~30 training steps each of the 125m vanilla, ponderlm2 and ponderlm3 recipes
   (bench/paper_steps.py): tokens/s, MFU, peak memory against the planner's prediction;
3. bench/attention.py in bf16: plain causal flash vs augmented vs flex, S 2048 and 8192,
   head dim 128;
4. bench/memory.py on CUDA: the planner against max_memory_allocated (one-GPU configurations);
5. bench/decode.py on CUDA with the 125m ponderlm3 recipe's shape.

    python bench/device_check.py --out runs/device_check          # on the GPU machine
    python bench/device_check.py --out /tmp/dc --dry-run          # CPU: the same plan, tiny

Each step is its own process with its own time limit, cut to what is left of --budget-s; a
step that fails or runs out of time is recorded and the next one runs. Written to --out:
device_check.log (every step's command and output) and device_check.json (per step: command,
exit code, seconds and the step's final JSON line; pytest's summary line for the tests).
Exit code 0 when every step succeeded. --dry-run collects the CUDA tests instead of running
them and gives every benchmark tiny CPU shapes, so CI proves the plumbing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CUDA_TESTS = ["tests/attention/test_backends.py", "tests/model/test_fused_kernels_gpu.py",
              "tests/training/test_megatron_engine_gpu.py",
              "tests/training/test_sequence_parallel_run.py"]
METHODS = ("vanilla", "ponderlm2", "ponderlm3")
BUDGET_S = 460  # all steps together: one call of at most 8 minutes with start-up
DRY_RUN_LIMIT_S = 900
ONE_GPU_MEMORY_CONFIGS = "vanilla,ponderlm3-k3,ponderlm3-k3-layers,ponderlm3-k3-passes,ponderlm3-k2-grad2"


def plan(dry_run: bool) -> list[tuple[str, list[str], int]]:
    """(name, command, time limit in seconds) of every step, in order of importance."""
    py = sys.executable
    steps = []
    if dry_run:
        steps.append(("cuda_tests", [py, "-m", "pytest", "-q", "--collect-only", *CUDA_TESTS], 120))
    else:
        steps.append(("cuda_tests", [py, "-m", "pytest", "-q", "-rs", *CUDA_TESTS], 110))
    for method in METHODS:
        recipe = f"recipes/paper/125m/{method}.yaml"
        options = ["--tiny", "--steps", "2", "--warmup", "1"] if dry_run else [
            "--device", "cuda", "--steps", "30", "--warmup", "3"]
        steps.append((f"steps_125m_{method}", [py, "bench/paper_steps.py", recipe, *options], 75))
    if dry_run:
        attention = ["--device", "cpu", "--seq-lens", "64", "--head-dim", "16", "--heads", "2",
                     "--batch", "1", "--backends", "plain,augmented", "--repeats", "1"]
    else:
        attention = ["--device", "cuda", "--dtype", "bfloat16", "--seq-lens", "2048,8192",
                     "--head-dim", "128", "--heads", "16", "--batch", "1",
                     "--backends", "plain,augmented,flex", "--repeats", "5"]
    steps.append(("attention", [py, "bench/attention.py", *attention], 90))
    memory = (["--hidden", "64", "--layers", "2", "--seq", "32", "--batch", "2",
               "--configs", "vanilla,ponderlm3-k3", "--quick"] if dry_run else
              ["--hidden", "1024", "--layers", "4", "--seq", "1024", "--batch", "2",
               "--precision", "bf16", "--configs", ONE_GPU_MEMORY_CONFIGS, "--quick"])
    steps.append(("memory", [py, "bench/memory.py", *memory], 80))
    decode = ["--recipe", "recipes/paper/125m/ponderlm3.yaml", "--rounds", "1" if dry_run else "3",
              "--new-tokens", "4" if dry_run else "32", "--prompt-tokens", "8" if dry_run else "64"]
    if dry_run:
        decode += ["--overrides", "model.hidden_size=64", "model.num_layers=2",
                   "model.num_attention_heads=2", "model.ffn_hidden_size=192"]
    else:
        decode += ["--device", "cuda"]
    steps.append(("decode", [py, "bench/decode.py", *decode], 60))
    if dry_run:  # CPU shapes on a possibly shared machine: time limits only against hangs
        steps = [(name, command, DRY_RUN_LIMIT_S) for name, command, _ in steps]
    return steps


def last_json(text: str):
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def run_step(name, command, limit, log) -> dict:
    log.write(f"\n===== {name}: {' '.join(command)} (limit {limit} s)\n")
    log.flush()
    tic = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    try:
        proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=limit)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc = "timeout"
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
    seconds = time.perf_counter() - tic
    log.write(out + ("\n--- stderr\n" + err[-20000:] if err else "") + f"\n===== {name}: "
              f"exit {rc} after {seconds:.0f} s\n")
    log.flush()
    result = {"command": command, "exit": rc, "seconds": round(seconds, 1)}
    if name == "cuda_tests":
        lines = out.strip().splitlines()
        result["summary"] = lines[-1] if lines else ""
    else:
        result["result"] = last_json(out)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--dry-run", action="store_true", help="tiny CPU shapes, tests collected")
    parser.add_argument("--budget-s", type=float, default=None,
                        help=f"seconds for all steps (default {BUDGET_S}; no limit with --dry-run)")
    parser.add_argument("--only", default=None, help="comma list of step names")
    args = parser.parse_args(argv)
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("error: no CUDA device; use --dry-run on CPU", file=sys.stderr)
            return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = plan(args.dry_run)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {name for name, _, _ in steps}
        if unknown:
            print(f"error: --only {sorted(unknown)}: valid steps are "
                  f"{', '.join(name for name, _, _ in steps)}", file=sys.stderr)
            return 2
        steps = [s for s in steps if s[0] in wanted]
    budget = args.budget_s or (float("inf") if args.dry_run else BUDGET_S)
    start = time.perf_counter()
    report = {"dry_run": args.dry_run, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "steps": {}}
    with open(out / "device_check.log", "w") as log:
        for name, command, limit in steps:
            left = budget - (time.perf_counter() - start)
            if left < 10:
                report["steps"][name] = {"command": command, "exit": "no time left"}
                continue
            report["steps"][name] = run_step(name, command, int(min(limit, left)), log)
            (out / "device_check.json").write_text(json.dumps(report, indent=1))
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["ok"] = all(s["exit"] == 0 for s in report["steps"].values())
    (out / "device_check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({"ok": report["ok"], "seconds": report["seconds"],
                      "exits": {n: s["exit"] for n, s in report["steps"].items()}}))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
