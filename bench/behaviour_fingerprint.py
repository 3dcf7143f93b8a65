#!/usr/bin/env python3
"""Behaviour fingerprint of a checkout: what its public commands print and write, hashed.

    python bench/behaviour_fingerprint.py > after.json                 # this checkout
    python bench/behaviour_fingerprint.py --repo /work/wt/baseline > before.json
    python bench/behaviour_fingerprint.py --compare before.json after.json

Runs on CPU in a fresh temporary directory, through the public entry points only (python -m
megatron_ponder.demo / .train, tools/*.py, recipes/), never importing the package, so the
same script fingerprints a tree before and after a refactor:

- demo: `python -m megatron_ponder.demo` (as `make demo`, its training cut to --demo-steps;
  --demo-steps 200 is `make demo` exactly): the summary lines, the corpus, tokenizer and
  indexed dataset it builds, its metrics, config and checkpoints;
- train: a 12-step run of the demo recipe, smaller (H 64, L 64, global batch 8), stopped by
  train.exit_interval at step 8 (exit 3) and resumed to 12 by the same command: both
  outcomes, stdout, metrics.jsonl, config.yaml, every checkpoint (each tensor by name,
  common.pt by key, every file's bytes);
- every tool in tools/ on that run (or a tiny text cut from the demo corpus): stdout,
  stderr, exit code and the files it writes.

Normalised away (bench/README.md says why): wall-clock times, rates, MFU, ETA, dates, the
temporary directory's and the checkout's paths, memory addresses, wandb's own console lines
and the location prefix of Python warnings; time-like JSON keys (time, *_s, tokens_per_s,
mfu, peak_rss_mib, ...); the trainer's lock file, tensorboard event files and wandb's run
folder (wall times and random ids inside). One JSON object per part on stdout, then
`{"fingerprint": sha256, "parts": {part: sha256}}`. --compare prints the parts that differ
and, for each, the items (file, tensor, output line) that do; exit 0 equal, 1 different.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

THIS_REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 1800  # per command; a hang is a difference too, reported as exit "timeout"

# ---------------------------------------------------------------------------- normalising

# Keys of metrics.jsonl and sweep records whose values are wall-clock or machine-load
# measurements (dropped there only: elsewhere a key named "time" may be a vocabulary entry).
TIME_KEYS = {"time", "step_s", "tokens_per_s", "mfu", "cpu_s", "peak_rss_mib",
             "evaluation_cpu_s", "mtime_ns"}
# Cache file names keyed by a hash of a description that holds absolute paths.
CACHE_KEY = re.compile(r"[0-9a-f]{16,}")
# The trainer saves Python's and NumPy's global RNG states with each checkpoint but never
# seeds them (only torch's): they come from OS entropy at start-up, differ between two runs
# of one commit, and nothing in training draws from them. torch's state is compared.
UNSEEDED_RNG = ("python", "numpy")
TIME_PATTERNS = [
    (re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?( ?UTC)?"), "<date>"),
    (re.compile(r"\b\d{8}_\d{6}\b"), "<date>"),
    (re.compile(r"eta [\d.]+ ?(min|s|h)\b"), "eta <t>"),
    (re.compile(r"MFU [\d.]+%"), "MFU <mfu>"),
    (re.compile(r"[\d,]+(\.\d+)? ?(tok|tokens|samples|sequences|documents|docs|it|B|kB|KB|MB|"
                r"GB|MiB|GiB)/s\b"), "<rate>"),
    (re.compile(r"\b\d+(\.\d+)? ?(ms|s|sec|seconds|min|minutes)\b"), "<t>"),
]
PROGRESS_BAR = re.compile(r"\d+%\|.*\|")  # tqdm: elapsed times and rates, redrawn
ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
WARNING_SITE = re.compile(r"^\S+\.py:\d+: (\w*Warning): ")
TMP_PATH = re.compile(r"/tmp/[\w.-]+")


class Paths:
    """Replaces the run's own locations (work directory, checkout) by fixed names."""

    def __init__(self, work: Path, repo: Path):
        pairs = {str(work.resolve()): "<work>", str(work): "<work>",
                 str(repo.resolve()): "<repo>", str(repo): "<repo>"}
        self.pairs = sorted(pairs.items(), key=lambda kv: -len(kv[0]))  # longest first

    def __call__(self, text: str) -> str:
        for old, new in self.pairs:
            text = text.replace(old, new)
        return TMP_PATH.sub("<tmp>", text)


