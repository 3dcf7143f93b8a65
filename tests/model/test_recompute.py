"""Activation recomputation (train.recompute) changes memory, never numbers: with each layer
or each pass recomputed in the backward, every gradient equals the gradient without
recomputation, in one process, at TP 2 and at PP 2 (two gloo processes); a 5-step training run
has the same losses and the same Jacobi draws."""

import contextlib

import pytest
import torch

from distributed import STRICT_COMMS, run_distributed
from factories import tiny_config
from megatron_ponder.model import build_model
from megatron_ponder.model.transforms import apply_transforms
from megatron_ponder.parallel import initialize_parallel
from megatron_ponder.parallel.pipeline import pipeline_step
from megatron_ponder.training.trainer import Trainer
from tiny_runs import read_metrics

METHODS = ("ponderlm3", "ponderlm2", "vanilla")
MODES = ("layers", "passes")
LAYOUTS = {"tp2": "parallel.tensor_model_parallel_size=2",
           "pp2": "parallel.pipeline_model_parallel_size=2"}
STEP = 3
# fp32; the recomputed forward repeats the same kernels on the same inputs, so only the order
# in which autograd sums a weight's per-pass gradients could differ.
GRAD_RTOL = 1e-6  # max abs error relative to the tensor's largest gradient entry


def batches():
    gen = torch.Generator().manual_seed(2)
    return [{"tokens": torch.randint(0, 64, (2, 8), generator=gen),
             "labels": torch.randint(0, 64, (2, 8), generator=gen),
             "loss_mask": torch.ones(2, 8)} for _ in range(2)]


def loss_and_grads(method: str, recompute: str, layout: list[str]):
    cfg = tiny_config(method, 2, [*layout, f"train.recompute={recompute}"], num_layers=4)
    initialize_parallel(cfg)
    model = apply_transforms(build_model(cfg), cfg.train)
    model.train()
    if cfg.parallel.pipeline_model_parallel_size > 1:
        loss = pipeline_step(model, batches(), STEP, contextlib.nullcontext).loss
    else:
        loss = 0.0
        for batch in batches():
            part, _ = model.loss(model(batch["tokens"], step=STEP), batch["labels"])
            (part / 2).backward()
            loss += part.item() / 2
    return loss, {name: p.grad.clone() for name, p in model.named_parameters()}


def compare(results: dict, where: str, methods=METHODS) -> None:
    for method in methods:
        loss, grads = results[method, "none"]
        for mode in MODES:
            loss2, grads2 = results[method, mode]
            assert loss2 == pytest.approx(loss, rel=1e-7), (where, method, mode)
            assert grads2.keys() == grads.keys()
            for name, g in grads.items():
                err = (grads2[name] - g).abs().max().item()
                assert err <= GRAD_RTOL * max(g.abs().max().item(), 1e-12), (where, method, mode, name)


def all_modes(layout: list[str]) -> dict:
    return {(method, mode): loss_and_grads(method, mode, layout)
            for method in METHODS for mode in ("none", *MODES)}


def layouts_worker(rank):
    return {name: all_modes([override]) for name, override in LAYOUTS.items()}


def test_recomputed_gradients_equal_the_stored_ones_in_one_process():
    compare(all_modes([]), "one process")


def test_recomputation_composes_with_truncated_gradients():
    """ponder.grad_passes runs the early passes without autograd: nothing to recompute there,
    and the passes that keep gradients recompute as before."""
    results = {mode: loss_and_grads("ponderlm3", mode, ["ponder.grad_passes=2"])
               for mode in ("none", *MODES)}
    compare({("ponderlm3", mode): r for mode, r in results.items()}, "grad_passes 2",
            methods=("ponderlm3",))


def test_recomputed_gradients_equal_the_stored_ones_at_tp2_and_pp2():
    for rank, results in enumerate(run_distributed(layouts_worker, 2, env=STRICT_COMMS)):
        for layout, by_case in results.items():
            compare(by_case, f"{layout} rank {rank}")


def test_five_steps_have_the_same_losses_and_jacobi_draws(tiny_run, tmp_path):
    runs = {}
    for mode in ("none", *MODES):
        cfg = tiny_run(tmp_path / mode, steps=5, save_interval=5, recompute=mode)
        assert Trainer(cfg).train() == 0
        runs[mode] = read_metrics(tmp_path / mode)
    for mode in MODES:
        for step, record in runs["none"].items():
            assert runs[mode][step]["loss"] == record["loss"], (mode, step)
            assert runs[mode][step]["jacobi"] == record["jacobi"], (mode, step)
    assert {r["jacobi"] for r in runs["none"].values()} == {2, 3}  # both draws occur
