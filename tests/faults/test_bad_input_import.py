"""What import-hf still cannot represent of today's families (Llama 3.x, Qwen3, Mistral-Nemo, YaRN)
is refused: exit 2 naming the config.json field and why, nothing written. And the model fields
that carry them refuse inconsistent values, and a vanilla export that no stock class holds."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tools"), str(REPO / "tests" / "tools")]
import convert_checkpoint as convert_tool  # noqa: E402
from stock_models import edit_config, save_stock  # noqa: E402

RECIPE = str(REPO / "recipes" / "continue_cpu.yaml")
LLAMA3 = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 32}

# (architecture, config.json changes, the field the error names, a word of the reason)
CASES = {
    "yarn-deepseek-mscale": ("llama", {"rope_parameters": {
        "rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0, "mscale": 0.707,
        "mscale_all_dim": 0.707, "original_max_position_embeddings": 32}},
        "rope_parameters.mscale", "DeepSeek"),
    "yarn-untruncated": ("llama", {"rope_parameters": {
        "rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0, "truncate": False,
        "original_max_position_embeddings": 32}}, "rope_parameters.truncate", "whole channel"),
    "yarn-betas-inverted": ("llama", {"rope_parameters": {
        "rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0, "beta_fast": 1.0,
        "beta_slow": 32.0, "original_max_position_embeddings": 32}},
        "rope_parameters.beta_fast", "beta_slow"),
    "dynamic-v4": ("llama", {"rope_parameters": None, "rope_theta": 10000.0,
                             "rope_scaling": {"type": "dynamic", "factor": 2.0}},
                   "rope_scaling.rope_type", "length"),
    "unknown-rope-type": ("qwen2", {"rope_parameters": {"rope_type": "ntk-by-parts",
                                                        "rope_theta": 1e6}},
                          "rope_parameters.rope_type", "unknown"),
    "llama3-without-low-freq-factor": ("llama", {"rope_parameters": {
        k: v for k, v in LLAMA3.items() if k != "low_freq_factor"}},
        "rope_parameters.low_freq_factor", "needs a number"),
    "llama3-bands-inverted": ("llama", {"rope_parameters": {**LLAMA3, "high_freq_factor": 0.5}},
                              "rope_parameters.high_freq_factor", "low_freq_factor"),
    "linear-factor-zero": ("mistral", {"rope_parameters": {"rope_type": "linear", "factor": 0,
                                                           "rope_theta": 1e4}},
                           "rope_parameters.factor", "> 0"),
    "v4-and-v5-disagree": ("llama", {"rope_parameters": LLAMA3,
                                     "rope_scaling": {"rope_type": "linear", "factor": 2.0}},
                           "rope_scaling", "disagrees"),
    "partial-rotary-v5": ("llama", {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4,
                                                        "partial_rotary_factor": 0.5}},
                          "rope_parameters.partial_rotary_factor", "whole head"),
    "odd-head-dim": ("mistral", {"head_dim": 7}, "head_dim", "even"),
    "qwen3-attention-bias": ("qwen3", {"attention_bias": True}, "attention_bias",
                             "output-projection"),
    "qwen3-sliding-window": ("qwen3", {"use_sliding_window": True, "sliding_window": 16,
                                       "layer_types": ["sliding_attention"] * 2},
                             "sliding_window", "full attention"),
}


@pytest.mark.parametrize("case", CASES)
def test_import_refuses_naming_the_field(tmp_path, capsys, case):
    arch, change, named, why = CASES[case]
    folder = tmp_path / "hf"
    save_stock(folder, arch)
    edit_config(folder, **change)
    capsys.readouterr()
    out = tmp_path / "run"
    assert convert_tool.main(["import-hf", str(folder), str(out), "--recipe", RECIPE,
                              "--method", "ponderlm3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"config.json {named}=" in err and why in err, err
    assert not out.exists()


# (override, the field the error names)
CONFIG_CASES = {
    "unknown-scaling": (["model.rope_scaling=dynamic"], "model.rope_scaling='dynamic'"),
    "factor-without-scaling": (["model.rope_scaling_factor=8.0"], "model.rope_scaling_factor=8.0"),
    "llama3-missing-field": (["model.rope_scaling=llama3", "model.rope_scaling_factor=8.0",
                              "model.rope_low_freq_factor=1.0", "model.rope_high_freq_factor=4.0"],
                             "model.rope_original_max_positions=None"),
    "linear-with-a-llama3-field": (["model.rope_scaling=linear", "model.rope_scaling_factor=2.0",
                                    "model.rope_low_freq_factor=1.0"],
                                   "model.rope_low_freq_factor=1.0"),
    "odd-head-dim": (["model.head_dim=9"], "model.head_dim=9"),
    "yarn-missing-attention-factor": (["model.rope_scaling=yarn", "model.rope_scaling_factor=4.0",
                                       "model.rope_original_max_positions=32",
                                       "model.rope_beta_fast=32", "model.rope_beta_slow=1"],
                                      "model.rope_attention_factor=None"),
    "qk-norm-tp2-under-zero": (["model.qk_norm=true", "parallel.tensor_model_parallel_size=2",
                                "parallel.engine=deepspeed", "parallel.zero_stage=2"],
                               "model.qk_norm=True"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_model_fields_refuse_inconsistent_values(case):
    from megatron_ponder.config import ConfigError, config_from_dict

    overrides, named = CONFIG_CASES[case]
    with pytest.raises(ConfigError) as err:
        config_from_dict({}, overrides)
    assert str(err.value).startswith(named), str(err.value)


def test_vanilla_export_without_a_stock_class_is_refused(tmp_path):
    from megatron_ponder.config import ConfigError, config_from_dict
    from megatron_ponder.export.hf_export import hf_config

    cfg = config_from_dict({"ponder": {"method": "vanilla", "k": 0},
                            "model": {"qkv_bias": True, "qk_norm": True}})
    with pytest.raises(ConfigError, match="model.qkv_bias=true with model.qk_norm=true"):
        hf_config(cfg, eod_id=2)
