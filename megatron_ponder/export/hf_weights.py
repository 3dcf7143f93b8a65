"""Full (TP 1) PonderLM parameters <-> Hugging Face Llama-layout names, exactly invertible.

megatron's fused QKV weight is group-major: per query group, its query heads, then one key
and one value head. Concatenating the query parts over groups gives heads in HF order, and
HF's GQA maps query head h to kv head h // (heads / groups), as megatron does. The SwiGLU
fc1 weight is [gate; up]. Embeddings are stored unscaled (the sqrt(2.5 H) factor is the
config's embedding_scale), except for `vanilla`, exported as a plain LlamaForCausalLM,
which has no embedding multiplier: there the scale is folded into the weights.
"""

from __future__ import annotations

import math

import torch

from megatron_ponder.config import Config

_PREFIX = "decoder.decoder.layers."
_LAYER = {
    "input_layernorm.weight": "input_layernorm.weight",
    "self_attention.linear_proj.weight": "self_attn.o_proj.weight",
    "pre_mlp_layernorm.weight": "post_attention_layernorm.weight",
    "mlp.linear_fc2.weight": "mlp.down_proj.weight",
}
_TOP = {
    "decoder.final_layernorm.weight": "model.norm.weight",
    "decoder.output_layer.weight": "lm_head.weight",
    "decoder.pause_embedding": "model.pause_embedding",
    "decoder.router.net.weight": "model.router.weight",
    "decoder.router.net.bias": "model.router.bias",
    "decoder.router.net.0.weight": "model.router.0.weight",
    "decoder.router.net.0.bias": "model.router.0.bias",
    "decoder.router.net.2.weight": "model.router.2.weight",
    "decoder.router.net.2.bias": "model.router.2.bias",
}


def embedding_scale(cfg: Config) -> float:
    return math.sqrt(2.5 * cfg.model.hidden_size)


def _qkv_split(cfg: Config) -> tuple[int, int, int]:
    m = cfg.model
    head_dim = m.hidden_size // m.num_attention_heads
    return m.kv_heads, m.num_attention_heads // m.kv_heads * head_dim, head_dim


def to_hf(state: dict[str, torch.Tensor], cfg: Config) -> dict[str, torch.Tensor]:
    """Full megatron parameter dict -> HF tensors (contiguous copies)."""
    groups, q_rows, head_dim = _qkv_split(cfg)
    out = {}
    for name, tensor in state.items():
        if name == "decoder.embedding.weight":
            scale = embedding_scale(cfg) if cfg.ponder.method == "vanilla" else 1.0
            out["model.embed_tokens.weight"] = tensor * scale if scale != 1.0 else tensor
        elif name in _TOP:
            out[_TOP[name]] = tensor
        elif name.startswith(_PREFIX):
            index, rest = name[len(_PREFIX):].split(".", 1)
            hf = f"model.layers.{index}."
            if rest == "self_attention.linear_qkv.weight":
                per_group = tensor.view(groups, q_rows + 2 * head_dim, -1)
                q, k, v = per_group.split([q_rows, head_dim, head_dim], dim=1)
                out[hf + "self_attn.q_proj.weight"] = q.flatten(0, 1)
                out[hf + "self_attn.k_proj.weight"] = k.flatten(0, 1)
                out[hf + "self_attn.v_proj.weight"] = v.flatten(0, 1)
            elif rest == "mlp.linear_fc1.weight":
                gate, up = tensor.chunk(2, dim=0)
                out[hf + "mlp.gate_proj.weight"] = gate
                out[hf + "mlp.up_proj.weight"] = up
            elif rest in _LAYER:
                out[hf + _LAYER[rest]] = tensor
            else:
                raise KeyError(f"no Hugging Face name for parameter {name}")
        else:
            raise KeyError(f"no Hugging Face name for parameter {name}")
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def from_hf(hf: dict[str, torch.Tensor], cfg: Config) -> dict[str, torch.Tensor]:
    """Inverse of `to_hf`: HF tensors -> full megatron parameter dict."""
    groups, q_rows, head_dim = _qkv_split(cfg)
    top = {v: k for k, v in _TOP.items()}
    layer = {v: k for k, v in _LAYER.items()}
    state = {}
    for name, tensor in hf.items():
        if name == "model.embed_tokens.weight":
            scale = embedding_scale(cfg) if cfg.ponder.method == "vanilla" else 1.0
            state["decoder.embedding.weight"] = tensor / scale if scale != 1.0 else tensor
        elif name in top:
            state[top[name]] = tensor
        elif name.startswith("model.layers."):
            index, rest = name[len("model.layers."):].split(".", 1)
            meg = f"{_PREFIX}{index}."
            if rest == "self_attn.q_proj.weight":
                q = tensor.view(groups, q_rows, -1)
                k = hf[f"model.layers.{index}.self_attn.k_proj.weight"].view(groups, head_dim, -1)
                v = hf[f"model.layers.{index}.self_attn.v_proj.weight"].view(groups, head_dim, -1)
                state[meg + "self_attention.linear_qkv.weight"] = torch.cat([q, k, v], 1).flatten(0, 1)
            elif rest == "mlp.gate_proj.weight":
                up = hf[f"model.layers.{index}.mlp.up_proj.weight"]
                state[meg + "mlp.linear_fc1.weight"] = torch.cat([tensor, up], dim=0)
            elif rest in layer:
                state[meg + layer[rest]] = tensor
            elif rest not in ("self_attn.k_proj.weight", "self_attn.v_proj.weight",
                              "mlp.up_proj.weight"):
                raise KeyError(f"unexpected tensor {name} in the Hugging Face weights")
        else:
            raise KeyError(f"unexpected tensor {name} in the Hugging Face weights")
    return state
