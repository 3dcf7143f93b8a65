"""Activation bytes one rank keeps for the backward, counted tensor by tensor from the code.

The usual estimate (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
Transformer Models": 34 s b h + 5 a s^2 b bytes per layer in 16-bit) assumes GPT's GeLU MLP,
dropout masks and attention that materialises the s x s scores. This decoder has none of
those: no dropout, SwiGLU (model/swiglu.py), fused attention that keeps O(s) (flash SDPA or
FlexAttention), RMSNorm, RoPE. So every term below names the tensor autograd keeps and the
operation that keeps it; tests/memory checks the sum against an exact count of the tensors
alive after a forward (memory/measure.py) and bench/memory.py against peak memory.

Notation, per tensor-parallel rank: h hidden, n query heads and g key/value groups of this
rank, d head dim, f this rank's SwiGLU width, v this rank's vocabulary share. A "slot" is one
position of one sequence of a pass (a pass over n_p slots per token of L tokens, micro-batch
b, has n_p L b slots). e is the compute dtype's bytes (4 fp32, 2 under bf16 autocast); the
residual stream is in the compute dtype after a stack's first attention block (megatron's
bias-dropout-add casts the residual to the block output's dtype), the input of a stack is
fp32 (embeddings, interleaved slots and the pipeline wire all are).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FP32 = 4
INT64 = 8


@dataclass(frozen=True)
class Widths:
    """Per-rank sizes of the decoder and how it runs (from Config via memory/plan.py)."""

    hidden: int
    heads: int  # this rank's query heads
    groups: int  # this rank's key/value groups
    head_dim: int
    ffn: int  # this rank's SwiGLU width
    vocab: int  # this rank's vocabulary share
    layers: int  # this pipeline stage's layers
    k: int
    tp: int
    sequence_parallel: bool
    compute_bytes: int  # 4 fp32, 2 bf16 autocast
    device: str  # "cpu" or "cuda": which RMSNorm and attention kernels run
    backend: str  # ponder.attention_backend
    qk_norm: bool = False  # model.qk_norm: an RMSNorm over each query and key head

    @property
    def norm_output_bytes(self) -> int:
        """dtype of an RMSNorm's output, which the next linear keeps: torch.rms_norm is in
        CUDA autocast's fp32 list (autocast_mode.cpp registers it for AutocastCUDA, not
        AutocastCPU), so on GPU it computes and returns fp32; on CPU it returns its input's
        dtype; TE's norm (sequence parallelism) returns the autocast dtype."""
        if self.sequence_parallel:
            return self.compute_bytes
        return FP32 if self.device == "cuda" else 0  # 0: the input's dtype

    @property
    def augmented_dim(self) -> int:
        """Head dim of the augmented backend's q~, k~, v~: d + 1, padded to a multiple of 8
        on CUDA (attention/augmented.py)."""
        width = self.head_dim + 1
        return width + (-width) % 8 if self.device == "cuda" else width


def _norm(w: Widths, input_bytes: int) -> tuple[float, int]:
    """(bytes one RMSNorm keeps per slot, bytes of its output per slot). On CUDA torch runs the
    fused kernel (aten::_fused_rms_norm: keeps its input, fp32 after autocast's cast, and
    1/rms); on CPU the composite of pow, mean, rsqrt and two muls (keeps an fp32 copy of the
    input, or the input itself if fp32, the normalised fp32 input and 1/rms); TE's norm under
    sequence parallelism keeps its input and 1/rms."""
    out = w.norm_output_bytes or input_bytes
    if w.sequence_parallel:
        return w.hidden * input_bytes + FP32, out * w.hidden
    if w.device == "cuda":
        return w.hidden * FP32 + FP32, out * w.hidden
    return 2 * w.hidden * FP32 + FP32, out * w.hidden


def layer_slot_bytes(w: Widths, key_bias: bool, first_in_stack: bool) -> float:
    """Bytes one layer keeps per slot (everything that scales with the micro-batch)."""
    h, n, g, d, e = w.hidden, w.heads, w.groups, w.head_dim, w.compute_bytes
    stream_in = FP32 if first_in_stack else e  # the layer's input dtype
    sp = w.tp if w.sequence_parallel else 1  # sequence parallel: h-wide tensors on S / tp
    # Norms, and the linears' inputs (the norms' outputs: megatron's linear keeps its input
    # as given, autocast casts inside the matmul).
    norms = (sum(_norm(w, stream_in)) + sum(_norm(w, e))) / sp
    if w.backend == "augmented" and key_bias:
        # q~, k~, v~ and the output (d' wide), the log-sum-exp; the output projection's
        # input is a copy of the first d channels (not a view of the d'-wide output).
        dp = w.augmented_dim
        attention = (2 * n + 2 * g) * dp * e + n * FP32 + n * d * e
    elif w.backend in ("augmented", "flex"):
        # q and k (RoPE outputs), v (copied out of the fused QKV buffer: core_attention.py),
        # output, log-sum-exp. Flash SDPA's output is laid out [b, s, heads, d], so the
        # projection's input is a view of it; FlexAttention's is [b, heads, s, d]: a copy.
        attention = (2 * n + 2 * g) * d * e + n * FP32 + (n * d * e if w.backend == "flex" else 0)
    else:
        raise ValueError(f"ponder.attention_backend={w.backend!r}: the planner models the "
                         "augmented and flex backends (reference is a test oracle, O(S^2))")
    mlp = 2 * w.ffn * e + w.ffn * e  # fc1 output [gate; up] (SwiGLU), fc2's input
    return norms + attention + mlp + _qk_norms(w)


