"""Evaluate a trained sweep run into its record: validation LM loss (and, apart, the compute
penalty) of the training-style forward, then hard-masked scoring (the inference engine's
rule) at every tau, with the inference FLOPs of the slots that rule keeps, and the training
FLOPs of the whole run."""

from __future__ import annotations

import contextlib
import math
import resource

import torch

from megatron_ponder.config import Config, config_to_dict
from megatron_ponder.data.batches import batch_for_step
from megatron_ponder.data.datasets import build_datasets
from megatron_ponder.data.tokenizer import Tokenizer
from megatron_ponder.inference.budget import BudgetError, Calibrator, all_kept_flops
from megatron_ponder.inference.heldout import heldout_batches
from megatron_ponder.inference.ppl_sweep import score_at_taus
from megatron_ponder.model import build_model
from megatron_ponder.parallel import initialize_parallel
from megatron_ponder.ponder.flops import DecoderShape
from megatron_ponder.ponder.registry import VANILLA
from megatron_ponder.run.checkpoint_read import latest_step, load_model_state, step_path
from megatron_ponder.sweeps.records import SCHEMA
from megatron_ponder.sweeps.spec import RunSpec, Sweep, SweepError
from megatron_ponder.sweeps.usage import USAGE_FILE, read_usage
from megatron_ponder.training.evaluate import evaluate


def run_training_flops(model, cfg: Config) -> float:
    """FLOPs of every training step the run took: J of step s is drawn from (seed, s) as
    in training, and the passes a J implies are read off the model on a 2-token input."""
    t, method = cfg.train, model.method
    shape = DecoderShape.of(cfg.model)
    passes_for_jacobi: dict[int, list[int]] = {}
    total = 0.0
    was_training = model.training
    model.train()
    probe = torch.zeros(1, 2, dtype=torch.long, device=next(model.parameters()).device)
    with torch.no_grad():
        for step in range(t.steps):
            jacobi = model.jacobi_for_step(step) if method.uses_jacobi else 0
            if jacobi not in passes_for_jacobi:
                passes_for_jacobi[jacobi] = model(probe, step=step).pass_slots
            total += t.global_batch_size * method.training_flops(
                shape, passes_for_jacobi[jacobi], cfg.data.seq_length)
    model.train(was_training)
    return float(total)


def _validation_batches(cfg: Config, batches: int, micro_batch_size: int, data_seed: int,
                        cache_dir) -> list[dict]:
    tokenizer = Tokenizer.load(cfg.data.tokenizer, cfg.data.eod_token)
    # One data seed for every run: all runs are scored on the same validation tokens.
    _, valid, _ = build_datasets(
        cfg.data, vocab_size=tokenizer.vocab_size, eod_id=tokenizer.eod_id, seed=data_seed,
        num_samples=(1, batches * micro_batch_size, 0), cache_dir=str(cache_dir),
        model_vocab_size=cfg.model.vocab_size)
    if valid is None:
        raise SweepError(f"base.data.split={cfg.data.split!r} leaves no validation documents "
                         "for the evaluation phase")
    return [b for i in range(batches)
            for b in batch_for_step(valid, i, micro_batch_size, micro_batch_size)]


def budget_entries(model, cfg: Config, sweep: Sweep, batches: list[dict],
                   expected_steps: float, progress=print) -> list[dict]:
    """One entry per eval.budgets value: tau calibrated on the validation micro-batches that
    follow the scored ones (inference/budget.py), then the inference entry at that tau
    with flops_budget, flops_vs_all_kept and the calibration; a budget this model cannot
    meet is recorded as {"flops_budget", "unreachable": why}."""
    e = sweep.eval
    calibration = heldout_batches(cfg, split="valid", samples=e.calibration_batches * e.micro_batch_size,
                                  batch_size=e.micro_batch_size, data_seed=e.data_seed,
                                  start=e.batches * e.micro_batch_size)
    all_kept = all_kept_flops(model, batches)
    calibrator = Calibrator(model, calibration)  # one bracket cache for every budget
    entries = []
    for budget in e.budgets:
        try:
            c = calibrator.calibrate(budget)
        except BudgetError as err:
            entries.append({"flops_budget": budget, "unreachable": str(err)})
            progress(f"  budget {budget:g}: out of reach")
            continue
        entry = score_at_taus(model, batches, [c.tau])[0]
        entry["expected_steps"] = expected_steps
        entry.update(flops_budget=budget, flops_vs_all_kept=entry["flops_per_token"] / all_kept,
                     calibration=c.as_dict())
        entries.append(entry)
        progress(f"  budget {budget:g}: tau {c.tau:.4g}, ppl {entry['ppl']:.3f}, "
                 f"{entry['flops_vs_all_kept']:.3f} of all-kept FLOPs (calibrated {c.ratio:.3f})")
    return entries


def evaluate_run(sweep: Sweep, run: RunSpec, progress=print) -> dict:
    cpu_start = resource.getrusage(resource.RUSAGE_SELF)
    cfg = run.config
    initialize_parallel(cfg)
    model = build_model(cfg)
    checkpoints = sweep.run_dir(run) / "checkpoints"
    step = latest_step(checkpoints)
    if step != cfg.train.steps:
        raise SweepError(f"{run.run_id}: the newest checkpoint is at step {step}, not "
                         f"train.steps={cfg.train.steps}: train it first")
    load_model_state(model, step_path(checkpoints, step))
    model.eval()
    e = sweep.eval
    batches = _validation_batches(cfg, e.batches, e.micro_batch_size, e.data_seed,
                                  sweep.run_dir(run) / "eval_data_cache")
    soft = evaluate(model, batches, torch.device("cpu"), contextlib.nullcontext)
    shape = DecoderShape.of(cfg.model)
    vanilla = VANILLA.inference_flops_per_token(shape, cfg.data.seq_length)
    method = model.method
    expected = soft["expected_steps"] if method.uses_router else method.executed_steps()
    with torch.no_grad():
        inference = score_at_taus(model, batches, e.taus if method.uses_router else [None])
        for entry in inference:
            entry["expected_steps"] = expected
            tau = entry["tau"]
            progress(f"  tau {tau if tau is not None else '-':>6}: ppl {entry['ppl']:.3f}, "
                     f"{entry['flops_vs_vanilla']:.3f}x vanilla FLOPs, "
                     f"{entry['executed_steps']:.3f} latent steps/token")
        budgets = (budget_entries(model, cfg, sweep, batches, expected, progress)
                   if method.uses_router and e.budgets else [])
    tokens = sum(int(b["loss_mask"].sum()) for b in batches)
    usage = read_usage(sweep.run_dir(run) / USAGE_FILE) or {}
    cpu_end = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "schema": SCHEMA, "sweep": sweep.name, "run_id": run.run_id, "point": dict(run.point),
        "config": config_to_dict(cfg),
        "parameters": sum(p_.numel() for p_ in model.parameters()),
        "non_embedding_parameters": shape.non_embedding_params,
        "training": {"steps": cfg.train.steps,
                     "tokens": cfg.train.steps * cfg.train.global_batch_size * cfg.data.seq_length,
                     "flops": run_training_flops(model, cfg), **usage},
        "validation": {"loss": soft["loss"], "ppl": math.exp(soft["loss"]),
                       "penalty": soft["penalty"], "tokens": tokens},
        "vanilla_flops_per_token": vanilla,
        "inference": inference,
        "budgets": budgets,
        # CPU seconds of this evaluation (the training's are training.cpu_s).
        "evaluation_cpu_s": (cpu_end.ru_utime + cpu_end.ru_stime
                             - cpu_start.ru_utime - cpu_start.ru_stime),
    }
