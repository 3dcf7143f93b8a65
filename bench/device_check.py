"""Everything that needs a GPU, in one call of at most 8 minutes on one H100 (BUDGET_S).

One GPU (the default), in order of importance:
1. each CUDA-only test file as its own step (flex forward and backward against the reference,
   Transformer Engine's fused layer spec, the megatron engine's distributed optimizer, sequence
   parallelism): a skipped test fails the check unless EXPECTED_SKIPS lists it for this
   machine, with the reason;
2. what a first user run does (bench/gpu_runs.py, each against its reference run): a 3-step CLI
   run stopped at train.exit_interval and resumed; the megatron engine forced at DP 1;
   train.compile; train.recompute=layers with flex attention; ZeRO-2 and ZeRO-3 at world size 1;
   a local-spec checkpoint resumed on Transformer Engine's spec;
3. benchmarks while time is left (optional: not run for lack of time is no failure): 125m
   training steps (tokens/s, MFU, memory against the planner), attention kernels, the memory
   planner, decoding.
With --gpus N (2-8 GPUs of one node): the CUDA sequence-parallel test and TP 2, PP 2 (PonderLM-3
K 3, 4 micro-batches, 25 MB pipeline messages), TP 2 + sequence parallelism and DP 2 on the
megatron engine with save and resume, each against the one-GPU run (bench/gpu_runs.py).

    python bench/device_check.py --out runs/device_check              # one GPU
    python bench/device_check.py --out runs/device_check_8 --gpus 8   # one node
    python bench/device_check.py --out /tmp/dc --dry-run [--gpus 2]   # CPU: the same plan, tiny
    python bench/device_check.py --out /tmp/dc --print-plan           # each step's budget

Each step is its own process group with its own time limit (its budget, cut to what is left of
the total); a step past it is killed with all its children (torchrun's ranks included) and
recorded, and the next step runs. Written to --out: device_check.log (every step's command and
output), device_check.json (the machine: torch, CUDA, NCCL, Transformer Engine, megatron-core
and DeepSpeed versions, GPU name and count; per step: command, budget, exit code, seconds, the
step's final JSON line or pytest's summary, unexpected and expected skips). Exit code 0 when
every required step succeeded. --dry-run collects the CUDA tests instead of running them and
gives every other step tiny CPU shapes (gloo), so CI proves the plumbing.

The budgets are estimates, not yet measured: no GPU has been lent to this project so far.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import gpu_runs  # noqa: E402

BUDGET_S = 460  # all steps together: one call of at most 8 minutes with start-up
DRY_RUN_LIMIT_S = 900  # per step on a shared CPU: a limit against hangs only
KILL_GRACE_S = 10  # SIGTERM to the step's process group, then SIGKILL
ONE_GPU_MEMORY_CONFIGS = "vanilla,ponderlm3-k3,ponderlm3-k3-layers,ponderlm3-k3-passes,ponderlm3-k2-grad2"
CUDA_TEST_FILES = {  # step name -> (test file, budget on one GPU, budget with --gpus)
    "tests_attention": ("tests/attention/test_backends.py", 45, 0),
    "tests_fused_kernels": ("tests/model/test_fused_kernels_gpu.py", 40, 0),
    "tests_megatron_engine": ("tests/training/test_megatron_engine_gpu.py", 60, 0),
    "tests_sequence_parallel": ("tests/training/test_sequence_parallel_run.py", 15, 60),
}
ONE_GPU_RUNS = {"exit_resume": 35, "megatron_dp1": 25, "compile": 70, "recompute_flex": 30,
                "zero2": 30, "zero3": 30, "te_load": 35}
MULTI_GPU_RUNS = {"tp2": 90, "pp2": 100, "tp2_sp": 80, "dp2_megatron": 120}


@dataclass
class Step:
    name: str
    command: list[str]
    budget_s: int
    kind: str  # "tests": pytest's junit report is read for skips; "runs": gpu_runs.py's JSON
    required: bool = True  # False: skipped without failing when the time is spent


# Skips that are right on some machines: (test id or gpu_runs scenario, when it applies, why).
# Every other skip of a CUDA test or a GPU run fails the check: a skipped test proves nothing.
EXPECTED_SKIPS = [
    ("tests/training/test_sequence_parallel_run.py::test_sequence_parallel_is_refused_on_cpu",
     lambda m: m["gpu_count"] > 0, "checks the CPU refusal; a GPU machine does not refuse"),
    ("tests/training/test_sequence_parallel_run.py::test_sequence_parallel_matches_tensor_parallel",
     lambda m: m["gpu_count"] < 2 or not m["transformer_engine"],
     "needs 2 GPUs and Transformer Engine (run with --gpus 2 or more)"),
    ("tests/model/test_fused_kernels_gpu.py::", lambda m: not m["transformer_engine"],
     "needs Transformer Engine, not installed on this machine"),
    ("gpu_runs.py::te_load", lambda m: not m["transformer_engine"] or m["dry_run"],
     "needs Transformer Engine on a GPU"),
    ("gpu_runs.py::tp2_sp", lambda m: not m["transformer_engine"] or m["dry_run"],
     "sequence parallelism needs Transformer Engine on GPUs"),
    ("gpu_runs.py::", lambda m: m["dry_run"], "the dry run runs only what CPU can (gloo, fp32)"),
]


def expected_skip(test_id: str, machine: dict) -> str | None:
    """The reason this skip is expected on this machine, or None."""
    for pattern, applies, reason in EXPECTED_SKIPS:
        if test_id.startswith(pattern) and applies(machine):
            return reason
    return None


def machine_facts(dry_run: bool) -> dict:
    """Versions and devices, recorded with every report (and used by EXPECTED_SKIPS)."""
    import torch  # defer: torch, only past --print-plan (the plan prints without it)

    def version(*names):
        for name in names:
            try:
                return metadata.version(name)
            except metadata.PackageNotFoundError:
                pass
        return None

    cuda = torch.cuda.is_available()
    return {
        "dry_run": dry_run, "torch": torch.__version__, "cuda": torch.version.cuda,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if cuda else None,
        "transformer_engine": version("transformer_engine", "transformer-engine",
                                      "transformer_engine_torch"),
        "megatron_core": version("megatron-core", "megatron_core"),
        "deepspeed": version("deepspeed"),
        "gpu_name": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
    }


def plan(dry_run: bool, gpus: int = 1, out: Path = Path("device_check"),
         data_dir: Path | None = None) -> list[Step]:
    """Every step, in order of importance. data_dir: the demo's data for the training runs
    (built there if absent; default runs/demo/data, or under --out for a dry run)."""
    py = sys.executable
    steps = []
    for name, (path, one, multi) in CUDA_TEST_FILES.items():
        budget = multi if gpus > 1 else one
        if budget:
            pytest = [py, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                      f"--junitxml={out / 'junit' / (name + '.xml')}"]
            steps.append(Step(name, [*pytest, "--collect-only", path] if dry_run else [*pytest, path],
                              budget, "tests"))
    for scenario, budget in (MULTI_GPU_RUNS if gpus > 1 else ONE_GPU_RUNS).items():
        command = [py, "bench/gpu_runs.py", scenario, "--out", str(out / "gpu_runs"),
                   "--timeout-s", str(DRY_RUN_LIMIT_S if dry_run else budget)]
        if data_dir or dry_run:
            command += ["--data-dir", str(data_dir or out / "data")]
        if dry_run:
            command.append("--dry-run")
        steps.append(Step(f"run_{scenario}", command, budget, "runs"))
    if gpus == 1:
        steps += benchmarks(dry_run)
    if dry_run:  # CPU shapes on a possibly shared machine: limits only against hangs
        for step in steps:
            step.budget_s = DRY_RUN_LIMIT_S
    return steps


def benchmarks(dry_run: bool) -> list[Step]:
    """Optional steps: numbers for bench/README.md when the correctness steps left time."""
    py = sys.executable
    steps = []
    for method, budget in (("ponderlm3", 45), ("vanilla", 30), ("ponderlm2", 30)):
        options = ["--tiny", "--steps", "2", "--warmup", "1"] if dry_run else [
            "--device", "cuda", "--steps", "10", "--warmup", "3"]
        steps.append(Step(f"steps_125m_{method}", [py, "bench/paper_steps.py",
                                                    f"recipes/paper/125m/{method}.yaml", *options],
                          budget, "bench", required=False))
    if dry_run:
        attention = ["--device", "cpu", "--seq-lens", "64", "--head-dim", "16", "--heads", "2",
                     "--batch", "1", "--backends", "plain,augmented", "--repeats", "1"]
    else:
        attention = ["--device", "cuda", "--dtype", "bfloat16", "--seq-lens", "2048,8192",
                     "--head-dim", "128", "--heads", "16", "--batch", "1",
                     "--backends", "plain,augmented,flex", "--repeats", "5"]
    steps.append(Step("attention", [py, "bench/attention.py", *attention], 30, "bench", False))
    memory = (["--hidden", "64", "--layers", "2", "--seq", "32", "--batch", "2",
               "--configs", "vanilla,ponderlm3-k3", "--quick"] if dry_run else
              ["--hidden", "1024", "--layers", "4", "--seq", "1024", "--batch", "2",
               "--precision", "bf16", "--configs", ONE_GPU_MEMORY_CONFIGS, "--quick"])
    steps.append(Step("memory", [py, "bench/memory.py", *memory], 60, "bench", False))
    decode = ["--recipe", "recipes/paper/125m/ponderlm3.yaml", "--rounds", "1" if dry_run else "3",
              "--new-tokens", "4" if dry_run else "32", "--prompt-tokens", "8" if dry_run else "64"]
    if dry_run:
        decode += ["--overrides", "model.hidden_size=64", "model.num_layers=2",
                   "model.num_attention_heads=2", "model.ffn_hidden_size=192"]
    else:
        decode += ["--device", "cuda"]
    steps.append(Step("decode", [py, "bench/decode.py", *decode], 40, "bench", False))
    return steps


def last_json(text: str):
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def junit_skips(path: Path) -> list[tuple[str, str]]:
    """(test id, reason) of every skipped test in pytest's junit report."""
    if not path.exists():
        return []
    skips = []
    for case in ET.parse(path).getroot().iter("testcase"):
        skipped = case.find("skipped")
        if skipped is not None:
            test_id = case.get("classname", "").replace(".", "/") + ".py::" + case.get("name", "")
            skips.append((test_id, skipped.get("message", "")))
    return skips


