"""Token-by-token decoding with the slot KV cache against the parallel hard forward."""

import pytest
import torch

from factories import tiny_config
from routers import force_router, random_tokens, randomise_router
from megatron_ponder.config import ConfigError
from megatron_ponder.inference.decoding import SlotDecoder, generate
from megatron_ponder.inference.kv_cache import SlotKVCache
from megatron_ponder.inference.sampling import Sampling, filter_logits
from megatron_ponder.inference.scoring import hard_forward

TOL = 2e-5  # float32 log-probs: the cache attends in another order than the fused kernel


@torch.no_grad()
def teacher_forced(model, tokens, tau=None, jacobi=None, prompt=1):
    """Prefill each row's first `prompt` tokens, then feed the rest one by one: log-probs
    [L - prompt + 1, B, V] (positions prompt-1 .. L-1), latent steps [B, L] and the cache."""
    model.eval()
    engine = SlotDecoder(model, tau, jacobi)
    batch, length = tokens.shape
    cache = SlotKVCache(batch, length * (engine.latent_steps + 1))
    logits, steps = [], []
    for row in range(batch):
        row_logits, kept = engine.prefill(cache, row, tokens[row, :prompt])
        logits.append(row_logits)
        steps.append(kept)
    out, kept_all = [torch.stack(logits)], [torch.stack(steps)]
    rows = torch.arange(batch)
    for t in range(prompt, length):
        row_logits, kept = engine.feed(cache, rows, tokens[:, t], torch.full((batch,), t))
        out.append(row_logits)
        kept_all.append(kept[:, None])
    return torch.stack(out).log_softmax(-1), torch.cat(kept_all, dim=1), cache


def parallel_log_probs(model, tokens, tau=None, jacobi=None):
    out = hard_forward(model, tokens, tau=tau, jacobi=jacobi)
    return out.logits.float().log_softmax(-1), out


def test_decoding_equals_the_converged_parallel_forward_and_caches_only_kept_slots(build):
    cfg = tiny_config("ponderlm3", k=3)
    model = build(cfg)
    randomise_router(model, scale=0.3, bias=[0.0, 0.0, -1.5, -3.0])
    tokens = random_tokens(cfg.model.vocab_size, batch=3, length=6)
    tau = 0.05
    decoded, kept, cache = teacher_forced(model, tokens, tau=tau)
    exact, exact_out = parallel_log_probs(model, tokens, tau=tau, jacobi=4 * tokens.shape[1])
    exact_kept = exact_out.kept_steps(tau)
    assert len(set(exact_kept.flatten().tolist())) >= 3, exact_kept  # rows really differ
    assert torch.equal(kept, exact_kept)
    assert (decoded - exact).abs().max().item() < TOL
    # Cache length = kept slots exactly: one token slot plus K_hat_t latent slots per token.
    assert cache.lengths.tolist() == (1 + exact_kept).sum(-1).tolist()
    assert cache.log_w[:, : int(cache.lengths.min())].isfinite().all()
    # At the evaluation J the parallel forward is off by its Jacobi residual, no more.
    approx, _ = parallel_log_probs(model, tokens, tau=tau)
    residual = (approx - exact).abs().max().item()
    assert (decoded - approx).abs().max().item() <= residual + TOL


@pytest.mark.parametrize("method, k", [("ponderlm3", 3), ("ponderlm2", 2), ("pause", 2),
                                       ("vanilla", 0)])
def test_a_multi_token_prefill_then_decoding_equals_the_parallel_forward(build, method, k):
    # The prompt's slots enter the cache from one parallel (Jacobi) prefill; the tokens
    # after it attend to them one by one. At a converged J both equal the parallel forward.
    cfg = tiny_config(method, k=k)
    model = build(cfg)
    tau = 0.05
    if method == "ponderlm3":
        randomise_router(model, scale=0.3, bias=[0.0, 0.0, -1.5, -3.0])
    tokens = random_tokens(cfg.model.vocab_size, batch=3, length=9)
    prompt, jacobi = 5, 4 * tokens.shape[1]
    decoded, kept, cache = teacher_forced(model, tokens, tau=tau, jacobi=jacobi, prompt=prompt)
    exact, exact_out = parallel_log_probs(model, tokens, tau=tau, jacobi=jacobi)
    assert decoded.shape[0] == tokens.shape[1] - prompt + 1
    assert (decoded - exact[prompt - 1:]).abs().max().item() < TOL
    if method == "ponderlm3":
        exact_kept = exact_out.kept_steps(tau)
        assert torch.equal(kept, exact_kept)
        # Kept steps vary inside the prompt and after it.
        assert len(set(exact_kept[:, :prompt].flatten().tolist())) >= 2
        assert len(set(exact_kept[:, prompt:].flatten().tolist())) >= 2
    else:
        assert (kept == (0 if method == "vanilla" else k)).all()
    assert cache.lengths.tolist() == (1 + kept).sum(-1).tolist()


