"""Optimizer-step time of a tiny vanilla, ponderlm2 and ponderlm3 (K = 3, same decoder) on CPU.

Target (issue 2): ponderlm3 <= 1.10x ponderlm2 per step; the router, the soft-mask bias and
the fusion are all PonderLM-3 adds to the PonderLM-2 pass schedule.
Last stdout line: one JSON object.
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

from megatron_ponder.config import config_from_dict  # noqa: E402
from megatron_ponder.model import build_model  # noqa: E402
from megatron_ponder.parallel import initialize_parallel  # noqa: E402


def build(method: str, args):
    cfg = config_from_dict({
        "model": {"vocab_size": args.vocab, "hidden_size": args.hidden, "num_layers": args.layers,
                  "num_attention_heads": args.heads, "max_position_embeddings": args.seq},
        "ponder": {"method": method, "k": args.k, "attention_backend": args.backend},
    })
    initialize_parallel(cfg)  # TP 1: the same groups serve every model built after it
    model = build_model(cfg).train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))


def optimizer_step(model, optimizer, tokens, step: int) -> float:
    start = time.perf_counter()
    # Every method sees the same steps, hence the same Jacobi draws J(seed, step).
    out = model(tokens[:, :-1], step=step)
    loss, _ = model.loss(out, tokens[:, 1:])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--backend", default="augmented")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=9)
    args = parser.parse_args()
    methods = ("vanilla", "ponderlm2", "ponderlm3")
    models = {m: build(m, args) for m in methods}
    tokens = torch.randint(0, args.vocab, (args.batch, args.seq + 1),
                           generator=torch.Generator().manual_seed(0))
    times = {m: [] for m in methods}
    # Methods interleaved step by step: this shared VM has slow phases that would otherwise
    # land on one method only.
    for step in range(args.warmup + args.steps):
        for m in methods:
            elapsed = optimizer_step(*models[m], tokens, step)
            if step >= args.warmup:
                times[m].append(elapsed)
        print(f"step {step}: " + "  ".join(f"{m} {times[m][-1] * 1e3:.0f} ms" for m in methods
                                           if times[m]), file=sys.stderr)
    median = {m: statistics.median(t) for m, t in times.items()}
    paired = statistics.median(a / b for a, b in zip(times["ponderlm3"], times["ponderlm2"]))
    ratio = median["ponderlm3"] / median["ponderlm2"]
    print(json.dumps({
        "config": vars(args),
        "step_s": median,
        "params": {m: sum(p.numel() for p in models[m][0].parameters()) for m in methods},
        "ponderlm2_over_vanilla": median["ponderlm2"] / median["vanilla"],
        "ponderlm3_over_ponderlm2": ratio,
        "ponderlm3_over_ponderlm2_paired": paired,
        "target_ponderlm3_over_ponderlm2": 1.10,
        "target_met": ratio <= 1.10,
    }))


if __name__ == "__main__":
    main()
