"""What a method is, asked in one place (method.md sections 5-7).

Each method is a `Method` subclass, registered by name in ponder/registry.py. An instance is
the method *configured*: K, the Jacobi choices, grad_passes, latent_init, tau, the compute
penalty and the decisive-router settings of one run (`get_method(cfg.ponder)`). The trainer,
inference, export, sweeps and tools ask it what they need (does it route, how many slots does
a token own, what does a token cost, how does it decode, what is its loss) instead of
comparing names or handing ponder.* settings back. Questions about a name alone, with no
run behind it (uses_router, k_problem), are class-level: `method_class(name).uses_router`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from megatron_ponder.ponder.backbone import Backbone
from megatron_ponder.ponder.flops import DecoderShape, slot_cache_flops
from megatron_ponder.ponder.loss import ponder_loss, ponder_statistics
from megatron_ponder.ponder.program import PassProgram, PonderOutput


@dataclass
class TokenPlan:
    """Token-by-token decoding, the method's part (method.md section 5): once a new token's
    own slot has run, its method decides how many latent slots follow (PonderLM-3: the hard
    rule's K_hat_t, decided up front), the key bias each of them enters the cache with, and
    how the slots' outputs become the token's output. The slot KV cache and the loop over
    slots live in inference/decoding.py."""

    kept: torch.Tensor  # [b] latent steps each row runs
    # [b, K+1] log fusion weights over the slots; None: the last slot's output alone.
    log_s: torch.Tensor | None = None
    # [b, K+1] key bias each slot enters the cache with; None: 0 for every slot.
    log_w: torch.Tensor | None = None

    def slot_bias(self, step: int, zero: torch.Tensor) -> torch.Tensor:
        return zero if self.log_w is None else self.log_w[:, step]

    def fuse(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """Outputs [1, b, H] of the slots run (zeros for rows that stopped) -> [b, H].
        Fusion over the kept steps only, no renormalisation (the dropped mass is < tau)."""
        if self.log_s is None:
            return outputs[-1][0]
        weights = self.log_s.exp()
        return sum(weights[:, j, None] * (self.kept >= j)[:, None] * outputs[j][0]
                   for j in range(len(outputs)))


def jacobi_iterations(seed: int, step: int, choices) -> int:
    """Uniform draw from `choices`, a pure function of (seed, step): never from a global RNG,
    so every rank draws the same J and a resumed run repeats the uninterrupted one."""
    rng = np.random.default_rng([int(seed), int(step)])
    return int(choices[int(rng.integers(len(choices)))])


@dataclass(frozen=True)
class Method:
    """A method with one run's settings (defaults: config.PonderConfig's)."""

    name: ClassVar[str]
    # PonderLM-3's router: per-token step decisions, so tau and the compute penalty matter.
    uses_router: ClassVar[bool] = False
    # A learned pause-token input (a parameter of the first pipeline stage).
    uses_pause: ClassVar[bool] = False
    # Latent thoughts solved with Jacobi passes: J (jacobi_train/eval) and grad_passes apply.
    uses_jacobi: ClassVar[bool] = False
    # Decodes token by token with one slot KV cache (generate, the Hugging Face export).
    decodes_with_slot_cache: ClassVar[bool] = True
    # Adds nothing to a decoder-only LM (one slot per token, no parameters of its own).
    plain: ClassVar[bool] = False

    k: int  # K: latent steps (fixed, or PonderLM-3's most)
    # Training draws J from jacobi_train per (seed, step); evaluation runs jacobi_eval.
    jacobi_train: tuple[int, ...] = (2, 3)
    jacobi_eval: int = 3
    # 0: gradients through every pass; n > 0: only the last n passes keep them.
    grad_passes: int = 0
    latent_init: str = "growth"  # a LatentInit value (ponder/latent_thoughts.py)
    # The hard rule's threshold on w (inference, and the decisive term's target).
    tau: float = 1e-4
    compute_penalty: float = 0.0
    decisive_weight: float = 0.0
    decisive_threshold: float = 0.05

    @classmethod
    def of(cls, settings) -> "Method":
        """From a config.PonderConfig (duck-typed: the method sits below the config)."""
        s = settings
        return cls(k=s.k, jacobi_train=tuple(s.jacobi_train), jacobi_eval=s.jacobi_eval,
                   grad_passes=s.grad_passes, latent_init=s.latent_init, tau=s.tau,
                   compute_penalty=s.compute_penalty, decisive_weight=s.decisive_weight,
                   decisive_threshold=s.decisive_threshold)

    def with_tau(self, tau: float) -> "Method":
        """The same method at another (already checked) tau: a tool's --tau."""
        return dataclasses.replace(self, tau=tau)

    @classmethod
    def k_problem(cls, k: int) -> str | None:
        """Why `k` (ponder.k) does not suit this method, or None. A method that ponders needs
        at least one step: with K=0 it would train a plain decoder under its name, silently."""
        if k < 1:
            return (f"ponder.method={cls.name} needs at least 1 pondering step (with 0 it "
                    "is a plain decoder: use ponder.method=vanilla for that)")
        return None

    @property
    def latent_steps(self) -> int:
        """Pondering steps per token beyond its own slot or pass: K for the fixed-step
        methods (PonderLM-1 and Loop: K extra passes), the most PonderLM-3 runs."""
        return self.k

    @property
    def slots_per_token(self) -> int:
        """Slots a token owns in the interleaved sequence and in the KV cache (at most)."""
        return self.latent_steps + 1

    def executed_steps(self, kept_steps: torch.Tensor | None = None) -> float:
        """Mean latent steps per token at inference; kept_steps [B, L]: the router's K_hat_t."""
        return float(self.latent_steps)

    # ------------------------------------------------------------- passes (section 4)

    def jacobi_for_step(self, seed: int, step: int) -> int:
        """Training's J at `step`, drawn from jacobi_train by (seed, step) alone."""
        return jacobi_iterations(seed, step, self.jacobi_train)

    def program(self, backbone: Backbone, tokens: torch.Tensor, *, jacobi: int | None = None,
                tau: float | None = None) -> PassProgram:
        """The pass program on tokens [B, L]. jacobi: J of the latent-thought methods
        (None: jacobi_eval). tau: run the router's hard pruning rule at this threshold
        (inference) instead of the soft mask; methods without a router ignore it."""
        raise NotImplementedError

    # ------------------------------------------------------------- loss (section 3)

    def loss(self, backbone: Backbone, output: PonderOutput, labels: torch.Tensor,
             loss_mask: torch.Tensor | None = None):
        """(objective, parts) of ponder/loss.py with this run's penalty and decisive term."""
        return ponder_loss(backbone, output, labels, loss_mask,
                           compute_penalty=self.compute_penalty,
                           decisive_weight=self.decisive_weight,
                           decisive_threshold=self.decisive_threshold, tau=self.tau)

    def statistics(self, output: PonderOutput, loss_mask=None) -> dict[str, float]:
        """Pondering statistics at tau over the positions loss_mask counts ({} without a
        router)."""
        if output.log_w is None:
            return {}
        return ponder_statistics(output.log_s, output.log_w, self.tau, loss_mask)

    # ------------------------------------------------------------- FLOPs (section 6)

    @property
    def head_calls(self) -> int:
        """LM-head-sized matmuls per token and forward."""
        return 1

    def router_flops(self, shape: DecoderShape) -> int:
        """Router FLOPs per token and pass."""
        return 0

    def forward_flops(self, shape: DecoderShape, pass_slots: list[int], num_tokens: int) -> int:
        """Forward FLOPs of one sequence of `num_tokens` given the passes that ran."""
        total = sum(shape.pass_flops(num_tokens, n) for n in pass_slots)
        total += self.head_calls * shape.head_flops(num_tokens)
        return total + len(pass_slots) * self.router_flops(shape) * num_tokens

    def training_flops(self, shape: DecoderShape, pass_slots: list[int], num_tokens: int) -> int:
        """Forward + backward FLOPs of one sequence; passes run without autograd count once
        (grad_passes applies to the latent-thought methods; the others keep every pass)."""
        fwd = self.forward_flops(shape, pass_slots, num_tokens)
        grad_passes = self.grad_passes
        if not self.uses_jacobi or grad_passes == 0 or grad_passes >= len(pass_slots):
            return 3 * fwd
        no_grad_slots = pass_slots[: len(pass_slots) - grad_passes]
        no_grad = sum(shape.pass_flops(num_tokens, n) for n in no_grad_slots)
        # The router runs inside each pass, without autograd there too.
        no_grad += len(no_grad_slots) * self.router_flops(shape) * num_tokens
        return 3 * fwd - 2 * no_grad

    def cache_slots(self, num_tokens: int, kept_steps: torch.Tensor | None) -> torch.Tensor:
        """Slots each token appends to the KV cache at inference, [B, L] float64."""
        return torch.full((1, num_tokens), float(self.slots_per_token), dtype=torch.float64)

    def inference_flops_per_token(self, shape: DecoderShape, num_tokens: int,
                                  kept_steps: torch.Tensor | None = None) -> float:
        """Mean FLOPs to score or generate one token with a KV cache, over a sequence of
        `num_tokens`. kept_steps [B, L]: latent steps K_hat_t the hard rule kept (router)."""
        per_token = slot_cache_flops(shape, self.cache_slots(num_tokens, kept_steps))
        per_token = per_token + self.head_calls * shape.head_flops(1)
        return float((per_token + self.router_flops(shape)).mean())

    # ------------------------------------------------------------- decoding (section 5)

    def decode_plan(self, backbone: Backbone, h0: torch.Tensor) -> TokenPlan:
        """h0 [1, b, H]: the final-norm output of each new token's own slot."""
        return TokenPlan(torch.full((h0.shape[1],), self.latent_steps, device=h0.device))

    def latent_input(self, backbone: Backbone, previous: torch.Tensor) -> torch.Tensor:
        """Input of a token's next latent slot, given the previous slot's output."""
        return previous
