"""Preprocessing speed and memory (issue 22): tools/preprocess_data.py's pipeline against
the bare tokenizer, one worker against two, and peak memory on large .jsonl.zst inputs.

Corpus: generated, deterministic (seed 0): documents of 40-1500 words drawn from the word
frequencies of the embedded default corpus (English prose from the interpreter), with line
breaks, written as .jsonl.zst (about 3x compression, like web text). Tokenizers, trained here
on that text: sentencepiece BPE (tools/train_tokenizer.py's settings) and a Hugging Face
byte-level BPE `tokenizer.json` (tools/train_tokenizer.py --kind hf-bpe), both with --vocab pieces,
loaded through the project's one Tokenizer interface.
HF's own thread pool is switched off (TOKENIZERS_PARALLELISM=false): every number is per
process.

Measured (the same --speed-mb of text for each; the fastest of --repeats rounds, since other
jobs on a shared machine only ever add time):
- tokens_per_s_per_worker[sp|hf]: preprocess() with one worker, tokens written per second;
- pipeline_over_tokenizer[sp|hf]: that over the bare `encode_batch` of the same documents,
  already in memory (target >= 0.8: reading, decompressing, parsing, writing cost <= 1/5);
  pipeline_over_tokenizer_cpu_time: the same ratio from this process's CPU time, which a
  loaded machine disturbs far less than wall time;
- workers_2_over_1: sentencepiece, two workers over one (target >= 1.7 on 2 cores);
- peak_rss_mb: the CLI with two workers on generated .jsonl.zst files of --rss-sizes-mb
  (compressed MB); peak of the summed proportional set size (PSS: forked workers share the
  parent's pages) of the process tree, sampled every 0.1 s (target <= 600, flat in size).
Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

os.environ["TOKENIZERS_PARALLELISM"] = "false"  # before `tokenizers` is imported
warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402

from megatron_ponder.data import sources  # noqa: E402
from megatron_ponder.data.corpus import default_documents  # noqa: E402
from megatron_ponder.data.indexed import preprocess  # noqa: E402
from megatron_ponder.data.tokenizer import Tokenizer, train_tokenizer  # noqa: E402
from megatron_ponder.data.tokenizer_training import train_bpe_tokenizer  # noqa: E402


def word_pool() -> np.ndarray:
    """Every word of the embedded corpus, with repeats: sampling it keeps their frequencies."""
    words = []
    for record in default_documents():
        words += re.findall(r"\S+", record["text"])
    return np.array(words + ["\n"] * (len(words) // 40), dtype=object)


def documents(pool: np.ndarray, text_bytes: int, seed: int):
    """Generated documents until `text_bytes` of text, deterministic for the seed."""
    rng = np.random.default_rng(seed)
    total = 0
    while total < text_bytes:
        for length in rng.integers(40, 1500, size=256):
            text = " ".join(pool[rng.integers(0, len(pool), size=length)]).replace(" \n ", "\n")
            total += len(text)
            yield text


def write_zst(path: Path, pool, text_bytes: int = 0, compressed_bytes: int = 0,
              seed: int = 0) -> list[str]:
    """A .jsonl.zst of generated documents, up to `text_bytes` of text or `compressed_bytes`
    on disk; returns the documents when sized by text (kept for the bare timing)."""
    kept = []
    with pa.output_stream(str(path), compression="zstd") as stream:
        lines = []
        for text in documents(pool, text_bytes or 1 << 62, seed):
            lines.append(json.dumps({"text": text}))
            if text_bytes:
                kept.append(text)
            if len(lines) == 1024:
                stream.write(("\n".join(lines) + "\n").encode())
                lines = []
                if compressed_bytes and os.path.getsize(path) >= compressed_bytes:
                    break
        if lines:
            stream.write(("\n".join(lines) + "\n").encode())
    return kept


def fastest(repeats: int, work) -> tuple[float, float]:
    """(fastest wall seconds, fastest CPU seconds of this process) over `repeats` rounds.
    CPU time barely moves with the load of a shared machine: the one-process ratios are
    also reported from it."""
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        work()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best, best_cpu


def speeds(tok, texts: list[str], path: Path, out: Path, repeats: int, workers=(1,)) -> dict:
    tokens = sum(len(ids) + 1 for ids in tok.encode_batch(texts))
    bare, bare_cpu = fastest(repeats, lambda: tok.encode_batch(texts, num_threads=1))
    result = {"tokens": tokens, "bare_tokens_per_s": tokens / bare,
              "bare_tokens_per_cpu_s": tokens / bare_cpu}
    for n in workers:
        seconds, cpu = fastest(repeats, lambda: preprocess([path], tok, out / f"w{n}",
                                                           workers=n, progress=False))
        result[f"workers_{n}_tokens_per_s"] = tokens / seconds
        if n == 1:  # in this process: its CPU time is the whole pipeline's
            result["workers_1_tokens_per_cpu_s"] = tokens / cpu
    return result


def peak_pss_mb(command: list[str]) -> tuple[float, float]:
    """(peak summed PSS of the process tree in MB, seconds) of a command."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    peak, done = 0.0, threading.Event()

    def sample():
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                total = 0
                for p in tree:
                    try:
                        total += p.memory_full_info().pss
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        pass
                peak = max(peak, total / 2**20)
            except psutil.NoSuchProcess:
                return
            time.sleep(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    _, err = proc.communicate()
    done.set()
    thread.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{command} failed: {err[-2000:]}")
    return peak, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speed-mb", type=float, default=40, help="text for the speed runs")
    parser.add_argument("--rss-sizes-mb", default="75,300",
                        help="compressed sizes of the .jsonl.zst files for peak_rss_mb")
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dir", help="work directory (default: a temporary one)")
    args = parser.parse_args(argv)
    sizes = [float(s) for s in args.rss_sizes_mb.split(",") if s]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        pool = word_pool()
        sample = tmp / "sample.jsonl.zst"
        texts = write_zst(sample, pool, text_bytes=int(args.speed_mb * 1e6), seed=0)
        train_texts = texts[: max(1, len(texts) // 4)]
        (tmp / "train.txt").write_text("\n\n".join(train_texts))
        sp = Tokenizer.load(train_tokenizer([tmp / "train.txt"], tmp / "sp", args.vocab,
                                            input_sentence_size=300_000))
        hf = Tokenizer.load(train_bpe_tokenizer([tmp / "train.txt"], tmp / "bpe", args.vocab))
        sp_speed = speeds(sp, texts, sample, tmp, args.repeats, workers=(1, 2))
        hf_speed = speeds(hf, texts, sample, tmp, args.repeats)
        del texts
        rss = {}
        for size in sizes:
            path = tmp / f"rss{size:g}.jsonl.zst"
            write_zst(path, pool, compressed_bytes=int(size * 1e6), seed=1)
            peak, seconds = peak_pss_mb(
                [sys.executable, "tools/preprocess_data.py", "--input", str(path),
                 "--tokenizer", str(sp.path), "--output-prefix", str(tmp / f"rss{size:g}"),
                 "--workers", "2", "--no-progress"])
            rss[f"{size:g}"] = {"peak_pss_mb": round(peak, 1), "seconds": round(seconds, 1),
                                "compressed_mb": round(path.stat().st_size / 1e6, 1)}
            for leftover in tmp.glob(f"rss{size:g}*"):
                leftover.unlink()
    result = {
        "tokens_per_s_per_worker": {"sentencepiece": round(sp_speed["workers_1_tokens_per_s"]),
                                    "hf_bpe": round(hf_speed["workers_1_tokens_per_s"])},
        "bare_tokenizer_tokens_per_s": {"sentencepiece": round(sp_speed["bare_tokens_per_s"]),
                                        "hf_bpe": round(hf_speed["bare_tokens_per_s"])},
        "pipeline_over_tokenizer": {
            "sentencepiece": round(sp_speed["workers_1_tokens_per_s"]
                                   / sp_speed["bare_tokens_per_s"], 3),
            "hf_bpe": round(hf_speed["workers_1_tokens_per_s"] / hf_speed["bare_tokens_per_s"], 3)},
        "pipeline_over_tokenizer_cpu_time": {
            name: round(d["workers_1_tokens_per_cpu_s"] / d["bare_tokens_per_cpu_s"], 3)
            for name, d in (("sentencepiece", sp_speed), ("hf_bpe", hf_speed))},
        "workers_2_over_1": round(sp_speed["workers_2_tokens_per_s"]
                                  / sp_speed["workers_1_tokens_per_s"], 3),
        "peak_rss_mb": max(r["peak_pss_mb"] for r in rss.values()) if rss else None,
        "peak_rss_by_size": rss,
        "speed_tokens": sp_speed["tokens"], "vocab": args.vocab,
        "load_average": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
        "chunk_bytes": sources.CHUNK_BYTES,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
