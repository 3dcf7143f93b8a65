"""A batch job's checks before it starts any process: each names what is wrong."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from megatron_ponder.config import ConfigError
from megatron_ponder.launch.preflight import preflight

ROOT = Path(__file__).resolve().parents[2]


def recipe(tmp_path, tp=2) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"parallel": {"tensor_model_parallel_size": tp},
                                    "train": {"output_dir": str(tmp_path / "run")}}))
    return path


@pytest.mark.parametrize("nodes, per_node", [(1, 2), (2, 1), (2, 2)])
def test_a_fitting_layout_returns_the_output_directory(tmp_path, nodes, per_node):
    assert preflight(str(recipe(tmp_path)), [], nodes, per_node) == (tmp_path / "run").resolve()
    assert (tmp_path / "run").is_dir() and list((tmp_path / "run").iterdir()) == []


@pytest.mark.parametrize("nodes, per_node", [(1, 1), (3, 1), (1, 3)])
def test_a_process_count_the_layout_does_not_divide_is_refused(tmp_path, nodes, per_node):
    with pytest.raises(ConfigError, match=rf"this job runs {nodes} node\(s\) x {per_node} "
                       rf"process\(es\) per node .*: world size {nodes * per_node} .* is not "
                       r"divisible by .* = 2 x 1 = 2"):
        preflight(str(recipe(tmp_path)), [], nodes, per_node)
    assert not (tmp_path / "run").exists()


def test_a_batch_the_data_parallel_size_does_not_divide_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"this job runs 2 node\(s\) x 4 .*: "
                       r"train.global_batch_size=8 is not a multiple of .* = 4 x 4 = 16"):
        preflight(str(recipe(tmp_path)), ["train.micro_batch_size=4"], 2, 4)


def test_an_unwritable_output_directory_is_named(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"train.output_dir='.*/file/run' is not writable"):
        preflight(str(recipe(tmp_path)), [f"train.output_dir={tmp_path}/file/run"], 1, 2)


def test_a_missing_recipe_and_a_bad_override_are_named(tmp_path):
    with pytest.raises(ConfigError, match="recipe file .*absent.yaml does not exist"):
        preflight(str(tmp_path / "absent.yaml"), [], 1, 1)
    with pytest.raises(ConfigError, match="unknown key"):
        preflight(str(recipe(tmp_path)), ["train.stepz=3"], 1, 2)


def test_the_command_line_prints_the_directory_or_the_error(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "megatron_ponder.launch", "preflight", *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
    ok = cli("--nodes", "2", "--procs-per-node", "1", str(recipe(tmp_path)))
    assert ok.returncode == 0 and ok.stdout.strip().splitlines()[-1] == str(tmp_path / "run")
    bad = cli("--nodes", "1", "--procs-per-node", "1", str(recipe(tmp_path)))
    assert bad.returncode == 2 and "error: " in bad.stderr and "is not divisible" in bad.stderr