@pytest.mark.parametrize("step", [0, 3])
def test_forced_router_decodes_like_the_parallel_forward(build, step):
    cfg = tiny_config("ponderlm3", k=3)
    model = build(cfg)
    force_router(model, step)
    tokens = random_tokens(cfg.model.vocab_size, batch=2, length=5)
    # one-hot(0) has no latent slot, so no Jacobi residual; one-hot(K) is PonderLM-2's solve.
    jacobi = None if step == 0 else 4 * tokens.shape[1]
    decoded, kept, cache = teacher_forced(model, tokens, jacobi=jacobi)
    parallel, _ = parallel_log_probs(model, tokens, jacobi=jacobi)
    assert (decoded - parallel).abs().max().item() < TOL
    assert (kept == step).all()
    assert cache.lengths.tolist() == [5 * (1 + step)] * 2


@pytest.mark.parametrize("method", ["vanilla", "ponderlm2", "pause"])
def test_fixed_step_methods_decode_like_their_forward(build, method):
    cfg = tiny_config(method, k=2)
    model = build(cfg)
    tokens = random_tokens(cfg.model.vocab_size, batch=2, length=5)
    decoded, kept, cache = teacher_forced(model, tokens, jacobi=16)
    parallel, _ = parallel_log_probs(model, tokens, jacobi=16)
    assert (decoded - parallel).abs().max().item() < TOL
    slots = 1 if method == "vanilla" else 3
    assert cache.lengths.tolist() == [5 * slots] * 2


def test_batched_generation_equals_one_sequence_at_a_time(build):
    cfg = tiny_config("ponderlm3", k=3)
    model = build(cfg)
    randomise_router(model, scale=0.3, bias=[0.0, 0.0, -1.5, -3.0])
    prompts = [[3, 9, 4, 1, 7], [5, 2], [8, 8, 8]]
    batched = generate(model, prompts, max_new_tokens=6, tau=0.05)
    for row, prompt in enumerate(prompts):
        alone = generate(model, [prompt], max_new_tokens=6, tau=0.05)
        assert alone.tokens[0] == batched.tokens[row]
        assert alone.steps[0] == batched.steps[row]
    for prompt, new, steps, length in zip(prompts, batched.tokens, batched.steps,
                                          batched.cache_lengths):
        # Every prompt token and every generated token but the last went through the model.
        assert len(steps) == len(prompt) + len(new) - 1
        assert length == len(steps) + sum(steps)
    assert len({sum(s) for s in batched.steps}) > 1  # rows kept different numbers of slots


def test_sampling_is_seeded_and_filters_behave(build):
    cfg = tiny_config("ponderlm3", k=2)
    model = build(cfg)
    prompts = [[1, 2, 3], [4, 5]]
    hot = Sampling(temperature=1.5, top_p=0.9, seed=11)
    first = generate(model, prompts, 8, hot).tokens
    assert generate(model, prompts, 8, hot).tokens == first
    assert generate(model, prompts, 8, Sampling(temperature=1.5, top_p=0.9, seed=12)).tokens != first
    greedy = generate(model, prompts, 8).tokens
    assert generate(model, prompts, 8, Sampling(temperature=1.0, top_k=1, seed=5)).tokens == greedy
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    assert filter_logits(logits, 2, 1.0).isfinite().tolist() == [[True, True, False, False]]
    # softmax = .64 .24 .09 .03: the nucleus of 0.8 needs the first two tokens.
    assert filter_logits(logits, 0, 0.8).isfinite().tolist() == [[True, True, False, False]]
    assert filter_logits(logits, 0, 0.5).isfinite().tolist() == [[True, False, False, False]]


def test_eos_stops_a_row_without_growing_its_cache(build):
    cfg = tiny_config("vanilla", k=0)
    model = build(cfg)
    free = generate(model, [[1, 2, 3]], 6)
    eos = free.tokens[0][2]
    stopped = generate(model, [[1, 2, 3], [4]], 6, eos_id=eos)
    assert stopped.tokens[0] == free.tokens[0][: free.tokens[0].index(eos) + 1]
    assert stopped.cache_lengths[0] == 3 + len(stopped.tokens[0]) - 1


def test_bad_generation_input_is_refused(build):
    cfg = tiny_config("ponderlm3", k=2)
    model = build(cfg)
    with pytest.raises(ConfigError, match="max_position_embeddings=32"):
        generate(model, [[1] * 30], max_new_tokens=5)
    with pytest.raises(ConfigError, match="token id 64 is outside the model's vocabulary"):
        generate(model, [[1, 64]], max_new_tokens=1)
    with pytest.raises(ConfigError, match="tau=1.5"):
        generate(model, [[1]], max_new_tokens=1, tau=1.5)
    with pytest.raises(ValueError, match="top_p"):
        Sampling(temperature=1.0, top_p=0.0)
    loop = build(tiny_config("loop", k=2))
    with pytest.raises(ConfigError, match="decodable methods"):
        generate(loop, [[1]], max_new_tokens=1)
