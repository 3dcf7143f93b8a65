"""A bad layout fails at start-up on every rank with a message naming the fields, and a rank
that dies mid-step ends the job within a bounded time instead of leaving the others hanging."""

import signal
import time

import pytest

from megatron_ponder.config import ConfigError
from megatron_ponder.parallel.layout import check_layout
from tiny_runs import launch_ranks, read_metrics

START_UP_BOUND_S = 120  # two cold interpreters importing torch + megatron on a loaded machine
DEAD_RANK_TIMEOUT_S = 20  # parallel.distributed_timeout_s in the dead / stuck rank runs


@pytest.mark.parametrize("overrides,world,fields", [
    (["parallel.tensor_model_parallel_size=4"], 2, ["world size 2", "tensor_model_parallel_size"]),
    (["parallel.pipeline_model_parallel_size=2"], 6, ["world size 6", "pipeline_model_parallel_size"]),
    (["train.global_batch_size=6"], 2, ["train.global_batch_size=6", "multiples of 4"]),
])
def test_layout_errors_name_the_fields(tiny_run, tmp_path, overrides, world, fields):
    cfg = tiny_run(tmp_path, **{k.split(".")[1]: int(v) for k, v in
                                (o.split("=") for o in overrides) if k.startswith("train.")})
    for override in overrides:
        if override.startswith("parallel."):
            key, value = override.split("=")
            setattr(cfg.parallel, key.split(".")[1], int(value))
    if world == 6:
        cfg.parallel.tensor_model_parallel_size = 4  # 6 % (4 x 2) != 0
    with pytest.raises(ConfigError) as err:
        check_layout(cfg, world)
    for field in fields:
        assert field in str(err.value)


@pytest.mark.parametrize("override,field", [
    ("parallel.tensor_model_parallel_size=4", "parallel.tensor_model_parallel_size x "
                                              "parallel.pipeline_model_parallel_size"),
    ("model.num_layers=3", "model.num_layers=3"),  # layers not divisible by PP 2
    ("model.num_attention_heads=3", "model.num_attention_heads=3"),  # heads not divisible by TP 2
])
def test_bad_layout_fails_on_every_rank_without_hanging(tiny_recipe, tmp_path, override, field):
    recipe = tiny_recipe(tmp_path / "recipe.yaml", tmp_path / "run")
    layout = {"model.num_layers=3": ["parallel.pipeline_model_parallel_size=2"],
              "model.num_attention_heads=3": ["parallel.tensor_model_parallel_size=2",
                                              "model.hidden_size=48"]}.get(override, [])
    procs = launch_ranks(recipe, override, *layout)
    for rank, proc in enumerate(procs):
        _, stderr = proc.communicate(timeout=START_UP_BOUND_S)
        assert proc.returncode == 2, stderr[-2000:]
        assert f"error (rank {rank}):" in stderr and field in stderr, stderr[-2000:]
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("fault", [signal.SIGKILL, signal.SIGSTOP], ids=["dead", "stuck"])
def test_dead_or_stuck_rank_ends_the_job_within_the_timeout(tiny_recipe, tmp_path, fault):
    recipe = tiny_recipe(tmp_path / "recipe.yaml", tmp_path / "run", steps=10_000, save_interval=10_000)
    procs = launch_ranks(recipe, "parallel.pipeline_model_parallel_size=2",
                         f"parallel.distributed_timeout_s={DEAD_RANK_TIMEOUT_S}")
    try:
        deadline = time.monotonic() + START_UP_BOUND_S
        while not (tmp_path / "run" / "metrics.jsonl").exists() or len(read_metrics(tmp_path / "run")) < 2:
            assert time.monotonic() < deadline and procs[0].poll() is None, procs[0].communicate()
            time.sleep(0.2)
        procs[1].send_signal(fault)  # mid-step: steps follow each other back to back
        killed = time.monotonic()
        _, stderr = procs[0].communicate(timeout=DEAD_RANK_TIMEOUT_S + 30)
        waited = time.monotonic() - killed
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()
    assert procs[0].returncode not in (0, 3), stderr[-2000:]
    assert waited <= DEAD_RANK_TIMEOUT_S + 30
    if fault == signal.SIGSTOP:  # nothing tells the others; only the timeout ends the wait
        assert waited >= DEAD_RANK_TIMEOUT_S * 0.9 and "Timed out" in stderr, stderr[-2000:]
    print(f"rank 0 exited {waited:.1f} s after {fault.name}: {stderr.strip().splitlines()[-1][:300]}")
