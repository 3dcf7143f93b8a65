"""bf16 autocast trains on CPU: 20 steps of the demo recipe (a smaller variant) in bf16 follow
fp32's losses; every method with every CPU attention backend runs a bf16 training step whose
gradients are close to fp32's; the router stays fp32; the pipeline's backward runs too."""

import contextlib
from pathlib import Path

import pytest
import torch

from distributed import STRICT_COMMS, run_distributed
from factories import tiny_config
from megatron_ponder.config import load_config
from megatron_ponder.ponder.registry import METHODS, method_class
from megatron_ponder.training.precision import backward_autocast, forward_autocast
from megatron_ponder.training.trainer import Trainer
from tiny_runs import read_metrics

DEMO = Path(__file__).resolve().parents[2] / "recipes" / "demo_cpu.yaml"
STEPS = 20
# bf16 keeps 8 bits of mantissa: matmuls differ from fp32's by ~0.4% per element, and AdamW
# carries differences forward. Measured over the 20 steps: at most 0.03% (loss 6.50 -> 5.03).
LOSS_RTOL = 0.02
GRAD_RTOL = 0.05  # relative L2 error of the whole gradient, one step


def demo_variant(tiny_data, output_dir, precision):
    """recipes/demo_cpu.yaml (PonderLM-3, K 2, H 128, 2 layers) on the test corpus, with
    sequences of 32 tokens and one micro-batch of 4 per step: CPUs without native bf16 run
    bf16 matmuls 6-40x slower than fp32 ones (measured on the AVX2 test machine)."""
    return load_config(DEMO, [
        f"data.tokenizer={tiny_data['tokenizer']}", f"data.prefixes=[{tiny_data['prefix']}]",
        f"data.cache_dir={output_dir.parent / 'index_cache'}", "model.vocab_size=512",
        "data.seq_length=32", "train.micro_batch_size=4", "train.global_batch_size=4",
        f"train.steps={STEPS}", "train.log_interval=1", f"train.eval_interval={STEPS}",
        "train.eval_batches=1", f"train.save_interval={STEPS}", f"train.output_dir={output_dir}",
        f"train.precision={precision}", "logging.tensorboard=false", "logging.wandb=disabled"])


def test_bf16_follows_fp32_for_20_demo_steps(tiny_data, tmp_path):
    losses = {}
    for precision in ("fp32", "bf16"):
        assert Trainer(demo_variant(tiny_data, tmp_path / precision, precision)).train() == 0
        losses[precision] = {s: r["loss"] for s, r in read_metrics(tmp_path / precision).items()}
    assert len(losses["bf16"]) == STEPS
    for step, fp32 in losses["fp32"].items():
        assert losses["bf16"][step] == pytest.approx(fp32, rel=LOSS_RTOL), step
    assert losses["bf16"][STEPS] < losses["bf16"][1] - 0.5  # it learns


def loss_and_grads(model, tokens, precision_cfg):
    cpu = torch.device("cpu")
    forward, backward = forward_autocast(precision_cfg, cpu), backward_autocast(precision_cfg, cpu)
    model.zero_grad(set_to_none=True)
    with forward():
        out = model(tokens, step=1)
    loss, _ = model.loss(out, tokens)
    with backward():
        loss.backward()
    return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()
                                   if p.grad is not None])


@pytest.mark.parametrize("backend", ["augmented", "reference"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_and_backend_trains_a_bf16_step(method, backend, build):
    cfg = tiny_config(method, 2, [f"ponder.attention_backend={backend}"])
    model = build(cfg)
    model.train()
    tokens = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(3))
    fp32_cfg = tiny_config(method, 2, ["train.precision=fp32"])
    bf16_cfg = tiny_config(method, 2, ["train.precision=bf16"])
    loss, grads = loss_and_grads(model, tokens, fp32_cfg)
    loss16, grads16 = loss_and_grads(model, tokens, bf16_cfg)
    assert grads16.dtype == torch.float32 and torch.isfinite(grads16).all()
    assert loss16 == pytest.approx(loss, rel=LOSS_RTOL)
    assert (grads16 - grads).norm() <= GRAD_RTOL * grads.norm(), method
    if method_class(method).uses_router:  # the router's logits stay fp32 under autocast
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model.decoder.route(torch.randn(3, 1, 32).to(torch.bfloat16))
        assert logits.dtype == torch.float32


def pp2_worker(rank):
    from megatron_ponder.model import build_model
    from megatron_ponder.parallel import initialize_parallel
    from megatron_ponder.parallel.pipeline import pipeline_step

    cfg = tiny_config("ponderlm3", 2, ["parallel.pipeline_model_parallel_size=2",
                                       "train.precision=bf16"], num_layers=4)
    initialize_parallel(cfg)
    model = build_model(cfg)
    model.train()
    gen = torch.Generator().manual_seed(4)
    batches = [{"tokens": torch.randint(0, 64, (2, 8), generator=gen),
                "labels": torch.randint(0, 64, (2, 8), generator=gen),
                "loss_mask": torch.ones(2, 8)} for _ in range(2)]
    cpu = torch.device("cpu")
    losses = {}
    for precision in ("fp32", "bf16"):
        cfg.train.precision = precision
        model.zero_grad(set_to_none=True)
        losses[precision] = pipeline_step(model, batches, 1, forward_autocast(cfg, cpu),
                                          backward_autocast=backward_autocast(cfg, cpu)).loss
        assert all(torch.isfinite(p.grad).all() for p in model.parameters()
                   if p.grad is not None)
    return losses


def test_pipeline_runs_a_bf16_step():
    for losses in run_distributed(pp2_worker, 2, env=STRICT_COMMS):
        assert losses["bf16"] == pytest.approx(losses["fp32"], rel=LOSS_RTOL)


def test_autocast_contexts_by_device():
    cfg = tiny_config("ponderlm3", 2, ["train.precision=bf16"])
    assert backward_autocast(cfg, torch.device("cuda")) is contextlib.nullcontext
    with backward_autocast(cfg, torch.device("cpu"))():
        assert torch.is_autocast_enabled("cpu")
    auto = tiny_config("ponderlm3", 2, ["train.precision=auto"])
    assert forward_autocast(auto, torch.device("cpu")) is contextlib.nullcontext
