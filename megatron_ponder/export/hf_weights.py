"""Full (TP 1) PonderLM parameters <-> Hugging Face Llama-layout names, exactly invertible.

megatron's fused QKV weight is group-major: per query group, its query heads, then one key
and one value head. Concatenating the query parts over groups gives heads in HF order, and
HF's GQA maps query head h to kv head h // (heads / groups), as megatron does. The SwiGLU
fc1 weight is [gate; up]; a QKV bias (Qwen2) splits like the weight's rows; a head is
model.head_size wide (Qwen3's head_dim), and the q/k norms (Qwen3) map one to one. Embeddings are
stored unscaled (the model's embedding scale is the config's embedding_scale), except for
a method that adds nothing to the decoder (vanilla), exported as a plain LlamaForCausalLM /
Qwen2ForCausalLM, which have no embedding multiplier: there the scale is folded into the
weights (bitwise when it is 1, as for imported Llama-family checkpoints).
"""

from __future__ import annotations

import torch

from megatron_ponder.config import Config
from megatron_ponder.ponder.registry import method_class

_PREFIX = "decoder.decoder.layers."
_LAYER = {
    "input_layernorm.weight": "input_layernorm.weight",
    "self_attention.linear_proj.weight": "self_attn.o_proj.weight",
    "pre_mlp_layernorm.weight": "post_attention_layernorm.weight",
    "mlp.linear_fc2.weight": "mlp.down_proj.weight",
    # model.qk_norm (Qwen3): one RMSNorm weight [head_dim] shared by every query / key head.
    "self_attention.q_layernorm.weight": "self_attn.q_norm.weight",
    "self_attention.k_layernorm.weight": "self_attn.k_norm.weight",
}
_QKV = {"self_attention.linear_qkv.weight": "weight", "self_attention.linear_qkv.bias": "bias"}
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


def _folded_scale(cfg: Config) -> float:
    """The factor the exported embedding carries: plain Llama/Qwen2 have no multiplier."""
    return cfg.model.embed_scale if method_class(cfg.ponder.method).plain else 1.0


def _qkv_split(cfg: Config) -> tuple[int, int, int]:
    m = cfg.model
    return m.kv_heads, m.num_attention_heads // m.kv_heads * m.head_size, m.head_size


def _split_qkv(tensor: torch.Tensor, cfg: Config) -> list[torch.Tensor]:
    """Fused group-major QKV weight [rows, H] or bias [rows] -> q, k, v in HF head order."""
    groups, q_rows, head_dim = _qkv_split(cfg)
    per_group = tensor.reshape(groups, q_rows + 2 * head_dim, *tensor.shape[1:])
    return [part.flatten(0, 1) for part in per_group.split([q_rows, head_dim, head_dim], dim=1)]


def _fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cfg: Config) -> torch.Tensor:
    """Inverse of `_split_qkv`."""
    groups, q_rows, head_dim = _qkv_split(cfg)
    parts = [t.reshape(groups, rows, *t.shape[1:]) for t, rows in ((q, q_rows), (k, head_dim), (v, head_dim))]
    return torch.cat(parts, dim=1).flatten(0, 1)


def to_hf(state: dict[str, torch.Tensor], cfg: Config) -> dict[str, torch.Tensor]:
    """Full megatron parameter dict -> HF tensors (contiguous copies)."""
    out = {}
    for name, tensor in state.items():
        if name == "decoder.embedding.weight":
            scale = _folded_scale(cfg)
            out["model.embed_tokens.weight"] = tensor * scale if scale != 1.0 else tensor
        elif name in _TOP:
            out[_TOP[name]] = tensor
        elif name.startswith(_PREFIX):
            index, rest = name[len(_PREFIX):].split(".", 1)
            hf = f"model.layers.{index}."
            if rest in _QKV:
                for proj, part in zip("qkv", _split_qkv(tensor, cfg)):
                    out[hf + f"self_attn.{proj}_proj.{_QKV[rest]}"] = part
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


# Read together with the first name of their group: q_proj takes k_proj and v_proj along.
_COMPANIONS = {"self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.k_proj.bias",
               "self_attn.v_proj.bias", "mlp.up_proj.weight"}


def from_hf(hf: dict[str, torch.Tensor], cfg: Config) -> dict[str, torch.Tensor]:
    """Inverse of `to_hf`: HF tensors -> full megatron parameter dict."""
    top = {v: k for k, v in _TOP.items()}
    layer = {v: k for k, v in _LAYER.items()}
    qkv = {f"self_attn.q_proj.{kind}": meg for meg, kind in _QKV.items()}
    state = {}
    for name, tensor in hf.items():
        if name == "model.embed_tokens.weight":
            scale = _folded_scale(cfg)
            state["decoder.embedding.weight"] = tensor / scale if scale != 1.0 else tensor
        elif name in top:
            state[top[name]] = tensor
        elif name.startswith("model.layers."):
            index, rest = name[len("model.layers."):].split(".", 1)
            meg, hf_layer = f"{_PREFIX}{index}.", f"model.layers.{index}."
            if rest in qkv:
                kind = rest.rsplit(".", 1)[1]
                state[meg + qkv[rest]] = _fuse_qkv(
                    tensor, hf[f"{hf_layer}self_attn.k_proj.{kind}"],
                    hf[f"{hf_layer}self_attn.v_proj.{kind}"], cfg)
            elif rest == "mlp.gate_proj.weight":
                up = hf[f"{hf_layer}mlp.up_proj.weight"]
                state[meg + "mlp.linear_fc1.weight"] = torch.cat([tensor, up], dim=0)
            elif rest in layer:
                state[meg + layer[rest]] = tensor
            elif rest not in _COMPANIONS:
                raise KeyError(f"unexpected tensor {name} in the Hugging Face weights")
        else:
            raise KeyError(f"unexpected tensor {name} in the Hugging Face weights")
    return state
