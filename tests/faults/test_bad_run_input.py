"""Bad input to the training job: a clear error naming the field or file, exit code 2,
and nothing already written is touched."""

import hashlib
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from megatron_ponder.config import ConfigError
from megatron_ponder.train import main
from megatron_ponder.training.signals import EXIT_DONE
from megatron_ponder.training.trainer import Trainer


@pytest.fixture
def train_cli(capsys):
    """The command-line entry point, in process: (exit code, stderr)."""
    def run(recipe: Path, *overrides: str):
        code = main([str(recipe), *overrides])
        return SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)
    return run


def tree_digest(path: Path) -> dict:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def trained(tiny_run, tiny_recipe, tmp_path):
    """A finished 3-step run whose output directory must survive every bad input."""
    out = tmp_path / "run"
    assert Trainer(tiny_run(out, steps=3, save_interval=3)).train() == EXIT_DONE
    return out, tree_digest(out / "checkpoints")


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
    cfg = tiny_run(out, steps=6)
    cfg.model.hidden_size = 48
    with pytest.raises(ConfigError, match=r"cannot resume from .*step_0000003: .*model.hidden_size: "
                                          r"checkpoint 32, recipe 48"):
        Trainer(cfg)
    assert tree_digest(out / "checkpoints") == digest
