"""Trainer checkpoint -> Hugging Face folder, and back (tools/export_hf.py, convert_checkpoint.py).

The folder: config.json (PonderLMConfig with auto_map, or a plain LlamaConfig / Qwen2Config
(QKV biases) / Qwen3Config (q/k norms) for a method that adds nothing to the decoder, vanilla;
the project config rides along as `megatron_ponder_config` for an exact import), the
weights as model.safetensors, modeling_ponder.py (this package's standalone file) and the
tokenizer: a Hugging Face tokenizer's files copied unchanged (so AutoTokenizer loads exactly
what training used; a folder's sentencepiece tokenizer.model with its tokenizer_config.json
too), a bare sentencepiece model converted to a transformers tokenizer. Written
into DIR.tmp and renamed at the end: an interrupted export never leaves a half folder under DIR.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from megatron_ponder.config import Config, ConfigError, config_from_dict, config_to_dict
from megatron_ponder.data.tokenizer import Tokenizer, check_fits
from megatron_ponder.export import hf_weights
from megatron_ponder.export.hf_rope import hf_rope_parameters
from megatron_ponder.ponder.registry import method_class, names_where
from megatron_ponder.run.layout import EXPORT_WEIGHTS, check_export_output

MODELING_FILE = Path(__file__).with_name("modeling_ponder.py")
WEIGHTS = EXPORT_WEIGHTS  # what marks a folder as an export (run/layout.is_export)


def _common(cfg: Config, eod_id: int) -> dict:
    m = cfg.model
    return dict(vocab_size=m.vocab_size, hidden_size=m.hidden_size, intermediate_size=m.ffn_size,
                num_hidden_layers=m.num_layers, num_attention_heads=m.num_attention_heads,
                num_key_value_heads=m.kv_heads, max_position_embeddings=m.max_position_embeddings,
                rms_norm_eps=m.norm_eps, tie_word_embeddings=False, head_dim=m.head_size,
                # Training documents are separated by </s>: it is BOS, EOS and padding here.
                bos_token_id=eod_id, eos_token_id=eod_id, pad_token_id=eod_id,
                megatron_ponder_config=config_to_dict(cfg))


def _plain_config(cfg: Config, eod_id: int):
    """vanilla: Llama, Qwen2 where the model has QKV biases, Qwen3 where it has q/k norms
    (Llama's and Qwen3's attention_bias would add an output-projection bias too)."""
    m = cfg.model
    rope = hf_rope_parameters(m)
    if m.qkv_bias and m.qk_norm:
        raise ConfigError("model.qkv_bias=true with model.qk_norm=true has no stock Hugging Face "
                          "class (Qwen2 has no q/k norms, Qwen3's attention_bias adds an "
                          "output-projection bias): export it with a method other than vanilla")
    if m.qkv_bias or m.qk_norm:
        import transformers  # defer: transformers, only when exporting

        name = "Qwen3" if m.qk_norm else "Qwen2"
        config = getattr(transformers, f"{name}Config")(
            rope_parameters=rope, use_sliding_window=False, **_common(cfg, eod_id))
        config.architectures = [f"{name}ForCausalLM"]
        return config
    from transformers import LlamaConfig  # defer: transformers, only when exporting

    config = LlamaConfig(rope_parameters=rope, attention_bias=False, mlp_bias=False,
                         **_common(cfg, eod_id))
    config.architectures = ["LlamaForCausalLM"]
    return config


def hf_config(cfg: Config, eod_id: int):
    """The transformers config object for `cfg` (Llama / Qwen2 for vanilla, PonderLMConfig
    otherwise)."""
    if method_class(cfg.ponder.method).plain:
        return _plain_config(cfg, eod_id)
    # defer: transformers (modeling_ponder imports it), only when exporting
    from megatron_ponder.export.modeling_ponder import PonderLMConfig

    p = cfg.ponder
    m = cfg.model
    config = PonderLMConfig(rope_theta=m.rotary_base, rope_scaling_type=m.rope_scaling,
                            rope_scaling_factor=m.rope_scaling_factor,
                            rope_low_freq_factor=m.rope_low_freq_factor,
                            rope_high_freq_factor=m.rope_high_freq_factor,
                            rope_original_max_positions=m.rope_original_max_positions,
                            rope_beta_fast=m.rope_beta_fast, rope_beta_slow=m.rope_beta_slow,
                            rope_attention_factor=m.rope_attention_factor,
                            qk_norm=m.qk_norm,
                            embedding_scale=m.embed_scale, qkv_bias=m.qkv_bias,
                            ponder_method=p.method, ponder_k=p.k, ponder_tau=p.tau,
                            ponder_jacobi=p.jacobi_eval, ponder_latent_init=p.latent_init,
                            ponder_router=p.router, **_common(cfg, eod_id))
    config.architectures = ["PonderLMForCausalLM"]
    config.auto_map = {"AutoConfig": "modeling_ponder.PonderLMConfig",
                       "AutoModelForCausalLM": "modeling_ponder.PonderLMForCausalLM"}
    return config


def convert_tokenizer(sp_model: Path, out_dir: Path):
    """sentencepiece .model -> transformers tokenizer files in out_dir (see
    docs/lm-eval-offline notes: copy to tokenizer.model, from_pretrained, save_pretrained)."""
    from transformers import LlamaTokenizer  # defer: transformers, only when exporting

    staging = out_dir / "_sentencepiece"
    staging.mkdir()
    shutil.copy(sp_model, staging / "tokenizer.model")
    tokenizer = LlamaTokenizer.from_pretrained(
        staging, bos_token="</s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>",
        add_bos_token=True, add_eos_token=False)
    tokenizer.save_pretrained(out_dir)
    shutil.rmtree(staging)
    return tokenizer


def export_hf(model, cfg: Config, tokenizer_model: str | Path, out_dir: str | Path,
              force: bool = False, extra_config: dict | None = None) -> Path:
    """Write the export of `model` (TP 1, full tensors) to out_dir; returns it. extra_config:
    more config.json fields (the FLOPs budget ponder_tau was calibrated to)."""
    method = method_class(cfg.ponder.method)
    if not method.decodes_with_slot_cache:
        exportable = names_where(lambda m: m.decodes_with_slot_cache)
        raise ConfigError(f"ponder.method={cfg.ponder.method!r} cannot be exported: it needs a KV "
                          f"cache per pass; exportable methods: {', '.join(exportable)}")
    out_dir = check_export_output(out_dir, force)  # never a run, --force only an export
    tokenizer = Tokenizer.load(tokenizer_model, cfg.data.eod_token)
    check_fits(tokenizer, cfg.model.vocab_size)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {name: p.detach().float().cpu() for name, p in model.named_parameters()}
    save_file(hf_weights.to_hf(state, cfg), str(tmp / WEIGHTS), metadata={"format": "pt"})
    config = hf_config(cfg, tokenizer.eod_id)
    config.update(extra_config or {})
    config.save_pretrained(tmp)
    if not method.plain:
        shutil.copy(MODELING_FILE, tmp / MODELING_FILE.name)
    if not tokenizer.in_hf_folder:  # a bare .model (train_tokenizer.py's): made transformers'
        convert_tokenizer(tokenizer.path, tmp)
    else:  # a Hugging Face folder's tokenizer (an imported Llama 2's tokenizer.model too)
        for file in tokenizer.files():
            shutil.copyfile(file, tmp / file.name)
    if out_dir.exists():
        old = out_dir.with_name(out_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out_dir)
    return out_dir


def read_hf_export(folder: str | Path) -> tuple[Config, dict[str, torch.Tensor]]:
    """(project config, full megatron parameters) of an export written by export_hf."""
    folder = Path(folder)
    config_file, weights = folder / "config.json", folder / WEIGHTS
    for path in (config_file, weights):
        if not path.is_file():
            raise ConfigError(f"{folder} is not a megatron-ponder Hugging Face export: {path.name} "
                              f"is missing")
    saved = json.loads(config_file.read_text()).get("megatron_ponder_config")
    if saved is None:
        raise ConfigError(f"{config_file} has no megatron_ponder_config: it was not written by "
                          f"tools/export_hf.py; import a Llama-family checkpoint with --recipe "
                          f"RECIPE (and --method, --k)")
    saved = dict(saved)
    saved["parallel"] = {}
    cfg = config_from_dict(saved)
    return cfg, hf_weights.from_hf(load_file(str(weights)), cfg)