def normalise_output(text: str, paths: Paths) -> list[str]:
    """Console output -> lines without paths, timings and the noise of other libraries."""
    lines, skip_source = [], False
    for line in paths(text).splitlines():
        if skip_source and line.startswith("  "):
            skip_source = False  # the source line Python prints under a warning
            continue
        skip_source = False
        if line.startswith("wandb:") or PROGRESS_BAR.search(line):
            continue  # wandb's own banner (run ids, dates), progress bars (timings)
        if WARNING_SITE.match(line):
            line = WARNING_SITE.sub(r"<source>: \1: ", line)  # the file/line moves in a refactor
            skip_source = True
        line = ADDRESS.sub("0x<addr>", line)
        for pattern, replacement in TIME_PATTERNS:
            line = pattern.sub(replacement, line)
        lines.append(line.rstrip())
    return lines


def drop_time_keys(value, dropped: set):
    if isinstance(value, dict):
        kept = {}
        for key, item in value.items():
            if key in TIME_KEYS:
                dropped.add(str(key))
            else:
                kept[key] = drop_time_keys(item, dropped)
        return kept
    if isinstance(value, list):
        return [drop_time_keys(item, dropped) for item in value]
    return value


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)


# ---------------------------------------------------------------------------- hashing files

def hash_json_text(text: str, dropped: set | None) -> str:
    value = json.loads(text)
    if dropped is not None:
        value = drop_time_keys(value, dropped)
    return sha(canonical(value).encode())


def hash_jsonl(path: Path, paths: Paths, dropped: set) -> list:
    """metrics.jsonl and the like: every record, time-like keys dropped (kept readable)."""
    return [drop_time_keys(json.loads(line), dropped)
            for line in paths(path.read_text()).splitlines() if line.strip()]


TEXT_SUFFIXES = {".yaml", ".yml", ".md", ".html", ".txt", ".py", ".vocab", ".svg", ".csv"}


def hash_file(path: Path, paths: Paths, dropped: set, measurements: bool = False) -> str:
    """sha256 of a file's content; text with the run's paths replaced; JSON canonical,
    without the time-like keys if it holds `measurements` (a sweep record)."""
    if path.name == "manifest.json":
        return manifest_digest(path)
    if path.suffix == ".json":
        return hash_json_text(paths(path.read_text()), dropped if measurements else None)
    if path.suffix in TEXT_SUFFIXES:
        return sha(paths(path.read_text(errors="surrogateescape")).encode(
            errors="surrogateescape"))
    return sha(path.read_bytes())


def value_digest(value) -> str:
    """A stable digest of a loaded checkpoint value: tensors by dtype, shape and bytes."""
    # defer: torch and numpy, only when hashing a checkpoint (--compare and --help need none)
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        data = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
        return f"{value.dtype}{tuple(value.shape)}:{sha(data)}"
    if isinstance(value, np.ndarray):
        return f"{value.dtype}{value.shape}:{sha(np.ascontiguousarray(value).tobytes())}"
    if isinstance(value, (bytes, bytearray)):
        return sha(bytes(value))
    if isinstance(value, dict):
        return sha(canonical({str(k): value_digest(v) for k, v in value.items()}).encode())
    if isinstance(value, (list, tuple)):
        return sha(canonical([value_digest(v) for v in value]).encode())
    if isinstance(value, float):
        return repr(value)  # exact, unlike a rounded print
    if value is None or isinstance(value, (bool, int, str)):
        return canonical(value)
    return ADDRESS.sub("0x<addr>", f"{type(value).__name__}:{value!r}")


def flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def dcp_metadata_digest(path: Path, paths: Paths) -> str:
    """torch DCP's .metadata: every entry's name, kind, dtype, shape and chunks, the planner's
    key paths and the storage meta with the run's paths replaced. Left out: save_id (a uuid4
    drawn at every save) and storage_data (byte offsets into the shards, which move with the
    size of the unseeded RNG states' pickles)."""
    with path.open("rb") as file:
        metadata = pickle.load(file)
    meta = getattr(metadata, "storage_meta", None)
    if meta is not None:
        meta = dataclasses.replace(meta, save_id=None,
                                   checkpoint_id=paths(str(meta.checkpoint_id)))
    kept = (sorted((k, repr(v)) for k, v in metadata.state_dict_metadata.items()),
            sorted((k, repr(v)) for k, v in (metadata.planner_data or {}).items()),
            repr(meta))
    return sha(repr(kept).encode())


def manifest_digest(path: Path) -> str:
    """manifest.json, keeping only the names of .metadata and the .distcp shards (their
    bytes and sizes move with the unseeded RNG states; their content is compared above)."""
    manifest = json.loads(path.read_text())
    for name, entry in manifest.get("files", {}).items():
        if isinstance(entry, dict) and (name == ".metadata" or name.endswith(".distcp")):
            manifest["files"][name] = "compared by content"
    return sha(canonical(manifest).encode())


def hash_checkpoint(step_dir: Path, paths: Paths, dropped: set) -> dict:
    """Every tensor of a dist_checkpointing step directory by name (loaded through torch's
    own DCP reader, no project code), common.pt by key, and every file's bytes."""
    # defer: torch, only when hashing a checkpoint (--compare and --help need none)
    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    items = {}
    for file in sorted(p for p in step_dir.rglob("*") if p.is_file()):
        if file.name == ".metadata":
            digest = dcp_metadata_digest(file, paths)
        elif file.name == "manifest.json":
            digest = manifest_digest(file)
        elif file.suffix == ".distcp":
            # Its bytes (and size) hold the unseeded RNG states' pickles: its tensors are
            # compared one by one below.
            digest = "compared by content"
        else:
            digest = hash_file(file, paths, dropped)
        items[f"file {file.relative_to(step_dir)}"] = digest
    with tempfile.TemporaryDirectory() as tmp:
        merged = Path(tmp) / "all.pt"
        dcp_to_torch_save(step_dir, merged)
        tensors = flatten(torch.load(merged, weights_only=False))
    for name, value in sorted(tensors.items()):
        if name.startswith("rng_state") and isinstance(value, list):
            for rank, state in enumerate(value):
                for part, part_state in sorted(state.items()):
                    if part not in UNSEEDED_RNG:
                        items[f"tensor {name}[{rank}].{part}"] = value_digest(part_state)
            continue
        items[f"tensor {name}"] = value_digest(value)
    common = step_dir / "common.pt"
    if common.exists():
        state = flatten(torch.load(common, weights_only=False))
        for name, value in sorted(state.items()):
            if isinstance(value, str):
                value = paths(value)
            items[f"common {name}"] = value_digest(value)
    return items


# Written by a run but not deterministic: the lock names PID, host and start time;
# tensorboard's events and wandb's run folder hold wall times and random run ids.
RUN_EXCLUDED = (".trainer.lock", "tensorboard", "wandb")


