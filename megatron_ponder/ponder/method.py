"""What a method is, asked in one place (method.md sections 5-7).

Each method is one `Method` object, registered by name in ponder/registry.py. The trainer,
inference, export, sweeps and tools ask it what they need (does it route, how many slots
does a token own, what does a token cost, how does it decode) instead of comparing names.
"""

from __future__ import annotations

import torch

from megatron_ponder.ponder.backbone import Backbone
from megatron_ponder.ponder.flops import DecoderShape, slot_cache_flops
from megatron_ponder.ponder.program import PassProgram
from megatron_ponder.ponder.token_plan import TokenPlan


class Method:
    name: str
    # PonderLM-3's router: per-token step decisions, so tau and the compute penalty matter.
    uses_router = False
    # A learned pause-token input (a parameter of the first pipeline stage).
    uses_pause = False
    # Latent thoughts solved with Jacobi passes: J (jacobi_train/eval) and grad_passes apply.
    uses_jacobi = False
    # Decodes token by token with one slot KV cache (generate, the Hugging Face export).
    decodes_with_slot_cache = True
    # Adds nothing to a decoder-only LM (one slot per token, no parameters of its own).
    plain = False

    def k_problem(self, k: int) -> str | None:
        """Why `k` (ponder.k) does not suit this method, or None. A method that ponders needs
        at least one step: with K=0 it would train a plain decoder under its name, silently."""
        if k < 1:
            return (f"ponder.method={self.name} needs at least 1 pondering step (with 0 it "
                    "is a plain decoder: use ponder.method=vanilla for that)")
        return None

    def latent_steps(self, k: int) -> int:
        """Pondering steps per token beyond its own slot or pass: K for the fixed-step
        methods (PonderLM-1 and Loop: K extra passes), the most PonderLM-3 runs."""
        return k

    def slots_per_token(self, k: int) -> int:
        """Slots a token owns in the interleaved sequence and in the KV cache (at most)."""
        return self.latent_steps(k) + 1

    def executed_steps(self, k: int, kept_steps: torch.Tensor | None = None) -> float:
        """Mean latent steps per token at inference; kept_steps [B, L]: the router's K_hat_t."""
        return float(self.latent_steps(k))

    def program(self, backbone: Backbone, tokens: torch.Tensor, *, k: int, jacobi: int = 3,
                latent_init: str = "growth", grad_passes: int = 0,
                hard_tau: float | None = None) -> PassProgram:
        """The pass program on tokens [B, L]; `jacobi`, `latent_init` and `grad_passes` are
        used by the latent-thought methods, hard_tau (the hard pruning rule) by the router."""
        raise NotImplementedError

    # ------------------------------------------------------------- FLOPs (section 6)

    def head_calls(self, k: int) -> int:
        """LM-head-sized matmuls per token and forward."""
        return 1

    def router_flops(self, shape: DecoderShape, k: int) -> int:
        """Router FLOPs per token and pass."""
        return 0

    def forward_flops(self, shape: DecoderShape, k: int, pass_slots: list[int],
                      num_tokens: int) -> int:
        """Forward FLOPs of one sequence of `num_tokens` given the passes that ran."""
        total = sum(shape.pass_flops(num_tokens, n) for n in pass_slots)
        total += self.head_calls(k) * shape.head_flops(num_tokens)
        return total + len(pass_slots) * self.router_flops(shape, k) * num_tokens

    def training_flops(self, shape: DecoderShape, k: int, pass_slots: list[int],
                       num_tokens: int, grad_passes: int = 0) -> int:
        """Forward + backward FLOPs of one sequence; passes run without autograd count once
        (grad_passes applies to the latent-thought methods; the others keep every pass)."""
        fwd = self.forward_flops(shape, k, pass_slots, num_tokens)
        if not self.uses_jacobi or grad_passes == 0 or grad_passes >= len(pass_slots):
            return 3 * fwd
        no_grad_slots = pass_slots[: len(pass_slots) - grad_passes]
        no_grad = sum(shape.pass_flops(num_tokens, n) for n in no_grad_slots)
        # The router runs inside each pass, without autograd there too.
        no_grad += len(no_grad_slots) * self.router_flops(shape, k) * num_tokens
        return 3 * fwd - 2 * no_grad

    def cache_slots(self, k: int, num_tokens: int,
                    kept_steps: torch.Tensor | None) -> torch.Tensor:
        """Slots each token appends to the KV cache at inference, [B, L] float64."""
        return torch.full((1, num_tokens), float(self.slots_per_token(k)), dtype=torch.float64)

    def inference_flops_per_token(self, shape: DecoderShape, k: int, num_tokens: int,
                                  kept_steps: torch.Tensor | None = None) -> float:
        """Mean FLOPs to score or generate one token with a KV cache, over a sequence of
        `num_tokens`. kept_steps [B, L]: latent steps K_hat_t the hard rule kept (router)."""
        per_token = slot_cache_flops(shape, self.cache_slots(k, num_tokens, kept_steps))
        per_token = per_token + self.head_calls(k) * shape.head_flops(1)
        return float((per_token + self.router_flops(shape, k)).mean())

    # ------------------------------------------------------------- decoding (section 5)

    def decode_plan(self, backbone: Backbone, h0: torch.Tensor, k: int, tau: float) -> TokenPlan:
        """h0 [1, b, H]: the final-norm output of each new token's own slot."""
        return TokenPlan(torch.full((h0.shape[1],), self.latent_steps(k), device=h0.device))

    def latent_input(self, backbone: Backbone, previous: torch.Tensor) -> torch.Tensor:
        """Input of a token's next latent slot, given the previous slot's output."""
        return previous
