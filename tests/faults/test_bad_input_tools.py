"""Bad input to the command-line tools: exit 2 with the argument or file named, no traceback,
and nothing written."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from filesystems import read_only, tree_digest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import convert_checkpoint as convert_tool  # noqa: E402
import generate as generate_tool  # noqa: E402
import preprocess_data as preprocess_tool  # noqa: E402
import train_tokenizer as tokenizer_tool  # noqa: E402


def test_preprocess_a_lone_surrogate_names_file_and_line(tiny_data, tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"text": "fine"}) + "\n" + '{"text": "half a pair \\ud800"}\n')
    code = preprocess_tool.main(["--input", str(corpus), "--tokenizer", tiny_data["tokenizer"],
                                 "--output-prefix", str(tmp_path / "out" / "c"), "--no-progress"])
    assert code == 2
    assert f"{corpus}:2: field 'text' holds a lone surrogate '\\ud800' at character 12" \
        in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl"]  # no out/ left


def test_preprocess_into_a_read_only_directory(tiny_data, tmp_path, capsys):
    out = tmp_path / "read_only"
    out.mkdir()
    with read_only(out):
        code = preprocess_tool.main(["--input", str(Path(tiny_data["prefix"]).parent / "corpus.jsonl"),
                                     "--tokenizer", tiny_data["tokenizer"],
                                     "--output-prefix", str(out / "c"), "--no-progress"])
    assert code == 2
    assert f"the directory of output prefix {out / 'c'}, {out} is not writable: cannot create " \
        f"entries in {out}" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_preprocess_prefix_naming_a_directory(tiny_data, tmp_path, capsys):
    corpus = str(Path(tiny_data["prefix"]).parent / "corpus.jsonl")
    (tmp_path / "data").mkdir()
    for prefix in (f"{tmp_path}/data/", f"{tmp_path}/data"):
        code = preprocess_tool.main(["--input", corpus, "--tokenizer", tiny_data["tokenizer"],
                                     "--output-prefix", prefix, "--no-progress"])
        assert code == 2
        assert f"output prefix {prefix} names a directory: give DIR/NAME" in capsys.readouterr().err
    assert list((tmp_path / "data").iterdir()) == []  # no hidden data/.bin


def test_train_tokenizer_into_a_read_only_directory(tiny_data, tmp_path, capsys):
    out = tmp_path / "read_only"
    out.mkdir()
    with read_only(out):
        code = tokenizer_tool.main(["--input", str(Path(tiny_data["prefix"]).parent / "corpus.jsonl"),
                                    "--output-prefix", str(out / "tok"), "--vocab-size", "300"])
    assert code == 2
    assert f"the directory of output prefix {out / 'tok'}, {out} is not writable: cannot create " \
        f"entries in {out}" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_generate_refuses_a_negative_token_count(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        generate_tool.main([str(tmp_path), "--prompt", "x", "--max-new-tokens", "-1"])
    assert exit_.value.code == 2
    assert "argument --max-new-tokens: -1 is invalid: must be >= 0" in capsys.readouterr().err


def test_generate_with_an_empty_prompt_says_it_samples_unconditionally(saved_run, capsys):
    """--prompt "" is generation from the start of a document (the end-of-document token
    every training document starts with): allowed, and said, not silent."""
    code = generate_tool.main([str(saved_run), "--prompt", "", "--prompt", "The",
                               "--max-new-tokens", "3", "--json"])
    assert code == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert [row["prompt"] for row in rows] == ["", "The"]
    assert [len(row["token_ids"]) for row in rows] == [3, 3]
    assert rows[0]["fed_token_ids"] == rows[0]["token_ids"][:-1]  # no prompt token was fed
    assert ("note: prompt 1 is empty: generating from the start of a document (the "
            "end-of-document token alone), unconditionally") in err
    assert "prompt 2" not in err


def test_generate_library_refuses_a_negative_token_count(build):
    from factories import tiny_config
    from megatron_ponder.config import ConfigError
    from megatron_ponder.inference.decoding import generate

    with pytest.raises(ConfigError, match=r"max_new_tokens=-1 is invalid: must be >= 0"):
        generate(build(tiny_config()), [[1, 2]], -1)


def test_reshard_a_step_directory_under_another_name(saved_run, tmp_path, capsys):
    out, digest = saved_run, tree_digest(saved_run)
    renamed = tmp_path / "best"
    shutil.copytree(out / "checkpoints" / "step_0000003", renamed)
    code = convert_tool.main(["reshard", str(renamed), str(tmp_path / "resharded"),
                              "--tensor-parallel", "1"])
    assert code == 2
    assert f"{renamed} is not named step_NNNNNNN" in capsys.readouterr().err
    assert not (tmp_path / "resharded").exists()
    assert tree_digest(out) == digest


def test_reshard_under_torchrun_passes_its_children_s_exit_2_through(saved_run, tmp_path):
    # A checkpoint from before checksums (no manifest.json, read by opt-in) lacking a shard
    # file: the launching process reads only its config, so the children are the first to
    # fail (exit 2 each), which torchrun reports as its own 1.
    run = tmp_path / "run"
    shutil.copytree(saved_run, run)
    step = run / "checkpoints" / "step_0000003"
    (step / "manifest.json").unlink()
    (shard,) = sorted(step.glob("*.distcp"))[:1]
    shard.unlink()
    digest = tree_digest(run)
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "convert_checkpoint.py"),
                             "reshard", str(run), str(tmp_path / "tp2"), "--tensor-parallel", "2",
                             "--allow-unverified"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"checkpoint {step} does not fit this model or is incomplete" in result.stderr
    assert not (tmp_path / "tp2" / "checkpoints").exists() and tree_digest(run) == digest
