"""Correctness faults found by reading the code against method.md (issue 11, items 1-4):
validation reports the LM loss (the compute penalty apart), the penalty follows the loss
mask, a vanilla export runs through the exported modeling class, and no checkpoint is saved
while a streak of non-finite steps is open."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
import torch
import torch.nn.functional as F

from factories import tiny_config
from megatron_ponder.data.batches import batch_for_step
from megatron_ponder.model.ponder_lm import PonderLM
from megatron_ponder.run.checkpoint_write import Checkpointer
from megatron_ponder.run.exit_codes import EXIT_DONE, EXIT_REQUEUE
from megatron_ponder.training.evaluate import evaluate
from megatron_ponder.training.trainer import NonFiniteError, Trainer

LAMBDA = 0.5  # large, so that a penalty inside a reported loss cannot hide in the tolerance


def _random_router(model, seed: int = 0) -> None:
    """Router decisions that differ per token, so E[steps] differs between positions."""
    net = model.decoder.router.net
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net.weight.copy_(torch.randn(net.weight.shape, generator=gen))
        net.bias.copy_(torch.randn(net.bias.shape, generator=gen))


def _batch(vocab: int, seed: int, mask: torch.Tensor | None = None) -> dict:
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (2, 17), generator=gen)
    loss_mask = torch.ones(2, 16) if mask is None else mask
    return {"tokens": tokens[:, :-1], "labels": tokens[:, 1:], "loss_mask": loss_mask}


@torch.no_grad()
def _lm_loss_and_steps(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token cross-entropy [B, L] and E[steps] [B, L], computed here from the logits and
    log w, independently of ponder_loss."""
    model.eval()
    out = model(batch["tokens"])
    ce = F.cross_entropy(out.logits.float().permute(1, 2, 0), batch["labels"], reduction="none")
    return ce, out.log_w[..., 1:].exp().sum(-1).transpose(0, 1)


# ------------------------------------------------------------------ item 1: validation loss


def test_validation_reports_the_lm_loss_and_the_penalty_apart(build):
    model = build(tiny_config("ponderlm3", k=2, overrides=[f"ponder.compute_penalty={LAMBDA}"]))
    _random_router(model)
    batches = [_batch(64, seed) for seed in (1, 2)]
    result = evaluate(model, batches, torch.device("cpu"), contextlib.nullcontext)
    ce, steps = zip(*(_lm_loss_and_steps(model, b) for b in batches))
    lm_loss = torch.cat(ce).mean().item()
    penalty = LAMBDA * torch.cat(steps).mean().item()
    assert penalty > 0.1  # the old report (loss + penalty) would be off by this much
    assert result["loss"] == pytest.approx(lm_loss, abs=1e-5)
    assert result["ppl"] == pytest.approx(math.exp(lm_loss), rel=1e-5)
    assert result["penalty"] == pytest.approx(penalty, abs=1e-5)


def test_the_trainer_logs_and_prints_the_lm_loss_as_validation_loss(tiny_run, tmp_path, capsys):
    cfg = tiny_run(tmp_path / "run", steps=2, save_interval=100)
    cfg.ponder.compute_penalty = LAMBDA
    trainer = Trainer(cfg)
    assert trainer.train() == EXIT_DONE
    final = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
             .splitlines() if json.loads(line)["kind"] == "final"][0]
    t = cfg.train
    batches = [batch_for_step(trainer.valid_data, i, t.micro_batch_size, t.micro_batch_size)[0]
               for i in range(t.eval_batches)]
    ce, steps = zip(*(_lm_loss_and_steps(trainer.model, b) for b in batches))
    assert final["loss"] == pytest.approx(torch.cat(ce).mean().item(), abs=1e-5)
    assert final["penalty"] == pytest.approx(LAMBDA * torch.cat(steps).mean().item(), abs=1e-5)
    assert final["penalty"] > 0.1
    assert f"LM loss {final['loss']:.4f}" in capsys.readouterr().out


# ------------------------------------------------------------------ item 2: the loss mask


def test_the_penalty_and_its_statistics_average_over_the_positions_the_loss_counts(build):
    model = build(tiny_config("ponderlm3", k=2, overrides=[f"ponder.compute_penalty={LAMBDA}"]))
    _random_router(model)
    mask = torch.zeros(2, 16)
    mask[0, :5] = 1.0
    mask[1, 9:] = 1.0
    batch = _batch(64, 3, mask)
    ce, steps = _lm_loss_and_steps(model, batch)
    counted = steps[mask.bool()].mean().item()
    assert abs(counted - steps.mean().item()) > 0.02  # the mask changes the mean
    out = model(batch["tokens"])
    loss, parts = model.loss(out, batch["labels"], batch["loss_mask"])
    assert parts["lm_loss"].item() == pytest.approx(ce[mask.bool()].mean().item(), abs=1e-5)
    assert parts["penalty"].item() == pytest.approx(LAMBDA * counted, abs=1e-6)
    assert loss.item() == pytest.approx((parts["lm_loss"] + parts["penalty"]).item(), abs=1e-6)
    stats = model.statistics(out, batch["loss_mask"])
    assert stats["expected_steps"] == pytest.approx(counted, abs=1e-6)
    # Masked positions get no gradient from the penalty.
    model.zero_grad()
    net = model.decoder.router.net
    model.train()
    out = model(batch["tokens"], step=0)
    model.loss(out, batch["labels"], torch.zeros_like(mask))[0].backward()
    assert net.weight.grad is None or net.weight.grad.abs().max().item() == 0.0


# ------------------------------------------------------------------ item 3: vanilla export


