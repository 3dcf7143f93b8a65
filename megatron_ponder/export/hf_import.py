"""A stock Llama-family Hugging Face checkpoint -> the project's config and parameters.

LlamaForCausalLM, MistralForCausalLM (full attention), Qwen2ForCausalLM (QKV biases) and
Qwen3ForCausalLM (per-head q/k RMSNorm) are the same decoder as ours: RMSNorm, rotate-half
RoPE (plain, or linear / llama3 / yarn-scaled: export/hf_rope.py), grouped-query attention with any
head size (head_dim), SwiGLU, no embedding multiplier. The architecture fields come from
config.json; everything else (data, optimisation, the method) from the user's recipe. A field this decoder cannot represent is
refused naming it, never approximated (docs/decisions.md, "Bring your own model").
"""

from __future__ import annotations

from pathlib import Path

import torch

from megatron_ponder.config import Config, ConfigError, config_from_dict, read_recipe
from megatron_ponder.data.tokenizer import Tokenizer, check_fits
from megatron_ponder.export import hf_weights
from megatron_ponder.export.hf_rope import rope_fields

ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral",
                 "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3"}
# transformers' own defaults (the same in all four classes) where config.json leaves a
# field out; the fields that size the model have none here.
_DEFAULT_RMS_NORM_EPS = 1e-6
_DEFAULT_ACT = "silu"
_IGNORED_TENSOR = ".self_attn.rotary_emb.inv_freq"  # derived buffer in old checkpoints


def _refuse(field: str, value, why: str) -> ConfigError:
    return ConfigError(f"config.json {field}={value!r} cannot be imported: {why}")


def _architecture(hf: dict) -> str:
    names = hf.get("architectures") or []
    known = [ARCHITECTURES[n] for n in names if n in ARCHITECTURES]
    if len(names) != 1 or not known:
        raise _refuse("architectures", names, f"expected one of {', '.join(ARCHITECTURES)}")
    return known[0]


def _required(hf: dict, field: str):
    if hf.get(field) is None:
        raise ConfigError(f"config.json has no {field}: it is needed to build the model")
    return hf[field]


def _check_attention(hf: dict, arch: str, max_positions: int) -> None:
    window = hf.get("sliding_window")
    if arch in ("qwen2", "qwen3") and not hf.get("use_sliding_window") and not any(
            t != "full_attention" for t in hf.get("layer_types") or []):
        window = None  # Qwen2/3 keep a window size they do not use
    if arch == "llama":
        window = None
    if window is not None and window < max_positions:
        raise _refuse("sliding_window", window, f"the decoder attends over the whole context "
                      f"and sequences may reach max_position_embeddings={max_positions}; only "
                      f"full attention imports (sliding_window null, or no smaller than "
                      f"max_position_embeddings)")
    if arch in ("llama", "qwen3") and hf.get("attention_bias"):
        raise _refuse("attention_bias", True, "this attention_bias adds an output-projection "
                      "bias, which the decoder has no place for (Q/K/V biases alone: Qwen2)")
    if hf.get("mlp_bias"):
        raise _refuse("mlp_bias", True, "the decoder's MLP has no biases")
    if float(hf.get("attention_dropout") or 0.0) != 0.0:
        raise _refuse("attention_dropout", hf["attention_dropout"], "the decoder trains without "
                      "dropout; set it to 0.0 to continue without it")


