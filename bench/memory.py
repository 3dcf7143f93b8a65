"""The memory planner against measured peak memory, and what layer recomputation costs.

    python bench/memory.py                 # CPU: H 256, 4 layers, L 64, micro-batch 4, K 3
    python bench/memory.py --hidden 128 --seq 32 --quick    # a smoke test

For each configuration (methods, K, recomputation, truncated gradients, TP 2 and PP 2 per
rank), a fresh process builds the model, runs one small warm-up step, frees its gradients, and
measures one training step's forward + backward: on CPU the peak RSS increase over the RSS
just before it (VmHWM reset through /proc/self/clear_refs, as bench/attention.py does), on
CUDA max_memory_allocated over memory_allocated before. The prediction is the planner's
(megatron_ponder/memory/plan.py) for what the step adds: activations kept, gradients and the
backward's working set, for the rank's own pipeline stage. Distributed configurations run one
process per rank (gloo on CPU) and report the rank with the largest measurement.

Time: ponderlm3 K 3 without and with layer recomputation, stepped alternately in one process
(median of --repeats steps after a warm-up), on a loaded machine only indicative.

--exact also runs the step under TensorMemoryTracker (memory/measure.py), which counts tensor
storage exactly: the activations alive after the forward against the planner's kept
activations, and the step's tensor peak against its prediction, free of the allocator's
caching and of load (slower: a Python hook per operator).

The last stdout line is JSON: per configuration measured and predicted MiB and the relative
error (with --exact also the exact figures and their errors), planner_max_rel_error (target <= 0.15), recompute_mem_ratio (ponderlm3 K 3 peak with
layer recomputation / without; target <= 0.5) and recompute_time_ratio (target <= 1.4).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {  # name: (method, K, overrides)
    "vanilla": ("vanilla", 3, []),
    "ponderlm2-k3": ("ponderlm2", 3, []),
    "ponderlm3-k3": ("ponderlm3", 3, []),
    "ponderlm3-k3-layers": ("ponderlm3", 3, ["train.recompute=layers"]),
    "ponderlm3-k3-passes": ("ponderlm3", 3, ["train.recompute=passes"]),
    "ponderlm3-k2-grad2": ("ponderlm3", 2, ["ponder.grad_passes=2"]),
    "ponderlm3-k3-layers-tp2": ("ponderlm3", 3, ["train.recompute=layers",
                                                 "parallel.tensor_model_parallel_size=2"]),
    "ponderlm3-k2-pp2": ("ponderlm3", 2, ["parallel.pipeline_model_parallel_size=2"]),
}
MiB = 2**20


def config(args, method: str, k: int, overrides: list[str]):
    # defer: the package, only in a worker process (the parent only starts them)
    from megatron_ponder.config import config_from_dict

    ffn = 64 * -(-8 * args.hidden // (3 * 64))
    micro_batches = 2 if any("pipeline" in o for o in overrides) else 1  # PP: M >= stages
    return config_from_dict({
        "model": {"vocab_size": 512, "hidden_size": args.hidden, "num_layers": args.layers,
                  "num_attention_heads": max(2, args.hidden // 64), "ffn_hidden_size": ffn,
                  "max_position_embeddings": args.seq},
        # J fixed at 3 in training: the planner takes the largest J of jacobi_train.
        "ponder": {"method": method, "k": k, "jacobi_train": [3]},
        "data": {"seq_length": args.seq},
        "train": {"micro_batch_size": args.batch,
                  "global_batch_size": args.batch * micro_batches, "precision": args.precision},
        "seed": 1,
    }, overrides)


# ----------------------------------------------------------------------------- one rank


def _batches(cfg, count: int, length: int):
    # defer: torch, only in a worker process (the parent only starts them)
    import torch

    gen = torch.Generator().manual_seed(0)
    return [{"tokens": torch.randint(0, 512, (cfg.train.micro_batch_size, length), generator=gen),
             "labels": torch.randint(0, 512, (cfg.train.micro_batch_size, length), generator=gen),
             "loss_mask": torch.ones(cfg.train.micro_batch_size, length)} for _ in range(count)]


def _step(model, cfg, batches, device, after_forward=None):
    """One step's forward + backward, the way the trainer runs it; after_forward() is called
    once the (first) forward's output has been dropped (one process only)."""
    # defer: torch and megatron, only in a worker process (the parent only starts them)
    import torch

    from megatron_ponder.parallel.pipeline import pipeline_step
    from megatron_ponder.training.precision import backward_autocast, forward_autocast

    forward, backward = forward_autocast(cfg, device), backward_autocast(cfg, device)
    if cfg.parallel.pipeline_model_parallel_size > 1:
        pipeline_step(model, batches, 1, forward, backward_autocast=backward)
    else:
        for batch in batches:
            with forward():
                out = model(batch["tokens"].to(device), step=1)
            loss, _ = model.loss(out, batch["labels"].to(device))
            del out
            if after_forward is not None:
                after_forward()
                after_forward = None
            with backward():
                (loss / len(batches)).backward()
    if device.type == "cuda":
        torch.cuda.synchronize()


