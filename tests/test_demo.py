"""`make demo`'s pipeline end to end (corpus -> tokenizer -> indexed data -> train -> eval),
shortened to a few steps, with wandb offline and tensorboard on as a user gets them."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_pipeline_runs_end_to_end(tmp_path):
    data, out = tmp_path / "data", tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "megatron_ponder.demo", "model.vocab_size=512",
         f"data.tokenizer={data / 'tokenizer.model'}", f"data.prefixes=[{data / 'corpus'}]",
         f"train.output_dir={out}", "train.steps=4", "train.log_interval=2",
         "train.eval_interval=2", "train.save_interval=2", "train.eval_batches=2"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout + result.stderr
    for stage in ("[1/4]", "[2/4]", "[3/4]", "[4/4]", "=== demo summary ==="):
        assert stage in result.stdout
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    final = [r for r in records if r["kind"] == "final"][-1]
    assert [r["step"] for r in train] == [2, 4]
    assert all(0 < r["mfu"] < 1 and r["tokens_per_s"] > 0 for r in train)
    # Between vanilla (every latent slot pruned) and PonderLM-2 (every slot kept), plus the router.
    from megatron_ponder.config import load_config
    from megatron_ponder.ponder.flops import DecoderShape
    from megatron_ponder.ponder.registry import VANILLA, method_class

    cfg = load_config(ROOT / "recipes" / "demo_cpu.yaml", ["model.vocab_size=512"])
    shape, length = DecoderShape.of(cfg.model), cfg.data.seq_length
    vanilla = VANILLA.inference_flops_per_token(shape, length)
    router = 2 * shape.hidden * 3
    most = (method_class("ponderlm2")(k=2).inference_flops_per_token(shape, length) + router) / vanilla
    assert 1.0 <= final["inference_flops_vs_vanilla"] <= most * (1 + 1e-9)
    assert abs(final["ppl"] - 2.718281828 ** final["loss"]) < 1e-6 * final["ppl"]
    assert (out / "checkpoints" / "step_0000004" / "metadata.json").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert list((out / "wandb").glob("offline-run-*"))
    assert f"checkpoints                {out / 'checkpoints'}" in result.stdout