def hash_run_dir(run: Path, paths: Paths, dropped: set) -> dict:
    """A training run directory: config, metrics, checkpoints, data caches."""
    items = {}
    if not run.exists():
        return {"missing": str(run.name)}
    for path in sorted(run.rglob("*")):
        rel = path.relative_to(run)
        if rel.parts[0] in RUN_EXCLUDED or not path.is_file():
            continue
        name = CACHE_KEY.sub("<key>", str(rel))
        if path.name == "metrics.jsonl":
            items[f"jsonl {name}"] = hash_jsonl(path, paths, dropped)
        elif "checkpoints" in rel.parts and any(p.startswith("step_") for p in rel.parts):
            continue  # below, per step directory
        else:
            while f"file {name}" in items:  # two caches of one kind: keep both
                name += "+"
            items[f"file {name}"] = hash_file(path, paths, dropped, measurements=True)
    for step_dir in sorted(run.glob("checkpoints/step_*")):
        for key, value in hash_checkpoint(step_dir, paths, dropped).items():
            items[f"{step_dir.relative_to(run)} {key}"] = value
    return items


def hash_tree(root: Path, paths: Paths, dropped: set, measurements: bool = False) -> dict:
    """Files a tool wrote (not a run directory): each file's normalised content."""
    if not root.exists():
        return {"missing": root.name}
    if root.is_file():
        return {f"file {root.name}": hash_file(root, paths, dropped, measurements)}
    return {f"file {p.relative_to(root)}": hash_file(p, paths, dropped, measurements)
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------- running

class Runner:
    def __init__(self, repo: Path, work: Path):
        self.repo, self.work = repo, work
        self.paths = Paths(work, repo)
        self.failures: list[str] = []
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("PONDER_", "WANDB_", "PYTHON"))}
        mpl = work / ".matplotlib"
        mpl.mkdir(parents=True, exist_ok=True)
        # matplotlib salts SVG ids with a random uuid unless told otherwise.
        (mpl / "matplotlibrc").write_text("svg.hashsalt: behaviour-fingerprint\n")
        self.env.update({
            "PYTHONPATH": str(repo), "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
            "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false",
            "MPLCONFIGDIR": str(mpl), "MPLBACKEND": "Agg", "SOURCE_DATE_EPOCH": "0",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})

    def run(self, name: str, args: list[str], expect: tuple[int, ...] = (0,)) -> dict:
        """Run `python ARGS` in the work directory; its normalised outcome."""
        start = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, *args], cwd=self.work, env=self.env,
                                  capture_output=True, text=True, errors="replace",
                                  timeout=TIMEOUT_S)
            code, out, err = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as timeout:
            code, out, err = "timeout", str(timeout.stdout or ""), str(timeout.stderr or "")
        elapsed = time.perf_counter() - start
        print(f"[fingerprint] {name}: exit {code} in {elapsed:.0f} s", file=sys.stderr,
              flush=True)
        if code not in expect:
            self.failures.append(f"{name}: exit {code}")
            print(f"[fingerprint] {name} stderr (tail):\n{err[-3000:]}", file=sys.stderr)
        return {"exit": code, "stdout": normalise_output(out, self.paths),
                "stderr": normalise_output(err, self.paths)}

    def tool(self, script: str) -> str:
        return str(self.repo / "tools" / script)


def part_record(name: str, items: dict, dropped: set) -> dict:
    return {"part": name, "sha256": sha(canonical(items).encode()), "items": items,
            "dropped_keys": sorted(dropped)}


# ---------------------------------------------------------------------------- the parts

DEMO_DATA = "runs/demo/data"
RUN = "runs/fp12"
TRAIN_OVERRIDES = [
    f"train.output_dir={RUN}", "train.steps=12", "train.save_interval=4",
    "train.keep_checkpoints=3", "train.log_interval=1", "train.eval_interval=6",
    "train.eval_batches=2", "model.hidden_size=64", "model.max_position_embeddings=64",
    "data.seq_length=64", "train.micro_batch_size=4", "train.global_batch_size=8",
    "logging.run_name=fingerprint",
]


