"""slurm/preprocess.sbatch on the real two-node Slurm: `submit 3` runs a three-task array
(one part each) and a merge that waits for it; the merged pair is byte-identical to a
one-process run. (That a rerun keeps complete parts and redoes damaged ones is tested in
process, in tests/faults/test_bad_input_corpora.py: a second round of jobs here would double
the test's time.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from slurm_jobs import ROOT, Job

pytestmark = pytest.mark.slurm

JOB_TIMEOUT_S = 600


def corpus(directory: Path) -> list[str]:
    """A Parquet file of 4 row groups and a .jsonl.zst: a few seconds of work."""
    texts = [f"document {i}: " + "some words of text " * (i % 17 + 1) for i in range(400)]
    pq.write_table(pa.table({"text": texts[:200]}), directory / "a.parquet", row_group_size=50)
    with pa.output_stream(str(directory / "b.jsonl.zst"), compression="zstd") as stream:
        stream.write("".join(json.dumps({"text": t}) + "\n" for t in texts[200:]).encode())
    return [str(directory / "a.parquet"), str(directory / "b.jsonl.zst")]


def submit(slurm, args: list[str], logs: Path) -> tuple[str, str]:
    env = {**slurm.env, "PONDER_SBATCH_OPTS": f"--output={logs}/%x-%A_%a.log"}
    out = subprocess.run(["bash", "slurm/preprocess.sbatch", "submit", "3", *args], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout
    array, merge = out.stdout.split()[-2:]
    return array, merge


def test_array_then_merge(slurm, slurm_data, tmp_path):
    from megatron_ponder.data.indexed import preprocess
    from megatron_ponder.data.tokenizer import Tokenizer

    inputs = corpus(tmp_path)
    prefix = tmp_path / "out" / "c"
    args = ["--input", *inputs, "--tokenizer", slurm_data["tokenizer"], "--output-prefix",
            str(prefix), "--no-progress"]
    array, merge = submit(slurm, args, tmp_path)
    info = slurm.wait(Job(merge, tmp_path), JOB_TIMEOUT_S)
    logs = "\n".join(p.read_text() for p in sorted(tmp_path.glob("*.log")))
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), logs
    for task in range(3):
        assert f"task {task} of array {array}" in logs
    assert "merge exit code 0" in logs
    preprocess(inputs, Tokenizer.load(slurm_data["tokenizer"]), tmp_path / "one",
               progress=False)
    for suffix in (".bin", ".idx"):
        assert Path(f"{prefix}{suffix}").read_bytes() == (tmp_path / f"one{suffix}").read_bytes()

