"""Training steps of a paper recipe on one device: tokens/s, MFU and peak memory against the
memory planner's prediction.

    python bench/paper_steps.py recipes/paper/125m/ponderlm3.yaml --device cuda --steps 30
    python bench/paper_steps.py recipes/paper/125m/ponderlm3.yaml --tiny --steps 3   # CPU smoke

The recipe's model, method, precision and micro-batch run as the trainer runs them (its
engine with AdamW and clipping, its autocast contexts, Transformer Engine's layer spec on CUDA
when TE imports), on seeded random tokens and one micro-batch per step (so one device needs
no data and no gradient accumulation). Time: the median step after --warmup steps. MFU: the
trainer's FLOP count (ponder/flops.py) over the device's bf16 peak (training/throughput.py).
Memory on CUDA: max_memory_allocated over the whole run (model, optimizer state and step),
against plan_memory's per-GPU peak for one GPU (memory/plan.py). --tiny shrinks the model
(H 64, 2 layers, L 64, vocabulary 512) so the plumbing runs on CPU in seconds; CPU figures
are not comparable with the plan (no peak memory is reported there).

Last stdout line: JSON with tokens_per_s, mfu, step_s, measured_peak_gb, predicted_peak_gb and
their relative error.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.hidden_size=64", "model.num_layers=2", "model.num_attention_heads=2",
        "model.ffn_hidden_size=192", "model.vocab_size=512", "model.max_position_embeddings=64",
        "data.seq_length=64", "train.micro_batch_size=2"]


def run(args) -> dict:
    # defer: torch and megatron (seconds), only after parsing: --help stays fast
    import torch

    from megatron_ponder.config import load_config
    from megatron_ponder.memory.plan import plan_memory
    from megatron_ponder.model import build_model
    from megatron_ponder.model.spec import fused_kernels_available
    from megatron_ponder.model.transforms import apply_transforms
    from megatron_ponder.parallel import initialize_parallel
    from megatron_ponder.ponder.flops import DecoderShape
    from megatron_ponder.training.engines import build_engine
    from megatron_ponder.training.precision import backward_autocast, forward_autocast
    from megatron_ponder.training.throughput import mfu, peak_flops

    cfg = load_config(args.recipe, (TINY if args.tiny else []) + args.overrides)
    cfg.train.global_batch_size = cfg.train.micro_batch_size  # one micro-batch per step
    device = torch.device(args.device)
    initialize_parallel(cfg)
    fused = fused_kernels_available(device)
    model = apply_transforms(build_model(cfg, fused_kernels=fused).to(device), cfg.train,
                             fused).train()
    engine = build_engine(cfg, model)
    forward, backward = forward_autocast(cfg, device), backward_autocast(cfg, device)
    b, length, p = cfg.train.micro_batch_size, cfg.data.seq_length, cfg.ponder
    gen = torch.Generator().manual_seed(cfg.seed)
    shape = DecoderShape.of(cfg.model)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, flops, losses = [], [], []
    for step in range(args.warmup + args.steps):
        tokens = torch.randint(0, cfg.model.vocab_size, (b, length + 1), generator=gen).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        tic = time.perf_counter()
        engine.zero_grad()
        with forward():
            out = engine.forward(tokens[:, :-1], step)
        loss, _ = model.loss(out, tokens[:, 1:])
        with backward():
            engine.backward(loss)
        engine.step(loss_is_finite=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - tic)
            flops.append(b * model.method.training_flops(shape, out.pass_slots, length))
        losses.append(loss.item())
    step_s = statistics.median(times)
    plan = plan_memory(cfg, 1, cuda=device.type == "cuda")
    measured = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None
    return {
        "recipe": str(args.recipe), "method": p.method, "device": str(device),
        "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "fused_kernels": fused, "micro_batch": b, "seq_length": length,
        "steps": args.steps, "step_s": step_s, "tokens_per_s": b * length / step_s,
        "mfu": mfu(statistics.median(flops), step_s, peak_flops(cfg.train.peak_tflops)),  # None: unknown GPU
        "first_loss": losses[0], "last_loss": losses[-1],
        "measured_peak_gb": measured, "predicted_peak_gb": plan.peak / 1e9,
        "planner_rel_error": plan.peak / 1e9 / measured - 1 if measured else None,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*", help="dotted overrides of the recipe")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="a tiny model of the recipe (CPU)")
    args = parser.parse_intermixed_args(argv)
    warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine).*")
    sys.path.insert(0, str(REPO))
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
