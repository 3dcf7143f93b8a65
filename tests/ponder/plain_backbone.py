"""A plain-PyTorch decoder implementing the `Backbone` protocol (ponder/backbone.py): the
method is tested on it with no megatron import, as the architecture promises.

Pre-norm RMSNorm layers, grouped-query attention through the reference soft-mask backend,
RoPE from explicit position ids, SwiGLU; sequence-first tensors ([S, B, H]) as in megatron.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from megatron_ponder.attention.reference import reference_attention
from megatron_ponder.ponder.router import Router


def rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """x [B, heads, S, D] rotated by positions [S]."""
    d = x.shape[-1]
    inv_freq = 1.0 / base ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    angles = positions[:, None].float() * inv_freq
    angles = torch.cat([angles, angles], dim=-1)
    x1, x2 = x.chunk(2, dim=-1)
    return x * angles.cos() + torch.cat([-x2, x1], dim=-1) * angles.sin()


class Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_heads: int, ffn: int):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, hidden // heads
        self.attn_norm, self.mlp_norm = nn.RMSNorm(hidden), nn.RMSNorm(hidden)
        self.qkv = nn.Linear(hidden, (heads + 2 * kv_heads) * self.head_dim, bias=False)
        self.proj = nn.Linear(hidden, hidden, bias=False)
        self.fc1 = nn.Linear(hidden, 2 * ffn, bias=False)
        self.fc2 = nn.Linear(ffn, hidden, bias=False)

    def forward(self, x, positions, key_log_w):
        s, b, _ = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).split(
            [self.heads * self.head_dim, self.kv_heads * self.head_dim,
             self.kv_heads * self.head_dim], dim=-1)
        q, k, v = (t.view(s, b, -1, self.head_dim).permute(1, 2, 0, 3) for t in (q, k, v))
        out = reference_attention(rope(q, positions), rope(k, positions), v, key_log_w,
                                  scale=1 / math.sqrt(self.head_dim))
        x = x + self.proj(out.permute(2, 0, 1, 3).reshape(s, b, -1))
        gate, up = self.fc1(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.fc2(F.silu(gate) * up)


class PlainBackbone(nn.Module):
    def __init__(self, vocab: int = 48, hidden: int = 32, layers: int = 2, heads: int = 4,
                 kv_heads: int = 2, k: int = 2, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.hidden_size = hidden
        self.local_vocab_size = vocab
        self.embedding_scale = math.sqrt(2.5 * hidden)
        self.embedding = nn.Embedding(vocab, hidden)
        nn.init.normal_(self.embedding.weight, std=math.sqrt(2 / (5 * hidden)))
        self.layers = nn.ModuleList(Layer(hidden, heads, kv_heads, 64) for _ in range(layers))
        self.norm = nn.RMSNorm(hidden)
        self.head = nn.Linear(hidden, vocab, bias=False)
        self.router = Router(hidden, k)
        self.pause = nn.Parameter(torch.randn(hidden) * 0.1)

    def embed(self, tokens):
        return self.embedding(tokens).transpose(0, 1) * self.embedding_scale

    def run(self, inputs, position_ids, key_log_w=None, final_norm=True):
        x = inputs
        for layer in self.layers:
            x = layer(x, position_ids, key_log_w)
        return self.norm(x) if final_norm else x

    def final_norm(self, hidden):
        return self.norm(hidden)

    def lm_logits(self, hidden):
        return self.head(hidden)

    def expected_embedding(self, logits):
        return logits.float().softmax(-1) @ self.embedding.weight * self.embedding_scale

    def route(self, h0):
        return self.router(h0)

    def pause_inputs(self, like):
        return (self.pause * self.embedding_scale).to(like.dtype).expand_as(like)

    def cross_entropy(self, logits, labels):
        return F.cross_entropy(logits.float().permute(1, 2, 0), labels, reduction="none")