def tracked_step(model, cfg, batches, device) -> tuple[float | None, float]:
    """(tensor bytes alive after the forward, without PP; peak tensor bytes of the step),
    counted exactly (memory/measure.py): what the planner's terms describe, free of the
    allocator's and the process's own memory."""
    # defer: the package, only in a worker process (the parent only starts them)
    from megatron_ponder.memory.measure import TensorMemoryTracker

    held = []
    with TensorMemoryTracker() as mem:
        def after_forward():
            gc.collect()
            held.append(mem.held)

        _step(model, cfg, batches, device, after_forward)
    return (held[0] if held else None), mem.peak


def measure_rank(args, name: str, gpus: int) -> dict:
    # defer: torch and megatron, only in a worker process (the parent only starts them)
    import torch

    from megatron_ponder.memory.measure import peak_rss_bytes, reset_peak_rss, rss_bytes
    from megatron_ponder.memory.plan import plan_stage
    from megatron_ponder.model import build_model
    from megatron_ponder.model.transforms import apply_transforms
    from megatron_ponder.parallel import initialize_parallel
    from megatron.core import parallel_state

    cfg = config(args, *CONFIGS[name])
    initialize_parallel(cfg)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = apply_transforms(build_model(cfg).to(device), cfg.train)
    model.train()
    micro_batches = cfg.train.global_batch_size // cfg.train.micro_batch_size
    _step(model, cfg, _batches(cfg, micro_batches, 8), device)  # kernels, thread pools
    model.zero_grad(set_to_none=True)
    gc.collect()
    batches = _batches(cfg, micro_batches, args.seq)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        _step(model, cfg, batches, device)
        measured = torch.cuda.max_memory_allocated() - before
    else:
        reset_ok = reset_peak_rss()
        before = rss_bytes()
        _step(model, cfg, batches, device)
        measured = peak_rss_bytes(reset_ok) - before
    stage = parallel_state.get_pipeline_model_parallel_rank()
    plan = plan_stage(cfg, gpus, stage, cuda=device.type == "cuda")
    predicted = plan.activations_and_grads + plan.backward_working
    result = {"measured": measured, "predicted": predicted}
    if args.exact:
        model.zero_grad(set_to_none=True)
        gc.collect()
        kept, peak = tracked_step(model, cfg, batches, device)
        result.update(exact_peak=peak, exact_kept=kept,
                      predicted_kept=plan.activations_kept if kept is not None else None)
    return result