def model_fields(hf: dict) -> dict:
    """config.json -> the recipe's model section (architecture fields only)."""
    arch = _architecture(hf)
    if hf.get("quantization_config") is not None:
        raise _refuse("quantization_config", "...", "quantized weights are not read; import "
                      "the full-precision checkpoint")
    if hf.get("hidden_act", _DEFAULT_ACT) != "silu":
        raise _refuse("hidden_act", hf["hidden_act"], "the decoder's MLP is SwiGLU (silu)")
    hidden, heads = _required(hf, "hidden_size"), _required(hf, "num_attention_heads")
    head_dim = hf.get("head_dim")
    if head_dim is not None and (isinstance(head_dim, bool) or not isinstance(head_dim, int)
                                 or head_dim < 2 or head_dim % 2):
        raise _refuse("head_dim", head_dim, "RoPE needs an even whole number of channels per head")
    if head_dim is None and hidden % heads:
        raise _refuse("num_attention_heads", heads, f"without head_dim the head size is "
                      f"hidden_size / num_attention_heads, and {hidden} / {heads} is not whole")
    if head_dim is not None and head_dim * heads == hidden:
        head_dim = None  # the default head size: the config stays as before head_dim existed
    if float(hf.get("partial_rotary_factor") or 1.0) != 1.0:
        raise _refuse("partial_rotary_factor", hf["partial_rotary_factor"],
                      "the decoder rotates the whole head")
    max_positions = _required(hf, "max_position_embeddings")
    _check_attention(hf, arch, max_positions)
    fields = {
        "vocab_size": _required(hf, "vocab_size"), "hidden_size": hidden,
        "num_layers": _required(hf, "num_hidden_layers"), "num_attention_heads": heads,
        "num_query_groups": hf.get("num_key_value_heads") or heads,
        "ffn_hidden_size": _required(hf, "intermediate_size"),
        "max_position_embeddings": max_positions, **rope_fields(hf), "head_dim": head_dim,
        "norm_eps": float(hf.get("rms_norm_eps", _DEFAULT_RMS_NORM_EPS)),
        "qkv_bias": arch == "qwen2", "qk_norm": arch == "qwen3",
        # Llama has no embedding multiplier: keep the checkpoint's own (decisions.md).
        "embedding_scale": 1.0,
    }
    return fields


def tied_embeddings(hf: dict) -> bool:
    return bool(hf.get("tie_word_embeddings", False))


def stock_config(hf: dict, folder: Path, recipe: str | Path, output_dir: str | Path,
                 method: str | None, k: int | None, overrides: list[str]) -> tuple[Config, list[str]]:
    """(the run's config, notes on recipe fields the checkpoint replaced)."""
    recipe = Path(recipe)
    data = read_recipe(recipe)
    arch = model_fields(hf)
    given = dict(data.get("model") or {})
    notes = [f"model.{key}: recipe {given[key]!r} -> checkpoint {value!r}"
             for key, value in arch.items() if key in given and given[key] != value]
    # The parameters a method adds draw at the checkpoint's init scale unless the recipe says.
    init = {"init_std": float(hf["initializer_range"])} if hf.get("initializer_range") else {}
    data["model"] = {**init, **given, **arch}
    data["ponder"] = dict(data.get("ponder") or {})
    if method is not None:
        data["ponder"]["method"] = method
    if k is not None:
        data["ponder"]["k"] = k
    data["train"] = {**(data.get("train") or {}), "output_dir": str(output_dir)}
    data["data"] = dict(data.get("data") or {})
    own = own_tokenizer(folder)
    if own is not None:  # the embeddings index this tokenizer's ids: it beats the recipe's
        given_tokenizer = data["data"].get("tokenizer")
        if given_tokenizer and Path(given_tokenizer).resolve() != Path(own):
            notes.append(f"data.tokenizer: recipe {given_tokenizer!r} -> checkpoint's own {own!r}")
        data["data"]["tokenizer"] = own
    try:
        cfg = config_from_dict(data, overrides)  # data.tokenizer=... on the command line wins
    except ConfigError as err:
        raise ConfigError(f"{recipe} with {folder / 'config.json'}: {err}") from None
    for key, value in arch.items():
        if getattr(cfg.model, key) != value:
            raise ConfigError(f"model.{key}={getattr(cfg.model, key)!r} is overridden, but it "
                              f"comes from the checkpoint ({value!r}); drop that override")
    _check_tokenizer(cfg)
    return cfg, notes


