"""PonderLM for Hugging Face transformers: a standalone, plain-PyTorch implementation.

Written by megatron-ponder and copied into every export folder, so the folder loads alone:
    AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True, ponder_tau=1e-3)
This file must not import megatron_ponder.

Weights follow Hugging Face's Llama layout plus `model.router` (PonderLM-3) or
`model.pause_embedding` (Pause). Methods: ponderlm3 (adaptive latent pondering with the hard
pruning rule), ponderlm2 (K latent thoughts), pause (K pause slots) and vanilla.

Forward without a cache = the parallel forward with the hard rule (growth passes, Jacobi
iterations, final pass): latent slots with tail probability w < tau get key bias -inf and
are left out of the fusion. With use_cache it returns a SlotCache holding, per kept slot,
its keys, values and log w; later calls decode token by token and run only the latent steps
the router keeps (K_hat_t = max{k <= ponder_max_steps : w_{t,k} >= tau}).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast


class MethodFacts:
    """What a method is, as far as this file needs it: a copy of the method registry of
    megatron_ponder.ponder (this file must load without the package);
    tests/export/test_method_copy.py keeps the two equal."""

    def __init__(self, uses_router=False, uses_pause=False, uses_jacobi=False, plain=False):
        self.uses_router, self.uses_pause, self.uses_jacobi = uses_router, uses_pause, uses_jacobi
        self.plain = plain  # one slot per token, nothing of its own

    def latent_steps(self, k):
        return 0 if self.plain else k


# The methods that decode with one slot KV cache.
METHODS = {
    "vanilla": MethodFacts(plain=True),
    "pause": MethodFacts(uses_pause=True),
    "ponderlm2": MethodFacts(uses_jacobi=True),
    "ponderlm3": MethodFacts(uses_router=True, uses_jacobi=True),
}

_CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class PonderLMConfig(PretrainedConfig):
    model_type = "ponderlm"

    def __init__(self, vocab_size=256, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=None, max_position_embeddings=256,
                 rope_theta=10000.0, rms_norm_eps=1e-5, embedding_scale=None, qkv_bias=False,
                 head_dim=None, qk_norm=False, rope_scaling_type=None, rope_scaling_factor=None,
                 rope_low_freq_factor=None, rope_high_freq_factor=None,
                 rope_original_max_positions=None, rope_beta_fast=None, rope_beta_slow=None,
                 rope_attention_factor=None,
                 ponder_method="ponderlm3", ponder_k=3, ponder_tau=1e-4, ponder_max_steps=None,
                 ponder_jacobi=3, ponder_latent_init="growth", ponder_router="linear", **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        # PonderLM-2's sqrt(2.5 H): token embeddings at the RMS of the fed-back hidden states.
        self.embedding_scale = embedding_scale or math.sqrt(2.5 * hidden_size)
        self.qkv_bias = qkv_bias  # biases on q, k and v projections (Qwen2-style)
        # Channels per head (None: hidden / heads; Qwen3 and Mistral-Nemo set their own).
        self.head_dim = head_dim or hidden_size // num_attention_heads
        self.qk_norm = qk_norm  # RMSNorm over each query / key head before RoPE (Qwen3)
        # RoPE frequency scaling: None, "linear" (factor), "llama3" (all four fields), "yarn".
        self.rope_scaling_type = rope_scaling_type
        self.rope_scaling_factor = rope_scaling_factor
        self.rope_low_freq_factor = rope_low_freq_factor
        self.rope_high_freq_factor = rope_high_freq_factor
        self.rope_original_max_positions = rope_original_max_positions
        # YaRN: its ramp's rotation bounds, and the factor on cos and sin (logits: squared).
        self.rope_beta_fast, self.rope_beta_slow = rope_beta_fast, rope_beta_slow
        self.rope_attention_factor = rope_attention_factor
        self.ponder_method = ponder_method
        self.ponder_k = ponder_k  # K the model was trained with (router width)
        self.ponder_tau = ponder_tau  # hard-pruning threshold: the inference compute knob
        # K_max at inference: PonderLM-3 runs at most this many latent steps per token.
        self.ponder_max_steps = ponder_k if ponder_max_steps is None else ponder_max_steps
        self.ponder_jacobi = ponder_jacobi
        self.ponder_latent_init = ponder_latent_init
        self.ponder_router = ponder_router
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)

    @property
    def method(self) -> MethodFacts:
        return METHODS[self.ponder_method]

    def check(self):
        if self.ponder_method not in METHODS:
            raise ValueError(f"ponder_method={self.ponder_method!r} is invalid: valid: {', '.join(METHODS)}")
        if not 0.0 < float(self.ponder_tau) < 1.0:
            raise ValueError(f"ponder_tau={self.ponder_tau!r} is invalid: must lie strictly between 0 and 1")
        if not 0 <= int(self.ponder_max_steps) <= int(self.ponder_k):
            raise ValueError(f"ponder_max_steps={self.ponder_max_steps!r} is invalid: must be in "
                             f"[0, ponder_k={self.ponder_k}]")
        if int(self.ponder_jacobi) < 1:
            raise ValueError(f"ponder_jacobi={self.ponder_jacobi!r} is invalid: must be >= 1")
        if self.rope_scaling_type not in (None, "linear", "llama3", "yarn"):
            raise ValueError(f"rope_scaling_type={self.rope_scaling_type!r} is invalid: valid: "
                             f"null, linear, llama3, yarn")


# ------------------------------------------------------------------------------ layers


class RMSNorm(nn.Module):
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def _llama3(inv_freq, factor, low_freq_factor, high_freq_factor, original_max_positions):
    """Llama 3.1: wavelengths longer than original/low are stretched by `factor`, those
    shorter than original/high kept, the band between interpolated smoothly."""
    low_freq_wavelen = original_max_positions / low_freq_factor
    high_freq_wavelen = original_max_positions / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = ((original_max_positions / wavelen - low_freq_factor)
              / (high_freq_factor - low_freq_factor))
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return torch.where(medium, smoothed, scaled)


def _yarn(inv_freq: torch.Tensor, base: float, factor: float, original_max_positions: int,
          beta_fast: float, beta_slow: float) -> torch.Tensor:
    """YaRN: frequencies turning fewer than beta_slow times over the original context are
    divided by `factor`, those turning more than beta_fast times kept, a linear ramp between
    (over whole channel pairs, as transformers' truncate=True)."""
    d = 2 * len(inv_freq)

    def pair_of(rotations):  # the channel index turning `rotations` times in the context
        wavelengths = original_max_positions / (rotations * 2 * math.pi)
        return d * math.log(wavelengths) / (2 * math.log(base))

    low, high = max(math.floor(pair_of(beta_fast)), 0), min(math.ceil(pair_of(beta_slow)), d - 1)
    high = high + 0.001 if low == high else high  # transformers' guard against 0 / 0
    ramp = ((torch.arange(d // 2, dtype=inv_freq.dtype) - low) / (high - low)).clamp(0, 1)
    return inv_freq / factor * ramp + inv_freq * (1 - ramp)


def inverse_frequencies(cfg, device=None):
    """theta^(-2i/d) after the config's RoPE scaling, float64 (megatron_ponder/model/rope.py)."""
    d = cfg.head_dim
    exponents = torch.arange(0, d, 2, dtype=torch.float64, device=device) / d
    inv_freq = 1.0 / cfg.rope_theta ** exponents
    if cfg.rope_scaling_type == "linear":
        return inv_freq / cfg.rope_scaling_factor
    if cfg.rope_scaling_type == "llama3":
        return _llama3(inv_freq, cfg.rope_scaling_factor, cfg.rope_low_freq_factor,
                       cfg.rope_high_freq_factor, cfg.rope_original_max_positions)
    if cfg.rope_scaling_type == "yarn":
        return _yarn(inv_freq, cfg.rope_theta, cfg.rope_scaling_factor,
                     cfg.rope_original_max_positions, cfg.rope_beta_fast, cfg.rope_beta_slow)
    return inv_freq


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg, layer):
        super().__init__()
        self.layer = layer
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        h = cfg.hidden_size
        self.q_proj = nn.Linear(h, self.heads * self.head_dim, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(h, self.kv_heads * self.head_dim, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(h, self.kv_heads * self.head_dim, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, h, bias=False)
        # YaRN's attention factor multiplies cos and sin: the logits by its square.
        factor = cfg.rope_attention_factor if cfg.rope_scaling_type == "yarn" else 1.0
        self.scale = factor ** 2 / math.sqrt(self.head_dim)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, attend):
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        out = attend(self.layer, q, k, v, self.scale)
        return self.o_proj(out.transpose(1, 2).reshape(b, s, -1))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg, layer):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, attend):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, attend)
        return x + self.mlp(self.post_attention_layernorm(x))


# ------------------------------------------------------------------------- attention modes


class CausalAttend:
    """A parallel pass: causal attention plus a per-key bias [B, S] (None = plain causal).
    Keeps each layer's keys and values, so prefill can cache the kept slots."""

    def __init__(self, key_log_w):
        self.key_log_w = key_log_w
        self.kv = {}

    def __call__(self, layer, q, k, v, scale):
        self.kv[layer] = (k, v)
        s = q.shape[2]
        mask = torch.full((s, s), float("-inf"), device=q.device).triu(1)[None, None]
        if self.key_log_w is not None:
            mask = mask + self.key_log_w[:, None, None, :]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype), scale=scale,
                                              enable_gqa=q.shape[1] != k.shape[1])