def _qk_norms(w: Widths) -> float:
    """Bytes the q/k norms keep per slot: as `_norm` over the (n + g) d channels of q and k,
    with one 1/rms per head. With fp32 compute they keep their inputs as they are: k is a view
    of the fused QKV output, which it keeps alive whole ((n + 2g) d), and q a copy when a group
    holds several query heads (megatron's reshape of the group-major split cannot be a view);
    with a cast (bf16 autocast) they keep fp32 copies of q and k instead."""
    if not w.qk_norm:
        return 0
    width, heads = (w.heads + w.groups) * w.head_dim, w.heads + w.groups
    if w.sequence_parallel:  # TE's norm: its input (a copy) and 1/rms
        return width * w.compute_bytes + heads * FP32
    kept_input = width * FP32
    if w.compute_bytes == FP32:
        q_copy = w.heads * w.head_dim if w.heads != w.groups else 0
        kept_input = ((w.heads + 2 * w.groups) * w.head_dim + q_copy) * FP32
    if w.device == "cuda":  # fused kernel: the (fp32) input and 1/rms
        return kept_input + heads * FP32
    return kept_input + width * FP32 + heads * FP32  # CPU composite: + the normalised input


def layer_position_bytes(w: Widths) -> float:
    """Bytes one layer keeps per position of a pass, independent of the micro-batch: RoPE's
    cos and sin, once for q and once for k, [S, 1, 1, d] in the compute dtype."""
    return 4 * w.head_dim * w.compute_bytes


def layer_input_slot_bytes(w: Widths, first_in_stack: bool) -> float:
    """What a recomputed layer keeps per slot: its input (the residual stream)."""
    sp = w.tp if w.sequence_parallel else 1
    return w.hidden * (FP32 if first_in_stack else w.compute_bytes) / sp


def key_bias_bytes(slots: int) -> float:
    """The per-key bias [b, n_p L] of a pass, fp32, kept once (every layer reads the same
    tensor; augmented attention's clamp keeps it)."""
    return slots * FP32


def final_norm_bytes(w: Widths, slots: int, output_kept: bool) -> float:
    """The last stage's final norm over a pass's slots, and its output when the head reads a
    slot of it (after the final pass: a view, which keeps the whole output)."""
    kept, output = _norm(w, w.compute_bytes)
    return slots * (kept + (output if output_kept else 0))


def router_bytes(w: Widths, tokens: int, final: bool) -> float:
    """PonderLM-3's router after a pass (ponder/router.py, ponder/latent_thoughts.py), per token: its
    input h^(0) (the final norm's output after a one-slot pass, else a contiguous fp32 copy
    of the strided slot), log_softmax's output (K+1 fp32); where log w feeds the next pass,
    logcumsumexp's input and output, the cat, and cummin's int64 indices; after the final pass
    the fusion weights exp(log s), their masked product and the bool mask."""
    per_step = FP32 + (FP32 + FP32 + FP32 + 1 if final else 3 * FP32 + INT64)
    return tokens * (w.hidden * FP32 + (w.k + 1) * per_step)


def head_bytes(w: Widths, tokens: int, fused: bool) -> float:
    """The LM head and the vocabulary-parallel cross-entropy, per scored token: the fp32
    softmax the cross-entropy keeps ([L, b, v]), its target mask and masked targets; with
    PonderLM-3's fusion the head's input is a new tensor (fp32: the fusion weights are fp32),
    otherwise it is (a view of) the final norm's output."""
    return tokens * ((w.hidden * FP32 if fused else 0) + w.vocab * FP32 + 1 + INT64)


def rope_angles_bytes(w: Widths, positions: int) -> float:
    """The RoPE angles of a pass ([S, 1, 1, d] fp32), an input of every layer: kept only as
    the input of a recomputed region."""
    return positions * w.head_dim * FP32


def embedding_bytes(w: Widths, tokens: int) -> float:
    """The vocabulary-parallel embedding's kept indices (int64); with TP > 1 each call makes
    its own masked copy and mask."""
    return tokens * (INT64 + (1 if w.tp > 1 else 0))


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def round_up(value: int, multiple: int) -> int:
    return multiple * math.ceil(value / multiple)
