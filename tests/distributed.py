"""Run a function in N processes on gloo (OLMo-core style), collecting each rank's result.

STRICT_COMMS is the environment under which the pipeline's tests run: NCCL's point-to-point
rules on gloo (megatron_ponder/parallel/strict_comms.py) and PyTorch's own collective checks.
"""

from __future__ import annotations

import datetime
import os
import socket
import tempfile
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

STRICT_COMMS = {"PONDER_STRICT_COMMS": "1", "TORCH_DISTRIBUTED_DEBUG": "DETAIL"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world_size, port, fn, args, out_dir, env, timeout_s):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), **env)
    torch.set_num_threads(1)  # two ranks on two cores
    try:
        dist.set_debug_level_from_env()  # torch read TORCH_DISTRIBUTED_DEBUG at import
        dist.init_process_group("gloo", rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
        from megatron_ponder.parallel.strict_comms import install_if_requested
        install_if_requested()
        result = fn(rank, *args)
        torch.save({"ok": result}, os.path.join(out_dir, f"{rank}.pt"))
    except BaseException:
        torch.save({"error": traceback.format_exc()}, os.path.join(out_dir, f"{rank}.pt"))
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_distributed(fn, world_size: int, *args, env: dict[str, str] | None = None,
                    timeout_s: float = 600.0) -> list:
    """fn(rank, *args) in `world_size` spawned processes with `env` added to their environment
    (e.g. STRICT_COMMS); returns the ranks' results. timeout_s: the default group's timeout."""
    with tempfile.TemporaryDirectory() as out_dir:
        try:
            mp.start_processes(_entry, args=(world_size, free_port(), fn, args, out_dir, env or {},
                                             timeout_s),
                               nprocs=world_size, start_method="spawn")
        except mp.ProcessRaisedException:
            pass  # the rank's own traceback is reported below
        results = [torch.load(os.path.join(out_dir, f"{r}.pt"), weights_only=False)
                   for r in range(world_size)]
    errors = [f"rank {rank}: {r['error']}" for rank, r in enumerate(results) if "error" in r]
    if errors:  # every rank's: the first may only report that a peer died
        raise AssertionError("a rank failed:\n" + "\n".join(errors))
    return [r["ok"] for r in results]