def part_demo(r: Runner, demo_steps: int | None) -> dict:
    overrides = [] if demo_steps is None else [f"train.steps={demo_steps}"]
    dropped: set = set()
    outcome = r.run("demo", ["-m", "megatron_ponder.demo", *overrides])
    stdout = outcome["stdout"]
    summary = stdout[stdout.index("=== demo summary ==="):] if "=== demo summary ===" in \
        stdout else stdout
    items = {"command overrides": overrides, "exit": outcome["exit"], "summary": summary,
             "stderr": outcome["stderr"]}
    items.update({f"data {k}": v for k, v in
                  hash_tree(r.work / DEMO_DATA, r.paths, dropped).items()})
    items.update({f"run {k}": v for k, v in
                  hash_run_dir(r.work / "runs/demo/ponderlm3", r.paths, dropped).items()})
    return part_record("demo", items, dropped)


def part_train(r: Runner) -> dict:
    """Stopped at step 8 by train.exit_interval (exit 3), resumed by the same command."""
    dropped: set = set()
    recipe = str(r.repo / "recipes" / "demo_cpu.yaml")
    first = r.run("train (to exit_interval 8)",
                  ["-m", "megatron_ponder.train", recipe, *TRAIN_OVERRIDES,
                   "train.exit_interval=8"], expect=(3,))
    second = r.run("train (resumed to 12)",
                   ["-m", "megatron_ponder.train", recipe, *TRAIN_OVERRIDES,
                    "train.exit_interval=8"])
    items = {"first": first, "resumed": second}
    items.update(hash_run_dir(r.work / RUN, r.paths, dropped))
    return part_record("train", items, dropped)


