"""Training throughput on CPU for the demo recipe: tokens/s and MFU of `vanilla` vs
`ponderlm3`, and how much faster the data pipeline delivers batches than training eats them.

Target (issue 3): the loader delivers >= 20x what training consumes (the most demanding
consumer, vanilla). Last stdout line: one JSON object with tokens_per_s, mfu and
loader_over_consumption.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from megatron_ponder.config import load_config  # noqa: E402
from megatron_ponder.data.batches import batch_for_step  # noqa: E402
from megatron_ponder.demo import RECIPE, prepare_data  # noqa: E402
from megatron_ponder.training.trainer import Trainer  # noqa: E402


def trainer_for(method: str, data_dir: Path, out: Path, steps: int) -> Trainer:
    cfg = load_config(RECIPE, [
        f"ponder.method={method}", f"train.output_dir={out / method}",
        f"data.tokenizer={data_dir / 'tokenizer.model'}",
        f"data.prefixes=[{data_dir / 'corpus_text_document'}]",
        f"data.cache_dir={out / 'index_cache'}", f"train.steps={steps}",
        "train.eval_batches=0", "logging.tensorboard=false", "logging.wandb=disabled"])
    return Trainer(cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT / "runs" / "demo" / "data"),
                        help="where the demo's tokenizer and indexed corpus are (built if absent)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--loader-steps", type=int, default=200)
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    base = load_config(RECIPE, [f"data.tokenizer={data_dir / 'tokenizer.model'}",
                                f"data.prefixes=[{data_dir / 'corpus_text_document'}]"])
    prepare_data(base)
    t = base.train
    tokens_per_step = t.global_batch_size * base.data.seq_length
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {m: trainer_for(m, data_dir, Path(tmp), args.warmup + args.steps)
                    for m in ("vanilla", "ponderlm3")}
        times = {m: [] for m in trainers}
        flops = {m: [] for m in trainers}
        # Interleaved step by step: this shared VM has slow phases.
        for step in range(args.warmup + args.steps):
            for method, trainer in trainers.items():
                start = time.perf_counter()
                result = trainer._train_step(step)
                elapsed = time.perf_counter() - start
                if step >= args.warmup:
                    times[method].append(elapsed)
                    flops[method].append(result["flops"])
            print(f"step {step}: " + "  ".join(f"{m} {times[m][-1]:.3f}s" for m in trainers
                                               if times[m]), file=sys.stderr)
        peak = trainers["vanilla"].peak
        dataset = trainers["vanilla"].train_data
        start = time.perf_counter()
        for step in range(args.loader_steps):
            batch_for_step(dataset, step % (args.warmup + args.steps), t.global_batch_size,
                           t.micro_batch_size)
        loader_tokens_per_s = args.loader_steps * tokens_per_step / (time.perf_counter() - start)
    tokens_per_s = {m: tokens_per_step / statistics.median(v) for m, v in times.items()}
    mfu = {m: statistics.median(f / s for f, s in zip(flops[m], times[m])) / peak for m in times}
    consumption = max(tokens_per_s.values())
    for m in times:
        print(f"{m:10s} {tokens_per_s[m]:10,.0f} tokens/s  MFU {mfu[m]:.1%}", file=sys.stderr)
    print(f"loader     {loader_tokens_per_s:10,.0f} tokens/s "
          f"({loader_tokens_per_s / consumption:.0f}x the fastest consumer)", file=sys.stderr)
    print(json.dumps({
        "recipe": str(RECIPE.relative_to(ROOT)),
        "tokens_per_step": tokens_per_step,
        "tokens_per_s": tokens_per_s,
        "mfu": mfu,
        "peak_flops_measured": peak,
        "loader_tokens_per_s": loader_tokens_per_s,
        "loader_over_consumption": loader_tokens_per_s / consumption,
        "target_loader_over_consumption": 20,
        "target_met": loader_tokens_per_s / consumption >= 20,
    }))


if __name__ == "__main__":
    main()
