"""The memory planner against hand counts and exact measurement.

Model states: per-rank parameter counts equal the built model's and a hand count; the
engines' bytes equal the formulas written out. Activations: what the planner says a forward
keeps equals, within 1%, the tensor storage alive after the forward (TensorMemoryTracker: an
exact count, independent of machine load), for each method, recomputation mode, truncated
gradients, fp32 and bf16 (CPU code path); the peak of forward + backward within 10%; per rank
at TP 2 and PP 2. bench/memory.py compares peak RSS at larger sizes.
"""

import contextlib
import gc
import subprocess
import sys
from dataclasses import astuple
from pathlib import Path

import pytest
import torch

from distributed import STRICT_COMMS, run_distributed
from factories import tiny_config
from megatron_ponder.memory.measure import TensorMemoryTracker
from megatron_ponder.memory.plan import plan_memory, stage_plan, widths
from megatron_ponder.memory.states import state_bytes, stage_params

ROOT = Path(__file__).resolve().parents[2]
KEPT_RTOL = 0.01  # measured: within 0.2% (the data batch's token ids are not counted)
PEAK_RTOL = 0.10  # measured: within 4% (the planner's backward working set is a bound)
VOCAB, HIDDEN, FFN = 96, 64, 160


def config(method="ponderlm3", k=2, extra=(), layers=4, batch=2, length=24, **model):
    return tiny_config(method, k, [
        f"data.seq_length={length}", "ponder.jacobi_train=[2]", f"train.micro_batch_size={batch}",
        f"train.global_batch_size={batch}", *extra],
        vocab_size=VOCAB, hidden_size=HIDDEN, num_layers=layers, num_attention_heads=4,
        num_query_groups=2, ffn_hidden_size=FFN, max_position_embeddings=64, **model)


def measure(model, cfg, bf16=False):
    """(bytes alive after the forward, peak bytes during forward + backward), one micro-batch."""
    tokens = torch.randint(0, VOCAB, (cfg.train.micro_batch_size, cfg.data.seq_length),
                           generator=torch.Generator().manual_seed(0))
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    model.train()
    with TensorMemoryTracker() as mem:
        with autocast():
            out = model(tokens, step=0)
            loss, _ = model.loss(out, tokens)
        del out
        gc.collect()
        held = mem.held
        with autocast():
            loss.backward()
    return held, mem.peak


# ----------------------------------------------------------------------------- model states


