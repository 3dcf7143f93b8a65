"""Generation with the hard rule and the slot KV cache (method.md section 5).

Prefill: each prompt runs the training-style parallel forward with the hard mask (the
Jacobi solve), and the final pass's kept slots enter the cache. Decoding: token by token;
slot (t, 0) runs, the router decides K_hat_t = max{k : w_{t,k} >= tau} up front, and only
slots 1..K_hat_t run, each appending its K/V and log w_{t,k}. Rows of a batch keep
different numbers of slots; a latent step runs only for the rows that kept it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from megatron.core.tensor_parallel.mappings import gather_from_tensor_model_parallel_region

from megatron_ponder.config import ConfigError
from megatron_ponder.inference.kv_cache import RecordedPass, SlotKVCache
from megatron_ponder.inference.sampling import Sampling, next_tokens
from megatron_ponder.inference.scoring import check_tau
from megatron_ponder.ponder.registry import method_forward
from megatron_ponder.ponder.router import hard_rule_keeps, log_tail_probs

# Loop and PonderLM-1 re-run the whole stack over the context per pass: they would need
# one cache per pass, which no experiment here asks for.
DECODABLE = ("vanilla", "pause", "ponderlm2", "ponderlm3")


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
        p = model.cfg.ponder
        if p.method not in DECODABLE:
            raise ConfigError(f"ponder.method={p.method!r} cannot be decoded with a KV cache; "
                              f"decodable methods: {', '.join(DECODABLE)}")
        self.model, self.decoder, self.method = model, model.decoder, p.method
        self.tau = check_tau(p.tau if tau is None else tau)
        self.jacobi = p.jacobi_eval if jacobi is None else jacobi
        self.latent_steps = 0 if p.method == "vanilla" else p.k

    def _full_vocab(self, logits: torch.Tensor) -> torch.Tensor:
        return gather_from_tensor_model_parallel_region(logits).float()

    def prefill(self, cache: SlotKVCache, row: int, prompt: torch.Tensor):
        """prompt [L] -> (next-token logits [V], latent steps per prompt token [L])."""
        recorder = _RecordingBackbone(self.decoder)
        p = self.model.cfg.ponder
        out = method_forward(self.method, recorder, prompt[None], k=p.k, jacobi=self.jacobi,
                             latent_init=p.latent_init, hard_tau=self.tau)
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
        kept = torch.full((b,), self.latent_steps, device=token_ids.device)
        if self.method == "ponderlm3":
            log_s, log_w = log_tail_probs(d.route(outputs[0]))  # [1, b, K+1]
            kept = hard_rule_keeps(log_w, self.tau).sum(-1)[0]
        for step in range(1, self.latent_steps + 1):
            active = kept >= step
            if not active.any():
                break
            prev = outputs[-1]
            inputs = d.pause_inputs(prev) if self.method == "pause" else prev
            bias = log_w[0, :, step] if self.method == "ponderlm3" else zero
            hidden = torch.zeros_like(prev)
            hidden[:, active] = self._slot(cache, rows[active], inputs[:, active],
                                           pos[:, active], bias[active])
            outputs.append(hidden)
        if self.method == "ponderlm3":
            # Fusion over the kept steps only, no renormalisation (dropped mass < tau).
            weights = log_s[0].exp()
            fused = sum(weights[:, j, None] * (kept >= j)[:, None] * outputs[j][0]
                        for j in range(len(outputs)))
        else:
            fused = outputs[-1][0]
        return self._full_vocab(d.lm_logits(fused[None])[0]), kept


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
        cache = SlotKVCache(len(prompts), longest * (engine.latent_steps + 1), device)
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