class SlotCache:
    """Per layer keys/values [B, H_kv, capacity, D]; log_w [B, capacity]; lengths [B].
    Only kept slots are stored: a row's length is the number of slots it kept."""

    def __init__(self, batch, device):
        self.keys, self.values = {}, {}
        self.log_w = torch.full((batch, 0), float("-inf"), device=device)
        self.lengths = torch.zeros(batch, dtype=torch.long, device=device)
        self.tokens_seen = 0
        self.steps = [[] for _ in range(batch)]  # latent steps each processed token ran

    def get_seq_length(self, layer_idx=0):
        return self.tokens_seen

    def _ensure(self, needed, like):
        capacity = self.log_w.shape[1]
        if needed <= capacity:
            return
        grow = max(needed, 2 * capacity) - capacity
        self.log_w = F.pad(self.log_w, (0, grow), value=float("-inf"))
        for store in (self.keys, self.values):
            for layer, t in store.items():
                store[layer] = F.pad(t, (0, 0, 0, grow))

    def _layer(self, layer, like):
        if layer not in self.keys:
            shape = (self.log_w.shape[0], like.shape[1], self.log_w.shape[1], like.shape[3])
            self.keys[layer] = torch.zeros(shape, dtype=like.dtype, device=like.device)
            self.values[layer] = torch.zeros(shape, dtype=like.dtype, device=like.device)
        return self.keys[layer], self.values[layer]

    def insert(self, row, record: CausalAttend, kept):
        """Append the kept slots (bool [S]) of a parallel pass for `row` (batch index)."""
        n = int(kept.sum())
        start = int(self.lengths[row])
        self._ensure(start + n, None)
        for layer, (k, v) in record.kv.items():
            keys, values = self._layer(layer, k)
            keys[row, :, start:start + n] = k[row][:, kept]
            values[row, :, start:start + n] = v[row][:, kept]
        bias = (record.key_log_w[row] if record.key_log_w is not None
                else torch.zeros(len(kept), device=kept.device))
        self.log_w[row, start:start + n] = bias[kept].to(self.log_w)
        self.lengths[row] = start + n


