"""Parameter initialisation that does not depend on the parallel layout.

megatron-core draws master weights from the global RNG in construction order, so a pipeline
stage that skips the embedding would draw different layers than one process does. Here every
parameter's full (TP 1) tensor is drawn from its own generator, seeded by (seed, the
parameter's global name), and each rank keeps its tensor-parallel slice: the same model at
any (TP, PP, DP), which is what makes layouts comparable step for step.

PonderLM-2's init (method.md section 2): truncated normal std sqrt(2/(5H)) for embeddings and
matrices, output projections of attention and MLP divided by sqrt(2 * num_layers), norms at
one; the router's output layer at zero (uniform s) and its biases at zero.
"""

from __future__ import annotations

import math
import re
import zlib

import numpy as np
import torch
from megatron.core import parallel_state

from megatron_ponder.config import Config
from megatron_ponder.model.tp_shards import shard_of

_LOCAL_LAYER = re.compile(r"\.layers\.(\d+)\.")
_OUTPUT_PROJECTIONS = ("self_attention.linear_proj.weight", "mlp.linear_fc2.weight")


def global_name(name: str, block) -> str:
    """Parameter name with the stage-local layer index replaced by the global one."""
    match = _LOCAL_LAYER.search(name)
    if match is None:
        return name
    layer = block.layers[int(match.group(1))]
    return name[: match.start(1)] + str(layer.layer_number - 1) + name[match.end(1):]


def _full_shape(name: str, param: torch.Tensor) -> tuple[int, ...]:
    shape = list(param.shape)
    if getattr(param, "tensor_model_parallel", False):
        shape[param.partition_dim] *= parallel_state.get_tensor_model_parallel_world_size()
    return tuple(shape)


def _draw(name: str, shape: tuple[int, ...], cfg: Config, router_output: bool) -> torch.Tensor:
    m = cfg.model
    if name.endswith(("layernorm.weight", "layer_norm_weight")):  # local / TE-fused norms
        return torch.ones(shape)
    if name.endswith(".bias") or router_output:
        return torch.zeros(shape)
    std = m.std / math.sqrt(2 * m.num_layers) if name.endswith(_OUTPUT_PROJECTIONS) else m.std
    seed = int(np.random.SeedSequence([cfg.seed, zlib.crc32(name.encode())]).generate_state(1)[0])
    generator = torch.Generator().manual_seed(seed)
    full = torch.empty(shape)
    return torch.nn.init.trunc_normal_(full, std=std, a=-3 * std, b=3 * std, generator=generator)


@torch.no_grad()
def initialize_parameters(model: torch.nn.Module, cfg: Config) -> None:
    """Fill every parameter of a PonderLM (any layout) from (cfg.seed, its global name)."""
    block = model.decoder.decoder
    router = model.decoder.router
    router_output = None
    if router is not None:
        router_output = router.net if isinstance(router.net, torch.nn.Linear) else router.net[-1]
    router_output_params = {id(p) for p in router_output.parameters()} if router_output else set()
    for name, param in model.named_parameters():
        full = _draw(global_name(name, block), _full_shape(name, param), cfg,
                     id(param) in router_output_params)
        param.copy_(shard_of(name, param, full).to(param.dtype))