def _rank_entry(rank, world, port, args, name, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    # defer: torch, only in a worker process (the parent only starts them)
    import torch

    torch.set_num_threads(args.threads)
    result = measure_rank(args, name, world)
    Path(out_dir, f"{rank}.json").write_text(json.dumps(result))


def measure(args, name: str) -> dict:
    """In this (fresh) process: one rank, or one spawned process per rank."""
    # defer: torch, only in a worker process (the parent only starts them)
    import torch
    import torch.multiprocessing as mp

    overrides = CONFIGS[name][2]
    world = 2 if any(o.endswith("_size=2") for o in overrides) else 1
    if world == 1:
        torch.set_num_threads(args.threads)
        return measure_rank(args, name, 1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as out_dir:
        mp.start_processes(_rank_entry, args=(world, port, args, name, out_dir), nprocs=world,
                           start_method="spawn")
        ranks = [json.loads(Path(out_dir, f"{r}.json").read_text()) for r in range(world)]
    return max(ranks, key=lambda r: r["measured"])


def time_recompute(args) -> dict:
    """Step times of ponderlm3 K 3 without and with layer recomputation, alternating."""
    # defer: torch and megatron, only in a worker process (the parent only starts them)
    import torch

    from megatron_ponder.model import build_model
    from megatron_ponder.model.transforms import apply_transforms
    from megatron_ponder.parallel import initialize_parallel

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    models, times = {}, {"none": [], "layers": []}
    for mode in times:
        cfg = config(args, "ponderlm3", 3, [f"train.recompute={mode}"])
        initialize_parallel(cfg)
        models[mode] = (apply_transforms(build_model(cfg).to(device), cfg.train).train(), cfg)
    batches = _batches(cfg, 1, args.seq)
    for i in range(args.warmup + args.repeats):
        for mode, (model, cfg) in models.items():
            model.zero_grad(set_to_none=True)
            tic = time.perf_counter()
            _step(model, cfg, batches, device)
            if i >= args.warmup:
                times[mode].append(time.perf_counter() - tic)
    return {mode: statistics.median(t) for mode, t in times.items()} | {"times_s": times}


# ----------------------------------------------------------------------------- driver


def _parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma list of " + ", ".join(CONFIGS))
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5, help="timed steps per recomputation mode")
    p.add_argument("--quick", action="store_true", help="smoke test: 2 timed steps")
    p.add_argument("--exact", action="store_true", help="also count tensor bytes exactly "
                   "(TensorMemoryTracker: kept activations and peak; slower per operator)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal
    return p.parse_args(argv)


def _worker(argv: list[str], job: str):
    proc = subprocess.run([sys.executable, __file__, *argv, "--worker", job],
                          capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        print(f"worker {job} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    args = _parse(argv)
    sys.path.insert(0, str(REPO))
    if args.worker:
        print(json.dumps(time_recompute(args) if args.worker == "time" else measure(args, args.worker)))
        return
    if args.quick:
        args.repeats = 2
    passed = [f"--{key}={getattr(args, key)}" for key in
              ("hidden", "layers", "seq", "batch", "precision", "threads", "warmup", "repeats")]
    passed += ["--exact"] if args.exact else []
    print(f"# {vars(args)}")
    print(f"{'configuration':>26} {'measured MiB':>13} {'predicted MiB':>14} {'error':>7}"
          + (f" {'exact peak':>11} {'error':>7} {'exact kept':>11} {'error':>7}" if args.exact
             else ""), flush=True)
    results = {}
    for name in args.configs.split(","):
        r = _worker(passed, name)
        if r is None:
            continue
        r["rel_error"] = r["predicted"] / r["measured"] - 1
        line = (f"{name:>26} {r['measured'] / MiB:>13.1f} {r['predicted'] / MiB:>14.1f} "
                f"{r['rel_error']:>+7.3f}")
        if args.exact:
            r["exact_peak_rel_error"] = r["predicted"] / r["exact_peak"] - 1
            line += f" {r['exact_peak'] / MiB:>11.1f} {r['exact_peak_rel_error']:>+7.3f}"
            if r["exact_kept"]:
                r["exact_kept_rel_error"] = r["predicted_kept"] / r["exact_kept"] - 1
                line += f" {r['exact_kept'] / MiB:>11.1f} {r['exact_kept_rel_error']:>+7.3f}"
        results[name] = {k: (v / MiB if v is not None and "error" not in k else v)
                         for k, v in r.items()}
        print(line, flush=True)
    timing = _worker(passed, "time")
    mem = lambda n: results.get(n, {}).get("measured")  # noqa: E731
    worst = lambda key: max((abs(r[key]) for r in results.values() if key in r),  # noqa: E731
                            default=None)
    summary = {
        "config": {k: v for k, v in vars(args).items() if k != "worker"},
        "results": results,
        "planner_max_rel_error": worst("rel_error"),
        "planner_max_rel_error_exact_peak": worst("exact_peak_rel_error"),
        "planner_max_rel_error_exact_kept": worst("exact_kept_rel_error"),
        "recompute_mem_ratio": (mem("ponderlm3-k3-layers") / mem("ponderlm3-k3")
                                if mem("ponderlm3-k3-layers") and mem("ponderlm3-k3") else None),
        "recompute_time_ratio": timing["layers"] / timing["none"] if timing else None,
        "step_s": {k: timing[k] for k in ("none", "layers")} if timing else None,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