class CacheStep:
    """One new slot for each of `rows`, attending over the row's cached slots."""

    def __init__(self, cache: SlotCache, rows, slot_log_w):
        self.cache, self.rows = cache, rows
        self.positions = cache.lengths[rows]
        cache._ensure(int(self.positions.max()) + 1, None)
        cache.log_w[rows, self.positions] = slot_log_w.to(cache.log_w)
        self.span = int(self.positions.max()) + 1
        visible = torch.arange(self.span, device=rows.device) <= self.positions[:, None]
        self.bias = cache.log_w[rows, :self.span].masked_fill(~visible, float("-inf"))[:, None, None]

    def __call__(self, layer, q, k, v, scale):
        keys, values = self.cache._layer(layer, k)
        keys[self.rows, :, self.positions] = k[:, :, 0]
        values[self.rows, :, self.positions] = v[:, :, 0]
        ks, vs = keys[self.rows, :, :self.span], values[self.rows, :, :self.span]
        return F.scaled_dot_product_attention(q, ks, vs, attn_mask=self.bias.to(q.dtype), scale=scale,
                                              enable_gqa=q.shape[1] != ks.shape[1])

    def commit(self):
        self.cache.lengths[self.rows] += 1


# ------------------------------------------------------------------------------ the router


def log_tail_probs(router_logits):
    """(log s, log w): log w_k = log P(steps >= k), a reverse cumulative logsumexp; w_0 = 1."""
    log_s = torch.log_softmax(router_logits.float(), dim=-1)
    log_w = torch.logcumsumexp(log_s.flip(-1), dim=-1).flip(-1)
    log_w = torch.cat([torch.zeros_like(log_w[..., :1]), log_w[..., 1:]], dim=-1)
    return log_s, torch.cummin(log_w, dim=-1).values


def hard_log_w(log_w, tau, max_steps):
    """log w with every pruned latent step at -inf: step k >= 1 runs iff w_k >= tau and k <= K_max."""
    steps = torch.arange(log_w.shape[-1], device=log_w.device)
    keep = (log_w >= math.log(tau)) & (steps <= max_steps)
    keep[..., 0] = True
    return log_w.masked_fill(~keep, float("-inf"))


