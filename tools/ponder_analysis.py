#!/usr/bin/env python3
"""Does PonderLM-3's compute follow the token? Per-token pondering steps of a checkpoint on
held-out text, against token frequency, token class, position and router entropy.

Example:
    python tools/ponder_analysis.py runs/demo --taus 1e-4 0.05 --samples 256 \\
        --output runs/demo/adaptivity   # writes analysis.json, analysis.md, analysis.png

Per scored token: expected steps E[steps] = sum_k w_k from the router in the soft
(training-style) forward, and executed steps K_hat at each tau from the hard forward. Token
frequency is counted over the corpus files (data.prefixes, the first 20M tokens of each).
Data: the validation split of the checkpoint's data, or --data-prefix with --split.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("checkpoint", help="step directory, checkpoints/ directory or run directory")
    sys.path.insert(0, str(REPO))  # the argument helper needs no torch
    # defer: the package until REPO is on sys.path (this helper imports no torch)
    from megatron_ponder.inference.checkpoint_args import add_allow_unverified

    add_allow_unverified(parser)
    parser.add_argument("--output", required=True, help="directory for analysis.{json,md,png}")
    parser.add_argument("--taus", type=float, nargs="+", default=None,
                        help="taus of the executed steps (default: the checkpoint's ponder.tau)")
    parser.add_argument("--data-prefix", action="append", default=None,
                        help="indexed dataset PREFIX (default: the checkpoint's data.prefixes)")
    parser.add_argument("--split", choices=("valid", "test"), default="valid")
    parser.add_argument("--samples", type=int, default=256, help="sequences to analyse")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the sample order "
                        "(0: the sweeps' evaluation order)")
    parser.add_argument("--title", default="", help="heading of the report (default: the path)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine).*")
    sys.path.insert(0, str(REPO))
    # defer: torch and megatron (seconds), only after parsing: --help stays fast
    from megatron_ponder.config import ConfigError
    from megatron_ponder.data.tokenizer import Tokenizer
    from megatron_ponder.inference.adaptivity import (
        corpus_frequency, summarize, token_steps,
    )
    from megatron_ponder.inference.adaptivity_report import markdown, plot
    from megatron_ponder.inference.heldout import heldout_batches
    from megatron_ponder.inference.model_loading import load_model
    from megatron_ponder.inference.scoring import check_tau
    from megatron_ponder.ponder.registry import names_where
    from megatron_ponder.run.checkpoint_read import CheckpointError
    from megatron_ponder.run.exit_codes import EXIT_BAD_INPUT
    from megatron_ponder.run.layout import check_output_dir, write_atomically

    try:
        out = check_output_dir(args.output, "--output")  # before the load: fail fast
        model, cfg = load_model(args.checkpoint, allow_unverified=args.allow_unverified)
        if not model.method.uses_router:
            routed = " or ".join(names_where(lambda m: m.uses_router))
            raise ConfigError(f"ponder.method={cfg.ponder.method!r} gives every token the same "
                              f"steps; the analysis needs a {routed} checkpoint")
        # --taus checked here, once; the config's tau was checked with the config
        taus = [check_tau(t) for t in args.taus] if args.taus else [model.method.tau]
        if args.data_prefix:
            cfg.data.prefixes, cfg.data.weights = args.data_prefix, []
        tokenizer = Tokenizer.load(cfg.data.tokenizer, cfg.data.eod_token)
        batches = heldout_batches(cfg, split=args.split, samples=args.samples,
                                  batch_size=args.batch_size, data_seed=args.data_seed)
        frequency = corpus_frequency(cfg.data.prefixes, cfg.model.vocab_size)
        steps = token_steps(model, batches, taus)
    except (ConfigError, CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    texts = [tokenizer.token_text(i) for i in range(tokenizer.vocab_size)]
    specials = {i for i in range(tokenizer.vocab_size) if tokenizer.is_special(i)}
    summary = summarize(steps, texts, specials, frequency, model.method.latent_steps,
                        cfg.data.seq_length)
    title = args.title or f"Pondering steps per token: {args.checkpoint}"
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("analysis.json", json.dumps(summary, indent=1) + "\n"),
                       ("analysis.md", markdown(summary, title) + "\n")):
        write_atomically(out / name, text)
    plot(summary, title, out / "analysis.png")
    o = summary["overall"]
    print(f"{summary['positions']} tokens: expected steps {o['expected_steps_mean']:.3f} +- "
          f"{o['expected_steps_std']:.3f} (std over tokens), token-id share of variance "
          f"{o['token_identity_share_of_variance']:.3f}; wrote {out}/analysis.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
