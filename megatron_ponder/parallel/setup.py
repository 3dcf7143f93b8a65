"""torch.distributed + megatron-core process groups, on GPU (nccl) or CPU (gloo)."""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

from megatron_ponder.config import Config, validate
from megatron_ponder.parallel.layout import check_layout
from megatron_ponder.parallel.strict_comms import install_if_requested, requested, uninstall


def _layout_of_groups() -> tuple[int, int]:
    return (parallel_state.get_tensor_model_parallel_world_size(),
            parallel_state.get_pipeline_model_parallel_world_size())


def initialize_parallel(cfg: Config) -> None:
    """Initialise the default process group (from torchrun's / srun's environment, or a single
    local process) and megatron's model-parallel groups; seed every RNG from cfg.seed.

    The layout is checked against the world size before any rendezvous, on every rank."""
    validate(cfg)
    par = cfg.parallel
    world = dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))
    check_layout(cfg, world)
    requested()  # a bad PONDER_STRICT_COMMS value fails here, before any rendezvous
    timeout = datetime.timedelta(seconds=par.distributed_timeout_s)
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        if "WORLD_SIZE" in os.environ:  # torchrun / srun: rendezvous from the environment
            dist.init_process_group(backend, timeout=timeout)
        else:  # one local process: an in-memory store, no port to collide on
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1,
                                    timeout=timeout)
    install_if_requested()  # NCCL's point-to-point rules on gloo (parallel/strict_comms.py)
    layout = (par.tensor_model_parallel_size, par.pipeline_model_parallel_size)
    # Re-creating the groups of an unchanged layout would leak them: gloo keeps every
    # group's polling threads alive after destroy_model_parallel (thousands in a test run).
    if parallel_state.model_parallel_is_initialized() and _layout_of_groups() != layout:
        _destroy_groups()
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=layout[0], pipeline_model_parallel_size=layout[1],
            distributed_timeout_minutes=par.distributed_timeout_s / 60,  # a timedelta's minutes
        )
        _create_pipeline_p2p_groups(timeout)
    torch.manual_seed(cfg.seed)
    # On CPU megatron's CUDA RNG tracker cannot be seeded; the inference tracker works.
    model_parallel_cuda_manual_seed(
        cfg.seed, inference_rng_tracker=not torch.cuda.is_available(), force_reset_rng=True
    )


_pipeline_p2p_group = None


def _create_pipeline_p2p_groups(timeout: datetime.timedelta) -> None:
    """A twin of each pipeline group for the pipeline's point-to-point messages. gloo counts
    point-to-point operations in a group's sequence number, and stages exchange different
    numbers of tensors, so TORCH_DISTRIBUTED_DEBUG=DETAIL would report the next collective
    on a group that also carried messages as mismatched. new_group is collective over the
    world: every rank creates every twin, in the same order."""
    global _pipeline_p2p_group
    if parallel_state.get_pipeline_model_parallel_world_size() == 1:
        return
    mine = dist.get_process_group_ranks(parallel_state.get_pipeline_model_parallel_group())
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    for ranks in sorted({tuple(r) for r in everyone}):
        group = dist.new_group(list(ranks), timeout=timeout)
        if dist.get_rank() in ranks:
            _pipeline_p2p_group = group


def pipeline_p2p_group():
    """The group of this rank's pipeline stages that carries only the pipeline's messages."""
    if _pipeline_p2p_group is None:
        raise RuntimeError("call megatron_ponder.parallel.initialize_parallel(cfg) with "
                           "parallel.pipeline_model_parallel_size > 1 first")
    return _pipeline_p2p_group


def _destroy_groups() -> None:
    global _pipeline_p2p_group
    if _pipeline_p2p_group is not None:
        dist.destroy_process_group(_pipeline_p2p_group)
        _pipeline_p2p_group = None
    parallel_state.destroy_model_parallel()


def destroy_parallel() -> None:
    if parallel_state.model_parallel_is_initialized():
        _destroy_groups()
    if dist.is_initialized():
        dist.destroy_process_group()
    uninstall()