def run_command(command: list[str], limit_s: float) -> tuple[int | str, str]:
    """(exit code or "timeout", output). The command runs in its own session: at the limit its
    whole process group (torchrun's ranks, pytest's children) is terminated, then killed."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=limit_s)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        for sig, wait_s in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
            try:
                os.killpg(proc.pid, sig)  # the group id is the leader's pid (start_new_session)
            except ProcessLookupError:
                break
            try:
                out, _ = proc.communicate(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        return "timeout", out or ""


def run_step(step: Step, limit_s: float, machine: dict, out: Path, log) -> dict:
    log.write(f"\n===== {step.name}: {' '.join(step.command)} (limit {limit_s:.0f} s)\n")
    log.flush()
    tic = time.perf_counter()
    rc, output = run_command(step.command, limit_s)
    seconds = time.perf_counter() - tic
    log.write(output + f"\n===== {step.name}: exit {rc} after {seconds:.0f} s\n")
    log.flush()
    result = {"command": step.command, "budget_s": step.budget_s, "exit": rc,
              "seconds": round(seconds, 1), "required": step.required}
    skips = []
    if step.kind == "tests":
        lines = output.strip().splitlines()
        result["summary"] = lines[-1] if lines else ""
        skips = junit_skips(out / "junit" / f"{step.name}.xml")
    else:
        result["result"] = last_json(output)
        if step.kind == "runs" and result["result"] and result["result"].get("skipped"):
            skips = [(f"gpu_runs.py::{result['result']['scenario']}", result["result"]["skipped"])]
    result["expected_skips"] = {t: expected_skip(t, machine) for t, _ in skips
                                if expected_skip(t, machine)}
    result["unexpected_skips"] = {t: why for t, why in skips if not expected_skip(t, machine)}
    result["ok"] = rc == 0 and not result["unexpected_skips"]
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--dry-run", action="store_true", help="tiny CPU shapes, tests collected")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs of this node (2-8: the multi-GPU plan)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help=f"seconds for all steps (default {BUDGET_S}; no limit with --dry-run)")
    parser.add_argument("--only", default=None, help="comma list of step names")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="the demo's corpus, tokenizer and index for the training runs "
                             "(built if absent; default runs/demo/data, under --out with --dry-run)")
    parser.add_argument("--print-plan", action="store_true", help="print each step's budget and exit")
    args = parser.parse_args(argv)
    if not 1 <= args.gpus <= 8:
        print(f"error: --gpus {args.gpus}: one node of 1 to 8 GPUs", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    steps = plan(args.dry_run, args.gpus, out, args.data_dir and args.data_dir.resolve())
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {s.name for s in steps}
        if unknown:
            print(f"error: --only {sorted(unknown)}: valid steps are "
                  f"{', '.join(s.name for s in steps)}", file=sys.stderr)
            return 2
        steps = [s for s in steps if s.name in wanted]
    budget = args.budget_s or (float("inf") if args.dry_run else BUDGET_S)
    for step in steps:
        print(f"plan: {step.name:28s} {step.budget_s:4d} s{'' if step.required else '  (if time is left)'}")
    required_s = sum(s.budget_s for s in steps if s.required)
    print(f"plan: required steps {required_s} s of the {budget:.0f} s budget")
    if args.print_plan:
        return 0
    if not args.dry_run:
        # defer: torch, only past --print-plan (the plan prints without it)
        import torch

        if torch.cuda.device_count() < args.gpus:
            print(f"error: --gpus {args.gpus} but {torch.cuda.device_count()} CUDA device(s) "
                  f"visible; use --dry-run on CPU", file=sys.stderr)
            return 2
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_facts(args.dry_run)
    start = time.perf_counter()
    report = {"dry_run": args.dry_run, "gpus": args.gpus, "machine": machine,
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "steps": {}}
    with open(out / "device_check.log", "w") as log:
        for step in steps:
            left = budget - (time.perf_counter() - start)
            if left < 10:
                report["steps"][step.name] = {"command": step.command, "exit": "no time left",
                                              "required": step.required, "ok": not step.required}
                continue
            report["steps"][step.name] = run_step(step, min(step.budget_s, left), machine, out, log)
            (out / "device_check.json").write_text(json.dumps(report, indent=1))
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["ok"] = all(s["ok"] for s in report["steps"].values())
    (out / "device_check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({"ok": report["ok"], "seconds": report["seconds"],
                      "exits": {n: s["exit"] for n, s in report["steps"].items()},
                      "unexpected_skips": {n: s["unexpected_skips"] for n, s in report["steps"].items()
                                           if s.get("unexpected_skips")}}))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
