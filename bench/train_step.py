"""Optimizer-step time of vanilla, ponderlm2 and ponderlm3 (K = 3, same decoder) on CPU,
eager and with train.compile (the decoder layers under torch.compile).

Targets: ponderlm3 <= 1.10x ponderlm2 per step (issue 2: the router, the soft-mask bias and
the fusion are all PonderLM-3 adds to the PonderLM-2 pass schedule); compiled <= 0.75x eager
for ponderlm3 (issue 16). Defaults: issue 16's configuration (H 256, 4 layers, L 256,
batch 4, J 3). Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from megatron_ponder.config import config_from_dict  # noqa: E402
from megatron_ponder.model import build_model  # noqa: E402
from megatron_ponder.model.transforms import apply_transforms  # noqa: E402
from megatron_ponder.parallel import initialize_parallel  # noqa: E402


COMPILED = " compiled"  # suffix of the compiled variants' names


def build(variant: str, args):
    method = variant.removesuffix(COMPILED)
    cfg = config_from_dict({
        "model": {"vocab_size": args.vocab, "hidden_size": args.hidden, "num_layers": args.layers,
                  "num_attention_heads": args.heads, "max_position_embeddings": args.seq},
        "ponder": {"method": method, "k": args.k, "attention_backend": args.backend},
        "data": {"seq_length": args.seq},
        "train": {"compile": variant.endswith(COMPILED)},
    })
    initialize_parallel(cfg)  # TP 1: the same groups serve every model built after it
    model = apply_transforms(build_model(cfg), cfg.train).train()  # as the trainer does
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))


def optimizer_step(model, optimizer, tokens, step: int, jacobi: int | None) -> float:
    start = time.perf_counter()
    # Every method sees the same steps, hence the same J (fixed, or drawn from (seed, step)).
    out = model(tokens[:, :-1], step=step, jacobi=jacobi)
    loss, _ = model.loss(out, tokens[:, 1:])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


GEMMS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
ATTENTION = "aten::_scaled_dot_product"  # the fused kernels' forward and backward


def kernel_shares(model, optimizer, tokens, step: int, jacobi: int | None) -> dict[str, float]:
    """Shares of one profiled optimizer step's CPU time spent in GEMMs and in fused attention.

    Compilation runs these two through the same kernels as eager (it fuses the elementwise
    work around them), so eager's share of them bounds what compiling the layers can reach.
    """
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        optimizer_step(model, optimizer, tokens, step, jacobi)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    gemm = sum(e.self_cpu_time_total for e in events if e.key in GEMMS)
    attention = sum(e.self_cpu_time_total for e in events if e.key.startswith(ATTENTION))
    return {"gemm": gemm / total, "attention": attention / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--jacobi", type=int, default=3,
                        help="Jacobi iterations of every step; 0 = draw J from (seed, step)")
    parser.add_argument("--backend", default="augmented")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps (the compiled variants compile in the first)")
    parser.add_argument("--steps", type=int, default=9)
    args = parser.parse_args()
    methods = ("vanilla", "ponderlm2", "ponderlm3", "vanilla" + COMPILED, "ponderlm3" + COMPILED)
    models = {m: build(m, args) for m in methods}
    tokens = torch.randint(0, args.vocab, (args.batch, args.seq + 1),
                           generator=torch.Generator().manual_seed(0))
    jacobi = args.jacobi or None
    times = {m: [] for m in methods}
    # Methods interleaved step by step: this shared VM has slow phases that would otherwise
    # land on one method only.
    for step in range(args.warmup + args.steps):
        for m in methods:
            elapsed = optimizer_step(*models[m], tokens, step, jacobi)
            if step >= args.warmup:
                times[m].append(elapsed)
        print(f"step {step}: " + "  ".join(f"{m} {times[m][-1] * 1e3:.0f} ms" for m in methods
                                           if times[m]), file=sys.stderr)
    median = {m: statistics.median(t) for m, t in times.items()}
    # One more step each, profiled (untimed): where the ponderlm3 step's time goes.
    shares = {m: kernel_shares(*models[m], tokens, args.warmup + args.steps, jacobi)
              for m in ("ponderlm3", "ponderlm3" + COMPILED)}

    def paired(a: str, b: str) -> float:  # median of per-step ratios
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    ratio = median["ponderlm3"] / median["ponderlm2"]
    compiled = {m: median[m + COMPILED] / median[m] for m in ("ponderlm3", "vanilla")}
    print(json.dumps({
        "config": vars(args),
        "step_s": median,
        "params": {m: sum(p.numel() for p in models[m][0].parameters()) for m in methods},
        "ponderlm2_over_vanilla": median["ponderlm2"] / median["vanilla"],
        "ponderlm3_over_ponderlm2": ratio,
        "ponderlm3_over_ponderlm2_paired": paired("ponderlm3", "ponderlm2"),
        "target_ponderlm3_over_ponderlm2": 1.10,
        "target_met": ratio <= 1.10,
        "compiled_over_eager_ponderlm3": compiled["ponderlm3"],
        "compiled_over_eager_ponderlm3_paired": paired("ponderlm3" + COMPILED, "ponderlm3"),
        "compiled_over_eager_vanilla": compiled["vanilla"],
        "compiled_over_eager_vanilla_paired": paired("vanilla" + COMPILED, "vanilla"),
        "target_compiled_over_eager_ponderlm3": 0.75,
        "compiled_target_met": compiled["ponderlm3"] <= 0.75,
        "kernel_shares_ponderlm3": shares,
        # Compiled/eager if compilation removed everything but the GEMMs and attention.
        "compiled_floor_ponderlm3": sum(shares["ponderlm3"].values()),
    }))


if __name__ == "__main__":
    main()