def test_a_vanilla_export_runs_through_the_exported_modeling_class(build, tiny_data, tmp_path):
    from transformers import AutoModelForCausalLM

    from megatron_ponder.export.hf_export import export_hf
    from megatron_ponder.export.modeling_ponder import PonderLMConfig, PonderLMForCausalLM
    from megatron_ponder.inference.scoring import hard_forward

    cfg = tiny_config("vanilla", k=0, vocab_size=512)
    model = build(cfg).eval()
    out = export_hf(model, cfg, tiny_data["tokenizer"], tmp_path / "hf")
    m = cfg.model
    # The vanilla export folds sqrt(2.5 H) into its embedding: the modeling class then runs
    # with embedding_scale 1.
    config = PonderLMConfig(
        vocab_size=m.vocab_size, hidden_size=m.hidden_size, intermediate_size=m.ffn_size,
        num_hidden_layers=m.num_layers, num_attention_heads=m.num_attention_heads,
        num_key_value_heads=m.kv_heads, max_position_embeddings=m.max_position_embeddings,
        rope_theta=m.rotary_base, rms_norm_eps=m.norm_eps, embedding_scale=1.0,
        ponder_method="vanilla", ponder_k=0)
    ponder = PonderLMForCausalLM.from_pretrained(out, config=config).eval()
    llama = AutoModelForCausalLM.from_pretrained(out).eval()
    tokens = torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(4))
    expected = hard_forward(model, tokens).logits.transpose(0, 1)
    with torch.no_grad():
        parallel = ponder(tokens).logits
        as_llama = llama(tokens).logits
        # Prefill 5 tokens into the slot cache, then decode the rest one at a time.
        first = ponder(tokens[:, :5], use_cache=True)
        cache = getattr(first, "cache", None) or first.past_key_values
        decoded = [ponder(tokens[:, t:t + 1], cache=cache).logits for t in range(5, 12)]
    assert (parallel - expected).abs().max().item() <= 1e-4
    assert (as_llama - expected).abs().max().item() <= 1e-4
    cached = torch.cat([first.logits[:, -1:], *decoded], dim=1)
    assert (cached - expected[:, 4:]).abs().max().item() <= 1e-4
    assert cache.steps[0] == [0] * 12


# ------------------------------------------------------------------ item 4: non-finite streaks


def _poison(monkeypatch, steps: set[int], on_call=None):
    """Make the loss of the given training steps (0-based) NaN; 2 micro-batches per step."""
    original = PonderLM.loss
    calls = {"n": 0}

    def loss(self, output, labels, loss_mask=None):
        value, parts = original(self, output, labels, loss_mask)
        step = calls["n"] // 2
        if self.training and step in steps:
            value = value * float("nan")
            parts = {**parts, "lm_loss": parts["lm_loss"] * float("nan")}
        if self.training:
            if on_call is not None:
                on_call(step)
            calls["n"] += 1
        return value, parts

    monkeypatch.setattr(PonderLM, "loss", loss)


def _saved(run) -> list[int]:
    return Checkpointer(run / "checkpoints", 100).complete_steps()


def test_no_checkpoint_is_saved_while_a_streak_is_open(tiny_run, tmp_path, monkeypatch, capsys):
    _poison(monkeypatch, {2, 3})  # the 3rd and 4th steps, counted from 1
    cfg = tiny_run(tmp_path / "run", steps=6, save_interval=1, max_nonfinite_skips=3)
    assert Trainer(cfg).train() == EXIT_DONE
    assert _saved(tmp_path / "run") == [1, 2, 5, 6]
    out = capsys.readouterr().out
    # One step numbering: the skip messages name the step the progress line and
    # metrics.jsonl give the skipped step.
    for step in (3, 4):
        assert f"step {step} (counted from 1, as in the progress line): skipped, loss is not " \
               "finite" in out
        assert f"not saving at step {step}: the last {step - 2} step(s) were not finite; the " \
               "newest good checkpoint" in out
    progress = [line for line in out.splitlines() if line.startswith("step ") and "|" in line]
    assert [line.split("|")[0].split()[1] for line in progress] == [f"{s}/6" for s in range(1, 7)]
    train = {r["step"]: r for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl")
                                       .read_text().splitlines()) if r["kind"] == "train"}
    assert [train[s]["skipped_steps"] for s in range(1, 7)] == [0, 0, 1, 2, 2, 2]


def test_a_stop_during_a_streak_keeps_the_newest_good_checkpoint(tiny_run, tmp_path, monkeypatch,
                                                                capsys):
    cfg = tiny_run(tmp_path / "run", steps=6, save_interval=1, max_nonfinite_skips=3,
                   keep_checkpoints=10)
    holder = {}

    def stop_in_step_4(step):
        if step == 3:
            holder["trainer"].stop.reason = "a test's stop request"

    _poison(monkeypatch, {2, 3}, stop_in_step_4)
    holder["trainer"] = Trainer(cfg)
    assert holder["trainer"].train() == EXIT_REQUEUE
    assert _saved(tmp_path / "run") == [1, 2]
    assert "stopping at step 4" in capsys.readouterr().out
    monkeypatch.undo()
    resumed = Trainer(cfg)
    assert resumed.state.step == 2 and resumed.state.consecutive_skips == 0
    assert resumed.train() == EXIT_DONE
    assert _saved(tmp_path / "run") == [1, 2, 3, 4, 5, 6]


def test_a_run_that_ends_inside_a_streak_does_not_save_its_final_state(tiny_run, tmp_path,
                                                                       monkeypatch):
    _poison(monkeypatch, {3})
    cfg = tiny_run(tmp_path / "run", steps=4, save_interval=2, max_nonfinite_skips=3)
    with pytest.raises(NonFiniteError, match=r"ended in a streak of 1 non-finite steps .* "
                                             r"newest good checkpoint, .*step_0000002"):
        Trainer(cfg).train()
    assert _saved(tmp_path / "run") == [2]