def tiny_text(r: Runner) -> None:
    """The first 60 documents of the demo's corpus, as JSONL and as blank-line text."""
    corpus = r.work / DEMO_DATA / "corpus.jsonl"
    out = r.work / "text"
    out.mkdir(exist_ok=True)
    docs = []
    if corpus.exists():
        with corpus.open() as lines:
            for line in lines:
                docs.append(json.loads(line)["text"])
                if len(docs) == 60:
                    break
    (out / "tiny.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    (out / "tiny.txt").write_text("\n\n".join(d.replace("\n\n", "\n") for d in docs) + "\n")


def tool_part(r: Runner, name: str, args: list[str], outputs: list[str],
              expect: tuple[int, ...] = (0,), run_dirs: tuple[str, ...] = (),
              measurements: bool = False, ranks: int = 1) -> dict:
    """One tool invocation: its outcome, the files (`outputs`) and runs it wrote. With
    several `ranks` (torchrun) their lines interleave in any order: compared sorted."""
    dropped: set = set()
    items = dict(r.run(name, args, expect))
    if ranks > 1:
        items["stdout"], items["stderr"] = sorted(items["stdout"]), sorted(items["stderr"])
    for out in outputs:
        for key, value in hash_tree(r.work / out, r.paths, dropped, measurements).items():
            items[f"{out} {key}"] = value
    for run in run_dirs:
        for key, value in hash_run_dir(r.work / run, r.paths, dropped).items():
            items[f"{run} {key}"] = value
    return part_record(name, items, dropped)


def tiny_sweep(r: Runner) -> str:
    """A two-run sweep (vanilla and PonderLM-3, H 32, 4 steps) on the tiny text's data."""
    text = r.work / "text"
    sweep = {
        "name": "fingerprint", "output_dir": str(r.work / "sweep/out"),
        "base": {
            "model": {"vocab_size": 512, "max_position_embeddings": 16},
            "data": {"tokenizer": str(text / "sp.model"), "prefixes": [str(text / "sp_doc")],
                     "split": "90,10,0", "seq_length": 16},
            "train": {"steps": 4, "micro_batch_size": 2, "global_batch_size": 4, "lr": 1e-3,
                      "log_interval": 1, "eval_interval": 1000, "eval_batches": 0,
                      "save_interval": 2, "keep_checkpoints": 1},
            "logging": {"tensorboard": False, "wandb": "disabled"},
        },
        "sizes": {"h32": {"hidden_size": 32, "num_layers": 2, "num_attention_heads": 4}},
        "seeds": [3],
        "grid": [{"size": "h32", "method": "vanilla", "k": 0},
                 {"size": "h32", "method": "ponderlm2", "k": 2},
                 {"size": "h32", "method": "ponderlm3", "k": 2, "lambda": 0.01}],
        "eval": {"taus": [1e-4, 0.3], "batches": 2, "micro_batch_size": 2,
                 "budgets": [0.9], "calibration_batches": 2},
    }
    path = r.work / "sweep" / "fingerprint.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return str(path.relative_to(r.work))


def text_tool_parts(r: Runner):
    """Tokenizers, preprocessing and a sweep on the tiny text (one chain: each step needs the
    one before)."""
    t = r.tool
    yield tool_part(r, "train_tokenizer sentencepiece",
                    [t("train_tokenizer.py"), "--input", "text/tiny.jsonl", "--output-prefix",
                     "text/sp", "--vocab-size", "512"], ["text/sp.model", "text/sp.vocab"])
    yield tool_part(r, "train_tokenizer hf-bpe",
                    [t("train_tokenizer.py"), "--kind", "hf-bpe", "--input", "text/tiny.txt",
                     "--output-prefix", "text/hf", "--vocab-size", "512"], ["text/hf"])
    yield tool_part(r, "preprocess_data sentencepiece",
                    [t("preprocess_data.py"), "--input", "text/tiny.jsonl", "--tokenizer",
                     "text/sp.model", "--output-prefix", "text/sp_doc", "--no-progress"],
                    ["text/sp_doc.bin", "text/sp_doc.idx"])
    yield tool_part(r, "preprocess_data hf-bpe, 2 workers",
                    [t("preprocess_data.py"), "--input", "text/tiny.txt", "--tokenizer",
                     "text/hf", "--output-prefix", "text/hf_doc", "--workers", "2",
                     "--no-progress"], ["text/hf_doc.bin", "text/hf_doc.idx"])
    yield tool_part(r, "preprocess_data partition 1 of 2",
                    [t("preprocess_data.py"), "--input", "text/tiny.jsonl", "text/tiny.txt",
                     "--tokenizer", "text/sp.model", "--output-prefix", "text/parts",
                     "--partition", "1", "--partitions", "2", "--no-progress"],
                    ["text/parts.part-00001-of-00002.bin", "text/parts.part-00001-of-00002.idx"])
    sweep = tiny_sweep(r)
    yield tool_part(r, "sweep list (before)", [t("sweep.py"), "list", sweep], [])
    yield tool_part(r, "sweep run", [t("sweep.py"), "run", sweep, "--threads", "1"],
                    ["sweep/out/records"], measurements=True)
    yield tool_part(r, "sweep list (after)", [t("sweep.py"), "list", sweep], [])
    yield tool_part(r, "plot_pareto",
                    [t("plot_pareto.py"), "sweep/out/records", "--out", "plots"], ["plots"])


def checkpoint_tool_parts(r: Runner):
    """Every tool that reads the 12-step run's checkpoints (or a recipe)."""
    t = r.tool
    for folder in ("eval", "show", "conv"):
        (r.work / folder).mkdir(exist_ok=True)
    yield tool_part(r, "plan_memory paper 410m ponderlm3",
                    [t("plan_memory.py"), str(r.repo / "recipes/paper/410m/ponderlm3.yaml"),
                     "--gpus", "8", "--gpu-memory-gb", "80"], [])
    yield tool_part(r, "plan_memory demo --cpu --json",
                    [t("plan_memory.py"), str(r.repo / "recipes/demo_cpu.yaml"),
                     "train.recompute=layers", "--cpu", "--gpus", "1", "--json"], [])
    yield tool_part(r, "eval_ppl taus",
                    [t("eval_ppl.py"), RUN, "--taus", "1e-4", "0.1", "0.5", "--samples", "8",
                     "--batch-size", "4", "--output", "eval/ppl.json"], ["eval/ppl.json"])
    yield tool_part(r, "eval_ppl flops budget",
                    [t("eval_ppl.py"), RUN, "--flops-budget", "0.9", "--samples", "4",
                     "--batch-size", "4", "--calibration-samples", "4", "--output",
                     "eval/budget.json"], ["eval/budget.json"], expect=(0, 2))
    yield tool_part(r, "generate greedy",
                    [t("generate.py"), f"{RUN}/checkpoints", "--prompt", "The tutorial",
                     "--prompt", "", "--max-new-tokens", "24", "--show-steps"], [])
    yield tool_part(r, "generate sampled json",
                    [t("generate.py"), f"{RUN}/checkpoints/step_0000008", "--prompt",
                     "import os", "--max-new-tokens", "16", "--temperature", "0.8",
                     "--top-k", "50", "--top-p", "0.9", "--seed", "7", "--json"], [])
    yield tool_part(r, "show_ponder",
                    [t("show_ponder.py"), RUN, "--text", "The river flows past the old mill.",
                     "--output", "show/ponder"], ["show"])
    yield tool_part(r, "ponder_analysis",
                    [t("ponder_analysis.py"), RUN, "--taus", "1e-4", "0.05", "--samples", "8",
                     "--batch-size", "4", "--output", "analysis"], ["analysis"])
    yield tool_part(r, "export_hf",
                    [t("export_hf.py"), RUN, "exports/hf"], ["exports/hf"])
    yield tool_part(r, "convert_checkpoint import-hf",
                    [t("convert_checkpoint.py"), "import-hf", "exports/hf", "conv/from_hf"],
                    [], run_dirs=("conv/from_hf",))
    yield tool_part(r, "convert_checkpoint reshard tp2",
                    [t("convert_checkpoint.py"), "reshard", RUN, "conv/tp2",
                     "--tensor-parallel", "2"], [], run_dirs=("conv/tp2",), ranks=2)
    step = r.work / "conv/unverified/step_0000012"
    if (r.work / RUN / "checkpoints/step_0000012").exists():
        shutil.copytree(r.work / RUN / "checkpoints/step_0000012", step)
        (step / "manifest.json").unlink(missing_ok=True)
    yield tool_part(r, "convert_checkpoint add-manifest",
                    [t("convert_checkpoint.py"), "add-manifest", str(step.relative_to(r.work))],
                    ["conv/unverified/step_0000012/manifest.json"])


def tool_parts(r: Runner) -> list[dict]:
    """The two independent chains side by side (each tool is mostly a single-threaded
    interpreter start); the records in a fixed order whatever finishes first."""
    tiny_text(r)
    with ThreadPoolExecutor(max_workers=2) as pool:
        text = pool.submit(lambda: list(text_tool_parts(r)))
        checkpoints = pool.submit(lambda: list(checkpoint_tool_parts(r)))
        return text.result() + checkpoints.result()


def fingerprint(repo: Path, work: Path, demo_steps: int | None, parts: set | None) -> int:
    r = Runner(repo, work)
    print(f"[fingerprint] {repo} in {work}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    summary = {}

    def emit(record: dict) -> None:
        summary[record["part"]] = record["sha256"]
        print(json.dumps(record, sort_keys=True), flush=True)

    if parts is None or "demo" in parts:
        emit(part_demo(r, demo_steps))
    if parts is None or "train" in parts:
        emit(part_train(r))
    if parts is None or "tools" in parts:
        for record in tool_parts(r):
            emit(record)
    print(json.dumps({"fingerprint": sha(canonical(summary).encode()), "parts": summary},
                     sort_keys=True), flush=True)
    print(f"[fingerprint] done in {time.perf_counter() - start:.0f} s; "
          f"{len(r.failures)} unexpected exit code(s): {r.failures}", file=sys.stderr)
    return 1 if r.failures else 0


# ---------------------------------------------------------------------------- comparing

def read_output(path: Path) -> tuple[dict, dict]:
    """(part name -> record, final line) of a saved fingerprint output."""
    records, final = {}, {}
    for line in path.read_text().splitlines():
        if not line.startswith("{"):
            continue
        value = json.loads(line)
        if "part" in value:
            records[value["part"]] = value
        elif "fingerprint" in value:
            final = value
    if not final:
        raise SystemExit(f"error: {path} has no final fingerprint line (an unfinished run?)")
    return records, final


def show_item(key: str, a, b) -> None:
    if isinstance(a, (list, dict)) and isinstance(b, (list, dict)) and key != "exit":
        a_lines = [canonical(x) if not isinstance(x, str) else x
                   for x in (a if isinstance(a, list) else [a])]
        b_lines = [canonical(x) if not isinstance(x, str) else x
                   for x in (b if isinstance(b, list) else [b])]
        for line in list(difflib.unified_diff(a_lines, b_lines, "A", "B", lineterm="", n=1))[:40]:
            print(f"      {line}")
    else:
        print(f"      A: {str(a)[:200]}\n      B: {str(b)[:200]}")


def compare(a_path: Path, b_path: Path) -> int:
    a, a_final = read_output(a_path)
    b, b_final = read_output(b_path)
    differ = [p for p in a_final["parts"] if p in b_final["parts"]
              and a_final["parts"][p] != b_final["parts"][p]]
    only_a = [p for p in a_final["parts"] if p not in b_final["parts"]]
    only_b = [p for p in b_final["parts"] if p not in a_final["parts"]]
    for part in differ:
        print(f"part differs: {part}")
        items_a, items_b = a[part]["items"], b[part]["items"]
        for key in sorted(set(items_a) | set(items_b)):
            if items_a.get(key) != items_b.get(key):
                print(f"    {key}" + ("" if key in items_a else "  (only in B)")
                      + ("" if key in items_b else "  (only in A)"))
                if key in items_a and key in items_b:
                    show_item(key, items_a[key], items_b[key])
    for part in only_a:
        print(f"part only in {a_path}: {part}")
    for part in only_b:
        print(f"part only in {b_path}: {part}")
    same = a_final["fingerprint"] == b_final["fingerprint"]
    print(json.dumps({"equal": same, "differ": differ, "only_in_a": only_a,
                      "only_in_b": only_b, "a": a_final["fingerprint"],
                      "b": b_final["fingerprint"]}))
    return 0 if same else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--repo", type=Path, default=THIS_REPO,
                        help="checkout to fingerprint (default: this script's)")
    parser.add_argument("--work", type=Path, default=None,
                        help="empty directory to run in (default: a temporary one, removed)")
    parser.add_argument("--demo-steps", type=int, default=4,
                        help="training steps of the demo part (200 = make demo as shipped)")
    parser.add_argument("--parts", nargs="+", choices=("demo", "train", "tools"),
                        help="only these parts (train needs demo's data; tools need both)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"),
                        help="compare two saved outputs instead of running")
    args = parser.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    repo = args.repo.resolve()
    if not (repo / "megatron_ponder").is_dir() or not (repo / "tools").is_dir():
        parser.error(f"--repo {repo} is not a megatron-ponder checkout (no megatron_ponder/ "
                     "and tools/)")
    if args.work is not None:
        if args.work.exists() and any(args.work.iterdir()):
            parser.error(f"--work {args.work} is not empty")
        args.work.mkdir(parents=True, exist_ok=True)
        return fingerprint(repo, args.work.resolve(), args.demo_steps,
                           set(args.parts) if args.parts else None)
    with tempfile.TemporaryDirectory(prefix="fingerprint_") as work:
        return fingerprint(repo, Path(work).resolve(), args.demo_steps,
                           set(args.parts) if args.parts else None)


if __name__ == "__main__":
    sys.exit(main())
