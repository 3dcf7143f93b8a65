"""Sequence parallelism: refused with a clear message where it cannot run (CPU, no Transformer
Engine); on 2 GPUs with Transformer Engine, TP 2 + SP follows TP 2's loss trajectory."""

import pytest
import torch

from megatron_ponder.config import ConfigError, config_from_dict
from megatron_ponder.parallel.layout import check_layout, sequence_parallel_unavailable
from tiny_runs import read_metrics, run_dict, torchrun

STEPS = 5
LOSS_RTOL = 1e-4  # float32 on GPU; SP reorders the norms' gradient reductions


def test_sequence_parallel_needs_tp_and_a_divisible_sequence(tmp_path):
    data = {"tokenizer": "t.model", "prefix": "p"}
    with pytest.raises(ConfigError, match="parallel.sequence_parallel.*tensor_model_parallel_size > 1"):
        config_from_dict(run_dict(data, tmp_path), ["parallel.sequence_parallel=true"])
    with pytest.raises(ConfigError, match="data.seq_length=15 .*divisible by parallel.tensor_model"):
        config_from_dict(run_dict(data, tmp_path), [
            "parallel.sequence_parallel=true", "parallel.tensor_model_parallel_size=2",
            "data.seq_length=15"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_sequence_parallel_is_refused_on_cpu(tiny_run, tmp_path):
    cfg = tiny_run(tmp_path)
    cfg.parallel.tensor_model_parallel_size = 2
    cfg.parallel.sequence_parallel = True
    with pytest.raises(ConfigError, match="parallel.sequence_parallel=true cannot run on this "
                                          "machine: it needs CUDA"):
        check_layout(cfg, 2)


@pytest.mark.skipif(torch.cuda.device_count() < 2 or sequence_parallel_unavailable() is not None,
                    reason="needs 2 GPUs and Transformer Engine")
def test_sequence_parallel_matches_tensor_parallel(tiny_recipe, tmp_path):
    runs = {}
    for name, extra in (("tp2", []), ("tp2_sp", ["parallel.sequence_parallel=true"])):
        recipe = tiny_recipe(tmp_path / f"{name}.yaml", tmp_path / name, steps=STEPS)
        proc = torchrun(recipe, "parallel.tensor_model_parallel_size=2", "train.precision=fp32", *extra)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        runs[name] = read_metrics(tmp_path / name)
    for step, record in runs["tp2"].items():
        assert abs(runs["tp2_sp"][step]["loss"] - record["loss"]) <= LOSS_RTOL * record["loss"], step
