#!/usr/bin/env python3
"""Tokenise text/JSONL files into a megatron indexed dataset (PREFIX.bin + PREFIX.idx).

Example:
    python tools/preprocess_data.py --input corpus.jsonl --tokenizer data/tok.model \\
        --output-prefix data/corpus

Then list data/corpus in data.prefixes. Every document ends with the end-of-document token.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

FORMATS = ("Inputs: .jsonl/.json files hold one JSON object per line, one document each, in "
           "a string field (--json-key, default 'text'); any other file is UTF-8 text in "
           "which documents are separated by one or more blank lines. Empty documents are "
           "skipped. Both output files are written under temporary names and renamed at the "
           "end, so an interrupted run leaves no half-written pair.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " " + FORMATS,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--input", nargs="+", required=True, metavar="FILE",
                        help="text or JSONL files, read in this order")
    parser.add_argument("--tokenizer", required=True,
                        help="sentencepiece .model, or Hugging Face tokenizer folder "
                        "with tokenizer.json (or that file)")
    parser.add_argument("--eod-token", default="",
                        help="end-of-document token appended to every document (default: the "
                        "tokenizer's EOS); must match the recipe's data.eod_token")
    parser.add_argument("--output-prefix", required=True,
                        help="writes PREFIX.bin and PREFIX.idx")
    parser.add_argument("--json-key", default="text", help="field of a JSONL record to read")
    parser.add_argument("--threads", type=int, default=1, help="sentencepiece encoding threads")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    # megatron-core announces the GPU-only accelerations it cannot find: expected on CPU.
    warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine).*")
    sys.path.insert(0, str(REPO))  # imported after parsing: --help needs no torch
    from megatron_ponder.config import ConfigError
    from megatron_ponder.data.indexed import preprocess
    from megatron_ponder.data.tokenizer import Tokenizer

    try:
        tokenizer = Tokenizer.load(args.tokenizer, args.eod_token)
        stats = preprocess(args.input, tokenizer, args.output_prefix, json_key=args.json_key,
                           num_threads=args.threads, progress=not args.no_progress)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(stats.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
