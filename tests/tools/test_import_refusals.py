"""import-hf refuses what the decoder cannot represent, and broken folders: exit 2, the field
or file named, nothing written. (RoPE types, head sizes and the Qwen3 refusals:
tests/faults/test_bad_input_import.py.)"""

import json
import sys
from pathlib import Path

import pytest

from stock_models import edit_config, save_stock

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import convert_checkpoint as convert_tool  # noqa: E402

RECIPE = str(REPO / "recipes" / "continue_cpu.yaml")


def drop_a_shard(folder):
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[1]
    (folder / shard).unlink()
    return shard


def corrupt_index(folder):
    (folder / "model.safetensors.index.json").write_text('{"weight_map": {"model.norm.weight": ')
    return "model.safetensors.index.json"


def index_without_map(folder):
    (folder / "model.safetensors.index.json").write_text('{"metadata": {}}')
    return "weight_map"


def remove_config(folder):
    (folder / "config.json").unlink()
    return "config.json"


# (architecture, sharded, config.json changes or a function breaking the folder, what the
# error must name)
CASES = {
    "sliding-window": ("mistral", False, {"sliding_window": 16}, "sliding_window"),
    "qwen2-sliding-window": ("qwen2", False, {"use_sliding_window": True, "sliding_window": 32},
                             "sliding_window"),
    "output-bias": ("llama", False, {"attention_bias": True}, "attention_bias"),
    "mlp-bias": ("llama", False, {"mlp_bias": True}, "mlp_bias"),
    "activation": ("llama", False, {"hidden_act": "gelu"}, "hidden_act"),
    "architecture": ("llama", False, {"architectures": ["GPTNeoXForCausalLM"]}, "architectures"),
    "missing-shard": ("llama", True, drop_a_shard, None),
    "corrupt-index": ("qwen2", True, corrupt_index, None),
    "index-without-map": ("qwen2", True, index_without_map, None),
    "no-config": ("llama", False, remove_config, None),
}


@pytest.mark.parametrize("case", CASES)
def test_refused_with_the_field_named_and_nothing_written(tmp_path, tool_tokenizer, capsys, case):
    arch, sharded, change, named = CASES[case]
    folder = tmp_path / "hf"
    save_stock(folder, arch, sharded=sharded)
    if callable(change):
        named = change(folder)
    else:
        edit_config(folder, **change)
    capsys.readouterr()
    out = tmp_path / "run"
    assert convert_tool.main(["import-hf", str(folder), str(out), "--recipe", RECIPE,
                              "--method", "ponderlm3", f"data.tokenizer={tool_tokenizer}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err, err
    assert not out.exists()


def test_vocabulary_not_divisible_by_the_tensor_parallel_size(tmp_path, tool_tokenizer, capsys):
    save_stock(tmp_path / "hf", "llama", vocab_size=511)
    assert convert_tool.main(["import-hf", str(tmp_path / "hf"), str(tmp_path / "run"), "--recipe",
                              RECIPE, "parallel.tensor_model_parallel_size=2"]) == 2
    err = capsys.readouterr().err
    assert "model.vocab_size=511" in err and "parallel.tensor_model_parallel_size=2" in err
    assert not (tmp_path / "run").exists()


def test_architecture_fields_cannot_be_overridden(tmp_path, tool_tokenizer, capsys):
    save_stock(tmp_path / "hf", "llama")
    assert convert_tool.main(["import-hf", str(tmp_path / "hf"), str(tmp_path / "run"), "--recipe",
                              RECIPE, "model.hidden_size=32"]) == 2
    assert "model.hidden_size=32 is overridden" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
