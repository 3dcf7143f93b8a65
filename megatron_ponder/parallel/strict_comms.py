"""PONDER_STRICT_COMMS=1: NCCL's point-to-point rules on gloo, to dry-run a layout on CPU.

gloo forgives three things that NCCL does not; under this mode it forgives none of them:

- Tags. NCCL ignores `tag`: messages between a pair of ranks are matched in the order they
  were issued. Here every `tag` is replaced by 0, and gloo matches same-tag messages of a
  pair in issue order, as NCCL does.
- Buffering. An NCCL send above its internal buffer (a few MB) completes only once the peer
  runs the matching receive, and every later operation on the same stream waits for it.
  Here `isend` / `irecv` (and `send` / `recv`, which call them) wait for their own
  completion before returning, and a gloo send completes only when the peer has posted the
  matching receive (measured: a 4-byte `isend` to a peer that posts its `recv` 2 s later
  waits 2 s). So a send never completes into a buffer, whatever its size: stricter than
  NCCL below its buffer, equal above it. `batch_isend_irecv` posts its operations together
  (NCCL runs a group concurrently) and returns once all of them completed (the group is one
  unit on the stream). A wait that exceeds the group's timeout raises, naming the operation:
  a cyclic wait shows as an error after `parallel.distributed_timeout_s`, not as a hang.
- Devices. NCCL only moves CUDA tensors. Every tensor handed to a wrapped call must be on
  `comm_device()`. On a CPU-only machine every tensor is on the CPU, so there this check
  cannot fail: the rule is enforced there by tests/parallel/test_comm_tensors.py, which
  parses the package for tensor constructors that reach torch.distributed without the
  comm_device helper.

What it does not emulate: NCCL's stream asynchrony (the calling thread waits here where NCCL
would only order the GPU stream: a program that issues a send, then a collective on
another group that the receiver runs before its receive, is fine on NCCL and times out
here; this project's code does no such thing), collective ordering across groups, and
NCCL's own errors (communicator set-up, CUDA). Collective arguments are checked by
PyTorch's own TORCH_DISTRIBUTED_DEBUG=DETAIL, which the tests set alongside this mode.
Installed by parallel/setup.py and tests/distributed.py after the default process group
exists; under NCCL it installs nothing (NCCL applies its own rules).
"""

from __future__ import annotations

import functools
import inspect
import os

import torch
import torch.distributed as dist
import torch.distributed.distributed_c10d as c10d
from torch._C._distributed_c10d import _create_work_from_future

from megatron_ponder.comm_device import comm_device
from megatron_ponder.config import ConfigError

ENV = "PONDER_STRICT_COMMS"
_COLLECTIVES = ("all_reduce", "broadcast", "all_gather", "all_gather_into_tensor",
                "reduce_scatter", "reduce_scatter_tensor", "all_to_all", "all_to_all_single",
                "reduce", "gather", "scatter")
_original: dict[str, object] = {}


def requested() -> bool:
    """Whether the environment asks for the strict mode; any value but 0 / 1 / unset is a
    ConfigError (the CLI exits 2)."""
    value = os.environ.get(ENV, "").strip()
    if value not in ("", "0", "1"):
        raise ConfigError(f"environment variable {ENV}={value!r}: expected 1 (NCCL's rules "
                          "on gloo) or 0 / unset (off)")
    return value == "1"


def installed() -> bool:
    return bool(_original)


def install_if_requested() -> bool:
    """Wrap torch.distributed's calls when PONDER_STRICT_COMMS=1 and the default process group
    is gloo. Idempotent; returns whether the strict mode is active."""
    if not requested() or dist.get_backend() != "gloo":
        return installed()
    if installed():
        return True
    wrappers = {"isend": _strict_p2p("isend"), "irecv": _strict_p2p("irecv"),
                "batch_isend_irecv": _strict_batch}
    wrappers.update({name: _checked_collective(name) for name in _COLLECTIVES})
    for name, wrapper in wrappers.items():
        _original[name] = getattr(c10d, name)
        # c10d's own send / recv / P2POp / batch_isend_irecv look these names up in c10d.
        setattr(c10d, name, wrapper)
        setattr(dist, name, wrapper)
    return True


def uninstall() -> None:
    for name, original in _original.items():
        setattr(c10d, name, original)
        setattr(dist, name, original)
    _original.clear()


def _check_device(call: str, tensors) -> None:
    expected = comm_device()
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor) and tensor.device != expected:
            raise RuntimeError(
                f"{ENV}: {call} got a tensor on {tensor.device}; NCCL needs it on {expected}. "
                "Create it with megatron_ponder.comm_device (comm_tensor, comm_empty, "
                ".to(comm_device())).")


def _wait(work, what: str) -> None:
    if work is None:
        return
    try:
        work.wait()
    except RuntimeError as exc:
        raise RuntimeError(
            f"{ENV}: {what} did not complete within the process group's timeout: the peer "
            "never posted the matching operation (tags ignored, no buffering). On NCCL this "
            "is a hang: a cyclic wait between ranks or a missing receive.") from exc


def _completed():
    """A finished Work for the caller: waiting on a gloo send's own Work a second time
    would wait for another send."""
    future = torch.futures.Future()
    future.set_result(None)
    return _create_work_from_future(future)


def _describe(kind: str, tensor: torch.Tensor, peer) -> str:
    direction = "to" if kind == "isend" else "from"
    return f"{kind} of {tuple(tensor.shape)} {tensor.dtype} {direction} rank {peer}"


def _strict_p2p(kind: str):
    original = getattr(c10d, kind)
    signature = inspect.signature(original)
    peer_names = ("dst", "group_dst") if kind == "isend" else ("src", "group_src")

    @functools.wraps(original)
    def strict(*args, **kwargs):
        call = signature.bind(*args, **kwargs)
        call.apply_defaults()
        call.arguments["tag"] = 0  # NCCL ignores the tag
        tensor = call.arguments["tensor"]
        _check_device(kind, [tensor])
        work = original(*call.args, **call.kwargs)
        peer, group_peer = (call.arguments[name] for name in peer_names)
        _wait(work, _describe(kind, tensor, peer if peer is not None else f"{group_peer} of its group"))
        return _completed() if work is not None else None
    return strict


def _strict_batch(p2p_op_list):
    c10d._check_p2p_op_list(p2p_op_list)
    _check_device("batch_isend_irecv", [op.tensor for op in p2p_op_list])
    posted = []
    for op in p2p_op_list:  # posted together: NCCL runs a group's operations concurrently
        kind = "isend" if op.op in (c10d.isend, _original["isend"]) else "irecv"
        peer_key = "group_dst" if kind == "isend" else "group_src"
        work = _original[kind](op.tensor, group=op.group, tag=0, **{peer_key: op.group_peer})
        posted.append((work, _describe(kind, op.tensor, op.peer)))
    for work, what in posted:  # ... and the group completes as one unit
        _wait(work, what + " in batch_isend_irecv")
    return [_completed() for work, _ in posted if work is not None]


def _checked_collective(name: str):
    original = getattr(c10d, name)

    @functools.wraps(original)
    def checked(*args, **kwargs):
        _check_device(name, _tensors_in(list(args) + list(kwargs.values())))
        return original(*args, **kwargs)
    return checked


def _tensors_in(values) -> list[torch.Tensor]:
    found = []
    for value in values:
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(v for v in value if isinstance(v, torch.Tensor))
    return found
