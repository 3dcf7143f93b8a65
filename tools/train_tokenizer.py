#!/usr/bin/env python3
"""Train a tokenizer on text/JSONL files: sentencepiece (BPE or unigram, byte fallback) or a
Hugging Face byte-level BPE tokenizer.json.

Examples:
    python tools/train_tokenizer.py --input corpus.jsonl --output-prefix data/tok --vocab-size 8192

writes data/tok.model (and data/tok.vocab, for reading); use it as data.tokenizer.

    python tools/train_tokenizer.py --kind hf-bpe --input corpus.jsonl --output-prefix data/tok \
        --vocab-size 32000

writes the folder data/tok/ (tokenizer.json, tokenizer_config.json naming the EOS token
<|endoftext|>); use the folder as data.tokenizer. Both are deterministic.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KINDS = ("sentencepiece", "hf-bpe")

FORMATS = ("Inputs: .jsonl/.json files hold one JSON object per line with the document in a "
           "string field (--json-key, default 'text'); any other file is UTF-8 text whose "
           "documents are separated by blank lines.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " " + FORMATS,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--input", nargs="+", required=True, metavar="FILE",
                        help="text or JSONL files to train on")
    parser.add_argument("--kind", choices=KINDS, default="sentencepiece",
                        help="sentencepiece .model, or hf-bpe: a Hugging Face byte-level BPE "
                        "tokenizer.json")
    parser.add_argument("--output-prefix", required=True,
                        help="sentencepiece: writes PREFIX.model and PREFIX.vocab; hf-bpe: "
                        "writes the folder PREFIX/ (tokenizer.json, tokenizer_config.json)")
    parser.add_argument("--vocab-size", type=int, required=True,
                        help="sentencepiece: exact vocabulary size (>= 259 with byte fallback); "
                        "hf-bpe: at most this many (>= 257), fewer if the corpus has no more "
                        "merges")
    parser.add_argument("--eos-token", default="<|endoftext|>",
                        help="hf-bpe: the end-of-document token (id 0)")
    parser.add_argument("--model-type", choices=("bpe", "unigram"), default="bpe",
                        help="sentencepiece only")
    parser.add_argument("--no-byte-fallback", action="store_true",
                        help="sentencepiece only: map unknown characters to <unk> instead of their "
                        "UTF-8 bytes")
    parser.add_argument("--json-key", default="text", help="field of a JSONL record to read")
    parser.add_argument("--input-sentence-size", type=int, default=2_000_000,
                        help="sample at most this many lines (0 = all)")
    parser.add_argument("--threads", type=int, default=1,
                        help="training threads; only 1 is guaranteed bit-reproducible")
    parser.add_argument("--seed", type=int, default=1234, help="sentencepiece random seed")
    parser.add_argument("--verbose", action="store_true", help="show sentencepiece's log")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    sys.path.insert(0, str(REPO))  # imported after parsing: --help needs no torch
    # defer: torch and the tokenizer libraries, only after parsing: --help stays fast
    from megatron_ponder.config import ConfigError
    from megatron_ponder.data.tokenizer import Tokenizer
    from megatron_ponder.data.tokenizer_training import train_bpe_tokenizer, train_tokenizer
    from megatron_ponder.run.exit_codes import EXIT_BAD_INPUT

    if args.kind == "hf-bpe":
        try:
            path = train_bpe_tokenizer(args.input, args.output_prefix, args.vocab_size,
                                       json_key=args.json_key, eos_token=args.eos_token)
            tokenizer = Tokenizer.load(path)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"wrote {path}/tokenizer.json (byte-level BPE, vocab size {tokenizer.vocab_size}, "
              f"end-of-document {args.eos_token} id {tokenizer.eod_id}) in "
              f"{time.perf_counter() - start:.1f} s")
        return 0
    try:
        path = train_tokenizer(
            args.input, args.output_prefix, args.vocab_size, args.model_type,
            byte_fallback=not args.no_byte_fallback, json_key=args.json_key,
            input_sentence_size=args.input_sentence_size, num_threads=args.threads,
            seed=args.seed, verbose=args.verbose)
        tokenizer = Tokenizer.load(path)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {path} ({args.model_type}, vocab size {tokenizer.vocab_size}, end-of-document "
          f"id {tokenizer.eod_id}, byte fallback {'off' if args.no_byte_fallback else 'on'}) "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