# ------------------------------------------------------------------------------ the model


class PonderLMPreTrainedModel(PreTrainedModel):
    config_class = PonderLMConfig
    base_model_prefix = "model"
    _no_split_modules = ["DecoderLayer"]

    def _init_weights(self, module):
        std = math.sqrt(2 / (5 * self.config.hidden_size))
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)


class PonderLMModel(PonderLMPreTrainedModel):
    def __init__(self, cfg: PonderLMConfig):
        super().__init__(cfg)
        cfg.check()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        k = cfg.ponder_k
        if cfg.method.uses_router:
            self.router = (nn.Linear(cfg.hidden_size, k + 1) if cfg.ponder_router == "linear" else
                           nn.Sequential(nn.Linear(cfg.hidden_size, cfg.hidden_size), nn.SiLU(),
                                         nn.Linear(cfg.hidden_size, k + 1)))
        if cfg.method.uses_pause:
            self.pause_embedding = nn.Parameter(torch.zeros(cfg.hidden_size))
        self.post_init()

    def embed(self, input_ids):
        return self.embed_tokens(input_ids) * self.config.embedding_scale

    def run(self, x, positions, attend):
        """x [B, S, H], positions [B, S] -> final-norm output [B, S, H]."""
        # Computed here, not kept as a buffer: from_pretrained builds modules on the meta
        # device and would leave a non-persistent buffer uninitialised.
        inv_freq = inverse_frequencies(self.config, x.device)
        angles = positions[..., None].to(torch.float64) * inv_freq
        angles = torch.cat([angles, angles], dim=-1).float()[:, None]  # [B, 1, S, D]
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, attend)
        return self.norm(x)


def _interleave(slots):
    """n tensors [B, L, H] (slot k of every token) -> [B, n L, H] in slot order."""
    return torch.stack(slots, dim=2).flatten(1, 2)


