"""Bad input to the training job: a clear error naming the field or file, exit code 2,
and nothing already written is touched."""

import shutil
from pathlib import Path

import pytest
import yaml

from filesystems import tree_digest
from megatron_ponder.config import ConfigError
from megatron_ponder.training.trainer import Trainer


def test_unknown_key_and_wrong_type_in_a_recipe(train_cli, tiny_recipe, tmp_path):
    recipe = tiny_recipe(tmp_path / "r.yaml", tmp_path / "run")
    data = yaml.safe_load(recipe.read_text())
    data["train"]["stepz"] = 3
    recipe.write_text(yaml.safe_dump(data))
    result = train_cli(recipe)
    assert result.returncode == 2
    assert "unknown key(s) train.stepz" in result.stderr and "valid keys:" in result.stderr
    result = train_cli(tiny_recipe(tmp_path / "r2.yaml", tmp_path / "run"), "train.steps=three")
    assert result.returncode == 2 and "train.steps='three' has the wrong type: expected int" in result.stderr


def test_missing_and_truncated_data_files(train_cli, tiny_data, tiny_recipe, trained, tmp_path):
    out, digest = trained
    copy = tmp_path / "copy" / "corpus_text_document"
    copy.parent.mkdir()
    for ext in (".bin", ".idx"):
        shutil.copy(tiny_data["prefix"] + ext, str(copy) + ext)
    recipe = tiny_recipe(tmp_path / "r.yaml", out)
    data = yaml.safe_load(recipe.read_text())
    data["data"]["prefixes"] = [str(copy)]
    data["train"]["steps"] = 6
    recipe.write_text(yaml.safe_dump(data))

    Path(str(copy) + ".bin").write_bytes(Path(str(copy) + ".bin").read_bytes()[:100])
    result = train_cli(recipe)
    assert result.returncode == 2 and f"{copy}.bin" in result.stderr, result.stderr
    Path(str(copy) + ".bin").unlink()
    result = train_cli(recipe)
    assert result.returncode == 2 and f"{copy}.bin" in result.stderr
    assert "tools/preprocess_data.py" in result.stderr
    assert tree_digest(out / "checkpoints") == digest


def test_tokenizer_larger_than_the_model_vocabulary(train_cli, tiny_recipe, tmp_path):
    result = train_cli(tiny_recipe(tmp_path / "r.yaml", tmp_path / "run"), "model.vocab_size=128")
    assert result.returncode == 2
    assert "data.tokenizer" in result.stderr and "model.vocab_size=128" in result.stderr


def test_resume_from_a_checkpoint_of_another_model_shape(tiny_run, trained):
    out, digest = trained
    for section, field, value, saved in [("model", "hidden_size", 48, 32),
                                         ("ponder", "router", "mlp", "'linear'")]:
        cfg = tiny_run(out, steps=6)
        setattr(getattr(cfg, section), field, value)
        with pytest.raises(ConfigError, match=rf"cannot resume from .*step_0000003: .*"
                                              rf"{section}.{field}: checkpoint {saved}, recipe"):
            Trainer(cfg)
    assert tree_digest(out / "checkpoints") == digest


def test_a_checkpoint_from_before_the_head_dim_qk_norm_and_rope_fields_still_resumes():
    """Its config has no model.head_dim / qk_norm / rope_* keys: they read as their defaults
    (qk_norm false, not None), and a real difference is still caught."""
    from factories import tiny_config
    from megatron_ponder.config import config_to_dict
    from megatron_ponder.training.trainer import _shape_fields_differ

    current = config_to_dict(tiny_config())
    new_fields = ("head_dim", "qk_norm", "rope_scaling", "rope_scaling_factor",
                  "rope_low_freq_factor", "rope_high_freq_factor", "rope_original_max_positions",
                  "rope_beta_fast", "rope_beta_slow", "rope_attention_factor")
    old = {**current, "model": {k: v for k, v in current["model"].items() if k not in new_fields}}
    assert _shape_fields_differ(old, current) == []
    qwen3 = config_to_dict(tiny_config(qk_norm=True))
    assert _shape_fields_differ(old, qwen3) == ["model.qk_norm: checkpoint False, recipe True"]
