"""Continued pretraining from an imported stock checkpoint (a Llama 2, a Llama 3.x with llama3
RoPE scaling, a Qwen3 with q/k norms and wide heads): PonderLM-3 trains 20 steps from it with
the continue recipe, and with its router forced to zero latent steps its first-step loss is the
imported vanilla model's on the same batch (the import kept every weight)."""

import math
import sys
from pathlib import Path

import pytest
import torch

from megatron_ponder.config import load_config
from megatron_ponder.inference.model_loading import load_model
from megatron_ponder.run.exit_codes import EXIT_DONE, EXIT_REQUEUE
from megatron_ponder.training.initial_checkpoint import save_training_checkpoint
from megatron_ponder.training.trainer import Trainer
from stock_models import save_stock
from tiny_runs import read_metrics

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import convert_checkpoint as convert_tool  # noqa: E402

RECIPE = str(REPO / "recipes" / "continue_cpu.yaml")
STEPS = 20
# Latent slots at log w = -30 (attention weight ~1e-13) and s_0 = 1 in float32: what remains is
# the rounding of a longer attention and a different reduction order. Measured: 0 (bitwise).
LOSS_RTOL = 1e-5


def import_run(folder, run, tool_data, method, k):
    overrides = [f"data.tokenizer={tool_data['tokenizer']}", f"data.prefixes=[{tool_data['prefix']}]",
                 "data.split=90,10,0", "data.seq_length=16", f"data.cache_dir={run.parent / 'cache'}",
                 f"train.steps={STEPS}", "train.micro_batch_size=2", "train.global_batch_size=4",
                 "train.log_interval=1", f"train.save_interval={STEPS}"]
    assert convert_tool.main(["import-hf", str(folder), str(run), "--recipe", RECIPE, "--method",
                              method, "--k", str(k), *overrides]) == 0
    return run


def force_zero_steps(run):
    """Router output: logit 30 for zero steps, 0 for the others (weights stay zero)."""
    model, cfg = load_model(run, device="cpu")
    with torch.no_grad():
        model.decoder.router.net.bias.copy_(torch.tensor([30.0] + [0.0] * cfg.ponder.k))
    save_training_checkpoint(model, cfg, run / "checkpoints", 0)  # replaces step 0


@pytest.mark.parametrize("arch", ["llama", "llama3", "qwen3"])
def test_ponderlm3_continues_from_an_imported_model(tmp_path, tool_data, arch):
    save_stock(tmp_path / "hf", arch)
    vanilla = import_run(tmp_path / "hf", tmp_path / "vanilla", tool_data, "vanilla", 0)
    ponder = import_run(tmp_path / "hf", tmp_path / "ponderlm3", tool_data, "ponderlm3", 2)
    force_zero_steps(ponder)

    # The same config but the method: the same batches. Vanilla stops after its first step.
    assert Trainer(load_config(vanilla / "config.yaml", ["train.exit_interval=1"])).train() == EXIT_REQUEUE
    assert Trainer(load_config(ponder / "config.yaml")).train() == EXIT_DONE
    first = read_metrics(vanilla)[1]["loss"]
    losses = read_metrics(ponder)
    assert sorted(losses) == list(range(1, STEPS + 1))
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in losses.values())
    assert abs(losses[1]["loss"] - first) <= LOSS_RTOL * first, (losses[1]["loss"], first)
    assert losses[1]["expected_steps"] < 1e-6  # the router really was at zero steps
