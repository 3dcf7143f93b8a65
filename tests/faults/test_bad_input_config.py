"""Bad recipes, values and output directories: exit 2 from the training CLI with the file or
field named, before anything is written (no output directory, no index cache)."""

from pathlib import Path

import pytest

from filesystems import read_only


def nothing_written(tmp_path: Path) -> bool:
    """tiny_recipe's run writes tmp_path/run and tmp_path/index_cache."""
    return not (tmp_path / "run").exists() and not (tmp_path / "index_cache").exists()


@pytest.mark.parametrize("content, problem", [
    (b"model: {hidden_size: 32\n", "is not valid YAML: while parsing a flow mapping"),
    (b"- model\n- train\n", "holds a YAML list at the top level; expected a mapping"),
    (bytes(range(256)), "is not UTF-8 text"),
], ids=["syntax-error", "top-level-list", "binary"])
def test_a_recipe_that_is_not_a_yaml_mapping(train_cli, tmp_path, content, problem):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(content)
    result = train_cli(recipe)
    assert result.returncode == 2
    assert f"recipe file {recipe} {problem}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("override, message", [
    ("train.lr=.inf", "train.lr=inf is invalid: must be a finite number"),
    ("train.lr=.nan", "train.lr=nan is invalid: must be a finite number"),
    ("model.rotary_base=-.inf", "model.rotary_base=-inf is invalid: must be a finite number"),
    ("data.weights=[1.0, .nan]", "data.weights[1]=nan is invalid: must be a finite number"),
    ("parallel.distributed_timeout_s=.inf",
     "parallel.distributed_timeout_s=inf is invalid: must be a finite number"),
    ("parallel.distributed_timeout_s=1e15", "parallel.distributed_timeout_s=1000000000000000.0 is invalid: "
                                            "must be > 0 and <= 1e+09 seconds"),
    ("train.adam_eps=-1", "train.adam_eps=-1.0 is invalid: must be > 0"),
    ("seed=-1", "seed=-1 is invalid: must be in [0, 4294967295]"),
    ("seed=4294967296", "seed=4294967296 is invalid: must be in [0, 4294967295]"),
])
def test_values_that_pass_types_but_cannot_train(train_cli, tiny_recipe, tmp_path, override,
                                                 message):
    recipe = tiny_recipe(tmp_path / "recipe.yaml", tmp_path / "run")
    if override.startswith("data.weights"):  # two prefixes for two weights
        import yaml
        data = yaml.safe_load(recipe.read_text())
        data["data"]["prefixes"] *= 2
        recipe.write_text(yaml.safe_dump(data))
    result = train_cli(recipe, override)
    assert result.returncode == 2
    assert message in result.stderr, result.stderr
    assert nothing_written(tmp_path)


def test_output_dir_that_is_a_file_or_lies_under_one(train_cli, tiny_recipe, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    for output_dir, problem in [(blocker, "is a file"),
                                (blocker / "run", f"lies under {blocker}, which is a file")]:
        result = train_cli(tiny_recipe(tmp_path / "recipe.yaml", output_dir))
        assert result.returncode == 2
        assert f"train.output_dir {output_dir} {problem}, not a directory" in result.stderr, \
            result.stderr
    assert blocker.read_text() == "not a directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "recipe.yaml"]


def test_read_only_output_dir(train_cli, tiny_recipe, tmp_path):
    parent = tmp_path / "read_only"
    parent.mkdir()
    recipe = tiny_recipe(tmp_path / "recipe.yaml", parent / "run")
    with read_only(parent):
        result = train_cli(recipe)
    assert result.returncode == 2
    assert f"train.output_dir {parent / 'run'} is not writable: cannot create entries in " \
           f"{parent}" in result.stderr, result.stderr
    assert list(parent.iterdir()) == []  # and the write probe left nothing behind


@pytest.mark.parametrize("method", ["ponderlm3", "ponderlm2", "ponderlm1", "loop", "pause"])
def test_a_method_that_ponders_refuses_k_0(train_cli, tiny_recipe, tmp_path, method):
    """ponder.k=0 with ponderlm3 trained a plain decoder (E[steps] 0.00) under its name."""
    recipe = tiny_recipe(tmp_path / "recipe.yaml", tmp_path / "run")
    result = train_cli(recipe, f"ponder.method={method}", "ponder.k=0")
    assert result.returncode == 2
    assert (f"ponder.k=0 is invalid: ponder.method={method} needs at least 1 pondering step"
            in result.stderr), result.stderr
    assert nothing_written(tmp_path)


def test_vanilla_ignores_k(tiny_data, tmp_path):
    from megatron_ponder.config import config_from_dict
    from tiny_runs import run_dict

    for k in (0, 3):  # a sweep may give every method the same K
        spec = run_dict(tiny_data, tmp_path / "run", method="vanilla")
        spec["ponder"]["k"] = k
        assert config_from_dict(spec).ponder.k == k
