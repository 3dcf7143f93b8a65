"""tools/ponder_analysis.py: per-token steps against frequency, class, position, entropy."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from checkpoints import make_checkpoint
from megatron_ponder.inference.adaptivity import identity_share, piece_text, token_class
from megatron_ponder.inference.heldout import heldout_batches
from megatron_ponder.inference.ppl_sweep import score_at_taus

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import ponder_analysis as analysis_tool  # noqa: E402


@pytest.mark.parametrize("piece, previous, expected", [
    ("\u2581the", "\u2581of", "word start"),
    ("he", "\u2581t", "word continuation"),
    ("T", "\n", "word start"),  # a line start has no space piece
    ("T", None, "word start"),  # nor does a sequence start
    (",", "ld", "punctuation"),
    ("<0x31>", "\u2581", "digits"),
    ("\u2581", "ld", "whitespace"),
    ("\n", ".", "whitespace"),
    ("\u2581'", "ld", "punctuation"),
])
def test_token_classes(piece, previous, expected):
    prev = None if previous is None else piece_text(previous)
    assert token_class(piece_text(piece), prev) == expected


def test_identity_share():
    rng = np.random.default_rng(0)
    token = rng.integers(0, 50, 5000)
    per_token = rng.random(50)
    assert identity_share(token, per_token[token]) == pytest.approx(1.0, abs=1e-12)
    # Noise independent of the token: the share is what 50 group means fit by chance (~1%).
    assert identity_share(token, rng.random(5000)) < 0.03


def test_analysis_tool_tables_add_up(tmp_path, tool_data, capsys):
    run, model = make_checkpoint(tmp_path, tool_data["tokenizer"], overrides=[
        f"data.prefixes=[{tool_data['prefix']}]", "data.split=60,40,0", "data.seq_length=24"])
    out = tmp_path / "analysis"
    assert analysis_tool.main([str(run), "--output", str(out), "--taus", "0.01", "0.2",
                               "--samples", "32", "--batch-size", "8"]) == 0
    assert "token-id share of variance" in capsys.readouterr().out
    summary = json.loads((out / "analysis.json").read_text())
    assert (out / "analysis.png").stat().st_size > 10_000
    assert "## By token class" in (out / "analysis.md").read_text()
    n = 32 * 24
    assert summary["positions"] == n
    for key in ("by_frequency_decile", "by_class", "by_position", "by_router_entropy",
                "by_next_token_loss"):
        assert sum(r["count"] for r in summary[key]) == n, key
    assert len(summary["by_frequency_decile"]) >= 8 and len(summary["by_position"]) == 8
    # Executed steps equal the scoring engine's on the same sequences.
    batches = heldout_batches(model.cfg, split="valid", samples=32, batch_size=8, data_seed=0)
    rows = score_at_taus(model, batches, [0.01, 0.2])
    overall = summary["overall"]
    for row in rows:
        assert overall["executed_steps_mean"][f"{row['tau']:g}"] == pytest.approx(
            row["executed_steps"], abs=1e-9)
        assert sum(overall["executed_steps_histogram"][f"{row['tau']:g}"]) == n
    # This router's decisions depend on the token (random weights): not one decision for all.
    assert overall["expected_steps_std"] > 0.05
    assert 0 < overall["token_identity_share_of_variance"] <= 1


def test_analysis_refuses_fixed_step_methods(tmp_path, tool_data, capsys):
    run, _ = make_checkpoint(tmp_path, tool_data["tokenizer"], method="ponderlm2", k=2,
                             overrides=[f"data.prefixes=[{tool_data['prefix']}]"])
    assert analysis_tool.main([str(run), "--output", str(tmp_path / "a")]) == 2
    assert "needs a ponderlm3 checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    # Never into a run: its directory holds the checkpoints.
    assert analysis_tool.main([str(run), "--output", str(run)]) == 2
    assert "holds a training run" in capsys.readouterr().err
