"""An inference FLOPs budget instead of tau (docs/decisions.md, "FLOPs budget").

The budget R is inference FLOPs per token (method.md section 6) relative to the same model
with every latent step kept (K_hat_t = K for every token, PonderLM-2's compute plus the
router): R = 0.8 asks for 80% of that. tau is calibrated on held-out tokens by bisection
on log tau, since the hard rule's kept steps, and so the FLOPs, fall as tau grows; the tau
returned is the smallest one found whose FLOPs do not exceed the budget, to within
`tolerance` (relative) of it.

tools/eval_ppl.py, tools/generate.py and tools/export_hf.py share `calibrate_tau`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from megatron_ponder.config import ConfigError
from megatron_ponder.inference.budget_args import RELATIVE_TO
from megatron_ponder.inference.heldout import heldout_batches
from megatron_ponder.inference.ppl_sweep import score_at_taus
from megatron_ponder.ponder.flops import DecoderShape
from megatron_ponder.ponder.registry import names_where

# The bisection's range: below 1e-12 no step of a float32 router is worth keeping apart,
# and 1 - 1e-6 keeps only the steps the router is certain of (the fewest it can).
TAU_MIN, TAU_MAX = 1e-12, 1.0 - 1e-6


class BudgetError(ConfigError):
    """The budget cannot be met by this model (the message names the reachable range)."""


@dataclass
class Calibration:
    budget: float
    tau: float
    ratio: float  # FLOPs at tau / FLOPs with every step kept, on the calibration tokens
    reachable: tuple[float, float]  # the ratios at TAU_MAX and TAU_MIN
    tokens: int
    evaluations: int  # hard-rule passes over the calibration batches this budget added
    relative_to: str = RELATIVE_TO

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (f"FLOPs budget {self.budget:g} (relative to {self.relative_to}): tau = "
                f"{self.tau:.6g}, {self.ratio:.4f} on {self.tokens} calibration tokens "
                f"(reachable {self.reachable[0]:.4f}-{self.reachable[1]:.4f})")


def _score_at_taus(model, batches: list[dict], taus: list[float], jacobi: int | None) -> list[dict]:
    """The one call into the hard-rule scoring: rows of loss, ppl, steps and FLOPs per tau."""
    return score_at_taus(model, batches, taus, jacobi)


def _flops(row: dict) -> float:
    return row["flops_per_token"]


def flops_ratio(model, batches: list[dict], tau: float, jacobi: int | None = None) -> float:
    """Inference FLOPs per token at tau over those with every latent step kept, on batches."""
    return _flops(_score_at_taus(model, batches, [tau], jacobi)[0]) / all_kept_flops(model, batches)


def all_kept_flops(model, batches: list[dict]) -> float:
    """Inference FLOPs per token of `model` on batches with every latent step kept."""
    method = model.method
    shape = DecoderShape.of(model.cfg.model)
    total = 0.0
    for batch in batches:
        full = torch.full(batch["tokens"].shape, method.latent_steps)
        total += method.inference_flops_per_token(shape, batch["tokens"].shape[1], full)
    return total / len(batches)


def check_budget(model, budget: float) -> None:
    """BudgetError unless `model` routes and `budget` is a number > 0."""
    if not model.method.uses_router:
        routed = ", ".join(names_where(lambda m: m.uses_router))
        raise BudgetError(f"--flops-budget needs a model with a router ({routed}); "
                          f"ponder.method={model.cfg.ponder.method!r} has fixed compute")
    if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
        raise BudgetError(f"flops budget {budget!r} is invalid: must be a number > 0 "
                          f"(inference FLOPs relative to {RELATIVE_TO})")


class Calibrator:
    """Bisection on log tau over one set of calibration batches. The hard rule's FLOPs ratio
    at every tau tried is kept, so further budgets on the same tokens start from the
    tightest bracket already known (the sweeps calibrate several budgets per model)."""

    def __init__(self, model, batches: list[dict], jacobi: int | None = None,
                 tolerance: float = 0.005, max_evaluations: int = 40):
        self.model, self.batches, self.jacobi = model, batches, jacobi
        self.tolerance, self.max_evaluations = tolerance, max_evaluations
        self.tokens = sum(int(b["tokens"].numel()) for b in batches)
        self.reference = all_kept_flops(model, batches) if batches else 0.0
        self.ratio: dict[float, float] = {}  # log tau -> FLOPs ratio

    def _evaluate(self, log_tau: float) -> float:
        if log_tau not in self.ratio:
            row = _score_at_taus(self.model, self.batches, [math.exp(log_tau)], self.jacobi)[0]
            self.ratio[log_tau] = _flops(row) / self.reference
        return self.ratio[log_tau]

    def calibrate(self, budget: float) -> Calibration:
        """The tau whose hard rule spends `budget` of the all-steps-kept FLOPs on the
        calibration tokens; BudgetError if this model cannot spend that."""
        check_budget(self.model, budget)
        low, high = math.log(TAU_MIN), math.log(TAU_MAX)  # ratio(low) >= ratio(high)
        before = len(self.ratio)
        most, fewest = self._evaluate(low), self._evaluate(high)
        tol = self.tolerance
        if not fewest * (1 - tol) <= budget <= most * (1 + tol):
            raise BudgetError(
                f"flops budget {budget:g} is out of reach: this model's hard rule spends "
                f"between {fewest:.4f} (tau {TAU_MAX:g}) and {most:.4f} (tau {TAU_MIN:g}) of "
                f"the FLOPs of {RELATIVE_TO}, on {self.tokens} calibration tokens")
        if most <= budget:  # even the smallest tau fits
            return self._result(budget, low, before)
        # Invariant: ratio(low) > budget >= ratio(high) (within tolerance at the ends).
        # The tightest bracket known: the smallest tau that fits, the largest below it that
        # does not.
        high = min(t for t, r in self.ratio.items() if r <= budget) if fewest <= budget else high
        low = max(t for t, r in self.ratio.items() if r > budget and t < high)
        while (len(self.ratio) - before < self.max_evaluations
               and abs(self.ratio[high] - budget) > tol * budget):
            middle = (low + high) / 2
            if middle in (low, high):
                break
            if self._evaluate(middle) > budget:
                low = middle
            else:
                high = middle
        return self._result(budget, high, before)

    def _result(self, budget: float, log_tau: float, before: int) -> Calibration:
        reachable = (self.ratio[math.log(TAU_MAX)], self.ratio[math.log(TAU_MIN)])
        return Calibration(budget, math.exp(log_tau), self.ratio[log_tau], reachable,
                           self.tokens, len(self.ratio) - before)


def calibrate_tau(model, batches: list[dict], budget: float, jacobi: int | None = None,
                  tolerance: float = 0.005, max_evaluations: int = 40) -> Calibration:
    """The tau whose hard rule spends `budget` of the all-steps-kept FLOPs on `batches`
    (the calibration tokens); BudgetError if this model cannot spend that."""
    return Calibrator(model, batches, jacobi, tolerance, max_evaluations).calibrate(budget)


def score_at_budgets(model, calibration_batches: list[dict], batches: list[dict],
                     budgets: list[float], jacobi: int | None = None) -> list[dict]:
    """One row per budget: tau calibrated on calibration_batches, then scored on batches (the
    rows of inference.ppl_sweep.score_at_taus) with flops_budget, flops_vs_all_kept (achieved
    on batches) and the calibration. BudgetError for a budget out of reach."""
    for budget in budgets:
        check_budget(model, budget)
    calibrator = Calibrator(model, calibration_batches, jacobi)
    calibrations = [calibrator.calibrate(b) for b in budgets]
    rows = _score_at_taus(model, batches, [c.tau for c in calibrations], jacobi)
    all_kept = all_kept_flops(model, batches)
    for row, calibration in zip(rows, calibrations):
        row.update(flops_budget=calibration.budget,
                   flops_vs_all_kept=_flops(row) / all_kept,
                   calibration=calibration.as_dict())
    return rows


def calibrate_on_validation(model, cfg, budget: float, samples: int = 64,
                            jacobi: int | None = None, batch_size: int = 4) -> Calibration:
    """calibrate_tau on the first `samples` validation sequences of cfg.data (the
    checkpoint's data, in the order of its seed): tools/generate.py and tools/export_hf.py."""
    check_budget(model, budget)  # before any data is read
    batches = heldout_batches(cfg, split="valid", samples=samples,
                              batch_size=min(batch_size, samples), data_seed=cfg.seed)
    return calibrate_tau(model, batches, budget, jacobi)
