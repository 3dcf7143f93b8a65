"""ponder: the method switch, its knobs and their checks."""

from __future__ import annotations

from dataclasses import dataclass, field

from megatron_ponder.attention.registry import ATTENTION_BACKENDS
from megatron_ponder.config.checks import require
from megatron_ponder.ponder import METHODS, LatentInit, RouterKind, method_class


@dataclass
class PonderConfig:
    """The method switch and its knobs (method.md sections 3-5)."""

    method: str = "ponderlm3"
    # K: latent steps (fixed for ponderlm2/pause/loop/ponderlm1, the maximum for ponderlm3).
    k: int = 3
    # Hard-pruning threshold on the tail probability w at inference.
    tau: float = 1e-4
    # Training draws J uniformly from these per (seed, step); evaluation uses jacobi_eval.
    jacobi_train: list[int] = field(default_factory=lambda: [2, 3])
    jacobi_eval: int = 3
    # lambda of the optional compute penalty lambda * mean_t sum_{k>=1} w_{t,k}.
    compute_penalty: float = 0.0
    # Decisive router (docs/decisions.md): weight mu of a term pushing every latent step with
    # w < decisive_threshold below tau at a rate that does not vanish as w shrinks; 0 = off.
    decisive_weight: float = 0.0
    decisive_threshold: float = 0.05
    attention_backend: str = "augmented"
    # 0: gradients through every pass; n > 0: only the last n passes keep gradients.
    grad_passes: int = 0
    # "growth": PonderLM-2's growth passes; "copy": every latent input starts as h^(0).
    latent_init: LatentInit = LatentInit.GROWTH
    router: RouterKind = RouterKind.LINEAR

    def validate(self) -> None:
        """The method's own knobs, in the order the checks have always run."""
        self._validate_steps()
        self._validate_losses()
        self._validate_choices()

    def _validate_steps(self) -> None:
        require(self.method in METHODS, "ponder.method", self.method,
                f"valid values: {', '.join(METHODS)}")
        require(self.k >= 0, "ponder.k", self.k, "must be >= 0 (number of pondering steps)")
        k_problem = method_class(self.method).k_problem(self.k)
        require(k_problem is None, "ponder.k", self.k, k_problem)
        require(0.0 < self.tau < 1.0, "ponder.tau", self.tau, "must lie strictly between 0 and 1")
        require(len(self.jacobi_train) > 0 and all(j >= 1 for j in self.jacobi_train),
                "ponder.jacobi_train", self.jacobi_train,
                "must be a non-empty list of integers >= 1")
        require(self.jacobi_eval >= 1, "ponder.jacobi_eval", self.jacobi_eval, "must be >= 1")

    def _validate_losses(self) -> None:
        require(self.compute_penalty >= 0, "ponder.compute_penalty", self.compute_penalty,
                "must be >= 0")
        require(self.decisive_weight >= 0, "ponder.decisive_weight", self.decisive_weight,
                "must be >= 0 (0 = off)")
        require(0.0 < self.decisive_threshold < 1.0
                and (self.decisive_weight == 0 or self.tau < self.decisive_threshold),
                "ponder.decisive_threshold", self.decisive_threshold,
                f"must lie strictly between ponder.tau={self.tau} and 1")

    def _validate_choices(self) -> None:
        require(self.attention_backend in ATTENTION_BACKENDS, "ponder.attention_backend",
                self.attention_backend, f"valid values: {', '.join(ATTENTION_BACKENDS)}")
        require(self.grad_passes >= 0, "ponder.grad_passes", self.grad_passes,
                "must be >= 0 (0 = gradients through every pass)")
        for name, choice in (("latent_init", LatentInit), ("router", RouterKind)):
            value = getattr(self, name)
            require(value in tuple(choice), f"ponder.{name}", value,
                    f"valid values: {', '.join(choice)}")
