#!/usr/bin/env python3
"""Tokenise a corpus into a megatron indexed dataset (PREFIX.bin + PREFIX.idx).

Examples:
    python tools/preprocess_data.py --input corpus.jsonl.zst --tokenizer data/tok.model \\
        --output-prefix data/corpus --workers 8
    # one part per Slurm array task, then the merge (slurm/preprocess.sbatch does both):
    python tools/preprocess_data.py --input 'fineweb/*.parquet' --tokenizer data/tok.model \\
        --output-prefix data/fw --workers 8 --partition 3 --partitions 16
    python tools/preprocess_data.py merge --output-prefix data/fw --partitions 16

Then list data/corpus in data.prefixes. Every document ends with the end-of-document token.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

FORMATS = (
    "Inputs: files, directories (every file under them whose name does not start with '.', "
    "sorted by path) and glob patterns ('**' recurses; matches sorted by path), read in the "
    "order given. By name: .jsonl/.json/.ndjson, optionally .gz/.bz2/.xz/.zst compressed, hold "
    "one JSON object per line, the document in a string field; .parquet holds the documents "
    "in a string column, read one row group at a time; a Hugging Face save_to_disk folder "
    "(state.json + dataset_info.json) is read as its .arrow files; any other file is UTF-8 "
    "text in which documents are separated by blank lines. Empty documents are skipped. "
    "Output files are written under temporary names and renamed at the end, so an "
    "interrupted run leaves no half-written pair. Exit code: 0 written (or a complete part "
    "kept), 2 bad input (named), 1 another failure.")


def _merge_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="preprocess_data.py merge",
        description="Join PREFIX.part-*-of-N into PREFIX.bin/.idx, after checking every part "
                    "is complete (its record and checksums) and made from the same inputs.")
    parser.add_argument("--output-prefix", required=True, help="the prefix the parts were "
                        "written with; writes PREFIX.bin and PREFIX.idx")
    parser.add_argument("--partitions", type=int, required=True, help="N, as for the parts")
    args = parser.parse_args(argv)
    return _run(lambda indexed: indexed.merge(args.output_prefix, args.partitions))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["merge"]:
        return _merge_main(argv[1:])
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " " + FORMATS + " Subcommand: 'merge' (see "
        "'preprocess_data.py merge --help') joins the parts of a partitioned run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--input", nargs="+", required=True, metavar="PATH",
                        help="files, directories or glob patterns, read in this order")
    parser.add_argument("--tokenizer", required=True,
                        help="sentencepiece .model, or Hugging Face tokenizer folder "
                        "with tokenizer.json (or that file)")
    parser.add_argument("--eod-token", default="",
                        help="end-of-document token appended to every document (default: the "
                        "tokenizer's EOS); must match the recipe's data.eod_token")
    parser.add_argument("--output-prefix", required=True,
                        help="writes PREFIX.bin and PREFIX.idx (with --partitions: "
                             "PREFIX.part-0000I-of-0000N.bin/.idx/.json)")
    parser.add_argument("--text-key", "--json-key", dest="text_key", default="text",
                        help="JSON field or Parquet/Arrow column holding the text")
    parser.add_argument("--workers", type=int, default=1,
                        help="encoding processes (output identical for any number)")
    parser.add_argument("--threads", type=int, default=1,
                        help="tokenizer threads inside one process (with --workers 1)")
    parser.add_argument("--partition", type=int, help="I: write only part I of N")
    parser.add_argument("--partitions", type=int, help="N: the corpus is split in N parts")
    parser.add_argument("--no-progress", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)

    def work(indexed):
        # defer: the package until _run() put REPO on sys.path
        from megatron_ponder.data.tokenizer import Tokenizer

        tokenizer = Tokenizer.load(args.tokenizer, args.eod_token)
        return indexed.preprocess(
            args.input, tokenizer, args.output_prefix, json_key=args.text_key,
            num_threads=args.threads, workers=args.workers, partition=args.partition,
            partitions=args.partitions, progress=not args.no_progress)

    return _run(work)


def _run(work) -> int:
    # megatron-core announces the GPU-only accelerations it cannot find: expected on CPU.
    warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine).*")
    sys.path.insert(0, str(REPO))  # imported after parsing: --help needs no torch
    # defer: torch and megatron (seconds), only after parsing: --help stays fast
    from megatron_ponder.config import ConfigError
    from megatron_ponder.data import indexed
    from megatron_ponder.run.exit_codes import EXIT_BAD_INPUT

    try:
        stats = work(indexed)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(stats.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