class PonderLMForCausalLM(PonderLMPreTrainedModel, GenerationMixin):
    _is_stateful = True  # the slot cache cannot be cropped or reordered for beam search

    def __init__(self, cfg: PonderLMConfig):
        super().__init__(cfg)
        self.model = PonderLMModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls):
        return False  # our own SlotCache, created by the first forward

    # ---------------------------------------------------------------- parallel forward

    def _latent_steps(self):
        return self.config.method.latent_steps(self.config.ponder_k)

    def parallel_forward(self, input_ids):
        """Hard-pruned parallel forward: (logits [B, L, V], last pass's CausalAttend,
        slots per token in that pass, log w [B, L, K+1] or None)."""
        cfg, m = self.config, self.model
        method, k = cfg.method, cfg.ponder_k
        batch, length = input_ids.shape
        emb = m.embed(input_ids)
        positions = torch.arange(length, device=input_ids.device)
        state = {"log_s": None, "log_w": None, "record": None}

        def key_bias():
            return hard_log_w(state["log_w"], cfg.ponder_tau, cfg.ponder_max_steps)

        def run_pass(slots, bias=None):
            n = len(slots)
            record = CausalAttend(bias)
            pos = positions.repeat_interleave(n)[None].expand(batch, -1)
            out = m.run(_interleave(slots), pos, record).unflatten(1, (length, n)).unbind(2)
            state["record"], state["n"] = record, n
            return list(out)

        if not method.uses_jacobi:  # one pass: the tokens (and Pause's pause slots)
            # Only Pause owns a pause embedding: vanilla must not touch it.
            pause = ([(m.pause_embedding * cfg.embedding_scale).to(emb.dtype).expand_as(emb)] * k
                     if method.uses_pause else [])
            outputs = run_pass([emb] + pause)
            return self.lm_head(outputs[-1]), state["record"], state["n"], None

        adaptive = method.uses_router

        def latent_pass(latent):
            n = len(latent) + 1
            bias = key_bias()[..., :n].flatten(1) if adaptive and n > 1 else None
            outputs = run_pass([emb, *latent], bias)
            if adaptive:
                state["log_s"], state["log_w"] = log_tail_probs(m.router(outputs[0]))
            return outputs

        outputs = latent_pass([])
        growth = range(1, k) if cfg.ponder_latent_init == "growth" else range(0)
        if cfg.ponder_latent_init == "copy":
            outputs = outputs * max(k, 1)
        for step in growth:
            outputs = latent_pass(outputs[:step])
        for _ in range(cfg.ponder_jacobi + 1 if k > 0 else 0):
            outputs = latent_pass(outputs[:k])
        if adaptive:
            weights = state["log_s"].exp() * key_bias().isfinite()
            fused = sum(weights[..., j, None] * outputs[j] for j in range(k + 1))
        else:
            fused = outputs[k]
        return self.lm_head(fused), state["record"], state["n"], state["log_w"]

    # ---------------------------------------------------------------- decoding

    def _slot(self, cache, rows, x, positions, slot_log_w):
        step = CacheStep(cache, rows, slot_log_w)
        hidden = self.model.run(x, positions, step)
        step.commit()
        return hidden

    def decode_token(self, cache: SlotCache, token_ids):
        """One token per row [B] -> next-token logits [B, V]; runs only the kept latent steps."""
        cfg, m = self.config, self.model
        b = token_ids.shape[0]
        rows = torch.arange(b, device=token_ids.device)
        pos = torch.full((b, 1), cache.tokens_seen, device=token_ids.device)
        zero = torch.zeros(b, device=token_ids.device)
        outputs = [self._slot(cache, rows, m.embed(token_ids[:, None]), pos, zero)]
        kept = torch.full((b,), self._latent_steps(), device=token_ids.device)
        if cfg.method.uses_router:
            log_s, log_w = log_tail_probs(m.router(outputs[0]))  # [b, 1, K+1]
            bias = hard_log_w(log_w, cfg.ponder_tau, cfg.ponder_max_steps)[:, 0]
            kept = bias[:, 1:].isfinite().sum(-1)
        for step in range(1, self._latent_steps() + 1):
            active = kept >= step
            if not active.any():
                break
            prev = outputs[-1]
            inputs = ((m.pause_embedding * cfg.embedding_scale).to(prev.dtype).expand_as(prev)
                      if cfg.method.uses_pause else prev)
            slot_bias = bias[:, step] if cfg.method.uses_router else zero
            hidden = torch.zeros_like(prev)
            hidden[active] = self._slot(cache, rows[active], inputs[active], pos[active],
                                        slot_bias[active])
            outputs.append(hidden)
        if cfg.method.uses_router:
            weights = log_s[:, 0].exp()
            fused = sum(weights[:, j, None] * (kept >= j)[:, None] * outputs[j][:, 0]
                        for j in range(len(outputs)))
        else:
            fused = outputs[-1][:, 0]
        cache.tokens_seen += 1
        for row, steps in zip(range(b), kept.tolist()):
            cache.steps[row].append(steps)
        return self.lm_head(fused)

    def _prefill_cache(self, input_ids, record, n, log_w):
        cache = SlotCache(input_ids.shape[0], input_ids.device)
        length = input_ids.shape[1]
        for row in range(input_ids.shape[0]):
            kept = (record.key_log_w[row].isfinite() if record.key_log_w is not None
                    else torch.ones(length * n, dtype=torch.bool, device=input_ids.device))
            cache.insert(row, record, kept)
            cache.steps[row] = (kept.view(length, n).sum(-1) - 1).tolist()
        cache.tokens_seen = length
        return cache

    # ---------------------------------------------------------------- HF interface

    def forward(self, input_ids=None, attention_mask=None, cache=None, past_key_values=None,
                use_cache=None, labels=None, return_dict=None, **kwargs):
        cache = cache if cache is not None else past_key_values
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("PonderLM's slot cache does not support padded batches: pass "
                             "equal-length prompts (or batch size 1) without padding")
        if input_ids.shape[1] + (cache.tokens_seen if isinstance(cache, SlotCache) else 0) > \
                self.config.max_position_embeddings:
            raise ValueError(f"sequence longer than max_position_embeddings="
                             f"{self.config.max_position_embeddings}")
        if isinstance(cache, SlotCache) and cache.tokens_seen > 0:
            logits = torch.stack([self.decode_token(cache, input_ids[:, i])
                                  for i in range(input_ids.shape[1])], dim=1)
        else:
            logits, record, n, log_w = self.parallel_forward(input_ids)
            cache = self._prefill_cache(input_ids, record, n, log_w) if use_cache else None
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                   ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{_CACHE_FIELD: cache})

    def prepare_inputs_for_generation(self, input_ids, next_sequence_length=None, cache=None,
                                      past_key_values=None, attention_mask=None, **kwargs):
        cache = cache if cache is not None else past_key_values
        if isinstance(cache, SlotCache) and cache.tokens_seen > 0:
            input_ids = input_ids[:, cache.tokens_seen:]
        return {"input_ids": input_ids, _CACHE_FIELD: cache, "attention_mask": attention_mask,
                "use_cache": kwargs.get("use_cache", True)}
