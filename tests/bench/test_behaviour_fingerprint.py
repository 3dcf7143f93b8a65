"""bench/behaviour_fingerprint.py's own pieces (issue 24): what it normalises away must be
only timings and locations, a changed tensor must change exactly its own digest, and
--compare must name the part and the item that differ."""

import json
import shutil
import sys
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import behaviour_fingerprint as fp  # noqa: E402


def test_output_keeps_numbers_and_drops_timings_paths_and_progress(tmp_path):
    paths = fp.Paths(tmp_path / "work", Path("/src/checkout"))
    text = "\n".join([
        "step      3/12 | loss 7.5833 | lr 2.79e-03 | gnorm 0.880 | 1,018 tok/s | MFU 8.2% | "
        "J 2 | E[steps] 1.01 | entropy 1.097 | eta 0.1 min",
        f"saved {tmp_path / 'work'}/runs/fp12/checkpoints/step_0000004 (0.2s)",
        "pruned at tau=0.0001        0.2% of latent slots (2.54x vanilla)",
        "scoring:  50%|█████     | 3/6 [00:03<00:04,  1.52s/it]",
        "/src/checkout/megatron_ponder/model/decoder.py:88: UserWarning: full scope is deprecated",
        "  warnings.warn(",
        "wandb: Run data is saved locally in runs/x/wandb/offline-run-20261206_040129-1ce52d",
        "demo finished in 58s (exit code 0)",
    ])
    assert fp.normalise_output(text, paths) == [
        "step      3/12 | loss 7.5833 | lr 2.79e-03 | gnorm 0.880 | <rate> | MFU <mfu> | "
        "J 2 | E[steps] 1.01 | entropy 1.097 | eta <t>",
        "saved <work>/runs/fp12/checkpoints/step_0000004 (<t>)",
        "pruned at tau=0.0001        0.2% of latent slots (2.54x vanilla)",
        "<source>: UserWarning: full scope is deprecated",
        "demo finished in <t> (exit code 0)",
    ]


def test_a_changed_tensor_changes_its_own_digest_and_no_other(tmp_path):
    step_dir = tmp_path / "run" / "step_0000004"

    def save(bias: torch.Tensor) -> dict:
        """A fresh save at the same path (as a rerun on another checkout writes it)."""
        shutil.rmtree(step_dir, ignore_errors=True)
        state = {"model": {"weight": torch.arange(6, dtype=torch.float32).reshape(2, 3),
                           "bias": bias}}
        dcp.save(state, storage_writer=dcp.FileSystemWriter(str(step_dir)), no_dist=True)
        torch.save({"config": {"seed": 1}, "train_state": {"step": 4}}, step_dir / "common.pt")
        return fp.hash_checkpoint(step_dir, fp.Paths(tmp_path, tmp_path), set())

    a = save(torch.zeros(3))
    # .metadata differs in its save_id (a uuid4 per save): compared without it
    assert save(torch.zeros(3)) == a
    flipped = torch.zeros(3)
    flipped[1] = torch.finfo(torch.float32).tiny  # one bit of one element
    b = save(flipped)
    assert {"tensor model.weight", "tensor model.bias", "common config.seed",
            "common train_state.step"} <= set(a)
    changed = {key for key in a if a[key] != b[key]}
    assert changed == {"tensor model.bias"}, changed


def test_time_keys_are_dropped_from_measurements_only():
    dropped = set()
    record = {"step": 3, "time": 1.7e9, "tokens_per_s": 190.5, "loss": 7.8,
              "training": {"cpu_s": 12.0, "flops": 1e9}}
    assert fp.drop_time_keys(record, dropped) == {"step": 3, "loss": 7.8,
                                                  "training": {"flops": 1e9}}
    assert dropped == {"time", "tokens_per_s", "cpu_s"}
    # A tokenizer's vocabulary may hold the token "time": hashed with it.
    vocab = json.dumps({"model": {"vocab": {"time": 5, "date": 6}}})
    other = json.dumps({"model": {"vocab": {"time": 7, "date": 6}}})
    assert fp.hash_json_text(vocab, None) != fp.hash_json_text(other, None)


def _output(path: Path, parts: dict) -> Path:
    lines = [json.dumps(fp.part_record(name, items, set())) for name, items in parts.items()]
    summary = {name: json.loads(line)["sha256"] for name, line in zip(parts, lines)}
    lines.append(json.dumps({"fingerprint": fp.sha(fp.canonical(summary).encode()),
                             "parts": summary}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_compare_names_the_part_and_the_item_that_differ(tmp_path, capsys):
    base = {"train": {"exit": 0, "stdout": ["step 1 | loss 7.8264"], "tensor w": "abc"},
            "export_hf": {"exit": 0, "file config.json": "123"}}
    changed = {"train": {"exit": 0, "stdout": ["step 1 | loss 7.8265"], "tensor w": "abc"},
               "export_hf": {"exit": 0, "file config.json": "123"}}
    a = _output(tmp_path / "a.json", base)
    assert fp.compare(a, _output(tmp_path / "same.json", base)) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["equal"] is True
    assert fp.compare(a, _output(tmp_path / "b.json", changed)) == 1
    out = capsys.readouterr().out
    assert "part differs: train" in out and "export_hf" not in out.split("{")[0]
    assert "-step 1 | loss 7.8264" in out and "+step 1 | loss 7.8265" in out
    assert "tensor w" not in out
    assert json.loads(out.splitlines()[-1])["differ"] == ["train"]