def own_tokenizer(folder: Path) -> str | None:
    """The tokenizer a Hugging Face folder ships: the folder itself when it holds a
    tokenizer.json (AutoTokenizer's fast tokenizer, and the export then copies every tokenizer
    file unchanged, a tokenizer.model beside it too), else its sentencepiece tokenizer.model."""
    if (folder / "tokenizer.json").is_file():
        return str(folder.resolve())
    if (folder / "tokenizer.model").is_file():
        return str((folder / "tokenizer.model").resolve())
    return None


def _check_tokenizer(cfg: Config) -> None:
    """Before anything is written: the run's tokenizer loads, names its end-of-document token
    and has no id the checkpoint's embedding lacks (DataError / ConfigError: exit 2)."""
    if not cfg.data.tokenizer:
        raise ConfigError("data.tokenizer is empty: the checkpoint folder ships no tokenizer "
                          "(tokenizer.json or tokenizer.model) and the recipe names none; pass "
                          "data.tokenizer=PATH (a sentencepiece .model or a Hugging Face "
                          "tokenizer folder)")
    check_fits(Tokenizer.load(cfg.data.tokenizer, cfg.data.eod_token), cfg.model.vocab_size)


def expected_shapes(cfg: Config, tied: bool) -> dict[str, tuple[int, ...]]:
    """Every tensor a stock checkpoint of this config holds, with its shape."""
    m = cfg.model
    h, v, f = m.hidden_size, m.vocab_size, m.ffn_size
    d = m.head_size
    q, kv = m.num_attention_heads * d, m.kv_heads * d
    per_layer = {"input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,),
                 "self_attn.q_proj.weight": (q, h), "self_attn.k_proj.weight": (kv, h),
                 "self_attn.v_proj.weight": (kv, h), "self_attn.o_proj.weight": (h, q),
                 "mlp.gate_proj.weight": (f, h), "mlp.up_proj.weight": (f, h),
                 "mlp.down_proj.weight": (h, f)}
    if m.qkv_bias:
        per_layer |= {"self_attn.q_proj.bias": (q,), "self_attn.k_proj.bias": (kv,),
                      "self_attn.v_proj.bias": (kv,)}
    if m.qk_norm:
        per_layer |= {"self_attn.q_norm.weight": (d,), "self_attn.k_norm.weight": (d,)}
    shapes = {f"model.layers.{i}.{n}": s for i in range(m.num_layers) for n, s in per_layer.items()}
    shapes |= {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    return shapes if tied else shapes | {"lm_head.weight": (v, h)}


def stock_state(tensors: dict[str, torch.Tensor], cfg: Config, tied: bool) -> dict[str, torch.Tensor]:
    """HF tensors of a stock checkpoint -> float32 megatron parameters (every parameter but
    those the method adds: router, pause vector). A tied head becomes an untied copy."""
    tensors = {n: t for n, t in tensors.items() if not n.endswith(_IGNORED_TENSOR)}
    expected = expected_shapes(cfg, tied)
    if tied and "lm_head.weight" in tensors:
        if not torch.equal(tensors["lm_head.weight"], tensors["model.embed_tokens.weight"]):
            raise _refuse("tie_word_embeddings", True, "lm_head.weight is stored and differs "
                          "from model.embed_tokens.weight")
        expected["lm_head.weight"] = expected["model.embed_tokens.weight"]
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ConfigError(f"the weights do not match config.json: missing {missing[:4]}, "
                          f"unexpected {unexpected[:4]} (tensors the decoder has no place for "
                          f"are refused, not dropped)")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != expected[name] or not tensor.is_floating_point():
            raise ConfigError(f"tensor {name} is {tensor.dtype} {tuple(tensor.shape)}: config.json "
                              f"implies a floating-point {expected[name]}")
    hf = {n: t.float() for n, t in tensors.items()}  # bf16/fp16 -> fp32 is exact
    if tied:
        hf["lm_head.weight"] = hf["model.embed_tokens.weight"].clone()
    return hf_weights.from_hf(hf, cfg)
