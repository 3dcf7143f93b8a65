"""Generation with the hard rule and the slot KV cache (method.md section 5).

Prefill: each prompt runs the model's pass program with the hard mask (the Jacobi solve),
and the final pass's kept slots enter the cache. Decoding: token by token; slot (t, 0) runs,
then the method's plan decides the latent slots up front (PonderLM-3's router: K_hat_t =
max{k : w_{t,k} >= tau}), and only slots 1..K_hat_t run, each appending its K/V and key bias.
Rows of a batch keep different numbers of slots; a latent step runs only for the rows that
kept it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from megatron.core.tensor_parallel.mappings import gather_from_tensor_model_parallel_region

from megatron_ponder.config import ConfigError
from megatron_ponder.inference.kv_cache import RecordedPass, SlotKVCache
from megatron_ponder.inference.sampling import Sampling, next_tokens
from megatron_ponder.inference.scoring import configured
from megatron_ponder.ponder.program import run_locally
from megatron_ponder.ponder.registry import names_where


@dataclass
class Generation:
    tokens: list[list[int]]  # generated ids per sequence (prompt excluded)
    # Latent steps each processed token ran (prompt, then every generated token fed back).
    steps: list[list[int]] = field(default_factory=list)
    cache_lengths: list[int] = field(default_factory=list)  # slots held per sequence


class _RecordingBackbone:
    """The decoder, but every pass records its keys and values (the last pass is kept)."""

    def __init__(self, decoder):
        self._decoder = decoder
        self.last: RecordedPass | None = None

    def __getattr__(self, name):
        return getattr(self._decoder, name)

    def run(self, inputs, position_ids, key_log_w=None, final_norm=True):
        self.last = RecordedPass(key_log_w)
        return self._decoder.run_cached(inputs, position_ids, self.last, final_norm)


class SlotDecoder:
    """Prefill and token-by-token decoding of one PonderLM (eval mode, no autograd)."""

    def __init__(self, model, tau: float | None = None, jacobi: int | None = None):
        if not model.method.decodes_with_slot_cache:
            decodable = names_where(lambda m: m.decodes_with_slot_cache)
            raise ConfigError(f"ponder.method={model.cfg.ponder.method!r} cannot be decoded with "
                              f"a KV cache; decodable methods: {', '.join(decodable)}")
        # The method at this decoder's tau (a caller's, checked here once).
        method = configured(model, tau)
        self.model, self.decoder, self.method, self.tau = model, model.decoder, method, method.tau
        self.jacobi = method.jacobi_eval if jacobi is None else jacobi
        self.latent_steps = method.latent_steps
        self.slots_per_token = method.slots_per_token

    def _full_vocab(self, logits: torch.Tensor) -> torch.Tensor:
        return gather_from_tensor_model_parallel_region(logits).float()

    def prefill(self, cache: SlotKVCache, row: int, prompt: torch.Tensor):
        """prompt [L] -> (next-token logits [V], latent steps per prompt token [L])."""
        recorder = _RecordingBackbone(self.decoder)
        out = run_locally(self.model.program(prompt[None], jacobi=self.jacobi,
                                             tau=self.tau, backbone=recorder))
        cache.insert(row, recorder.last)
        kept = recorder.last.kept_slots().view(len(prompt), -1).sum(-1) - 1
        return self._full_vocab(out.logits[-1, 0]), kept

    def _slot(self, cache, rows, inputs, positions, slot_log_w):
        step = cache.step(rows, slot_log_w)
        hidden = self.decoder.run_cached(inputs, positions, step)
        step.commit()
        return hidden

    def feed(self, cache: SlotKVCache, rows: torch.Tensor, token_ids: torch.Tensor,
             positions: torch.Tensor):
        """One token for each of `rows` at its position -> (next logits [b, V], steps [b])."""
        d, b = self.decoder, len(rows)
        pos = positions[None]
        zero = torch.zeros(b, device=token_ids.device)
        outputs = [self._slot(cache, rows, d.embed(token_ids[:, None]), pos, zero)]
        plan = self.method.decode_plan(d, outputs[0])
        for step in range(1, self.latent_steps + 1):
            active = plan.kept >= step
            if not active.any():
                break
            prev = outputs[-1]
            inputs = self.method.latent_input(d, prev)
            bias = plan.slot_bias(step, zero)
            hidden = torch.zeros_like(prev)
            hidden[:, active] = self._slot(cache, rows[active], inputs[:, active],
                                           pos[:, active], bias[active])
            outputs.append(hidden)
        return self._full_vocab(d.lm_logits(plan.fuse(outputs)[None])[0]), plan.kept


def check_prompts(prompts: list[list[int]], max_new_tokens: int, cfg) -> None:
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens={max_new_tokens} is invalid: must be >= 0")
    limit = cfg.model.max_position_embeddings
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > limit:
        raise ConfigError(
            f"a prompt of {longest} tokens plus max_new_tokens={max_new_tokens} exceeds the "
            f"position table: model.max_position_embeddings={limit}; shorten the prompt or "
            f"generate fewer tokens")
    vocab = cfg.model.vocab_size
    bad = [t for p in prompts for t in p if not 0 <= t < vocab]
    if bad:
        raise ConfigError(f"prompt token id {bad[0]} is outside the model's vocabulary "
                          f"[0, {vocab}): the tokenizer does not match the model")


@torch.no_grad()
def generate(model, prompts: list[list[int]], max_new_tokens: int,
             sampling: Sampling = Sampling(), tau: float | None = None,
             eos_id: int | None = None, jacobi: int | None = None) -> Generation:
    """Continue each prompt (token ids) by up to max_new_tokens tokens; a row stops at eos_id."""
    check_prompts(prompts, max_new_tokens, model.cfg)
    engine = SlotDecoder(model, tau, jacobi)
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        longest = max(len(p) for p in prompts) + max_new_tokens
        cache = SlotKVCache(len(prompts), longest * engine.slots_per_token, device)
        logits, steps = [], []
        for row, prompt in enumerate(prompts):
            row_logits, kept = engine.prefill(cache, row, torch.tensor(prompt, device=device))
            logits.append(row_logits)
            steps.append(kept.tolist())
        logits = torch.stack(logits)
        positions = torch.tensor([len(p) for p in prompts], device=device)
        finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
        generated: list[list[int]] = [[] for _ in prompts]
        generator = sampling.generator()
        for i in range(max_new_tokens):
            chosen = next_tokens(logits, sampling, generator)
            for row in (~finished).nonzero()[:, 0].tolist():
                generated[row].append(int(chosen[row]))
            if eos_id is not None:
                finished |= chosen == eos_id
            if i == max_new_tokens - 1 or finished.all():
                break
            rows = (~finished).nonzero()[:, 0]
            row_logits, kept = engine.feed(cache, rows, chosen[rows], positions[rows])
            logits[rows] = row_logits
            positions[rows] += 1
            for row, k in zip(rows.tolist(), kept.tolist()):
                steps[row].append(k)
        return Generation(generated, steps, cache.lengths.tolist())
    finally:
        model.train(was_training)
