#!/usr/bin/env python3
"""Generate text from a trainer checkpoint with the hard pruning rule and the slot KV cache.

Example:
    python tools/generate.py runs/demo --prompt "The river" --max-new-tokens 40 --show-steps

Each prompt starts with the end-of-document token, as every document does in training; an
empty prompt (--prompt "") is that token alone: generation from the start of a document,
unconditional sampling (said on stderr).
--show-steps prints each token followed by [k], the latent steps it received.
--flops-budget R (instead of --tau): inference FLOPs per token relative to the same model
with every latent step kept; tau is calibrated on validation sequences of the checkpoint's
data (inference/budget.py) and printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is invalid: must be >= 0")
    return value


def parse_args(argv):
    sys.path.insert(0, str(REPO))  # imports after parsing need it too; this one needs no torch
    # defer: the package until REPO is on sys.path (these helpers import no torch)
    from megatron_ponder.inference.budget_args import add_budget_arguments
    from megatron_ponder.inference.checkpoint_args import add_allow_unverified

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("checkpoint", help="step directory, checkpoints/ directory or run directory")
    add_allow_unverified(parser)
    parser.add_argument("--prompt", action="append", required=True,
                        help="prompt text; repeat for a batch; \"\" generates from the start "
                        "of a document (unconditional)")
    parser.add_argument("--tokenizer", default="", help="sentencepiece .model or Hugging Face "
                        "tokenizer folder (default: data.tokenizer of the checkpoint's config)")
    parser.add_argument("--max-new-tokens", type=non_negative_int, default=32)
    knob = parser.add_mutually_exclusive_group()
    knob.add_argument("--tau", type=float, default=None, help="hard-pruning threshold "
                      "(default: ponder.tau of the checkpoint)")
    add_budget_arguments(parser, knob)
    parser.add_argument("--jacobi", type=int, default=None, help="Jacobi iterations of the "
                        "prompt's parallel prefill (default: ponder.jacobi_eval)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=0, help="0 = off")
    parser.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stop-at-eos", action="store_true", help="end a row at end-of-document")
    parser.add_argument("--show-steps", action="store_true",
                        help="print every token with the latent steps it received")
    parser.add_argument("--json", action="store_true", help="print one JSON object per prompt")
    return parser.parse_args(argv)


def with_steps(tokenizer, ids: list[int], steps: list[int]) -> str:
    return "".join(f"{tokenizer.decode([i])}[{s}]" for i, s in zip(ids, steps))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine).*")
    # defer: torch and megatron (seconds), only after parsing: --help stays fast
    from megatron_ponder.config import ConfigError
    from megatron_ponder.data.errors import DataError
    from megatron_ponder.data.tokenizer import Tokenizer, check_fits
    from megatron_ponder.inference.budget import calibrate_on_validation
    from megatron_ponder.inference.decoding import generate
    from megatron_ponder.inference.model_loading import load_model
    from megatron_ponder.inference.sampling import Sampling
    from megatron_ponder.run.checkpoint_read import CheckpointError
    from megatron_ponder.run.exit_codes import EXIT_BAD_INPUT

    try:
        sampling = Sampling(args.temperature, args.top_k, args.top_p, args.seed)
        model, cfg = load_model(args.checkpoint, allow_unverified=args.allow_unverified)
        tokenizer = Tokenizer.load(args.tokenizer or cfg.data.tokenizer, cfg.data.eod_token)
        check_fits(tokenizer, cfg.model.vocab_size)
        prompts = [[tokenizer.eod_id] + tokenizer.encode(p) for p in args.prompt]
        for number, prompt in enumerate(prompts, 1):
            if len(prompt) == 1:  # "" (or text the tokenizer encodes to nothing)
                print(f"note: prompt {number} is empty: generating from the start of a document "
                      "(the end-of-document token alone), unconditionally", file=sys.stderr)
        tau = args.tau
        if args.flops_budget is not None:
            calibration = calibrate_on_validation(model, cfg, args.flops_budget,
                                                  args.calibration_samples, args.jacobi)
            tau = calibration.tau
            print(calibration.describe(), file=sys.stderr)
        result = generate(model, prompts, args.max_new_tokens, sampling, tau=tau,
                          eos_id=tokenizer.eod_id if args.stop_at_eos else None, jacobi=args.jacobi)
    except (ConfigError, DataError, CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for prompt, text, ids, steps in zip(prompts, args.prompt, result.tokens, result.steps):
        # steps covers the prompt and every generated token but the last (never fed back).
        fed = prompt[1:] + ids[:-1]
        if args.json:
            print(json.dumps({"prompt": text, "completion": tokenizer.decode(ids), "token_ids": ids,
                              "steps": steps[1:], "fed_token_ids": fed,
                              "tau": model.method.tau if tau is None else tau,
                              "flops_budget": args.flops_budget}))
        elif args.show_steps:
            print(with_steps(tokenizer, fed, steps[1:]) + tokenizer.decode(ids[-1:]))
        else:
            print(text + tokenizer.decode(ids))
    return 0


if __name__ == "__main__":
    sys.exit(main())
