"""tools/generate.py on a trainer checkpoint: the engine's tokens, clear errors."""

import json
import sys
from pathlib import Path

import pytest

from checkpoints import make_checkpoint
from megatron_ponder.data.tokenizer import Tokenizer
from megatron_ponder.inference.decoding import generate

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import generate as generate_tool  # noqa: E402


def test_generate_tool_prints_the_engine_tokens_and_steps(tmp_path, tool_tokenizer, capsys):
    run, model = make_checkpoint(tmp_path, tool_tokenizer)
    code = generate_tool.main([str(run), "--prompt", "The river", "--prompt", "A",
                               "--max-new-tokens", "5", "--json"])
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    tok = Tokenizer.load(tool_tokenizer)
    prompts = [[tok.eod_id] + tok.encode(p) for p in ("The river", "A")]
    expected = generate(model, prompts, 5)
    assert [r["token_ids"] for r in rows] == expected.tokens
    assert [r["steps"] for r in rows] == [s[1:] for s in expected.steps]
    assert all(0 <= s <= 3 for r in rows for s in r["steps"])
    assert generate_tool.main([str(run), "--prompt", "The river", "--max-new-tokens", "3",
                               "--show-steps"]) == 0
    assert "[" in capsys.readouterr().out


def test_generate_tool_errors(tmp_path, tool_tokenizer, capsys):
    run, _ = make_checkpoint(tmp_path, tool_tokenizer)
    assert generate_tool.main([str(run), "--prompt", "x", "--tau", "0"]) == 2
    assert "tau=0.0 is invalid" in capsys.readouterr().err
    assert generate_tool.main([str(run), "--prompt", "word " * 60]) == 2
    assert "max_position_embeddings=48" in capsys.readouterr().err
    assert generate_tool.main([str(tmp_path / "nowhere"), "--prompt", "x"]) == 2
    assert "is not a checkpoint" in capsys.readouterr().err
    # A tokenizer with more pieces (512) than the model has embeddings.
    small, _ = make_checkpoint(tmp_path / "small", tool_tokenizer, overrides=["model.vocab_size=384"])
    assert generate_tool.main([str(small), "--prompt", "x"]) == 2
    assert "model.vocab_size=384" in capsys.readouterr().err
    # A missing shard file.
    step_dir = next((run / "checkpoints").glob("step_*"))
    next(step_dir.glob("*.distcp")).unlink()
    assert generate_tool.main([str(run), "--prompt", "x"]) == 2
    assert "shard file may be missing" in capsys.readouterr().err
