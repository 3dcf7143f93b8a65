"""A real tiny sweep through the CLI: resume after a stop, records and their FLOPs.

One module-scoped scenario (training subprocesses are the slow part): run 0 is trained and
recorded by itself, run 1 is trained halfway and stopped, then the whole sweep runs again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_files import LAMBDA, VOCAB, sweep_dict, write_sweep

from megatron_ponder.data.corpus import write_default_corpus
from megatron_ponder.ponder.method import jacobi_iterations
from megatron_ponder.sweeps.records import check_record
from megatron_ponder.sweeps.runner import status, write_recipe
from megatron_ponder.sweeps.spec import load_sweep

REPO = Path(__file__).resolve().parents[2]
SWEEP = [sys.executable, str(REPO / "tools" / "sweep.py")]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=600, **kw)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    text = write_default_corpus(root / "corpus.jsonl", max_bytes=150_000, quiet=True)
    path = write_sweep(root / "tiny.yaml", sweep_dict(root / "out", text, root / "data"))
    first = _run(SWEEP + ["run", str(path), "--index", "0"])
    assert first.returncode == 0, first.stdout + first.stderr
    sweep = load_sweep(path)
    record0 = sweep.record_path(sweep.runs[0])
    before = record0.read_bytes(), record0.stat().st_mtime_ns
    # Run 1 stops after 2 of its 4 steps, as a preempted job would (exit code 3).
    recipe = write_recipe(sweep, sweep.runs[1])
    half = _run([sys.executable, "-m", "megatron_ponder.train", str(recipe),
                 "train.exit_interval=2"])
    assert half.returncode == 3, half.stdout + half.stderr
    states = [status(sweep, run) for run in sweep.runs]
    rest = _run(SWEEP + ["run", str(path)])
    assert rest.returncode == 0, rest.stdout + rest.stderr
    return {"sweep": sweep, "before": before, "states": states, "rest": rest.stdout}


def _record(scenario, index):
    sweep = scenario["sweep"]
    path = sweep.record_path(sweep.runs[index])
    return check_record(json.loads(path.read_text()), str(path))


def test_restart_runs_only_the_missing_configurations(scenario):
    sweep = scenario["sweep"]
    assert scenario["states"] == ["done", "partial (2/4 steps)"]
    out = scenario["rest"]
    assert "run 0 h32-vanilla-k0-lam0-seed3: skipped (record exists)" in out
    assert "resumed from" in out and "at step 2" in out  # run 1 continued, not restarted
    record0 = sweep.record_path(sweep.runs[0])
    assert (record0.read_bytes(), record0.stat().st_mtime_ns) == scenario["before"]
    assert [status(sweep, run) for run in sweep.runs] == ["done", "done"]


# Hand-computed FLOPs of the tiny shape: H 32, 2 layers, 4 heads (d 8), SwiGLU ffn 128
# (8/3 H rounded up to 64), vocab 512, 16 tokens. Non-embedding parameters per layer: QKV
# 32*96 + out 32*32 + SwiGLU 3*32*128 + 2 norms 64 = 3072 + 1024 + 12288 + 64 = 16448;
# two layers + the final norm: 32928. Attention: 4 * heads * d * layers = 256 FLOPs per key.
N, ATT, HEAD, L = 32928, 256, 2 * 32 * VOCAB, 16


def _pass(slots):  # one causal pass over 16 tokens with `slots` slots each, per sequence
    s = L * slots
    return 2 * N * s + ATT * s * (s + 1) // 2


def test_vanilla_record_against_hand_computed_flops(scenario):
    record = _record(scenario, 0)
    assert record["non_embedding_parameters"] == N
    # + token embedding 512*32 + LM head 32*512
    assert record["parameters"] == N + 2 * 32 * VOCAB
    usage = {key: record["training"].pop(key) for key in ("cpu_s", "peak_rss_mib", "pieces")}
    assert record["training"] == {"steps": 4, "tokens": 4 * 4 * 16,
                                  "flops": 3 * (_pass(1) + HEAD * L) * 4 * 4}
    # The trainer subprocess's own usage (os.wait4): one piece, real CPU time, an RSS that
    # holds at least torch and megatron (> 100 MiB), far below the machine's memory.
    assert usage["pieces"] == 1 and usage["cpu_s"] > 1 and 100 < usage["peak_rss_mib"] < 8000
    assert record["budgets"] == [] and record["evaluation_cpu_s"] > 0
    vanilla = 2 * N + ATT * (L + 1) / 2 + HEAD  # token t attends to t keys: mean (L+1)/2
    assert record["vanilla_flops_per_token"] == pytest.approx(vanilla, rel=1e-12)
    (entry,) = record["inference"]
    assert entry["tau"] is None and entry["flops_vs_vanilla"] == 1.0
    assert entry["executed_steps"] == entry["expected_steps"] == 0.0
    assert entry["loss"] == pytest.approx(record["validation"]["loss"], abs=1e-6)
    assert record["validation"]["tokens"] == 2 * 2 * 16


def test_ponderlm3_record_against_hand_computed_flops(scenario):
    record = _record(scenario, 1)
    router = 2 * 32 * 3  # Linear(H, K+1) per token and pass
    steps = 0
    for step in range(4):  # J from (seed 3, step), passes: 1 slot, growth 2, J + 1 full of 3
        j = jacobi_iterations(3, step, [2, 3])
        passes = [1, 2] + [3] * (j + 1)
        steps += 3 * (sum(_pass(n) for n in passes) + HEAD * L + len(passes) * router * L)
    assert record["training"]["flops"] == steps * 4
    vanilla = record["vanilla_flops_per_token"]
    # After 4 steps at lr 1e-5 the zero-initialised router is uniform to ~1e-4: s = 1/3,
    # w = (1, 2/3, 1/3). tau 1e-4 keeps both steps, 0.5 keeps one, 0.9 none.
    for entry, kept in zip(record["inference"], (2, 1, 0)):
        slots = kept + 1
        attended = sum(range(1, L * slots + 1)) / L  # keys over all slots, per token
        per_token = 2 * N * slots + ATT * attended + HEAD + router
        assert entry["executed_steps"] == kept
        assert entry["flops_per_token"] == pytest.approx(per_token, rel=1e-12)
        assert entry["flops_vs_vanilla"] == pytest.approx(per_token / vanilla, rel=1e-12)
        assert entry["expected_steps"] == pytest.approx(1.0, abs=1e-3)  # 2/3 + 1/3
    # The validation loss is the LM loss: tau 1e-4 prunes nothing here, so the hard-masked
    # loss equals it to float rounding; the penalty is reported apart, lambda * E[steps].
    assert record["inference"][0]["loss"] == pytest.approx(record["validation"]["loss"],
                                                           abs=1e-5)
    assert record["validation"]["penalty"] == pytest.approx(
        LAMBDA * record["inference"][0]["expected_steps"], rel=1e-5)
    # Run 1 was trained halfway outside the sweep: its usage counts the sweep's piece only.
    assert record["training"]["pieces"] == 1


def test_ponderlm3_budget_entries(scenario):
    """Budgets 0.01 and 0.9 of the all-kept FLOPs on the near-uniform router (w = 1, 2/3,
    1/3, each within ~1e-4 per token): 0.01 is below what pruning every step costs; 0.9 lies
    between one step and two for every token, so tau lands at w_2 ~ 1/3, where the tokens
    split between one and two steps in the share that spends 0.9."""
    record = _record(scenario, 1)
    unreachable, fits = record["budgets"]
    assert unreachable["flops_budget"] == 0.01 and "out of reach" in unreachable["unreachable"]
    assert "between" in unreachable["unreachable"]
    router = 2 * 32 * 3

    def per_token(slots):
        return 2 * N * slots + ATT * sum(range(1, L * slots + 1)) / L + HEAD + router

    calibration = fits["calibration"]
    assert fits["flops_budget"] == 0.9 and calibration["tau"] == fits["tau"]
    assert abs(fits["tau"] - 1 / 3) < 1e-3 and 1 <= fits["executed_steps"] <= 2
    assert abs(calibration["ratio"] - 0.9) <= 0.005 * 0.9
    assert calibration["reachable"][1] == pytest.approx(1.0, abs=1e-12)
    assert calibration["reachable"][0] == pytest.approx(per_token(1) / per_token(3), rel=1e-12)
    assert fits["flops_vs_all_kept"] == pytest.approx(fits["flops_per_token"] / per_token(3),
                                                      rel=1e-12)
    assert calibration["tokens"] == 2 * 2 * 16
