"""Run a function in N processes on gloo (OLMo-core style), collecting each rank's result."""

from __future__ import annotations

import os
import socket
import tempfile
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world_size, port, fn, args, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)  # two ranks on two cores
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
        result = fn(rank, *args)
        torch.save({"ok": result}, os.path.join(out_dir, f"{rank}.pt"))
    except BaseException:
        torch.save({"error": traceback.format_exc()}, os.path.join(out_dir, f"{rank}.pt"))
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_distributed(fn, world_size: int, *args) -> list:
    """fn(rank, *args) in `world_size` spawned processes; returns the ranks' results."""
    with tempfile.TemporaryDirectory() as out_dir:
        try:
            mp.start_processes(_entry, args=(world_size, free_port(), fn, args, out_dir),
                               nprocs=world_size, start_method="spawn")
        except mp.ProcessRaisedException:
            pass  # the rank's own traceback is reported below
        results = [torch.load(os.path.join(out_dir, f"{r}.pt"), weights_only=False)
                   for r in range(world_size)]
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise AssertionError("a rank failed:\n" + errors[0])
    return [r["ok"] for r in results]
