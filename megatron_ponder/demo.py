"""`make demo`: the whole job on the embedded corpus, end to end, on a laptop-class CPU.

corpus (Python's own documentation, no download) -> sentencepiece tokenizer -> megatron
indexed dataset -> PonderLM-3 pretraining (recipes/demo_cpu.yaml) -> evaluation, then a
summary of what came out and where it is. Steps whose outputs exist are skipped, and the
training resumes from its newest checkpoint, so running it twice is cheap.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine|full scope).*")
warnings.filterwarnings("ignore", category=DeprecationWarning, module="megatron")
# torch.distributed.checkpoint's notices about its own API, raised inside megatron's loader.
warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")

from megatron_ponder.config import load_config  # noqa: E402
from megatron_ponder.data.corpus import write_default_corpus  # noqa: E402
from megatron_ponder.data.indexed import preprocess  # noqa: E402
from megatron_ponder.data.tokenizer import Tokenizer  # noqa: E402
from megatron_ponder.data.tokenizer_training import train_tokenizer  # noqa: E402
from megatron_ponder.ponder.flops import DecoderShape  # noqa: E402
from megatron_ponder.ponder.registry import VANILLA, method_class  # noqa: E402
from megatron_ponder.run.exit_codes import EXIT_DONE  # noqa: E402
from megatron_ponder.training.metrics import read_records  # noqa: E402
from megatron_ponder.training.trainer import Trainer  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "demo_cpu.yaml"


def prepare_data(cfg) -> None:
    """Corpus, tokenizer and indexed dataset at the paths the recipe names."""
    tokenizer_path = Path(cfg.data.tokenizer)
    prefix = Path(cfg.data.prefixes[0])
    corpus = prefix.parent / "corpus.jsonl"
    if not corpus.exists():
        print(f"[1/4] writing the embedded corpus to {corpus}")
        write_default_corpus(corpus)
    if not tokenizer_path.exists():
        print(f"[2/4] training a {cfg.model.vocab_size}-piece BPE tokenizer")
        train_tokenizer([corpus], tokenizer_path.with_suffix(""), cfg.model.vocab_size)
    if not prefix.with_suffix(".idx").exists():
        print(f"[3/4] tokenising into {prefix}.bin/.idx")
        preprocess([corpus], Tokenizer.load(tokenizer_path, cfg.data.eod_token), prefix)


def summary(cfg) -> None:
    records = read_records(Path(cfg.train.output_dir) / "metrics.jsonl")
    final = [r for r in records if r["kind"] == "final"][-1]
    ckpt = Path(cfg.train.output_dir) / "checkpoints"
    print("\n=== demo summary ===")
    print(f"validation perplexity      {final['ppl']:.2f} (loss {final['loss']:.3f})")
    print(f"expected pondering steps   {final['expected_steps']:.2f} of K={cfg.ponder.k} per token")
    print(f"pruned at tau={cfg.ponder.tau:g}        {final['pruned_share']:.1%} of latent slots")
    shape, length = DecoderShape.of(cfg.model), cfg.data.seq_length
    # PonderLM-2 with this run's settings (its K): every latent slot kept.
    ponderlm2 = (method_class("ponderlm2").of(cfg.ponder).inference_flops_per_token(shape, length)
                 / VANILLA.inference_flops_per_token(shape, length))
    print(f"inference FLOPs per token  {final['inference_flops_vs_vanilla']:.2f}x a vanilla model "
          f"of the same size (PonderLM-2, every slot kept: {ponderlm2:.2f}x)")
    print(f"checkpoints                {ckpt}")
    print(f"metrics (JSONL)            {Path(cfg.train.output_dir) / 'metrics.jsonl'}")
    print(f"tensorboard                tensorboard --logdir {Path(cfg.train.output_dir) / 'tensorboard'}")
    print(f"wandb (offline)            wandb sync {Path(cfg.train.output_dir) / 'wandb'}/offline-run-*")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="dotted overrides of recipes/demo_cpu.yaml")
    args = parser.parse_args(argv)
    cfg = load_config(RECIPE, args.overrides)
    start = time.time()
    prepare_data(cfg)
    print(f"[4/4] training PonderLM-3 ({cfg.train.steps} steps) -> {cfg.train.output_dir}")
    code = Trainer(cfg).train()
    if code == EXIT_DONE:
        summary(cfg)
    print(f"demo finished in {time.time() - start:.0f}s (exit code {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
