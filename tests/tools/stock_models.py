"""Tiny random Llama / Mistral / Qwen2 / Qwen3 checkpoints made with transformers, for the
import tests, in the shapes of today's families (Llama 3.x RoPE scaling, Qwen3 q/k norms and
head_dim, a tied SmolLM2, Mistral-Nemo's narrow heads).

Every parameter (norms and biases too) is drawn at a scale that gives logits of order one, so
a wrong permutation of heads, a lost bias or a mis-tied head shows in the logits."""

from __future__ import annotations

import json
from pathlib import Path

import torch

VOCAB = 512  # the tool tests' tokenizer
# Grouped-query attention (4 heads, 2 KV heads), a RoPE base other than 10000, and tied
# embeddings for Qwen2 (as its small checkpoints ship).
ARCHITECTURES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {"rope_theta": 500000.0}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"rope_theta": 20000.0,
                                                        "sliding_window": None}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"rope_theta": 1000000.0,
                                                  "tie_word_embeddings": True}),
    # Llama 3.1's scaling with the context cut to 32 of the 64 positions: at theta 1e4 and
    # head size 16 the wavelengths (6.3, 20, 63, ...) fall in all three of its bands (kept
    # below 32/4, interpolated, divided by the factor above 32/1).
    "llama3": ("LlamaConfig", "LlamaForCausalLM", {"rope_parameters": {
        "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 32}}),
    "llama-linear": ("LlamaConfig", "LlamaForCausalLM", {"rope_parameters": {
        "rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}}),
    # YaRN (Qwen2.5 / Qwen3 long-context configs) with transformers' defaults: beta 32 / 1,
    # attention factor 0.1 ln 4 + 1.
    "llama-yarn": ("LlamaConfig", "LlamaForCausalLM", {"rope_parameters": {
        "rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
        "original_max_position_embeddings": 32}}),
    # Qwen3: q/k RMSNorm and heads wider than hidden / heads (32 against 16).
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"rope_theta": 1000000.0, "head_dim": 32}),
    # SmolLM2: a Llama with tied embeddings, 3 query heads on one KV head.
    "smollm2": ("LlamaConfig", "LlamaForCausalLM", {"rope_theta": 100000.0,
                                                    "tie_word_embeddings": True, "hidden_size": 48,
                                                    "num_attention_heads": 3,
                                                    "num_key_value_heads": 1}),
    # Mistral-Nemo: heads narrower than hidden / heads (8 against 16).
    "mistral-nemo": ("MistralConfig", "MistralForCausalLM", {"rope_theta": 1000000.0,
                                                             "sliding_window": None, "head_dim": 8}),
}
# Where a family's RoPE scaling changes regime: logits are compared below and above it.
ORIGINAL_CONTEXT = 32


def stock_model(arch: str, seed: int = 0, **config):
    import transformers

    config_class, model_class, extra = ARCHITECTURES[arch]
    fields = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  rms_norm_eps=1e-5)
    fields |= extra
    hf_config = getattr(transformers, config_class)(**{**fields, **config})
    model = getattr(transformers, model_class)(hf_config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith("norm.weight"):
                param.copy_(1 + 0.2 * noise)
            elif name.endswith("bias"):
                param.copy_(0.5 * noise)
            elif "embed" in name:  # std 0.25: a tied head gives logits of std ~2
                param.copy_(0.25 * noise)
            else:  # unit-scale activations: std 1 / sqrt(fan-in)
                param.copy_(noise / param.shape[1] ** 0.5)
    return model


def save_stock(folder: Path, arch: str, sharded: bool = False, seed: int = 0, **config):
    """The model, saved with save_pretrained (several safetensors shards + index if sharded)."""
    model = stock_model(arch, seed, **config)
    model.save_pretrained(folder, max_shard_size="40KB" if sharded else "1GB")
    assert (Path(folder) / "model.safetensors.index.json").is_file() == sharded
    return model


def edit_config(folder: Path, drop=(), **changes) -> None:
    """Rewrite the folder's config.json: set `changes` (None writes null), remove `drop`."""
    path = Path(folder) / "config.json"
    config = {**json.loads(path.read_text()), **changes}
    for key in drop:
        config.pop(key, None)
    path.write_text(json.dumps(config, indent=2))
