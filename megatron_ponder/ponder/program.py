"""A method as a pass program, so one description runs in one process or across pipeline stages.

Every method is a fixed list of passes over the transformer stack. Before pass p the first
stage builds the pass's input from the tokens and from what the last stage produced after
pass p-1 (the "carry": latent inputs and log w, Loop's residual stream, PonderLM-1's logits);
after pass p the last stage turns the stack's output into the next carry or, after the final
pass, into the PonderOutput. Between those ends only the stack runs. In one process the carry
is simply handed over (`run_locally`); with pipeline parallelism it travels from the last
stage back to the first (megatron_ponder/parallel/pipeline.py).

The slot layout every program shares (method.md section 2): slot (t, k) of token t sits at
index t * n + k for n slots per token; k = 0 is the token slot. Every slot of token t has
RoPE position t, so pruning a slot never shifts a position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from megatron_ponder.ponder.backbone import Backbone
from megatron_ponder.ponder.router import hard_rule_keeps

Carry = tuple  # tensors the last stage hands to the first stage between passes


# ------------------------------------------------------------- slot layout

def interleave(slots: list[torch.Tensor]) -> torch.Tensor:
    """n tensors [L, B, H] (slot k of every token) -> [n L, B, H] in slot order."""
    return torch.stack(slots, dim=1).flatten(0, 1)


def deinterleave(x: torch.Tensor, n: int) -> list[torch.Tensor]:
    """[n L, B, H] -> n tensors [L, B, H], inverse of `interleave`."""
    return list(x.unflatten(0, (x.shape[0] // n, n)).unbind(1))


def slot_position_ids(num_tokens: int, n: int, device: torch.device) -> torch.Tensor:
    """[n L] positions: 0,..,0, 1,..,1, ... (n copies of each token position)."""
    return torch.arange(num_tokens, device=device).repeat_interleave(n)


def slot_key_bias(log_w: torch.Tensor, n: int) -> torch.Tensor:
    """Per-key attention bias for slots 0..n-1: log_w [L, B, K+1] -> [B, n L].

    Token slots get log w_0 = 0; latent slot (t, k) gets log w_{t,k}.
    """
    return log_w[:, :, :n].permute(1, 0, 2).flatten(1)


# ------------------------------------------------------------- programs

@dataclass
class PonderOutput:
    """What a method's forward returns."""

    logits: torch.Tensor  # [L, B, V_local]
    # Slots per token of each pass that ran, in order (FLOPs accounting; a Loop or
    # PonderLM-1 pass over L tokens counts as 1).
    pass_slots: list[int]
    # Router outputs of the final pass (ponderlm3 only): [L, B, K+1].
    log_s: torch.Tensor | None = None
    log_w: torch.Tensor | None = None

    def kept_steps(self, tau: float) -> torch.Tensor | None:
        """[B, L] latent steps K_hat_t the hard rule keeps at tau (None without a router)."""
        if self.log_w is None:
            return None
        return hard_rule_keeps(self.log_w, tau).sum(-1).transpose(0, 1)


@dataclass
class PassInput:
    hidden: torch.Tensor  # [n L, B, H]
    key_log_w: torch.Tensor | None  # [B, n L] per-key bias, or None


class PassProgram:
    """Subclasses set `passes` (slots per token of each pass) and implement the two ends."""

    passes: list[int]
    # Passes before this index run without autograd (the truncated-gradient option).
    first_pass_with_grad: int = 0
    # One embedding lookup serves every pass (see token_embeddings). The pipeline turns this
    # off: each of its units is a separate autograd graph, and a node shared between units
    # would be freed by the first unit's backward.
    reuse_embeddings: bool = True

    def __init__(self, backbone: Backbone, tokens: torch.Tensor):
        self.backbone = backbone
        self.tokens = tokens
        self._embeddings: torch.Tensor | None = None

    def token_embeddings(self) -> torch.Tensor:
        """The scaled token embeddings [L, B, H] that every pass's token slots read.

        They cannot change between passes, so they are looked up once: one lookup (an
        all-reduce under tensor parallelism) and one embedding backward per step instead of
        one per pass (each of those writes a dense vocabulary-sized gradient). The values are
        bitwise the same; the embedding gradient sums the passes in another order. A lookup
        made without autograd (a truncated pass) is redone once a pass needs the gradient.
        """
        cached = self._embeddings
        if (not self.reuse_embeddings or cached is None
                or (torch.is_grad_enabled() and not cached.requires_grad)):
            cached = self._embeddings = self.backbone.embed(self.tokens)
        return cached

    @property
    def num_tokens(self) -> int:
        return self.tokens.shape[1]

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    def is_final(self, p: int) -> bool:
        return p == len(self.passes) - 1

    def position_ids(self, p: int) -> torch.Tensor:
        return slot_position_ids(self.num_tokens, self.passes[p], self.tokens.device)

    def has_key_bias(self, p: int) -> bool:
        return False

    def carry_shapes(self, p: int) -> list[tuple[int, ...]]:
        """Shapes of the carry the last stage produces after (non-final) pass p."""
        raise NotImplementedError

    def first_stage_input(self, p: int, carry: Carry | None) -> PassInput:
        raise NotImplementedError

    def last_stage_output(self, p: int, hidden: torch.Tensor) -> Carry | PonderOutput:
        raise NotImplementedError


def pass_has_grad(program: PassProgram, p: int) -> bool:
    return torch.is_grad_enabled() and p >= program.first_pass_with_grad


def run_locally(program: PassProgram) -> PonderOutput:
    """All passes in this process: the whole stack is local, the carry is handed over."""
    carry = None
    for p in range(len(program.passes)):
        with torch.set_grad_enabled(pass_has_grad(program, p)):
            inputs = program.first_stage_input(p, carry)
            hidden = program.backbone.run(inputs.hidden, program.position_ids(p),
                                          inputs.key_log_w, final_norm=False)
            carry = program.last_stage_output(p, hidden)
    return carry