def test_parameters_per_stage_equal_the_model_and_a_hand_count(build):
    # h 64, 4 heads of d 16, 2 groups, SwiGLU 160, vocabulary 96, K 2, 4 layers:
    # per layer QKV 64 x (4 + 2 x 2) x 16, projection 64 x 64, SwiGLU 3 x 64 x 160, norms 2 x 64.
    layer = 64 * 128 + 64 * 64 + 3 * 64 * 160 + 2 * 64
    embedding = head = 96 * 64
    hand = {
        ("vanilla", ()): 4 * layer + embedding + head + 64,
        ("ponderlm3", ()): 4 * layer + embedding + head + 64 + 3 * (64 + 1),  # Linear(H, K+1)
        ("ponderlm3", ("ponder.router=mlp",)): 4 * layer + embedding + head + 64
                                               + 64 * 64 + 64 + 3 * (64 + 1),
        ("pause", ()): 4 * layer + embedding + head + 64 + 64,
        ("vanilla", ("model.qkv_bias=true",)): 4 * (layer + 128) + embedding + head + 64,
        # Mistral-Nemo-style heads of 8 (QKV 64 x 8 x 8, projection 32 x 64) with Qwen3's
        # q/k norms (2 x 8 per layer).
        ("vanilla", ("model.head_dim=8", "model.qk_norm=true")):
            4 * (64 * 64 + 32 * 64 + 3 * 64 * 160 + 2 * 64 + 2 * 8) + embedding + head + 64,
    }
    for (method, extra), count in hand.items():
        cfg = config(method, extra=extra)
        assert stage_params(cfg, 0).total == count, (method, extra)
        assert sum(p.numel() for p in build(cfg).parameters()) == count, (method, extra)
    # Two stages split the layers; the first holds the embedding, the last norm, head, router.
    cfg = config("ponderlm3", extra=("parallel.pipeline_model_parallel_size=2",))
    assert stage_params(cfg, 0).total == 2 * layer + embedding
    assert stage_params(cfg, 1).total == 2 * layer + head + 64 + 3 * 65
    # TP 2 halves every matrix but the router's, and the vocabulary; norms are replicated.
    cfg = config("ponderlm3", extra=("parallel.tensor_model_parallel_size=2",))
    assert stage_params(cfg, 0).total == (4 * (layer - 128) // 2 + 4 * 128 + embedding // 2
                                          + head // 2 + 64 + 3 * 65)


def test_optimizer_state_bytes_per_engine():
    p = 1_000_003  # parameters on the rank; not a multiple of the DP size
    megatron = config()
    assert astuple(state_bytes(megatron, p, dp=1)) == (4 * p, 4 * p, 8 * p)
    assert astuple(state_bytes(megatron, p, dp=4)) == (4 * p, 4 * p, -(-8 * p // 4))
    shard = -(-p // 2)
    for stage, expected in {1: (4 * p, 4 * p, 12 * shard),
                            2: (4 * p, 4 * shard + 4 * p, 12 * shard),
                            3: (4 * shard, 4 * shard + 4 * p, 12 * shard)}.items():
        cfg = config(extra=("parallel.engine=deepspeed", f"parallel.zero_stage={stage}"))
        assert astuple(state_bytes(cfg, p, dp=2)) == expected, stage


# ----------------------------------------------------------------------------- activations

CASES = {
    "vanilla": ("vanilla", 2, ()),
    "ponderlm2": ("ponderlm2", 2, ()),
    "ponderlm3": ("ponderlm3", 2, ()),
    "ponderlm3-k3": ("ponderlm3", 3, ()),
    "ponderlm3-layers": ("ponderlm3", 2, ("train.recompute=layers",)),
    "ponderlm3-passes": ("ponderlm3", 2, ("train.recompute=passes",)),
    "ponderlm2-layers": ("ponderlm2", 2, ("train.recompute=layers",)),
    "ponderlm3-grad2": ("ponderlm3", 2, ("ponder.grad_passes=2",)),
    # Qwen3's shape: q/k norms over heads wider than hidden / heads.
    "ponderlm3-qwen3": ("ponderlm3", 2, ("model.qk_norm=true", "model.head_dim=24")),
}


@pytest.mark.parametrize("case, bf16", [(case, False) for case in CASES] + [
    (case, True) for case in ("vanilla", "ponderlm3", "ponderlm3-layers", "ponderlm3-qwen3")])
def test_kept_activations_equal_the_exact_count(case, bf16, build):
    method, k, extra = CASES[case]
    cfg = config(method, k, (*extra, f"train.precision={'bf16' if bf16 else 'fp32'}"))
    held, _ = measure(build(cfg), cfg, bf16)
    predicted = stage_plan(cfg, widths(cfg, cuda=False), cfg.train.micro_batch_size, 0, 1).kept
    assert predicted == pytest.approx(held, rel=KEPT_RTOL), (case, predicted, held)


@pytest.mark.parametrize("recompute", ["none", "layers", "passes"])
def test_peak_of_a_step_is_within_a_tenth(recompute, build):
    cfg = config("ponderlm3", 2, (f"train.recompute={recompute}",), layers=8, batch=4, length=48)
    _, peak = measure(build(cfg), cfg)
    plan = plan_memory(cfg, 1, cuda=False, micro_batch=4)
    # What the step adds to the model: parameters and optimizer state exist before it.
    predicted = plan.activations_and_grads + plan.backward_working
    assert predicted == pytest.approx(peak, rel=PEAK_RTOL), (recompute, predicted, peak)


def layouts_worker(rank):
    """Per rank: kept bytes after the forward at TP 2, the step's peak at PP 2 (3 micro-batches)."""
    from megatron_ponder.model import build_model
    from megatron_ponder.parallel import initialize_parallel
    from megatron_ponder.parallel.pipeline import pipeline_step

    results = {}
    cfg = config("ponderlm3", 2, ("parallel.tensor_model_parallel_size=2",))
    initialize_parallel(cfg)
    results["tp2"] = measure(build_model(cfg), cfg)[0]
    cfg = config("ponderlm3", 2, ("parallel.pipeline_model_parallel_size=2",
                                  "train.global_batch_size=6"))
    initialize_parallel(cfg)
    model = build_model(cfg)
    model.train()
    gen = torch.Generator().manual_seed(0)
    batches = [{"tokens": torch.randint(0, VOCAB, (2, 24), generator=gen),
                "labels": torch.randint(0, VOCAB, (2, 24), generator=gen),
                "loss_mask": torch.ones(2, 24)} for _ in range(3)]
    with TensorMemoryTracker() as mem:
        pipeline_step(model, batches, 0, contextlib.nullcontext)
    results["pp2"] = mem.peak
    return results


def test_per_rank_figures_at_tp2_and_pp2():
    measured = run_distributed(layouts_worker, 2, env=STRICT_COMMS)
    tp2 = config("ponderlm3", 2, ("parallel.tensor_model_parallel_size=2",))
    kept = stage_plan(tp2, widths(tp2, cuda=False), 2, 0, 1).kept
    for rank in measured:
        assert kept == pytest.approx(rank["tp2"], rel=KEPT_RTOL), (kept, rank["tp2"])
    pp2 = config("ponderlm3", 2, ("parallel.pipeline_model_parallel_size=2",
                                  "train.global_batch_size=6"))
    plan = plan_memory(pp2, 2, cuda=False)
    predicted = plan.activations_and_grads + plan.backward_working
    # The planner reports the stage that needs the most.
    assert predicted == pytest.approx(max(r["pp2"] for r in measured), rel=PEAK_RTOL)


# ----------------------------------------------------------------------------- the tool


def test_plan_memory_tool(capsys):
    sys.path.insert(0, str(ROOT / "tools"))
    import plan_memory

    recipe = ROOT / "recipes" / "paper" / "7b" / "ponderlm3.yaml"
    assert plan_memory.main([str(recipe), "--gpus", "8"]) == 0
    out = capsys.readouterr().out
    assert "fits" in out and "largest micro-batch that fits: 4" in out
    # Without recomputation the 7b PonderLM-3 step does not fit: exit code 1.
    assert plan_memory.main([str(recipe), "train.recompute=none"]) == 1
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "plan_memory.py"), str(recipe),
                          "--gpus", "6"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "6 GPUs are not a multiple of TP x PP = 4" in bad.stderr
