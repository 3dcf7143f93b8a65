"""tools/eval_ppl.py: one run, several taus; numbers equal direct hard scoring."""

import json
import math
import sys
from pathlib import Path

from checkpoints import make_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import eval_ppl as eval_tool  # noqa: E402


def test_tau_sweep_table_and_json(tmp_path, tool_data, capsys):
    run, model = make_checkpoint(tmp_path, tool_data["tokenizer"], overrides=[
        f"data.prefixes=[{tool_data['prefix']}]", "data.split=80,20,0", "data.seq_length=24"])
    out = tmp_path / "ppl.json"
    taus = ["0.01", "0.05", "0.3", "0.9"]
    assert eval_tool.main([str(run), "--taus", *taus, "--samples", "8", "--batch-size", "4",
                           "--output", str(out)]) == 0
    table = capsys.readouterr().out
    assert len(table.splitlines()) == 1 + len(taus)
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [r["tau"] for r in rows] == [float(t) for t in taus]
    assert result["sequences"] == 8 and all(r["tokens"] == 8 * 24 for r in rows)
    steps = [r["executed_steps"] for r in rows]
    flops = [r["flops_per_token"] for r in rows]
    # Larger tau prunes more: fewer steps and FLOPs, never more; the range really moves.
    assert all(a >= b for a, b in zip(steps, steps[1:])) and steps[0] > steps[-1]
    assert all(a >= b for a, b in zip(flops, flops[1:])) and flops[0] > flops[-1]
    assert all(1.0 < r["flops_vs_vanilla"] < 4.0 + 1e-9 for r in rows)
    assert all(math.isclose(r["ppl"], math.exp(r["loss"]), rel_tol=1e-9) for r in rows)
    assert len({round(r["loss"], 6) for r in rows}) > 1


def test_fixed_step_method_and_bad_input(tmp_path, tool_data, capsys):
    run, _ = make_checkpoint(tmp_path, tool_data["tokenizer"], method="ponderlm2", k=2,
                             overrides=[f"data.prefixes=[{tool_data['prefix']}]", "data.split=80,20,0"])
    assert eval_tool.main([str(run), "--taus", "0.01", "0.5", "--samples", "4"]) == 0
    out = capsys.readouterr().out
    assert "has no router" in out
    assert eval_tool.main([str(run), "--taus", "0.01", "1.5"]) == 2
    assert "tau=1.5 is invalid" in capsys.readouterr().err
    assert eval_tool.main([str(run), "--data-prefix", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


def test_data_seed_chooses_the_samples(tmp_path, tool_data):
    """--data-seed replaces the checkpoint's seed (3) in the sample order only: equal seeds
    score equal tokens, so runs of different seeds can be scored on the same ones."""
    run, _ = make_checkpoint(tmp_path, tool_data["tokenizer"], overrides=[
        f"data.prefixes=[{tool_data['prefix']}]", "data.split=80,20,0", "data.seq_length=24"])

    def loss(*extra):
        out = tmp_path / f"ppl{len(extra)}{''.join(extra)}.json"
        assert eval_tool.main([str(run), "--samples", "4", "--output", str(out), *extra]) == 0
        return json.loads(out.read_text())["rows"][0]["loss"]

    assert loss() == loss("--data-seed", "3")
    assert loss("--data-seed", "0") != loss()
